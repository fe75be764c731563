"""bench/run_all.py on fake benches: it collects each one's JSON, and its block in the docs page is
replaced on every run, never duplicated, and never touches the hand-written text around it.

No real benchmark runs here: the fake benches are two-line scripts that print JSON (or fail)."""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_runner():
    spec = importlib.util.spec_from_file_location("bench_run_all", REPO / "bench" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


run_all = _load_runner()

HAND_WRITTEN_TOP = "# Benchmarks\n\nHand-written intro.\n\n## Registry\n\nAnalysis that must stay.\n"
HAND_WRITTEN_AFTER = "\n## Written after the block\n\nMore analysis.\n"
MACHINE = {"machine": "test box"}


def fake_bench(folder: Path, name: str, body: str, summary=lambda r: f"value {r.get('value')}") -> object:
    script = folder / f"{name}.py"
    script.write_text(body)
    return run_all.Bench(name=name, script=str(script), args=("--full",), quick_args=("--quick",), timeout_s=60,
                         quick_timeout_s=60, summary=summary, what=f"fake {name}")


PRINTS_JSON = """import json, sys
print("some progress text first")
print(json.dumps({"value": 42, "args": sys.argv[1:], "targets": {"fast": True}}, indent=2))
"""
FAILS = """import sys
print("something went wrong", file=sys.stderr)
sys.exit(3)
"""


def test_runs_fake_benches_collects_json_and_reports_failures(tmp_path):
    ok = fake_bench(tmp_path, "fast", PRINTS_JSON)
    bad = fake_bench(tmp_path, "broken", FAILS)
    docs = tmp_path / "benchmarks.md"
    docs.write_text(HAND_WRITTEN_TOP)
    said: list[str] = []
    outcomes = run_all.run_all([ok, bad], quick=True, out=tmp_path / "out", python=sys.executable, docs=docs,
                               cwd=tmp_path, say=said.append, machine=MACHINE)
    assert [o.ok for o in outcomes] == [True, False]
    assert outcomes[0].result == {"value": 42, "args": ["--quick"], "targets": {"fast": True}}
    assert outcomes[1].problem == "exit code 3" and "something went wrong" in outcomes[1].stderr_tail
    # progress as each runs
    assert said[0].startswith("[1/2] fast:") and any(s.startswith("[2/2] broken:") for s in said)
    assert any("done in" in s and "value 42" in s for s in said) and any("FAILED" in s for s in said)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["benches"]["fast"]["result"]["value"] == 42 and results["benches"]["broken"]["ok"] is False
    assert json.loads((tmp_path / "out" / "fast.json").read_text())["value"] == 42
    text = docs.read_text()
    assert text.startswith(HAND_WRITTEN_TOP)
    assert "| fast | `.venv/bin/python " in text and "value 42" in text and "**failed**: exit code 3" in text


def test_block_is_replaced_not_duplicated_and_hand_written_text_stays(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text(HAND_WRITTEN_TOP)
    first = fake_bench(tmp_path, "fast", PRINTS_JSON)
    run_all.run_all([first], quick=True, out=tmp_path / "o1", python=sys.executable, docs=docs, cwd=tmp_path,
                    say=lambda s: None, machine=MACHINE)
    # someone writes more analysis after the block; the next run must keep it
    docs.write_text(docs.read_text() + HAND_WRITTEN_AFTER)
    second = fake_bench(tmp_path, "fast", PRINTS_JSON, summary=lambda r: f"second run {r['value']}")
    run_all.run_all([second], quick=False, out=tmp_path / "o2", python=sys.executable, docs=docs, cwd=tmp_path,
                    say=lambda s: None, machine=MACHINE)
    text = docs.read_text()
    assert text.count(run_all.BEGIN) == 1 and text.count(run_all.END) == 1
    assert text.count("## Latest `make bench` run") == 1
    assert "second run 42" in text and "value 42" not in text  # the first run's figures are gone
    assert "full (the documented commands)" in text and "--quick" not in text.split(run_all.BEGIN)[1]
    assert text.startswith(HAND_WRITTEN_TOP) and text.endswith(HAND_WRITTEN_AFTER)


def test_a_bench_over_its_time_limit_is_stopped_and_counts_as_failed(tmp_path):
    hangs = fake_bench(tmp_path, "hangs", "import time\ntime.sleep(600)\n")
    hangs = run_all.Bench(**{**hangs.__dict__, "quick_timeout_s": 0.5})
    said: list[str] = []
    [outcome] = run_all.run_all([hangs], quick=True, out=tmp_path / "out", python=sys.executable, docs=None,
                                cwd=tmp_path, say=said.append, machine=MACHINE, tick_s=0.2)
    assert not outcome.ok and outcome.exit_code is None and "time limit" in outcome.problem
    assert outcome.seconds < 30
    assert any("still running" in s for s in said) and any("stopping it" in s for s in said)


def test_replace_block_pure():
    block1 = f"{run_all.BEGIN}\none\n{run_all.END}"
    block2 = f"{run_all.BEGIN}\ntwo\n{run_all.END}"
    once = run_all.replace_block("intro\n", block1)
    assert once == f"intro\n\n{block1}\n"
    twice = run_all.replace_block(once + "tail\n", block2)
    assert twice == f"intro\n\n{block2}\ntail\n"
    assert run_all.replace_block(twice, block2) == twice  # idempotent
    for broken in (once + block1, f"x {run_all.END} y {run_all.BEGIN} z", f"{run_all.BEGIN} only"):
        with pytest.raises(ValueError):
            run_all.replace_block(broken, block2)


def test_render_block_escapes_cells_and_names_benches_not_run():
    bench = run_all.Bench("b", "bench/b.py", (), (), 1, 1, lambda r: "a | b\nc", "fake")
    outcome = run_all.Outcome(bench, "python bench/b.py", 1.0, 0, {"targets": {"x": False}})
    block = run_all.render_block([outcome], quick=True, machine=MACHINE, not_run=["other"],
                                 started=datetime(2026, 12, 2, 17, 0, tzinfo=timezone.utc))
    assert block.startswith(run_all.BEGIN) and block.endswith(run_all.END)
    assert "2026-12-02 17:00 UTC" in block and "a \\| b c" in block and "not met: x" in block
    assert "Not run this time: other." in block


def test_last_json_object_skips_text_before_it():
    assert run_all.last_json_object('noise\n{"a": 1}\n') == {"a": 1}
    assert run_all.last_json_object('{"a": 1}') == {"a": 1}
    assert run_all.last_json_object('log {"not": "at line start"}\n{\n  "b": 2\n}\n') == {"b": 2}
    assert run_all.last_json_object("no json at all") is None
    assert run_all.last_json_object("") is None
