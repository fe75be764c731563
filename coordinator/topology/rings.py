"""Rank order over the cables: Hamiltonian cycles and paths through the Thunderbolt graph, so
neighbouring ranks share a cable where they can.

Deterministic for the same nodes whatever order they come in, and bounded by a step budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from coordinator.topology.graph import Topology

# Hamiltonian searches are exponential in the worst case; clusters are small, but a budget keeps
# a 64-node "other" graph from stalling a request. The budget is a step count, so the answer
# stays deterministic when it runs out.
SEARCH_BUDGET = 200_000


def ring_order(topology: Topology, node_ids: Sequence[str]) -> list[str]:
    """`node_ids` in an order whose neighbours share a cable where possible: a Hamiltonian cycle
    over them if one exists, else a Hamiltonian path, else the longest cabled pieces (longest
    first, ties by name) one after another; isolated nodes last, by name. Ids the topology does
    not know count as isolated. Deterministic, whatever order `node_ids` come in."""
    ids = sorted(set(node_ids), key=topology.key)
    if len(ids) <= 2:
        return ids
    budget = [SEARCH_BUDGET]  # one budget for the whole call, so many pieces cannot multiply it
    cycle = ham_cycle(topology, ids, budget)
    if cycle:
        return cycle
    adj = topology.adjacency(ids)
    pieces, left = [], set(ids)
    while left:
        piece = _longest_path(topology, adj, left, budget)
        pieces.append(piece)
        left -= set(piece)
    pieces.sort(key=lambda p: (-len(p), topology.key(p[0])))
    return [i for p in pieces for i in p]


def ham_cycle(topology: Topology, ids: Sequence[str], budget: list[int] | None = None) -> list[str] | None:
    """A cycle through every one of `ids` (>= 3), canonical: it starts at the first by name and
    goes on to that node's first-by-name neighbour on the cycle."""
    if len(ids) < 3:
        return None
    adj = topology.adjacency(ids)
    order = sorted(ids, key=topology.key)
    start = order[0]
    budget = budget if budget is not None else [SEARCH_BUDGET]
    path = _extend(topology, adj, [start], {start}, len(order), budget, close_to=start)
    if path is None:
        return None
    if topology.key(path[-1]) < topology.key(path[1]):
        path = [path[0], *reversed(path[1:])]
    return path


def _longest_path(topology: Topology, adj: Mapping[str, set[str]], left: set[str], budget: list[int]) -> list[str]:
    """The longest simple path within `left` the budget lets the search find, canonical: it
    starts at the end that sorts first. Ends (one neighbour) are tried first as starts: a path
    that covers everything must begin at one if there is one. Out of budget, a greedy walk."""
    sub = {i: adj[i] & left for i in left}
    starts = sorted(left, key=lambda i: (len(sub[i]) != 1, topology.key(i)))
    best: list[str] = _greedy_path(topology, sub, starts[0])
    for s in starts:
        if budget[0] <= 0:
            break
        found = _extend(topology, sub, [s], {s}, len(left), budget, best=best)
        if found is not None:   # covers all of `left`
            best = found
            break
    if topology.key(best[-1]) < topology.key(best[0]):
        best = best[::-1]
    return list(best)


def _greedy_path(topology: Topology, adj: Mapping[str, set[str]], start: str) -> list[str]:
    """Walk on to the first-by-name unvisited neighbour until stuck."""
    path, used = [start], {start}
    while nxt := sorted(adj[path[-1]] - used, key=topology.key):
        path.append(nxt[0])
        used.add(nxt[0])
    return path


def _extend(topology, adj, path, used, goal, budget, close_to=None, best=None):
    """Depth-first growth of `path` to `goal` nodes (closing back to `close_to` for a cycle).
    Returns the full path, or None; with `best` it also keeps the longest path seen in it."""
    budget[0] -= 1
    if best is not None and len(path) > len(best):
        best[:] = path
    if len(path) == goal:
        if close_to is None or close_to in adj[path[-1]]:
            return list(path)
        return None
    if budget[0] <= 0:
        return None
    for nxt in sorted(adj[path[-1]] - used, key=topology.key):
        path.append(nxt)
        used.add(nxt)
        found = _extend(topology, adj, path, used, goal, budget, close_to, best)
        if found is not None:
            return found
        used.discard(path.pop())
    return None
