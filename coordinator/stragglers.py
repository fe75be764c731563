"""Stragglers: ranks persistently slower than the others, and the likely cause their node shows.

Pure functions over what the job's progress tracker keeps (`ProgressTracker.rank_series`: each
rank's last reports of ``(step, step_time_s, share)``) and each node's pressure facts
(`NodeOut.pressure`). No I/O; coordinator/jobs/views.py calls them for every view of a job.

A rank's speed is its work per second, ``share / step_time_s`` (a rank that gave no share has the
default, 1 / world size). A rank is a straggler when, in each of its last `PERSIST` reports, its
speed is more than `MARGIN` below the median speed of the other ranks. Each other rank counts with
the median of its last `WINDOW` reports, so one slow window of theirs does not move the reference.

Why these numbers:

- `MARGIN` 15 %: identical Macs on the same job differ by a few percent per reporting window
  (the batches differ, the OS wakes up now and then), while a Mac that throttles, swaps or
  shares its cores with another busy process loses 20-50 %. 15 % is clear of the first and
  below the second.
- Speed, not step time: the built-in trainer gives a slower rank a smaller share of the batch,
  so its steps take no longer than the others' and nobody waits for it. It is still the slower
  Mac (throttled, swapping, or simply older), which is what a user wants to see named, with the
  cause its facts show. A share rounded down to whole samples (10 % less at small batches) stays
  within the margin.
- `PERSIST` 3 reports in a row: a garbage collection, an evaluation or a checkpoint save on one
  rank slows one window, rarely three; a throttled Mac stays slow for minutes.

`slower_pct` is how much of the others' speed the rank lacks, over its last `PERSIST` reports:
30 means it does 70 % of the work per second the others do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from statistics import median
from typing import Any

from shared.schemas import Straggler

MARGIN = 0.15
PERSIST = 3
WINDOW = 5
# macOS keeps swap it once used: a few hundred MB is ordinary on a Mac that has been up for days.
# Above this, with a rank slowed down, the node was short of memory not long ago.
SWAP_GB = 2.0
NO_PRESSURE = "no pressure reported: a slower machine, or another process using its CPU"

Sample = tuple[int | None, float, float | None]  # (step, step_time_s, share), as the tracker keeps them


def _speeds(samples: Sequence[Sample], default_share: float) -> list[float]:
    return [(share if share is not None else default_share) / took for _, took, share in samples]


def slow_ranks(series: Mapping[int, Sequence[Sample]], world_size: int | None = None) -> dict[int, float]:
    """rank -> slower_pct, for every rank persistently slower than the others (see module notes).
    Ranks with no reports are left out of the comparison; it takes two ranks with reports."""
    series = {r: list(s) for r, s in series.items() if s}
    if len(series) < 2:
        return {}
    default_share = 1 / (world_size or len(series))
    speed = {r: median(_speeds(s[-WINDOW:], default_share)) for r, s in series.items()}
    out: dict[int, float] = {}
    for rank, samples in series.items():
        if len(samples) < PERSIST:
            continue
        ref_speed = median(v for r, v in speed.items() if r != rank)
        recent = samples[-PERSIST:]
        mine = _speeds(recent, default_share)
        if all(v < ref_speed * (1 - MARGIN) for v in mine):
            out[rank] = round(100 * (1 - median(mine) / ref_speed), 1)
    return out


def _get(pressure: Any, key: str) -> Any:
    """A pressure fact from a `Pressure` model or its JSON form."""
    if isinstance(pressure, Mapping):
        return pressure.get(key)
    return getattr(pressure, key, None)


def cause(pressure: Any) -> str:
    """The likely cause of a slow rank, from its node's pressure facts (None: none reported)."""
    if pressure is None:
        return NO_PRESSURE
    found = []
    thermal, limit = _get(pressure, "thermal"), _get(pressure, "cpu_speed_limit_pct")
    limited = isinstance(limit, (int, float)) and limit < 100
    if limited:
        found.append(f"thermal throttling (CPU speed limit {limit:g} %)")
    elif thermal in ("serious", "critical"):
        found.append(f"thermal throttling (thermal state {thermal})")
    memory = _get(pressure, "memory")
    if memory in ("warning", "critical"):
        found.append(f"memory pressure ({memory})")
    swap = _get(pressure, "swap_used_gb")
    if isinstance(swap, (int, float)) and swap > SWAP_GB:
        found.append(f"swapping ({swap:.1f} GB)")
    if not found and _get(pressure, "on_battery") is True:
        found.append("on battery power; another process may be using the CPU")
    return "; ".join(found) or NO_PRESSURE


def stragglers(series: Mapping[int, Sequence[Sample]], node_of: Callable[[int], str | None],
               pressure: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
               world_size: int | None = None) -> list[Straggler]:
    """The job's stragglers, slowest first. `node_of` names a rank's node; `pressure` holds each
    node's pressure facts by node name (or gives them when called, so the nodes are read only
    when some rank is slow); without it the cause is left null."""
    slow = slow_ranks(series, world_size)
    if not slow:
        return []
    facts = pressure() if callable(pressure) else pressure
    out = []
    for rank, pct in sorted(slow.items(), key=lambda kv: (-kv[1], kv[0])):
        node = node_of(rank)
        out.append(Straggler(rank=rank, node=node or "unknown", slower_pct=pct,
                             cause=None if facts is None else cause(facts.get(node) if node else None)))
    return out
