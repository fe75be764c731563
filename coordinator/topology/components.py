"""The connected pieces of the Thunderbolt graph and the shape of each: a single node, a chain,
a ring, a full mesh, a star, or "other", with its nodes in the order that shape suggests.

Only cables both ends see join a piece (see coordinator/topology/__init__.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from coordinator.topology.graph import Component, Topology
from coordinator.topology.rings import ham_cycle, ring_order


def components(topo: Topology) -> list[Component]:
    """Every connected piece, in the order of its first node by name."""
    adj = topo.adjacency()
    seen: set[str] = set()
    out = []
    for start in sorted(topo.nodes, key=topo.key):
        if start in seen:
            continue
        members = reach(adj, start)
        seen |= members
        out.append(_classify(topo, adj, members))
    return out


def reach(adj: Mapping[str, set[str]], start: str) -> set[str]:
    """Every node `start` reaches over the edges of `adj`, itself included."""
    found, todo = {start}, [start]
    while todo:
        for nxt in adj[todo.pop()] - found:
            found.add(nxt)
            todo.append(nxt)
    return found


def _classify(topo: Topology, adj: Mapping[str, set[str]], members: set[str]) -> Component:
    n = len(members)
    ids = sorted(members, key=topo.key)
    degree = {i: len(adj[i]) for i in ids}
    edges = sum(degree.values()) // 2
    if n == 1:
        return Component("single", tuple(ids))
    # A triangle is both a ring and a mesh; "mesh" is the stronger claim (JACCL can use it),
    # and its cycle is listed among the rings too.
    if n >= 3 and edges == n * (n - 1) // 2:
        return Component("mesh", tuple(ham_cycle(topo, ids) or ids))
    if edges == n - 1 and max(degree.values()) <= 2:
        return Component("chain", tuple(_walk_path(topo, adj, members)))
    if edges == n and all(d == 2 for d in degree.values()):
        return Component("ring", tuple(ham_cycle(topo, ids) or ids))
    if n >= 4 and edges == n - 1 and max(degree.values()) == n - 1:
        centre = max(ids, key=lambda i: degree[i])
        return Component("star", (centre, *[i for i in ids if i != centre]))
    return Component("other", tuple(ring_order(topo, ids)))


def _walk_path(topo: Topology, adj: Mapping[str, set[str]], members: set[str]) -> list[str]:
    """A chain in order, from the end that sorts first."""
    ends = sorted((i for i in members if len(adj[i]) <= 1), key=topo.key)
    path, prev = [ends[0]], None
    while True:
        nxt = [i for i in adj[path[-1]] if i != prev and i in members]
        if not nxt:
            return path
        prev = path[-1]
        path.append(nxt[0])
