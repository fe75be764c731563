"""The trainer's progress lines (agent/training/reporting.py): when they are due, driven by a fake
clock and a fake run (no MLX), and what each rank's line holds."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from agent.training.reporting import LINE_EVERY_S, QUIET_MAX_S, ProgressWindow
from shared.progress import parse

TOKENS = 2048


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def fake_run(total: int = 100, *, rank: int = 0, world: int = 1, log_every: int | None = None,
             checkpoint_every: int = 0, start: int = 0, progress: bool = True, **extra) -> SimpleNamespace:
    lr = SimpleNamespace(item=lambda: 0.001)
    run = SimpleNamespace(cfg=SimpleNamespace(log_every=log_every, checkpoint_every=checkpoint_every),
                          rank=rank, world=world, progress=progress, start_step=start, total_steps=total,
                          tokens_per_step=TOKENS, sharding=SimpleNamespace(steps_per_epoch=1000),
                          optimizer=SimpleNamespace(learning_rate=lr))
    for k, v in extra.items():
        setattr(run, k, v)
    return run


def drive(capsys, run, step_s, *, evals=(), work=None, stop_at=None) -> list[tuple[float, dict]]:
    """The training loop's calls, one step of `step_s` (a number, or step -> seconds) at a time;
    returns (fake time, record) for each line printed."""
    clock = Clock()
    stop_at = stop_at or run.total_steps
    window = ProgressWindow(run, stop_at, clock=clock)
    lines, train_time = [], 0.0
    for step in range(run.start_step + 1, stop_at + 1):
        dt = step_s(step) if callable(step_s) else step_s
        clock.t += dt
        train_time += dt
        window.time += dt
        window.add_loss(float(step))  # the loss is the step number: a window's mean is easy to check
        if work is not None:
            window.add_work(work)
        window.after_step(step, train_time, 0.5 if step in evals else None, 1.0)
        out = capsys.readouterr().out
        lines += [(clock.t, rec) for rec in map(parse, out.splitlines()) if rec is not None]
    return lines


def test_lines_come_at_most_every_interval_with_the_first_last_and_eval_steps_always(capsys):
    lines = drive(capsys, fake_run(100), 0.3, evals=(50,))
    steps = [r["step"] for _, r in lines]
    assert steps[0] == 1 and steps[-1] == 100 and 50 in steps
    forced = {1, 50, 100}
    times = [t for t, _ in lines]
    for (t0, _), (t1, r1) in zip(lines, lines[1:], strict=False):
        assert r1["step"] in forced or t1 - t0 >= LINE_EVERY_S - 1e-9, (t0, t1, r1)
    # far fewer lines than steps: 0.3 s steps give one line per 7 steps (2.1 s)
    assert len(lines) <= 100 * 0.3 / LINE_EVERY_S + len(forced)
    assert all(b - a <= LINE_EVERY_S + 0.3 + 1e-9 for a, b in zip(times, times[1:], strict=False))
    # each line's loss and throughput are the means over its window
    prev = 0
    for _, r in lines:
        n = r["step"] - prev
        assert r["loss"] == pytest.approx(sum(range(prev + 1, r["step"] + 1)) / n)
        assert r["tokens_per_s"] == pytest.approx(TOKENS / 0.3, rel=1e-3)
        assert r["step_time_s"] == pytest.approx(0.3)
        prev = r["step"]


def test_a_long_run_logs_every_percent_and_a_slow_one_at_least_every_quiet_max(capsys):
    lines = drive(capsys, fake_run(10_000), 0.05)   # 1 % = 100 steps = 5 s, over the 2 s minimum
    steps = [r["step"] for _, r in lines]
    assert steps[:3] == [1, 101, 201] and steps[-1] == 10_000
    lines = drive(capsys, fake_run(100_000), 0.2, stop_at=1000)  # 1 % = 1000 steps = 200 s
    gaps = [b - a for (a, _), (b, _) in zip(lines, lines[1:], strict=False)]
    assert max(gaps[:-1]) == pytest.approx(QUIET_MAX_S, abs=0.21)
    lines = drive(capsys, fake_run(10), 40.0)          # steps slower than QUIET_MAX_S: a line each
    assert [r["step"] for _, r in lines] == list(range(1, 11))


def test_an_explicit_log_every_counts_steps_not_seconds(capsys):
    lines = drive(capsys, fake_run(30, log_every=1), 0.01)
    assert [r["step"] for _, r in lines] == list(range(1, 31))
    lines = drive(capsys, fake_run(30, log_every=5), 10.0, evals=(12,))
    assert [r["step"] for _, r in lines] == [1, 5, 10, 12, 15, 20, 25, 30]


def test_a_checkpoint_step_and_a_resumed_runs_first_step_have_lines(capsys):
    lines = drive(capsys, fake_run(100, checkpoint_every=40, start=20), 0.1)
    steps = [r["step"] for _, r in lines]
    assert steps[0] == 21 and 40 in steps and 80 in steps and steps[-1] == 100


def test_every_rank_reports_its_own_step_time_and_share(capsys):
    r0 = drive(capsys, fake_run(20, rank=0, world=2), 0.3, work=0.25)
    r1 = drive(capsys, fake_run(20, rank=1, world=2, share=0.25), 0.3)
    assert [r["step"] for _, r in r0] == [r["step"] for _, r in r1]  # the same cadence
    for _, r in r1:   # no loss: rank 0's loss history stays rank 0's
        assert set(r) == {"step", "step_time_s", "share"}
        assert r["share"] == 0.25 and r["step_time_s"] == pytest.approx(0.3)  # no add_work: the full step
    for _, r in r0:
        assert {"step", "total_steps", "loss", "tokens_per_s", "eta_s", "lr", "grad_norm"} <= set(r)
        assert r["share"] == 0.5 and r["step_time_s"] == pytest.approx(0.25)  # own work, without waiting


def test_no_lines_without_progress(capsys):
    assert drive(capsys, fake_run(10, progress=False), 0.3) == []
    assert drive(capsys, fake_run(10, rank=1, world=2, progress=False), 0.3) == []
