"""shared.progress: the JUPITER_PROGRESS line protocol and the per-job tracker."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared import progress
from shared.progress import parse, report
from shared.progress_tracker import ProgressTracker

# --------------------------------------------------------------------------- parse


@pytest.mark.parametrize("line, expected", [
    ('JUPITER_PROGRESS {"step": 120, "total_steps": 400, "epoch": 1, "loss": 2.31, "tokens_per_s": 5400}',
     {"step": 120, "total_steps": 400, "epoch": 1, "loss": 2.31, "tokens_per_s": 5400}),
    ('JUPITER_PROGRESS {"step":1}\n', {"step": 1}),
    ('JUPITER_PROGRESS {"step":1}\r\n', {"step": 1}),
    ('JUPITER_PROGRESS {}', {}),
    ('JUPITER_PROGRESS {"loss": null, "eta_s": 12.5, "eval_loss": 3}', {"loss": None, "eta_s": 12.5, "eval_loss": 3}),
    ('JUPITER_PROGRESS {"step": 0, "lr": 0.001, "phase": "warmup", "ok": true, "note": null}',
     {"step": 0, "lr": 0.001, "phase": "warmup", "ok": True, "note": None}),
    # non-scalar extras are dropped, the line is kept
    ('JUPITER_PROGRESS {"step": 3, "shape": [1, 2], "cfg": {"a": 1}}', {"step": 3}),
    ('JUPITER_PROGRESS {"step": 3, "big": 1e400}', {"step": 3}),
])
def test_parse_good_lines(line, expected):
    assert parse(line) == expected


@pytest.mark.parametrize("line", [
    "",
    "epoch 1 loss 2.3",
    "JUPITER_PROGRESS",
    "JUPITER_PROGRESS ",
    'JUPITER_PROGRESS{"step": 1}',
    ' JUPITER_PROGRESS {"step": 1}',             # leading whitespace: a quotation, not a report
    '\tJUPITER_PROGRESS {"step": 1}',
    'jupiter_progress {"step": 1}',
    'INFO JUPITER_PROGRESS {"step": 1}',
    'JUPITER_PROGRESS {"step": 1',               # garbled
    'JUPITER_PROGRESS {"step": 1} trailing',
    'JUPITER_PROGRESS [1, 2]',                   # not an object
    'JUPITER_PROGRESS "text"',
    'JUPITER_PROGRESS 42',
    'JUPITER_PROGRESS null',
    'JUPITER_PROGRESS {"step": -1}',
    'JUPITER_PROGRESS {"step": 1.5}',
    'JUPITER_PROGRESS {"step": 2.0}',
    'JUPITER_PROGRESS {"step": "10"}',
    'JUPITER_PROGRESS {"step": true}',
    'JUPITER_PROGRESS {"epoch": [1]}',
    'JUPITER_PROGRESS {"total_steps": 1e3}',
    'JUPITER_PROGRESS {"step": 99999999999999999999999}',
    'JUPITER_PROGRESS {"loss": "2.3"}',
    'JUPITER_PROGRESS {"loss": NaN}',
    'JUPITER_PROGRESS {"loss": Infinity}',
    'JUPITER_PROGRESS {"loss": -Infinity}',
    'JUPITER_PROGRESS {"loss": 1e999}',
    'JUPITER_PROGRESS {"tokens_per_s": false}',
    'JUPITER_PROGRESS {"eta_s": {}}',
    'JUPITER_PROGRESS {"extra": NaN}',           # a NaN token anywhere makes the JSON invalid
    'JUPITER_PROGRESS {"step": 1}\n\n',
    'JUPITER_PROGRESS {"step": 1}\nJUPITER_PROGRESS {"step": 2}',
    'JUPITER_PROGRESS ' + "[" * 5000 + "]" * 5000,
    'JUPITER_PROGRESS {"note": "' + "x" * 9000 + '"}',  # over 8 KiB
    'JUPITER_PROGRESS {"note": "' + "\u00e9" * 4200 + '"}',  # over 8 KiB in UTF-8, not in characters
    'JUPITER_PROGRESS {"n": ' + "9" * 5000 + "}",
])
def test_parse_rejects_everything_else(line):
    assert parse(line) is None


def test_parse_rejects_non_strings():
    assert parse(None) is None  # type: ignore[arg-type]
    assert parse(b'JUPITER_PROGRESS {"step": 1}') is None  # type: ignore[arg-type]


def test_a_line_just_under_the_cap_parses():
    head = 'JUPITER_PROGRESS {"note": "'
    line = head + "x" * (progress.MAX_LINE_BYTES - len(head) - 2) + '"}'
    assert len(line.encode()) == progress.MAX_LINE_BYTES
    assert parse(line + "\n") is not None
    assert parse(line[:-2] + 'x"}') is None


# --------------------------------------------------------------------------- report


def test_report_prints_one_compact_line_that_parses_back():
    buf = io.StringIO()
    report(step=120, total_steps=400, epoch=1, loss=2.31, tokens_per_s=5400, phase="train", file=buf)
    text = buf.getvalue()
    assert text == 'JUPITER_PROGRESS {"step":120,"total_steps":400,"epoch":1,"loss":2.31,"tokens_per_s":5400,"phase":"train"}\n'
    assert parse(text) == {"step": 120, "total_steps": 400, "epoch": 1, "loss": 2.31, "tokens_per_s": 5400,
                           "phase": "train"}


def test_report_maps_nan_and_inf_to_null_and_omits_none():
    buf = io.StringIO()
    report(step=5, loss=float("nan"), eval_loss=float("inf"), tokens_per_s=float("-inf"), file=buf)
    assert buf.getvalue() == 'JUPITER_PROGRESS {"step":5,"loss":null,"eval_loss":null,"tokens_per_s":null}\n'
    assert parse(buf.getvalue()) == {"step": 5, "loss": None, "eval_loss": None, "tokens_per_s": None}
    buf = io.StringIO()
    report(file=buf)
    assert buf.getvalue() == "JUPITER_PROGRESS {}\n"


def test_report_escapes_newlines_so_the_line_stays_one_line():
    buf = io.StringIO()
    report(step=1, note="two\nlines\r", file=buf)
    assert buf.getvalue().count("\n") == 1
    assert parse(buf.getvalue()) == {"step": 1, "note": "two\nlines\r"}


def test_report_accepts_scalar_objects_with_item():
    class Scalar:  # what numpy scalars and one-element MLX arrays look like
        def __init__(self, v):
            self.v = v

        def item(self):
            return self.v

    buf = io.StringIO()
    report(step=Scalar(7), loss=Scalar(1.25), file=buf)
    assert parse(buf.getvalue()) == {"step": 7, "loss": 1.25}


def test_report_accepts_real_mlx_scalars():
    mx = pytest.importorskip("mlx.core")
    buf = io.StringIO()
    report(step=3, loss=mx.array(0.5), file=buf)
    assert parse(buf.getvalue()) == {"step": 3, "loss": 0.5}


@pytest.mark.parametrize("kwargs, exc", [
    ({"step": -1}, ValueError),
    ({"step": 1.5}, ValueError),
    ({"step": True}, ValueError),
    ({"step": "3"}, ValueError),
    ({"loss": "low"}, ValueError),
    ({"loss": [1.0]}, TypeError),
    ({"cfg": {"a": 1}}, TypeError),
    ({"n": 10**30}, ValueError),
    ({"note": "x" * 9000}, ValueError),
])
def test_report_refuses_what_parse_would_drop(kwargs, exc):
    buf = io.StringIO()
    with pytest.raises(exc):
        report(file=buf, **kwargs)
    assert buf.getvalue() == ""


def test_report_defaults_to_stdout_and_flushes():
    code = "from shared.progress import report; report(step=1, loss=0.5); import os; os._exit(0)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=str(Path(__file__).resolve().parents[2]))
    # os._exit skips interpreter shutdown, so the line is there only because report() flushed
    assert out.stdout == 'JUPITER_PROGRESS {"step":1,"loss":0.5}\n', out.stderr


# --------------------------------------------------------------------------- tracker


def test_tracker_history_follows_rank_0_and_latest_prefers_it():
    t = ProgressTracker()
    t.feed(1, {"step": 1, "loss": 9.0, "tokens_per_s": 100})
    t.feed(0, {"step": 1, "loss": 5.0, "total_steps": 10})
    t.feed(1, {"step": 2, "loss": 8.0})
    t.feed(0, {"step": 2, "loss": 4.0})
    t.feed(2, {"gpu_temp": 61})
    assert t.history == [(1, 5.0), (2, 4.0)]
    assert t.history_rank == 0
    assert t.latest == {"step": 2, "loss": 4.0, "total_steps": 10, "tokens_per_s": 100, "gpu_temp": 61}


def test_tracker_history_from_the_only_reporter_when_rank_0_is_silent():
    t = ProgressTracker()
    assert t.history == [] and t.latest == {} and t.history_rank is None
    t.feed(3, {"step": 10, "loss": 2.0})
    t.feed(3, {"step": 20, "loss": 1.5})
    assert t.history == [(10, 2.0), (20, 1.5)] and t.history_rank == 3
    assert t.latest == {"step": 20, "loss": 1.5}
    # once rank 0 reports losses, its history is the one shown
    t.feed(0, {"step": 21, "loss": 1.4})
    assert t.history == [(21, 1.4)] and t.history_rank == 0


def test_tracker_without_steps_numbers_the_losses():
    t = ProgressTracker()
    for loss in (3.0, 2.0, 1.0):
        t.feed(1, {"loss": loss})
    assert t.history == [(0, 3.0), (1, 2.0), (2, 1.0)]
    assert all(isinstance(s, int) for s, _ in t.history)


def test_tracker_uses_the_ranks_last_step_and_replaces_a_repeated_step():
    t = ProgressTracker()
    t.feed(0, {"step": 4})
    t.feed(0, {"loss": 3.0})                 # no step in the record: the rank's last step
    t.feed(0, {"step": 4, "loss": 2.5})      # same step again: replaced, not appended
    t.feed(0, {"step": 5, "loss": None})     # a null loss (e.g. NaN) is no point
    t.feed(0, {"step": 6, "loss": 2})
    assert t.history == [(4, 2.5), (6, 2.0)]
    assert t.latest["loss"] == 2 and t.latest["step"] == 6


def test_tracker_refuses_bad_input():
    t = ProgressTracker()
    with pytest.raises(ValueError):
        t.feed(-1, {"step": 1})
    with pytest.raises(ValueError):
        t.feed(0, {"step": "one"})
    with pytest.raises(ValueError):
        t.feed(0, ["step", 1])  # type: ignore[arg-type]


def test_downsampling_keeps_first_and_last_and_stays_even():
    t = ProgressTracker(max_points=100)
    n = 10_000
    for i in range(n):
        t.feed(0, {"step": i, "loss": 1.0 / (i + 1)})
        assert len(t.history) <= 100
    h = t.history
    assert h[0] == (0, 1.0)
    assert h[-1] == (n - 1, 1.0 / n)
    assert len(h) >= 50
    steps = [s for s, _ in h[:-1]]
    gaps = {b - a for a, b in zip(steps, steps[1:])}
    assert len(gaps) == 1  # one stride from start to end, not a dense tail
    assert steps == sorted(steps)


@pytest.mark.parametrize("n", range(1, 40))
def test_the_newest_point_is_always_last(n):
    t = ProgressTracker(max_points=8)
    for i in range(n):
        t.feed(0, {"step": i, "loss": float(i)})
    assert t.history[0] == (0, 0.0) and t.history[-1] == (n - 1, float(n - 1))
    assert len(t.history) <= 8


def test_tracker_round_trips_through_json():
    t = ProgressTracker(max_points=16)
    for i in range(100):
        t.feed(0, {"step": i, "loss": 10.0 - i / 10, "epoch": i // 50})
    t.feed(1, {"tokens_per_s": 123.5, "host": "mini"})
    stored = json.loads(json.dumps(t.to_dict(), allow_nan=False))
    assert stored["latest"] == t.latest and [tuple(p) for p in stored["history"]] == t.history
    back = ProgressTracker.from_dict(stored)
    assert back.latest == t.latest and back.history == t.history and back.history_rank == 0
    for i in range(100, 200):  # keeps downsampling the same way after a restore
        t.feed(0, {"step": i, "loss": 1.0})
        back.feed(0, {"step": i, "loss": 1.0})
    assert back.history == t.history and back.to_dict() == t.to_dict()


def test_tracker_round_trip_with_only_a_fallback_reporter():
    t = ProgressTracker()
    t.feed(2, {"step": 1, "loss": 1.0})
    back = ProgressTracker.from_dict(json.loads(json.dumps(t.to_dict())))
    assert back.history == [(1, 1.0)] and back.history_rank == 2
    back.feed(2, {"step": 2, "loss": 0.5})
    assert back.history == [(1, 1.0), (2, 0.5)]


def test_from_an_empty_dict_is_a_fresh_tracker():
    t = ProgressTracker.from_dict({})
    assert t.latest == {} and t.history == []


@pytest.mark.parametrize("bad", [
    {"step": 1}, {"version": 2}, {"version": 1}, {"version": 1, "state": {"by_rank": {"0": {"step": -1}}}},
    {"version": 1, "state": {"by_rank": {"x": {}}, "rank0": {}, "fallback": {}}},
    "not a dict",
])
def test_from_dict_refuses_junk(bad):
    with pytest.raises(ValueError):
        ProgressTracker.from_dict(bad)  # type: ignore[arg-type]


def test_parse_then_feed_end_to_end():
    lines = io.StringIO()
    for step in range(3):
        report(step=step, total_steps=3, loss=1.0 - step / 10, file=lines)
        lines.write(f"ordinary log text at step {step}\n")
    t = ProgressTracker()
    for line in lines.getvalue().splitlines(keepends=True):
        rec = parse(line)
        if rec is not None:
            t.feed(0, rec)
    assert t.history == [(0, 1.0), (1, 0.9), (2, 0.8)]
    assert t.latest == {"step": 2, "total_steps": 3, "loss": 0.8}


@pytest.mark.parametrize("progress_format", ["auto", "jupiter"])
def test_the_job_readers_take_jupiters_lines_exactly_as_parse_does(progress_format):
    """However a job reads its output (shared.progress_formats), a Jupiter line means what parse says."""
    from shared.progress_formats import reader_for
    from shared.text import shown

    read = reader_for(progress_format, ["python", "-m", "mlx_lm", "lora", "--iters", "400"])
    lines = ['JUPITER_PROGRESS {"step": 120, "total_steps": 500, "loss": 2.31}', 'JUPITER_PROGRESS {"step": 3',
             '  JUPITER_PROGRESS {"step": 9}', 'JUPITER_PROGRESS {"step": -1}', "ordinary log text"]
    for line in lines:
        assert read(shown(line)) == parse(line), line
