"""The device matrix MLX's JACCL backend reads from MLX_IBV_DEVICES: for ranks in a given
order, which RDMA device on each node reaches each other rank's node, or why there is none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from coordinator.topology.graph import Topology


@dataclass(frozen=True)
class JacclMatrix:
    matrix: list[list[str | None]] | None
    reason: str | None = None


def jaccl_check(topology: Topology, node_ids: Sequence[str], *, ring: bool = False) -> JacclMatrix:
    """MLX_IBV_DEVICES for ranks on `node_ids` in this order: entry [i][j] is the RDMA device
    ("rdma_" + the port's interface, as `ibv_devices` names it) on rank i's node that is cabled
    to rank j's node; null on the diagonal.

    `ring=False` (backend jaccl): every pair must share a cable (a full mesh), every entry off
    the diagonal is filled. `ring=True` (jaccl-ring, MLX_JACCL_RING=1): each rank needs a cable
    to the next and previous rank in this order, so pass `ring_order(...)`; only those entries
    are filled, the rest are null. One cable per pair: with several, the lowest port at i is used.
    """
    ids = list(node_ids)
    why = _jaccl_unfit(topology, ids)
    if why:
        return JacclMatrix(None, why)
    n = len(ids)
    pairs = {(i, (i + 1) % n) for i in range(n)} if ring else {(i, j) for i in range(n) for j in range(i + 1, n)}
    matrix: list[list[str | None]] = [[None] * n for _ in range(n)]
    for i, j in sorted(pairs):
        a, b = ids[i], ids[j]
        links = topology.links_between(a, b)
        if not links:
            return JacclMatrix(None, _not_cabled(topology, a, b, ring))
        ia, ib = links[0].at(a)[1], links[0].at(b)[1]
        if not ia or not ib:
            missing = topology.name(a) if not ia else topology.name(b)
            return JacclMatrix(None, f"{missing}: the Thunderbolt port toward "
                                     f"{topology.name(b if not ia else a)} has no interface name")
        matrix[i][j], matrix[j][i] = f"rdma_{ia}", f"rdma_{ib}"
    return JacclMatrix(matrix)


def jaccl_matrix(topology: Topology, node_ids: Sequence[str], *, ring: bool = False) -> list[list[str | None]] | None:
    """The matrix of `jaccl_check`, or None (its `reason` says why)."""
    return jaccl_check(topology, node_ids, ring=ring).matrix


def _jaccl_unfit(topology: Topology, ids: list[str]) -> str | None:
    if len(ids) < 2:
        return "JACCL needs at least 2 nodes"
    if len(set(ids)) != len(ids):
        return "a node appears twice"
    unknown = [i for i in ids if i not in topology.nodes]
    if unknown:
        return f"unknown node(s): {', '.join(unknown)}"
    off = [topology.name(i) for i in ids if topology.nodes[i].rdma_enabled is not True]
    if off:
        return (f"RDMA over Thunderbolt is not enabled on {', '.join(off)} (needs macOS 26.2+, Thunderbolt 5, "
                "and `rdma_ctl enable` in recoveryOS)")
    return None


def _not_cabled(topology: Topology, a: str, b: str, ring: bool) -> str:
    one_sided = any(ln.one_sided and {ln.a, ln.b} == {a, b} for ln in topology.links)
    what = "only one end sees the cable between" if one_sided else "no Thunderbolt cable joins"
    need = ("jaccl-ring needs each rank cabled to the next in rank order (use ring_order)" if ring
            else "jaccl needs every pair of nodes cabled directly (a full mesh)")
    return f"{what} {topology.name(a)} and {topology.name(b)}: {need}"
