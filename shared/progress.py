"""Progress lines (docs/progress.md): ``JUPITER_PROGRESS {json}`` on a rank's own stdout line.

A training script calls `report` (one line, flushed); the agent/coordinator calls `parse` on every
output line and feeds the records it gets into a `ProgressTracker` (shared/progress_tracker.py). A line that does not parse is
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

What the coordinator keeps of the records, per job, is shared/progress_tracker.py.
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
MAX_KEY_CHARS = 64     # a name, not a sentence
MAX_TEXT_CHARS = 256   # a string value: a phase, a file name, a short status line

log = logging.getLogger("jupiter.progress")


class _Bad(Exception):
    pass


_INT_LIMIT = 2**63  # integers must fit SQLite's signed 64-bit range


def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and -_INT_LIMIT < v < _INT_LIMIT


def is_number(v: object) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    return is_int(v)


def clean_record(obj: object) -> dict[str, Any] | None:
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
            if value is not None and not (is_int(value) and value >= 0):
                return None
        elif key in FLOAT_KEYS:
            if value is not None and not is_number(value):
                return None
        elif isinstance(value, str):
            value = value[:MAX_TEXT_CHARS]
        elif value is None or isinstance(value, bool) or is_number(value):
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
    return clean_record(obj)


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
        if value is not None and not (is_int(value) and value >= 0):
            raise ValueError(f"report(): {key} must be an integer >= 0, got {value!r}")
    elif key in FLOAT_KEYS and value is not None and not is_number(value):
        raise ValueError(f"report(): {key} must be a number, got {value!r}")
    elif isinstance(value, int) and not isinstance(value, bool) and not is_int(value):
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
