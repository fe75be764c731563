"""Rank 0 first: which of an attempt's ranks may be ordered to start now.

jaccl, jaccl-ring and nccl ranks meet at a rendezvous that rank 0 serves (MLX_JACCL_COORDINATOR,
or NCCL_HOST_IP:NCCL_PORT) and every other rank dials. MLX gives a JACCL rank four tries, 1, 2,
4 and 8 s apart (about 15 s), then fails it ("[jaccl] Couldn't connect"); NCCL retries every
0.5 s for 5 minutes (MLX_NCCL_TIMEOUT) but only while the connection is refused. A rank 0 whose
agent is slow (fetching the job's workdir, or its long-poll answered late) would fail the job, so
the other ranks' orders wait until rank 0's process exists: its agent reported it running (its
port checked, its folder filled), or it already exited. The job's start_timeout_s still bounds
the whole start. ring and mpi have no such rendezvous: all their ranks start at once.

Pure: the store is read by orders.py, and ingest.py wakes the nodes when rank 0 starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar

from shared.backends import RENDEZVOUS
from shared.status import RankStatus

STARTED = frozenset({RankStatus.RUNNING, RankStatus.EXITED})  # its process exists, or existed


class RankLike(Protocol):
    rank: int
    state: str


R = TypeVar("R", bound=RankLike)


def may_start(backend: str, waiting: Sequence[R], everyone: Iterable[RankLike]) -> list[R]:
    """Of `waiting` (ranks of one attempt not yet ordered to start), those that may be now:
    all of them, except that for a RENDEZVOUS backend the ranks other than 0 (on rank 0's node
    too) wait until rank 0 of `everyone` (the whole attempt) has started."""
    if backend not in RENDEZVOUS:
        return list(waiting)
    rank0 = next((r for r in everyone if r.rank == 0), None)
    if rank0 is None or rank0.state in STARTED:  # no rank 0 stored: nothing to wait for
        return list(waiting)
    return [r for r in waiting if r.rank == 0]


def releases_others(backend: str, rank: int, before: str, after: str) -> bool:
    """Whether rank `rank` moving from state `before` to `after` lets ranks that may_start held
    back start now: rank 0 of a RENDEZVOUS backend, started for the first time."""
    return backend in RENDEZVOUS and rank == 0 and before not in STARTED and after in STARTED
