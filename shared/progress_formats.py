"""Progress read out of rank output in the formats Jupiter knows (docs/progress.md).

A job's `progress_format` picks the readers: `jupiter` reads Jupiter's own `JUPITER_PROGRESS {json}`
lines (shared.progress), `mlx-lm` reads what `mlx_lm lora` prints, `auto` tries Jupiter's first and
then mlx-lm's, `none` reads nothing. Every reader turns one output line into the record
`ProgressTracker.feed` takes, or None: a line that is not a report is log text, never an error.

mlx-lm prints its reports in one of two shapes:

- up to 0.31 (the "classic" lines)::

    Iter 20: Train loss 2.345, Learning Rate 1.000e-05, It/sec 1.234, Tokens/sec 567.8, Trained Tokens 9000, ...
    Iter 20: Val loss 2.101, Val took 0.512s

- from 0.32, a table, coloured even into a pipe (colour codes are dropped before reading)::

      iter   train_loss     tok/s     tokens
         1    val 4.271    0.02s
        20    2.345 ▼    1,516      3.8k

The table rows are bare numbers, which other programs print too, so they are read only when the
job's command names mlx_lm (`python -m mlx_lm lora ...`, `mlx_lm.lora ...`) or the job says
`mlx-lm`. The classic lines are distinctive enough to be read under `auto` from any command. The
total is the command's `--iters N` (or `--iters=N`), mlx-lm's own flag, when it has one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from shared.progress import PREFIX, parse as parse_jupiter
from shared.text import shown

Record = dict[str, Any]
Reader = Callable[[str], "Record | None"]
FORMATS = ("auto", "jupiter", "mlx-lm", "none")
# An mlx-lm report is well under 200 characters as shown, a few hundred with the colour codes and
# the progress bar it overwrites; a longer line is never one, and the patterns never see more.
MAX_RAW_CHARS = 4096
MAX_REPORT_CHARS = 512
MAX_STEP = 2**63 - 1  # what the tracker (and SQLite) can hold

_NUM = r"[-+]?(?:\d[\d,]{0,40}(?:\.\d{0,40})?(?:[eE][-+]?\d{1,4})?|nan|inf)"
_CLASSIC_RE = re.compile(rf"Iter (\d{{1,19}}): (Train|Val) loss ({_NUM})(?:, (.*))?", re.ASCII)
_CLASSIC_FIELD_RE = re.compile(rf"([A-Za-z][A-Za-z/ ]{{0,30}}?) ({_NUM})(?: ?[A-Za-z]{{0,4}})?", re.ASCII)
# Classic fields kept besides the loss, under the names Jupiter's own trainers use.
_CLASSIC_KEYS = {"Learning Rate": "learning_rate", "Tokens/sec": "tokens_per_s", "Trained Tokens": "trained_tokens",
                 "Peak mem": "peak_memory_gb"}
_TABLE_TRAIN_RE = re.compile(rf"\s*(\d{{1,19}})\s+({_NUM})\s*[▼▲]?\s+({_NUM})\s+{_NUM}k\s*", re.ASCII)
_TABLE_VAL_RE = re.compile(rf"\s*(\d{{1,19}})\s+val\s+({_NUM})\s+{_NUM}s\s*", re.ASCII)


def _number(text: str) -> float | None:
    """A finite float from mlx-lm's text ("1,516", "4.271", "nan"), None otherwise."""
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _report_text(line: str) -> str:
    """`line` as shown, or "" when it is too long to be a report."""
    if len(line) > MAX_RAW_CHARS:
        return ""
    text = shown(line)
    return text if len(text) <= MAX_REPORT_CHARS else ""


def _step(text: str) -> int | None:
    value = int(text)
    return value if value <= MAX_STEP else None


def _with_total(record: Record | None, total: int | None) -> Record | None:
    if record is not None and total is not None:
        record.setdefault("total_steps", total)
    return record


def read_jupiter(line: str) -> Record | None:
    """Jupiter's own `JUPITER_PROGRESS {json}` line (shared.progress.parse)."""
    return parse_jupiter(line) if line.startswith(PREFIX) else None


def read_classic(line: str) -> Record | None:
    """mlx-lm's `Iter N: Train loss ...` and `Iter N: Val loss ...` lines (up to 0.31)."""
    if "Iter " not in line:
        return None
    m = _CLASSIC_RE.fullmatch(_report_text(line).strip())
    if m is None:
        return None
    step = _step(m.group(1))
    if step is None:
        return None
    loss = _number(m.group(3))
    if m.group(2) == "Val":
        return {"step": step, "eval_loss": loss}
    record: Record = {"step": step, "loss": loss}
    for part in (m.group(4) or "").split(", "):
        f = _CLASSIC_FIELD_RE.fullmatch(part)
        key = _CLASSIC_KEYS.get(f.group(1)) if f else None
        value = _number(f.group(2)) if key else None
        if value is not None:
            record[key] = int(value) if key == "trained_tokens" and value.is_integer() else value
    return record


def read_table(line: str) -> Record | None:
    """A row of mlx-lm's report table (0.32 on): a training row or a `val` row."""
    text = _report_text(line)
    if text.lstrip()[:1] not in "0123456789" or not text.strip():  # the header, the bar, most text
        return None
    m = _TABLE_TRAIN_RE.fullmatch(text)
    if m is not None:
        step = _step(m.group(1))
        return None if step is None else {"step": step, "loss": _number(m.group(2)),
                                          "tokens_per_s": _number(m.group(3))}
    m = _TABLE_VAL_RE.fullmatch(text)
    if m is not None:
        step = _step(m.group(1))
        return None if step is None else {"step": step, "eval_loss": _number(m.group(2))}
    return None


def read_mlx_lm(line: str) -> Record | None:
    """Either shape of mlx-lm's reports."""
    return read_classic(line) or read_table(line)


def iters_of(command: Sequence[str] | None) -> int | None:
    """N of `--iters N` / `--iters=N` in `command` (the last one given, as argparse takes it)."""
    found = None
    args = list(command or [])
    for i, arg in enumerate(args):
        if arg == "--iters" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--iters="):
            value = arg[len("--iters="):]
        else:
            continue
        if value.isascii() and value.isdigit() and len(value) <= 19 and int(value) <= MAX_STEP:
            found = int(value)
    return found


def runs_mlx_lm(command: Sequence[str] | None) -> bool:
    """True when the command names mlx_lm (`-m mlx_lm lora`, `mlx_lm.lora`, a path into it)."""
    return any("mlx_lm" in arg for arg in command or ())


def _nothing(line: str) -> None:
    return None


def reader_for(progress_format: str | None, command: Sequence[str] | None) -> Reader:
    """The reader of one job's output lines: line -> record or None (see the module notes).
    Cheap to build; an unknown format reads like `auto`."""
    if progress_format == "none":
        return _nothing
    if progress_format == "jupiter":
        return read_jupiter
    total = iters_of(command)
    if progress_format == "mlx-lm":
        return lambda line: _with_total(read_mlx_lm(line), total)
    mlx_reader = read_mlx_lm if runs_mlx_lm(command) else read_classic

    def auto(line: str) -> Record | None:
        record = read_jupiter(line)
        return record if record is not None else _with_total(mlx_reader(line), total)

    return auto
