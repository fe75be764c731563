"""The model of the Thunderbolt graph: nodes, cables (links), cables to hosts outside the
cluster (strays), connected pieces (components) and the `Topology` that holds them.

Plain data and the lookups every other module of the package uses; `build` fills it in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coordinator.checks.problem import Problem


@dataclass(frozen=True)
class PortFacts:
    """What a node reports about one of its Thunderbolt ports, as far as RDMA cares."""

    interface: str | None
    status: str
    speed_gbps: float | None        # negotiated, when linked
    max_speed_gbps: float | None    # "Up to N Gb/s", which macOS prints only for an empty port
    rdma_device: str | None         # its `ibv_devices` name, when listed


@dataclass(frozen=True)
class TopoNode:
    id: str
    name: str
    chip: str | None
    device_type: str | None
    status: str
    rdma_enabled: bool | None
    bridge_interface: str | None
    bridge_members: tuple[str, ...]
    bridge_ips: tuple[str, ...]
    bridge_up: bool
    # Per-interface addresses, when the caller passed the nodes' reported interfaces.
    interface_ips: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    os_version: str | None = None
    rdma_devices: tuple[str, ...] | None = None        # None: ibv_devices not run or failed
    ports: Mapping[int, PortFacts] = field(default_factory=dict)

    @property
    def apple_silicon(self) -> bool:
        return self.device_type == "mac" or (self.chip or "").startswith("Apple")

    def bridged(self, interface: str | None) -> bool:
        return interface is not None and interface in self.bridge_members


@dataclass(frozen=True)
class Link:
    """One cable. `a` is the end that sees it (both do unless `one_sided`); b_port and
    b_interface are None when b does not report the cable."""

    a: str
    a_port: int
    a_interface: str | None
    b: str
    b_port: int | None
    b_interface: str | None
    speed_gbps: float | None
    one_sided: bool = False

    def toward(self, node: str) -> tuple[int | None, str | None]:
        """(port, interface) on the far side from `node`."""
        return (self.b_port, self.b_interface) if node == self.a else (self.a_port, self.a_interface)

    def at(self, node: str) -> tuple[int | None, str | None]:
        """(port, interface) at `node`'s end."""
        return (self.a_port, self.a_interface) if node == self.a else (self.b_port, self.b_interface)


@dataclass(frozen=True)
class StrayCable:
    """A cable from a cluster node to a host no cluster node claims (no agent, or not yet)."""

    node: str
    port: int
    interface: str | None
    peer_uuid: str
    peer_name: str | None


@dataclass(frozen=True)
class Component:
    kind: str                 # single | chain | ring | mesh | star | other
    nodes: tuple[str, ...]    # ids; path order (chain), cycle order (ring, mesh), centre first (star)


@dataclass
class Topology:
    nodes: dict[str, TopoNode]
    links: list[Link]
    strays: list[StrayCable]
    components: list[Component] = field(default_factory=list)
    rings: list[list[str]] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)   # what the cabling alone shows
    notes: list[str] = field(default_factory=list)          # caveats that need no fixing

    def name(self, node_id: str) -> str:
        n = self.nodes.get(node_id)
        return n.name if n else node_id

    def key(self, node_id: str) -> tuple[str, str, str]:
        """The deterministic order everywhere: by name (case-insensitive), then id."""
        name = self.name(node_id)
        return (name.casefold(), name, node_id)

    def links_between(self, a: str, b: str) -> list[Link]:
        """Links a<->b that both ends see, lowest port at a first."""
        found = [ln for ln in self.links if not ln.one_sided and {ln.a, ln.b} == {a, b}]
        return sorted(found, key=lambda ln: ln.at(a)[0] or 0)

    def adjacency(self, ids: Iterable[str] | None = None) -> dict[str, set[str]]:
        """Who is cabled to whom (two-sided links only), restricted to `ids` when given."""
        keep = set(self.nodes) if ids is None else set(ids)
        adj: dict[str, set[str]] = {i: set() for i in keep}
        for ln in self.links:
            if not ln.one_sided and ln.a in keep and ln.b in keep and ln.a != ln.b:
                adj[ln.a].add(ln.b)
                adj[ln.b].add(ln.a)
        return adj

