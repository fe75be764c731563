"""Cabling problems the Thunderbolt graph alone shows: Thunderbolt Bridge loops, slow links,
cables only one end sees, and cables to hosts no cluster node claims.

"Slower than both ends allow" is a threshold, since facts carry negotiated speeds, not port
capabilities: under 40 Gb/s between two Apple Silicon Macs (every one has Thunderbolt 3/USB4 at
40 Gb/s or better) means a wrong cable or a hub in the way.

Takes a built `Topology` and imports nothing of coordinator/topology/ at run time, since
building the graph runs these checks (its `warnings`).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from coordinator.checks.problem import Problem

if TYPE_CHECKING:
    from coordinator.topology.graph import Link, Topology

SLOW_GBPS = 40.0

CABLE_FIX = ("try another cable (use a Thunderbolt 4/5 cable, not USB-C) and connect the Macs directly, "
             "not through a hub or dock")


def cabling_problems(topo: Topology) -> list[Problem]:
    """Everything wrong with the cables, in a fixed order: loops, slow, one-sided, stray."""
    return _bridge_loops(topo) + _slow_links(topo) + _one_sided(topo) + _stray_cables(topo)


def is_slow(topology: Topology, ln: Link) -> bool:
    """Connected under 40 Gb/s between two Apple Silicon Macs (see the module docstring)."""
    a, b = topology.nodes[ln.a], topology.nodes[ln.b]
    return ln.speed_gbps is not None and ln.speed_gbps < SLOW_GBPS and a.apple_silicon and b.apple_silicon


def _bridge_loops(topo: Topology) -> list[Problem]:
    """A cycle of cables whose ports are all in an up bridge0 at both ends: the bridges forward
    broadcasts round it for ever (macOS runs no spanning tree on bridge0). Two Macs with two
    bridged cables between them loop just the same. A bridge that is down forwards nothing,
    though it may still list its members (as after `mlx.distributed_config --auto-setup`)."""
    bridged = [ln for ln in topo.links if not ln.one_sided
               and _forwards(topo, ln.a, ln.a_interface) and _forwards(topo, ln.b, ln.b_interface)]
    core = _two_core(bridged)
    out = []
    for loop in _groups(core, bridged):
        names = sorted(loop, key=topo.key)
        first = names[0]
        ports = sorted({ln.at(first)[1] or f"Thunderbolt {ln.at(first)[0]}" for ln in bridged
                        if first in (ln.a, ln.b) and {ln.a, ln.b} <= loop})
        out.append(Problem(
            None, f"Thunderbolt Bridge loop: {', '.join(topo.name(i) for i in names)} are cabled in a cycle "
                  "with their Thunderbolt ports in bridge0 at both ends: a broadcast storm",
            f"remove one cable or take the ports out of bridge0 on one Mac (e.g. on {topo.name(first)}: "
            f"System Settings > Network > Manage Virtual Interfaces > Thunderbolt Bridge, remove "
            f"{', '.join(ports)}), or give each cable its own network as mlx.distributed_config does",
            "bridge_loop"))
    return out


def _forwards(topo: Topology, node_id: str, interface: str | None) -> bool:
    node = topo.nodes[node_id]
    return node.bridge_up and node.bridged(interface)


def _two_core(links: list[Link]) -> set[str]:
    """The nodes that lie on a cycle: strip nodes of degree <= 1 until none is left (counting
    parallel cables, which make a cycle of two)."""
    degree: Counter[str] = Counter()
    for ln in links:
        degree[ln.a] += 1
        degree[ln.b] += 1
    alive = set(degree)
    changed = True
    while changed:
        changed = False
        for node in sorted(alive):
            if degree[node] <= 1:
                alive.discard(node)
                changed = True
                for ln in links:
                    if node in (ln.a, ln.b):
                        other = ln.b if ln.a == node else ln.a
                        degree[other] -= 1
    return alive


def _groups(core: set[str], links: list[Link]) -> list[set[str]]:
    """Connected groups of `core` over `links`."""
    adj: dict[str, set[str]] = {i: set() for i in core}
    for ln in links:
        if ln.a in core and ln.b in core:
            adj[ln.a].add(ln.b)
            adj[ln.b].add(ln.a)
    out, seen = [], set()
    for i in sorted(core):
        if i not in seen:
            group, todo = {i}, [i]
            while todo:
                for nxt in adj[todo.pop()] - group:
                    group.add(nxt)
                    todo.append(nxt)
            seen |= group
            out.append(group)
    return out


def _slow_links(topo: Topology) -> list[Problem]:
    return [Problem(
        topo.name(ln.a),
        f"Thunderbolt link {_describe(topo, ln)} runs at {ln.speed_gbps:g} Gb/s; Apple Silicon Macs "
        f"link at {SLOW_GBPS:g} Gb/s or more", CABLE_FIX, "slow_link")
        for ln in topo.links if is_slow(topo, ln)]


def _one_sided(topo: Topology) -> list[Problem]:
    return [Problem(
        topo.name(ln.b),
        f"{topo.name(ln.b)} does not see the Thunderbolt cable that {topo.name(ln.a)} sees on "
        f"{_port(ln.a_port, ln.a_interface)}",
        f"re-seat the cable at {topo.name(ln.b)}'s end, or {CABLE_FIX}; if it was just plugged in, wait "
        f"for {topo.name(ln.b)}'s agent to report its facts again", "one_sided")
        for ln in topo.links if ln.one_sided]


def _stray_cables(topo: Topology) -> list[Problem]:
    return [Problem(
        topo.name(s.node),
        f"{_port(s.port, s.interface)} is cabled to {s.peer_name or 'a host'} (Thunderbolt domain "
        f"{s.peer_uuid}), which no node of this cluster reports",
        "start the Jupiter agent on that Mac (jupiter agent install), or unplug the cable", "unknown_peer")
        for s in topo.strays]


def _describe(topo: Topology, ln: Link) -> str:
    far = _port(ln.b_port, ln.b_interface) if ln.b_port is not None else "?"
    return f"{topo.name(ln.a)} {_port(ln.a_port, ln.a_interface)} <-> {topo.name(ln.b)} {far}"


def _port(port: int | None, interface: str | None) -> str:
    return f"Thunderbolt {port}" + (f" ({interface})" if interface else "")
