"""The stall watchdog's rules (coordinator/jobs/watchdog.py) and how the state machine applies them:
pure functions, walked with a made-up clock."""

from coordinator.jobs import transitions as t
from coordinator.jobs import watchdog as w

T0 = 1_000_000.0
RANKS = [t.Rank(rank=0, node_name="mini", state="running"), t.Rank(rank=1, node_name="ultra", state="running")]

# What faulthandler prints for a rank whose main thread waits in a native call, with a helper thread.
DUMP = """\
Thread 0x00007f13708bb6c0 (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 320 in wait
  File "/venv/lib/python3.11/site-packages/mlx_lm/tuner/trainer.py", line 88 in _prefetch
  File "/usr/lib/python3.11/threading.py", line 982 in run

Current thread 0x00007f1371426b80 (most recent call first):
  File "/work/agent/training/steps.py", line 61 in train_step
  File "/work/agent/training/loop.py", line 40 in run_steps
  File "/work/agent/training/__main__.py", line 5 in <module>
  File "<frozen runpy>", line 88 in _run_code""".splitlines()


def running(**kw) -> t.Job:
    return t.Job(status="running", started_at=T0, **kw)


def tick(job: t.Job, at: float) -> t.Decision:
    return t.decide(job, RANKS, t.Tick(at))


def test_a_silent_job_first_dumps_stacks_then_fails_as_stalled_naming_the_last_output_and_each_place():
    watch = w.saw_output({}, T0 + 5, 1, ["step 40", ""])
    job = running(stall_timeout_s=60, watch=watch)
    assert tick(job, T0 + 64) == t.Decision("running")  # 59 s of silence: not yet
    d = tick(job, T0 + 66)
    assert d == t.Decision("running", (t.DumpStacks(61.0, 60.0),))

    watch = {**watch, "dump_at": T0 + 66, "silent_s": 61.0, "limit_s": 60.0}
    watch = w.saw_output(watch, T0 + 67, 0, DUMP)          # the stacks are not a sign of life...
    watch = w.saw_output(watch, T0 + 67, 1, ["  nothing to read"])
    assert watch["output_at"] == T0 + 5 and watch["last"]["line"] == "step 40"
    assert watch["where"] == {"0": "train_step (steps.py:61)"}  # ...but say where the rank was
    job = running(stall_timeout_s=60, watch=watch)
    assert tick(job, T0 + 66 + w.DUMP_WAIT_S - 0.1) == t.Decision("running")
    d = tick(job, T0 + 66 + w.DUMP_WAIT_S)
    assert d.status == "failed"
    [finish] = d.effects
    assert finish.stalled and finish.error == (
        "stalled: no rank printed or reported progress for 61 s (stall_timeout_s 60); "
        "last output 61 s before: rank 1 on ultra: 'step 40'; where: rank 0 in train_step (steps.py:61); "
        "each rank's Python stack is in the log")


def test_a_stalled_job_with_restarts_left_restarts_and_says_it_stalled():
    watch = {"output_at": T0, "dump_at": T0 + 700, "silent_s": 700.0, "limit_s": 600.0,
             "stopped": {"1": "ultra"}}
    d = tick(running(watch=watch, max_restarts=2), T0 + 705)
    assert d.status == "pending"
    [restart] = d.effects
    assert restart.stalled and "adaptive limit 600 s" in restart.error
    assert "where: rank 1 stopped (process state T)" in restart.error


def test_the_adaptive_limit_is_ten_minutes_until_progress_then_ten_usual_intervals_never_under_two():
    assert w.limit_s(None, {}) == w.FIRST_REPORT_S == 600
    watch = {}
    for i in range(6):  # rank 0 reports every 30 s; rank 1's reports in between do not halve that
        watch = w.saw_progress(watch, T0 + 30 * i, 0)
        watch = w.saw_progress(watch, T0 + 30 * i + 1, 1)
    assert w.limit_s(None, watch) == 300
    fast = {}
    for i in range(6):
        fast = w.saw_progress(fast, T0 + i, 0)
    assert w.limit_s(None, fast) == w.MIN_LIMIT_S == 120
    assert w.limit_s(45, fast) == 45  # the job's own limit wins
    assert len(w.saw_progress({"progress_rank": 0, "rank_progress_at": T0, "gaps": [1.0] * 16}, T0 + 2, 0)["gaps"]) == 16


