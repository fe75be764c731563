"""The collectives a run needs besides the gradient average: rank 0's values to every rank
(built from `all_sum`, the one collective every MLX backend has), the plain sum of gradients
that unequal shares need, and telling a lost peer from other errors."""

from __future__ import annotations

import re
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten, tree_map, tree_unflatten

# What MLX's ring and MPI backends say when a peer process or its connection is gone.
PEER_LOST = re.compile(r"peer|connection|socket|closed|\[ring\]|\[mpi\]|\bmpi\b", re.IGNORECASE)

_CHUNK = 1 << 24  # tokens per all_sum while shipping the stream


def is_peer_loss(exc: BaseException, world: int) -> bool:
    return world > 1 and isinstance(exc, RuntimeError) and bool(PEER_LOST.search(str(exc)))


def broadcast_tree(tree: Any, group: mx.distributed.Group, rank: int) -> Any:
    """Rank 0's values of `tree` on every rank (all_sum of rank 0's arrays and zeros elsewhere)."""
    res = tree_map(lambda v: mx.distributed.all_sum(v if rank == 0 else mx.zeros_like(v), group=group), tree)
    mx.eval(res)
    return res  # the same nesting and key order as `tree` (reductions over the tree keep their order)


def broadcast_ints(values: list[int], group: mx.distributed.Group, rank: int) -> list[int]:
    x = mx.array(values if rank == 0 else [0] * len(values), dtype=mx.int64)
    return [int(v) for v in mx.distributed.all_sum(x, group=group).tolist()]


def broadcast_tokens(tokens: mx.array | None, n: int, group: mx.distributed.Group, rank: int) -> mx.array:
    """Rank 0's `n` uint16 tokens on every rank, in chunks (others pass None)."""
    parts = []
    for start in range(0, n, _CHUNK):
        m = min(_CHUNK, n - start)
        part = tokens[start:start + m] if rank == 0 else mx.zeros((m,), dtype=mx.uint16)
        part = mx.distributed.all_sum(part, group=group)
        mx.eval(part)
        parts.append(part)
    return mx.concatenate(parts) if len(parts) > 1 else (parts[0] if parts else mx.zeros((0,), mx.uint16))


def sum_gradients(grads: Any, group: mx.distributed.Group, bucket_bytes: int = 32 << 20) -> Any:
    """The all-sum of a gradient tree (the weighted shares' counterpart of
    `mlx.nn.average_gradients`, without its division)."""
    return tree_unflatten(all_sum_flat(tree_flatten(grads), group, bucket_bytes))


def all_sum_flat(flat: list[tuple[str, mx.array]], group: mx.distributed.Group,
                 bucket_bytes: int = 32 << 20) -> list[tuple[str, mx.array]]:
    """The all-sum of every array of a flattened tree: the arrays concatenated into buckets of
    about `bucket_bytes`, one all_sum per bucket, then split back. A small array appended last
    (the step's loss) rides in the last bucket instead of paying for a collective of its own."""
    out: list[tuple[str, mx.array]] = []
    i = 0
    while i < len(flat):
        j, size = i, 0
        while j < len(flat) and (j == i or size < bucket_bytes):
            size += flat[j][1].nbytes
            j += 1
        group_items = flat[i:j]
        big = mx.distributed.all_sum(mx.concatenate([g.reshape(-1) for _, g in group_items]), group=group)
        cuts = []
        at = 0
        for _, g in group_items[:-1]:
            at += g.size
            cuts.append(at)
        for (key, g), part in zip(group_items, mx.split(big, cuts) if cuts else [big], strict=True):
            out.append((key, part.reshape(g.shape)))
        i = j
    return out
