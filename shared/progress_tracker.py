"""What the coordinator keeps of a job's progress records (shared/progress.py parses the lines):
the latest values, rank 0's loss history and each rank's recent speed.

A tracker keeps at most `MAX_EXTRA_KEYS` distinct other keys per job, the first ones reported; later
new ones are dropped (and the first drop is logged once). Its loss history holds at most
`DEFAULT_MAX_POINTS` points, however long the run, and each rank's speed series (`RANK_KEYS`) its last
`SERIES_POINTS` reports.
"""

from __future__ import annotations

import logging
from typing import Any

from shared.progress import FLOAT_KEYS, INT_KEYS, MAX_KEY_CHARS, clean_record, is_int, is_number

# Loss points kept per job, spread evenly over the whole run: enough for a smooth chart at any
# width a screen has, and a few tens of KiB in GET /jobs/{id}.
DEFAULT_MAX_POINTS = 2000
# Keys beyond the known ones: a training script reports a handful (lr, grad_norm, phase...). 64 is
# far above that and keeps a job's progress under ~25 KiB in GET /jobs, which the dashboard polls
# every few seconds, whatever a rank prints.
MAX_EXTRA_KEYS = 64
# Each rank's own: seconds of its own work per step, and its fraction of the global batch. They
# describe one rank, never the job, so only the history rank's (rank 0 by default) reach `latest`.
RANK_KEYS = ("step_time_s", "share")
# Reports per rank kept for the straggler check (coordinator/stragglers.py reads the last 5): a
# few more than it needs, and still under 100 KiB stored for a thousand ranks.
SERIES_POINTS = 10
MAX_RANKS = 4096       # a job has at most this many ranks (JobSpec)

log = logging.getLogger("jupiter.progress")

class _History:
    """(step, loss) points, at most `max_points`, covering the whole run.

    Points are kept on a stride (1, then 2, 4, ...): when the kept points reach the cap, every other
    one is dropped and the stride doubles, so the spacing stays even from start to end. The newest
    point is always kept too, as a tail, even when it is off the stride."""

    def __init__(self, max_points: int = DEFAULT_MAX_POINTS) -> None:
        if not is_int(max_points) or max_points < 4:
            raise ValueError("max_points must be an integer >= 4")
        self.max_points = max_points
        self.points: list[tuple[int, float]] = []
        self.tail: tuple[int, float] | None = None
        self.stride = 1
        self.count = 0

    def add(self, step: int, loss: float) -> None:
        point = (step, loss)
        last = self.tail if self.tail is not None else (self.points[-1] if self.points else None)
        if last is not None and last[0] == step:
            # the same step reported again: keep the newer value, do not count a new point
            if self.tail is not None:
                self.tail = point
            else:
                self.points[-1] = point
            return
        index = self.count
        self.count += 1
        if index % self.stride:
            self.tail = point
            return
        self.points.append(point)
        self.tail = None
        if len(self.points) >= self.max_points:
            last_kept_odd = (len(self.points) - 1) % 2 == 1
            self.points = self.points[::2]
            self.stride *= 2
            if last_kept_odd:
                self.tail = point

    def as_list(self) -> list[tuple[int, float]]:
        return self.points + ([self.tail] if self.tail is not None else [])

    def to_dict(self) -> dict[str, Any]:
        return {"points": [list(p) for p in self.points], "tail": list(self.tail) if self.tail is not None else None,
                "stride": self.stride, "count": self.count}

    @classmethod
    def from_dict(cls, data: dict[str, Any], max_points: int) -> _History:
        h = cls(max_points)
        h.points = [_point(p) for p in data.get("points", [])]
        tail = data.get("tail")
        h.tail = _point(tail) if tail is not None else None
        h.stride = int(data.get("stride", 1))
        h.count = int(data.get("count", len(h.points)))
        if h.stride < 1 or h.count < 0:
            raise ValueError("bad history")
        while len(h.points) >= max_points:  # stored with a larger cap
            h.points = h.points[::2]
            h.stride *= 2
        return h


def _positive(v: object) -> bool:
    return is_number(v) and v > 0


def _rank(r: Any) -> int:
    rank = int(r)
    if rank < 0:
        raise ValueError(f"bad rank {r!r}")
    return rank


