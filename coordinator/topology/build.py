"""Building the Thunderbolt graph from node views: which reported port meets which node, the
cables both ends see, the one-sided ones, cables to unknown hosts, then the pieces, the rings
and the cabling problems (coordinator/checks/cabling.py).

How a cable is recognised and where the facts stop: coordinator/topology/__init__.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from coordinator.checks.cabling import cabling_problems
from coordinator.topology.components import components
from coordinator.topology.graph import Link, PortFacts, StrayCable, TopoNode, Topology
from coordinator.topology.rings import ham_cycle
from shared.schemas import NetInterface, NodeOut


def build(nodes: Sequence[NodeOut],
          interfaces: Mapping[str, Sequence[NetInterface]] | None = None) -> Topology:
    """The Thunderbolt graph of `nodes`. `interfaces` (node id -> reported interfaces, as
    `Registry.interfaces()` gives) lets `link_addresses` name per-port addresses."""
    topo_nodes = {n.id: _topo_node(n, (interfaces or {}).get(n.id, ())) for n in nodes}
    topo = Topology(nodes=topo_nodes, links=[], strays=[])
    owner = _uuid_owners(nodes, topo)
    halves: dict[tuple[str, str], list[tuple[int, str | None, float | None]]] = {}
    for n in sorted(nodes, key=lambda n: topo.key(n.id)):
        for p in sorted(n.thunderbolt.ports, key=lambda p: p.port):
            if p.status != "connected" or not p.peer_uuid:
                continue
            peer = owner.get(p.peer_uuid)
            if peer is None:
                topo.strays.append(StrayCable(n.id, p.port, p.interface, p.peer_uuid, p.peer_name))
            elif peer == n.id:
                topo.notes.append(f"{n.name}: Thunderbolt {p.port} is cabled to another port of the same Mac")
            else:
                halves.setdefault((n.id, peer), []).append((p.port, p.interface, p.speed_gbps))
    topo.links = _pair_halves(halves, topo)
    topo.components = components(topo)
    topo.rings = [list(c.nodes) for c in topo.components if c.kind in ("ring", "mesh")]
    topo.rings += [r for c in topo.components if c.kind == "other" and (r := ham_cycle(topo, c.nodes))]
    topo.warnings = cabling_problems(topo)
    return topo


def _topo_node(n: NodeOut, interfaces: Sequence[NetInterface]) -> TopoNode:
    tb = n.thunderbolt
    b = tb.bridge
    return TopoNode(
        id=n.id, name=n.name, chip=n.chip, device_type=n.device_type, status=n.status,
        rdma_enabled=tb.rdma_enabled,
        bridge_interface=b.interface if b else None,
        bridge_members=tuple(b.members) if b else (),
        bridge_ips=tuple(b.ips) if b else (),
        bridge_up=bool(b and b.up),
        interface_ips={i.name: tuple(i.ips) for i in interfaces},
        os_version=n.os_version,
        rdma_devices=tuple(tb.rdma_devices) if tb.rdma_devices is not None else None,
        ports={p.port: PortFacts(p.interface, p.status, p.speed_gbps, p.max_speed_gbps, p.rdma_device)
               for p in tb.ports},
    )


def _uuid_owners(nodes: Sequence[NodeOut], topo: Topology) -> dict[str, str]:
    """Domain UUID -> node id. A UUID two nodes claim (a machine registered twice) goes to the
    first by name, with a note, rather than making cables appear twice."""
    owner: dict[str, str] = {}
    for n in sorted(nodes, key=lambda n: topo.key(n.id)):
        for u in n.thunderbolt.domain_uuids:
            if u in owner and owner[u] != n.id:
                topo.notes.append(f"Thunderbolt domain {u} is reported by both {topo.name(owner[u])} and {n.name}")
                continue
            owner[u] = n.id
    return owner


def _pair_halves(halves: dict, topo: Topology) -> list[Link]:
    """Join what each end reports into cables; on pairing see coordinator/topology/__init__.py."""
    links = []
    pairs = {tuple(sorted(pair, key=topo.key)) for pair in halves}
    for a, b in sorted(pairs, key=lambda p: (topo.key(p[0]), topo.key(p[1]))):
        from_a, from_b = halves.get((a, b), []), halves.get((b, a), [])
        if min(len(from_a), len(from_b)) > 1:
            topo.notes.append(f"{topo.name(a)} and {topo.name(b)} share {min(len(from_a), len(from_b))} cables: "
                              "which port meets which is paired in port order (the facts cannot tell)")
        for (pa, ia, sa), (pb, ib, sb) in zip(from_a, from_b):
            links.append(Link(a, pa, ia, b, pb, ib, _min_speed(sa, sb)))
        for pa, ia, sa in from_a[len(from_b):]:
            links.append(Link(a, pa, ia, b, None, None, sa, one_sided=True))
        for pb, ib, sb in from_b[len(from_a):]:
            links.append(Link(b, pb, ib, a, None, None, sb, one_sided=True))
    return sorted(links, key=lambda ln: (topo.key(ln.a), ln.a_port, topo.key(ln.b)))


def _min_speed(x: float | None, y: float | None) -> float | None:
    """Both ends negotiate one speed, so they should agree; if not, the slower one is the truth.
    One end without a speed (its cheap refresh saw the link come up) leaves the other's."""
    known = [s for s in (x, y) if s is not None]
    return min(known) if known else None
