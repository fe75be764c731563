"""The device matrix MLX's JACCL backend reads from MLX_IBV_DEVICES: for ranks in a given
order, which RDMA device on each node reaches each other rank's node, or why there is none
(what blocks RDMA on a node or a cable: coordinator/topology/fabric.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from coordinator.topology.fabric import NEEDS, Blocker, describe, node_blockers, pair_link, rdma_device
from coordinator.topology.graph import Topology


@dataclass(frozen=True)
class JacclMatrix:
    matrix: list[list[str | None]] | None
    reason: str | None = None
    blockers: tuple[Blocker, ...] = ()   # every node and cable blocker of these ranks, when matrix is None


def jaccl_check(topology: Topology, node_ids: Sequence[str], *, ring: bool = False) -> JacclMatrix:
    """MLX_IBV_DEVICES for ranks on `node_ids` in this order: entry [i][j] is the RDMA device
    (its `ibv_devices` name, as the node reports it for that port) on rank i's node that is
    cabled to rank j's node; null on the diagonal.

    `ring=False` (backend jaccl): every pair must share a usable cable (a full mesh), every entry
    off the diagonal is filled. `ring=True` (jaccl-ring, MLX_JACCL_RING=1): each rank needs a
    cable to the next and previous rank in this order, so pass `ring_order_rdma(...)`; only those
    entries are filled, the rest are null. One cable per pair: with several, the lowest port at i
    among those RDMA can use. Any node or cable blocker (fabric.py) means no matrix: `reason`
    names the first few, `blockers` holds them all.
    """
    ids = list(node_ids)
    why = _jaccl_unfit(topology, ids)
    if why:
        return JacclMatrix(None, why)
    n = len(ids)
    pairs = ({tuple(sorted((i, (i + 1) % n))) for i in range(n)} if ring
             else {(i, j) for i in range(n) for j in range(i + 1, n)})
    on_nodes = [b for i in ids for b in node_blockers(topology, i)]
    on_cables: list[Blocker] = []
    matrix: list[list[str | None]] = [[None] * n for _ in range(n)]
    for i, j in sorted(pairs):
        a, b = ids[i], ids[j]
        link, found = pair_link(topology, a, b, NEEDS["jaccl-ring" if ring else "jaccl"])
        if link is None:
            on_cables += found
            continue
        matrix[i][j], matrix[j][i] = rdma_device(topology, link, a), rdma_device(topology, link, b)
    if on_nodes or on_cables:
        # The nodes' own blockers first: a cable between two nodes RDMA cannot use says little more.
        return JacclMatrix(None, describe(on_nodes or on_cables), tuple(on_nodes + on_cables))
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
    return None