def test_silence_counts_from_the_latest_sign_of_life_and_from_the_coordinators_start():
    job = running(watch={"output_at": T0 + 100})
    assert tick(job, T0 + 100 + 599) == t.Decision("running")
    assert tick(job, T0 + 100 + 601).effects == (t.DumpStacks(601.0, 600.0),)
    rebooted = running(watch={"output_at": T0 + 100}, booted_at=T0 + 5000)
    assert tick(rebooted, T0 + 5100) == t.Decision("running")
    assert t.decide(t.Job(status="starting", placed_at=T0), RANKS, t.Tick(T0 + 30)) == t.Decision("starting")


def test_a_stopped_rank_is_news_once_each_way():
    watch = w.saw_stopped({}, 1, "ultra", True)
    assert watch == {"stopped": {"1": "ultra"}}
    assert w.saw_stopped(watch, 1, "ultra", True) is None
    assert w.warnings(watch, active=True) == [
        "rank 1 on node ultra is stopped (process state T: SIGSTOP, Ctrl-Z or a debugger); every other rank waits for it"]
    assert w.warnings(watch, active=False) == []
    assert w.saw_stopped(watch, 1, "ultra", False) == {"stopped": {}}


def test_where_a_rank_was_prefers_the_main_thread_and_reads_nothing_else():
    assert w.stack_top(DUMP) == "train_step (steps.py:61)"
    only_current = [DUMP[5], DUMP[6]]
    assert w.stack_top(only_current) == "train_step (steps.py:61)"
    assert w.stack_top(["Traceback (most recent call last):", '  File "x.py", line 1, in <module>']) is None
    assert w.stack_top([]) is None


def _cases() -> list[t.Job]:
    """A job of each kind the ticks have to watch."""
    progress = w.saw_progress(w.saw_progress({}, T0 + 10, 0), T0 + 20, 0)
    return [
        t.Job(status="pending", created_at=T0, pending_timeout_s=30),
        t.Job(status="starting", created_at=T0, placed_at=T0 + 1, start_timeout_s=60),
        running(),                                                     # adaptive: 10 minutes
        running(stall_timeout_s=45, watch=w.saw_output({}, T0 + 7, 1, ["x"])),
        running(timeout_s=20),                                         # timeout_s before the stall
        running(watch=progress),                                       # adaptive after progress
        running(stall_timeout_s=45, watch={"dump_at": T0 + 50, "silent_s": 46.0, "limit_s": 45.0}),
    ]


def test_a_job_is_due_exactly_when_a_tick_would_change_it():
    for job in _cases():
        at = t.due_at(job)
        assert at is not None, job
        assert tick(job, at - 0.01).effects == (), job       # the scheduler may sleep until then...
        assert tick(job, at + 0.01).effects != (), job       # ...and must not sleep past it
    assert t.due_at(t.Job(status="pending", created_at=T0)) is None   # waits for nodes for ever
    for status in ("succeeded", "failed", "cancelled"):
        assert t.due_at(t.Job(status=status, started_at=T0, timeout_s=1)) is None


def test_reports_never_bring_a_running_jobs_deadline_closer_than_the_minimum_limit():
    """Why the scheduler needs no wake-up for progress reports (transitions.due_at)."""
    for job in _cases()[2:6]:
        before = t.due_at(job)
        for now in (T0 + 30, T0 + 200, T0 + 900):
            for watch in (w.saw_output(job.watch, now, 0, ["step"]), w.saw_progress(job.watch, now, 0)):
                after = t.due_at(t.Job(**{**job.__dict__, "watch": watch}))
                assert after >= min(before, now + w.MIN_LIMIT_S), (job, now, watch)