def _sample(p: Any) -> tuple[int | None, float, float | None]:
    step, took, share = p
    if not ((step is None or (is_int(step) and step >= 0)) and _positive(took)
            and (share is None or (_positive(share) and share <= 1))):
        raise ValueError(f"bad rank sample {p!r}")
    return (step, float(took), None if share is None else float(share))


def _point(p: Any) -> tuple[int, float]:
    step, loss = p
    if not (is_int(step) and step >= 0 and is_number(loss)):
        raise ValueError(f"bad history point {p!r}")
    return (step, float(loss))


class ProgressTracker:
    """The progress of one job: the latest values and a loss history.

    - `latest`: every rank's records merged in arrival order per rank; where ranks disagree, the
      primary rank's values win (rank 0 if it has reported, else the first rank that reported).
      The `RANK_KEYS` are the history rank's only (rank 0's while no rank reported a loss).
    - `rank_series()` / `rank_latest()`: each rank's own speed reports, for per-rank progress and
      stragglers (docs/progress.md#per-rank).
    - `history`: ``(step, loss)`` points from rank 0; if rank 0 has no loss points, those of the
      first other rank that reported a loss (in the usual case, the only reporter). A record with a
      loss but no step uses that rank's latest known step; a rank that never gave a step gets the
      number of losses it reported before (0, 1, 2, ...), so every point's step is an int.
    """

    def __init__(self, max_points: int = DEFAULT_MAX_POINTS, label: str = "a job") -> None:
        self._max = max_points
        self.label = label  # who the tracker follows, for the log
        self._extra_keys: set[str] = set()  # the other keys admitted, first come (MAX_EXTRA_KEYS)
        self.dropped_keys = 0
        self._by_rank: dict[int, dict[str, Any]] = {}
        self._first_rank: int | None = None  # first rank to report anything
        self._hist0 = _History(max_points)
        self._fallback_rank: int | None = None  # first non-zero rank to report a loss
        self._fallback = _History(max_points)
        self._series: dict[int, list[tuple[int | None, float, float | None]]] = {}  # rank -> its reports

    def feed(self, rank: int, record: dict[str, Any]) -> None:
        if not is_int(rank) or rank < 0:
            raise ValueError(f"rank must be an integer >= 0, got {rank!r}")
        clean = clean_record(record)
        if clean is None:
            raise ValueError(f"not a progress record: {record!r}")
        clean = self._admit(clean)
        merged = self._by_rank.setdefault(rank, {})
        merged.update(clean)
        if self._first_rank is None:
            self._first_rank = rank
        if _positive(clean.get("step_time_s")):
            self._add_sample(rank, merged)
        if clean.get("loss") is None:
            return
        if rank == 0:
            hist = self._hist0
        elif self._fallback_rank in (None, rank):
            self._fallback_rank = rank
            hist = self._fallback
        else:
            return
        step = merged.get("step")
        hist.add(hist.count if step is None else step, float(clean["loss"]))

    def _add_sample(self, rank: int, merged: dict[str, Any]) -> None:
        series = self._series.get(rank)
        if series is None:
            if len(self._series) >= MAX_RANKS:
                return
            series = self._series[rank] = []
        step = merged.get("step")
        share = merged.get("share")
        sample = (step, float(merged["step_time_s"]), float(share) if _positive(share) and share <= 1 else None)
        last = series[-1][0] if series else None
        if step is not None and last is not None:
            if step < last:
                series.clear()  # the rank went back: a restarted attempt, whose speed is another story
            elif step == last:
                series.pop()    # the same step reported again: the newer value counts
        series.append(sample)
        del series[:-SERIES_POINTS]

    def rank_series(self) -> dict[int, list[tuple[int | None, float, float | None]]]:
        """Each rank's last `SERIES_POINTS` reports of `step_time_s`, oldest first, as
        ``(step, step_time_s, share)``; share None where the rank gave none (or no valid one)."""
        return {r: list(s) for r, s in self._series.items()}

    def rank_latest(self) -> dict[int, tuple[int | None, float | None, float | None]]:
        """Each rank's latest ``(step, step_time_s, share)``, for every rank that reported any of
        them; a value the rank never gave is None."""
        out = {}
        for rank, merged in self._by_rank.items():
            step, took, share = merged.get("step"), merged.get("step_time_s"), merged.get("share")
            if step is None and took is None and share is None:
                continue
            out[rank] = (step if is_int(step) else None, float(took) if is_number(took) else None,
                         float(share) if is_number(share) else None)
        return out

    def _admit(self, record: dict[str, Any], quiet: bool = False) -> dict[str, Any]:
        """`record` without the other keys beyond the job's MAX_EXTRA_KEYS (the rank keys are known)."""
        out: dict[str, Any] = {}
        for key, value in record.items():
            if key in INT_KEYS or key in FLOAT_KEYS or key in RANK_KEYS or key in self._extra_keys:
                out[key] = value
            elif len(self._extra_keys) < MAX_EXTRA_KEYS:
                self._extra_keys.add(key)
                out[key] = value
            else:
                if not self.dropped_keys and not quiet:
                    log.warning("progress of %s: more than %d distinct keys reported; new keys (%r first) "
                                "are dropped", self.label, MAX_EXTRA_KEYS, key[:MAX_KEY_CHARS])
                self.dropped_keys += 1
        return out

    @property
    def history_rank(self) -> int | None:
        """The rank whose losses `history` shows (None before any loss arrived)."""
        if self._hist0.count:
            return 0
        return self._fallback_rank

    @property
    def history(self) -> list[tuple[int, float]]:
        if self._hist0.count:
            return self._hist0.as_list()
        return self._fallback.as_list()

    @property
    def latest(self) -> dict[str, Any]:
        primary = 0 if 0 in self._by_rank else self._first_rank
        owner = self.history_rank if self.history_rank is not None else 0  # whose RANK_KEYS count
        out: dict[str, Any] = {}
        for r in sorted(self._by_rank):
            if r != primary:
                out.update((k, v) for k, v in self._by_rank[r].items() if k not in RANK_KEYS)
        if primary is not None:
            out.update((k, v) for k, v in self._by_rank[primary].items() if k not in RANK_KEYS)
        out.update((k, v) for k, v in self._by_rank.get(owner, {}).items() if k in RANK_KEYS)
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot; `from_dict` restores it."""
        return {
            "version": 1,
            "max_points": self._max,
            "latest": self.latest,
            "history": [list(p) for p in self.history],
            "state": {
                "by_rank": {str(r): dict(v) for r, v in self._by_rank.items()},
                "first_rank": self._first_rank,
                "rank0": self._hist0.to_dict(),
                "fallback_rank": self._fallback_rank,
                "fallback": self._fallback.to_dict(),
                # An addition to version 1: a store without it (written before) loads with no
                # series, and a coordinator of that time ignores it.
                "series": {str(r): [list(p) for p in s] for r, s in self._series.items()},
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProgressTracker:
        """Restore a tracker from `to_dict` output (an empty dict gives a fresh tracker);
        ValueError if it is not one."""
        if data == {}:
            return cls()
        try:
            if data.get("version") != 1:
                raise ValueError(f"unknown progress version {data.get('version')!r}")
            t = cls(min(int(data.get("max_points", DEFAULT_MAX_POINTS)), DEFAULT_MAX_POINTS))
            state = data["state"]
            for r, rec in state["by_rank"].items():
                rank = int(r)
                clean = clean_record(rec)
                if rank < 0 or clean is None:
                    raise ValueError(f"bad record for rank {r!r}")
                t._by_rank[rank] = t._admit(clean, quiet=True)  # a store from before the quota is cut down too
            first, fb = state.get("first_rank"), state.get("fallback_rank")
            for v in (first, fb):
                if v is not None and not (is_int(v) and v >= 0):
                    raise ValueError("bad rank")
            t._first_rank, t._fallback_rank = first, fb
            t._hist0 = _History.from_dict(state["rank0"], t._max)
            t._fallback = _History.from_dict(state["fallback"], t._max)
            for r, points in list(state.get("series", {}).items())[:MAX_RANKS]:
                t._series[_rank(r)] = [_sample(p) for p in points][-SERIES_POINTS:]
            return t
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"not a stored progress tracker ({e})") from e
