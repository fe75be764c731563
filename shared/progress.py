"""Progress lines (docs/progress.md): ``JUPITER_PROGRESS {json}`` on a rank's own stdout line.

A training script calls `report` (one line, flushed); the agent/coordinator calls `parse` on every
output line and feeds the records it gets into a `ProgressTracker`. A line that does not parse is
ordinary log text, never an error.

Rules of a well-formed line, as `parse` applies them:

- After removing one trailing ``\\n``/``\\r\\n``/``\\r``, the line holds no other line break and
  starts exactly with ``JUPITER_PROGRESS `` (one space). Leading whitespace is NOT allowed: an
  indented occurrence is a quotation (a traceback showing the ``report(...)`` source, a log that
  embeds the line), not a report.
- Without its terminator it is at most 8 KiB (UTF-8), and the rest is one JSON object (NaN/Infinity tokens are refused).
- Known keys have the right types, or are null (unknown): ``step``, ``total_steps``, ``epoch`` are
  integers >= 0; ``loss``, ``eval_loss``, ``tokens_per_s``, ``eta_s`` are finite numbers. Booleans
  are not numbers here. A wrong type rejects the whole line.
- Other keys are kept when their value is a scalar (string, finite number, boolean, null) and dropped
  otherwise (lists, objects, non-finite floats). A key longer than `MAX_KEY_CHARS` is dropped too,
  and a string value is cut to `MAX_TEXT_CHARS`.

A tracker keeps at most `MAX_EXTRA_KEYS` distinct other keys per job, the first ones reported; later
new ones are dropped (and the first drop is logged once). Its loss history holds at most
`DEFAULT_MAX_POINTS` points, however long the run.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from typing import Any, TextIO

PREFIX = "JUPITER_PROGRESS "
MAX_LINE_BYTES = 8 * 1024
INT_KEYS = ("step", "total_steps", "epoch")
FLOAT_KEYS = ("loss", "eval_loss", "tokens_per_s", "eta_s")
# Loss points kept per job, spread evenly over the whole run: enough for a smooth chart at any
# width a screen has, and a few tens of KiB in GET /jobs/{id}.
DEFAULT_MAX_POINTS = 2000
# Keys beyond the known ones: a training script reports a handful (lr, grad_norm, phase...). 64 is
# far above that and keeps a job's progress under ~25 KiB in GET /jobs, which the dashboard polls
# every few seconds, whatever a rank prints.
MAX_EXTRA_KEYS = 64
MAX_KEY_CHARS = 64     # a name, not a sentence
MAX_TEXT_CHARS = 256   # a string value: a phase, a file name, a short status line

log = logging.getLogger("jupiter.progress")


class _Bad(Exception):
    pass


_INT_LIMIT = 2**63  # integers must fit SQLite's signed 64-bit range


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and -_INT_LIMIT < v < _INT_LIMIT


def _is_number(v: object) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    return _is_int(v)


def _clean(obj: object) -> dict[str, Any] | None:
    """The validated record for a decoded JSON value, or None if it is not an acceptable one."""
    if not isinstance(obj, dict):
        return None
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            return None
        if len(key) > MAX_KEY_CHARS:
            continue
        if key in INT_KEYS:
            if value is not None and not (_is_int(value) and value >= 0):
                return None
        elif key in FLOAT_KEYS:
            if value is not None and not _is_number(value):
                return None
        elif isinstance(value, str):
            value = value[:MAX_TEXT_CHARS]
        elif value is None or isinstance(value, bool) or _is_number(value):
            pass
        else:
            continue  # a non-scalar (or non-finite) extra is dropped, the line is kept
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise _Bad(name)


def parse(line: str) -> dict[str, Any] | None:
    """The record of a well-formed progress line (see module notes), None for anything else."""
    if not isinstance(line, str) or len(line) > MAX_LINE_BYTES + 2:
        return None
    if line.endswith("\n"):
        line = line[:-1]
    if line.endswith("\r"):
        line = line[:-1]
    if not line.startswith(PREFIX) or "\n" in line or "\r" in line:
        return None  # one line: no second line break left after the terminator
    try:
        if len(line.encode("utf-8")) > MAX_LINE_BYTES:
            return None
        obj = json.loads(line[len(PREFIX):], parse_constant=_no_constants)
    except (_Bad, ValueError, RecursionError, UnicodeError):
        return None
    return _clean(obj)


def _scalar(key: str, value: Any) -> Any:
    """`value` as a plain JSON scalar; NaN/inf become None. Accepts numpy/MLX scalars via .item()."""
    if value is None or isinstance(value, (str, bool, int, float)):
        pass
    elif hasattr(value, "item"):
        try:
            value = value.item()
        except Exception as e:  # an array of more than one element, for instance
            raise TypeError(f"report(): {key} must be a number or a string, got {type(value).__name__}") from e
        if not (value is None or isinstance(value, (str, bool, int, float))):
            raise TypeError(f"report(): {key} must be a number or a string, got {type(value).__name__}")
    else:
        raise TypeError(f"report(): {key} must be a number or a string, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if key in INT_KEYS:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if value is not None and not (_is_int(value) and value >= 0):
            raise ValueError(f"report(): {key} must be an integer >= 0, got {value!r}")
    elif key in FLOAT_KEYS and value is not None and not _is_number(value):
        raise ValueError(f"report(): {key} must be a number, got {value!r}")
    elif isinstance(value, int) and not isinstance(value, bool) and not _is_int(value):
        raise ValueError(f"report(): {key} is too large an integer")
    return value


def format_line(step: Any = None, total_steps: Any = None, epoch: Any = None, loss: Any = None, **extra: Any) -> str:
    """The progress line `report` would print, without the newline. Arguments left as None are
    omitted; NaN/inf values are written as null."""
    given = {"step": step, "total_steps": total_steps, "epoch": epoch, "loss": loss, **extra}
    record = {k: _scalar(k, v) for k, v in given.items() if v is not None}
    line = PREFIX + json.dumps(record, separators=(",", ":"), allow_nan=False)
    if len(line.encode("utf-8")) > MAX_LINE_BYTES:
        raise ValueError(f"report(): the progress line would exceed {MAX_LINE_BYTES} bytes")
    return line


def report(step: Any = None, total_steps: Any = None, epoch: Any = None, loss: Any = None,
           file: TextIO | None = None, **extra: Any) -> None:
    """Print one progress line to `file` (default: the current sys.stdout) and flush it.

    >>> report(step=120, total_steps=400, epoch=1, loss=2.31, tokens_per_s=5400)
    JUPITER_PROGRESS {"step":120,"total_steps":400,"epoch":1,"loss":2.31,"tokens_per_s":5400}
    """
    line = format_line(step, total_steps, epoch, loss, **extra)
    out = sys.stdout if file is None else file
    out.write(line + "\n")  # one write, so concurrent output cannot split the line
    out.flush()


# --------------------------------------------------------------------------- tracking


class _History:
    """(step, loss) points, at most `max_points`, covering the whole run.

    Points are kept on a stride (1, then 2, 4, ...): when the kept points reach the cap, every other
    one is dropped and the stride doubles, so the spacing stays even from start to end. The newest
    point is always kept too, as a tail, even when it is off the stride."""

    def __init__(self, max_points: int = DEFAULT_MAX_POINTS) -> None:
        if not _is_int(max_points) or max_points < 4:
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


def _point(p: Any) -> tuple[int, float]:
    step, loss = p
    if not (_is_int(step) and step >= 0 and _is_number(loss)):
        raise ValueError(f"bad history point {p!r}")
    return (step, float(loss))


class ProgressTracker:
    """The progress of one job: the latest values and a loss history.

    - `latest`: every rank's records merged in arrival order per rank; where ranks disagree, the
      history rank's values win (rank 0 if it has reported, else the first rank that reported).
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

    def feed(self, rank: int, record: dict[str, Any]) -> None:
        if not _is_int(rank) or rank < 0:
            raise ValueError(f"rank must be an integer >= 0, got {rank!r}")
        clean = _clean(record)
        if clean is None:
            raise ValueError(f"not a progress record: {record!r}")
        clean = self._admit(clean)
        merged = self._by_rank.setdefault(rank, {})
        merged.update(clean)
        if self._first_rank is None:
            self._first_rank = rank
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

    def _admit(self, record: dict[str, Any], quiet: bool = False) -> dict[str, Any]:
        """`record` without the other keys beyond the job's MAX_EXTRA_KEYS."""
        out: dict[str, Any] = {}
        for key, value in record.items():
            if key in INT_KEYS or key in FLOAT_KEYS or key in self._extra_keys:
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
        out: dict[str, Any] = {}
        for r in sorted(self._by_rank):
            if r != primary:
                out.update(self._by_rank[r])
        if primary is not None:
            out.update(self._by_rank[primary])
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
                clean = _clean(rec)
                if rank < 0 or clean is None:
                    raise ValueError(f"bad record for rank {r!r}")
                t._by_rank[rank] = t._admit(clean, quiet=True)  # a store from before the quota is cut down too
            first, fb = state.get("first_rank"), state.get("fallback_rank")
            for v in (first, fb):
                if v is not None and not (_is_int(v) and v >= 0):
                    raise ValueError("bad rank")
            t._first_rank, t._fallback_rank = first, fb
            t._hist0 = _History.from_dict(state["rank0"], t._max)
            t._fallback = _History.from_dict(state["fallback"], t._max)
            return t
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"not a stored progress tracker ({e})") from e
