"""Progress read out of rank output (shared.progress_formats), over real recorded mlx-lm output.

The fixtures in tests/support/fixtures/mlx_lm/ are the exact bytes mlx-lm printed for a 6-step run
on tests/support/tinylm.py's model (--iters 6 --steps-per-report 2 --steps-per-eval 3): see the
README there for how each was recorded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.progress import format_line
from shared.progress_tracker import ProgressTracker
from shared.progress_formats import iters_of, read_classic, read_jupiter, read_table, reader_for, runs_mlx_lm
from shared.text import CONTROL_RE, shown

FIXTURES = Path(__file__).resolve().parents[1] / "support" / "fixtures" / "mlx_lm"
LORA = ["python", "-m", "mlx_lm", "lora", "--model", "m", "--train", "--data", "d", "--iters", "6"]


def lines_of(name: str) -> list[str]:
    """A fixture's lines as a rank runner passes them on: split at newlines only, mpirun's tag off."""
    lines = FIXTURES.joinpath(name).read_bytes().decode("utf-8").split("\n")
    if name.endswith("mpirun.txt"):
        lines = [ln.partition(">: ")[2] for ln in lines if ln.startswith("[1,")]
    return lines


def read_all(name: str, progress_format: str = "auto", command=LORA) -> list[dict]:
    read = reader_for(progress_format, command)
    return [rec for rec in (read(shown(line)) for line in lines_of(name)) if rec is not None]


def steps(records: list[dict]) -> list[tuple]:
    return [(r["step"], "eval" if "eval_loss" in r else "train") for r in records]


EXPECTED_STEPS = [(1, "eval"), (2, "train"), (3, "eval"), (4, "train"), (6, "eval"), (6, "train")]


# --------------------------------------------------------------------------- the recorded runs


@pytest.mark.parametrize("name", ["v0.32.2-piped.txt", "v0.32.2-pty.txt", "v0.32.2-mpirun.txt",
                                  "v0.32.2-tamed.txt"])
@pytest.mark.parametrize("progress_format", ["auto", "mlx-lm"])
def test_the_table_of_mlx_lm_0_32_is_read_however_it_was_printed(name, progress_format):
    records = read_all(name, progress_format)
    assert steps(records) == EXPECTED_STEPS
    assert all(r["total_steps"] == 6 for r in records)
    train = [r for r in records if "loss" in r]
    assert all(4.0 < r["loss"] < 5.0 and r["tokens_per_s"] > 0 for r in train)
    assert all(4.0 < r["eval_loss"] < 5.0 for r in records if "eval_loss" in r)
    if name != "v0.32.2-mpirun.txt":  # the same seed, one rank: the same losses
        assert [r["loss"] for r in train] == [4.317, 4.34, 4.475]


def test_the_classic_lines_of_mlx_lm_0_28_are_read():
    records = read_all("v0.28.0-classic.txt")
    assert steps(records) == EXPECTED_STEPS
    assert records[1] == {"step": 2, "loss": 4.318, "learning_rate": 1e-05, "tokens_per_s": 4381.756,
                          "trained_tokens": 92, "peak_memory_gb": 0.001, "total_steps": 6}
    assert records[0] == {"step": 1, "eval_loss": 4.271, "total_steps": 6}
    # read from any command under auto (they cannot be mistaken), without a total when none is given
    assert steps(read_all("v0.28.0-classic.txt", "auto", ["python", "train.py"])) == EXPECTED_STEPS
    assert "total_steps" not in read_all("v0.28.0-classic.txt", "auto", ["python", "train.py"])[0]


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.txt")))
def test_every_recorded_line_is_shown_without_control_characters(name):
    for line in lines_of(name):
        out = shown(line)
        assert not CONTROL_RE.search(out.replace("\t", "")), repr(out)
        assert len(out) <= len(line)


def test_a_redrawn_bar_keeps_what_the_terminal_finally_shows():
    assert shown("train 10%\rtrain 50%\r\x1b[2K\x1b[1A\x1b[2K     2    4.317 ▼    2,890      0.1k\r") == \
        "     2    4.317 ▼    2,890      0.1k"
    assert shown("\x1b[?25h") == ""
    assert shown("a\tb\x1b[31mred\x1b[0m\x07") == "a\tbred"
    assert shown("plain text") == "plain text"
    assert shown("one\ntwo") == "one two"  # a line is one line in the log, whoever sent it


def test_none_reads_nothing_and_jupiter_reads_only_its_own_lines():
    own = format_line(step=3, total_steps=9, loss=1.5)
    assert reader_for("none", LORA)(own) is None
    assert read_all("v0.32.2-piped.txt", "none") == []
    assert read_all("v0.32.2-piped.txt", "jupiter") == []
    assert read_all("v0.28.0-classic.txt", "jupiter") == []
    assert reader_for("jupiter", LORA)(own) == {"step": 3, "total_steps": 9, "loss": 1.5}
    assert reader_for("mlx-lm", LORA)(own) is None
    # auto: Jupiter's own line first, and its own total wins over --iters
    assert reader_for("auto", LORA)(own) == {"step": 3, "total_steps": 9, "loss": 1.5}


def test_table_rows_are_read_only_from_mlx_lm_under_auto():
    row = "     5    6.403 ▼    1,516      3.8k"
    other = ["python", "report.py", "--iters", "6"]
    assert reader_for("auto", other)(row) is None
    assert reader_for("mlx-lm", other)(row) == {"step": 5, "loss": 6.403, "tokens_per_s": 1516.0, "total_steps": 6}
    assert reader_for("auto", ["mlx_lm.lora", "--iters=6"])(row)["step"] == 5
    assert reader_for("auto", ["/v/bin/python", "-m", "mlx_lm", "lora"])(row) == \
        {"step": 5, "loss": 6.403, "tokens_per_s": 1516.0}
    assert read_all("v0.32.2-piped.txt", "auto", other) == []
    assert runs_mlx_lm(LORA) and not runs_mlx_lm(other) and not runs_mlx_lm(None)


@pytest.mark.parametrize("line", [
    "  iter   train_loss     tok/s     tokens",                    # the header
    "\x1b[1mtrain\x1b[0m # \x1b[1m100%\x1b[0m · \x1b[1m    6\x1b[0m/6",  # the bar
    "  save  0000100_adapters.safetensors",
    "Trainable parameters: 41.158% (0.008M/0.020M)",
    "     5    6.403 ▼    1,516",                                  # cut short
    "     5    6.403 ▼    1,516      3.8k   and more",
    "     5    six ▼    1,516      3.8k",
    "1 2 3 4",
    "",
    "   ",
    "\x00\x01\x02",
    "Iter 5: Train loss",
    "Iter x: Train loss 1.0",
    "Iter 4: Saved adapter weights to a/adapters.safetensors and a/0000004_adapters.safetensors.",
    "  Iter 5: Train loss 1.0 quoted",
    "JUPITER_PROGRESS {not json",
    "     5    6.403 ▼    1,516      3.8k" + " " * 600,            # longer than any report
    "Iter 5: Train loss 1.0, " + "x" * 5000,
    "\ufffd\ufffd garbage \udcff",
])
def test_anything_else_is_log_text(line):
    for progress_format in ("auto", "mlx-lm"):
        assert reader_for(progress_format, LORA)(line) is None, (progress_format, line)


def test_colour_codes_and_carriage_returns_are_read_through():
    coloured = ("  \x1b[38;5;244m   2\x1b[0m    \x1b[1;32m4.317 ▼\x1b[0m    \x1b[1m2,890\x1b[0m    "
                "\x1b[38;5;244m  0.1k\x1b[0m")
    assert read_table(coloured) == {"step": 2, "loss": 4.317, "tokens_per_s": 2890.0}
    assert read_table("bar\r\x1b[2K" + coloured + "\r") == {"step": 2, "loss": 4.317, "tokens_per_s": 2890.0}
    assert read_classic("\rCalculating loss...: 100%\rIter 3: Val loss 4.398, Val took 0.011s") == \
        {"step": 3, "eval_loss": 4.398}


def test_numbers_are_bounded_and_finite():
    assert read_table("     7      nan ▲    1,516      3.8k") == {"step": 7, "loss": None, "tokens_per_s": 1516.0}
    assert read_table("     7      inf ▲    1e999      3.8k") == {"step": 7, "loss": None, "tokens_per_s": None}
    assert read_table("     7    val nan    0.01s") == {"step": 7, "eval_loss": None}
    assert read_classic("Iter 3: Train loss nan, Tokens/sec inf, Trained Tokens 1e999") == {"step": 3, "loss": None}
    assert read_classic("Iter 3: Val loss 1e400, Val took 0.5s") == {"step": 3, "eval_loss": None}
    assert read_table(f"  {2**63}    1.000 ▼    1,516      3.8k") is None   # a step SQLite cannot hold
    assert read_classic(f"Iter {2**63}: Train loss 1.0") is None
    assert read_table(f"  {2**63 - 1}    1.000 ▼    1,516      3.8k")["step"] == 2**63 - 1
    assert read_table("  ٣    1.000 ▼    1,516      3.8k") is None  # digits are ASCII digits
    assert read_classic("Iter 2: Train loss " + "9" * 60) is None  # no number that long
    # whatever a reader returns, the tracker takes it
    tracker = ProgressTracker()
    for line in ("     7      nan ▲    1,516      3.8k", "Iter 3: Train loss nan, Trained Tokens 12.5",
                 "Iter 3: Train loss -1.5, Learning Rate 2e-4, Peak mem 1.5 GB"):
        tracker.feed(0, reader_for("mlx-lm", LORA)(line))
    assert tracker.latest["loss"] == -1.5 and tracker.latest["trained_tokens"] == 12.5


@pytest.mark.parametrize("command, total", [
    (LORA, 6), (["mlx_lm.lora", "--iters=1000"], 1000), (["x", "--iters", "5", "--iters", "7"], 7),
    (["x", "--iters"], None), (["x", "--iters", "-3"], None), (["x", "--iters", "1e3"], None),
    (["x", "--iters", "١٢"], None), (["x", f"--iters={2**63}"], None), (["x", "--iterations", "5"], None),
    (None, None), ([], None),
])
def test_the_total_comes_from_iters(command, total):
    assert iters_of(command) == total


def test_the_readers_fed_into_a_tracker_give_the_whole_run():
    tracker = ProgressTracker()
    read = reader_for("auto", LORA)
    for line in lines_of("v0.32.2-pty.txt"):
        rec = read(shown(line))
        if rec is not None:
            tracker.feed(0, rec)
    latest = tracker.latest
    assert latest["step"] == latest["total_steps"] == 6
    assert latest["loss"] == 4.475 and latest["eval_loss"] == 4.292
    assert tracker.history == [(2, 4.317), (4, 4.34), (6, 4.475)]


def test_read_jupiter_is_shared_progress_parse():
    assert read_jupiter('JUPITER_PROGRESS {"step": 1}') == {"step": 1}
    assert read_jupiter(' JUPITER_PROGRESS {"step": 1}') is None
