"""Job logs on disk: bounded locks, and rollback of output logged but never committed."""

from __future__ import annotations


def test_per_job_state_does_not_grow_with_the_number_of_jobs(tmp_path):
    """Job logs share a fixed set of locks, and the progress trackers of ended jobs are let go."""
    from coordinator.joblogs import LOCK_STRIPES, JobLogs

    logs = JobLogs(tmp_path / "jobs")
    for i in range(500):
        logs.append(f"j-{i:010x}", 0, ["line"])
    assert len(logs._locks) == LOCK_STRIPES
    assert logs.read("j-00000001f3")[0] == b"[0] line\n"


def test_output_logged_but_never_committed_is_rolled_back_keeping_jupiters_notes(tmp_path):
    """What a coordinator killed between writing a rank's lines and committing their count leaves
    behind: the rollback to the committed size removes them (the agent sends them again), and
    keeps Jupiter's own notes written since."""
    from coordinator.joblogs import JobLogs

    logs = JobLogs(tmp_path / "jobs", quota_bytes=4096)
    logs.append("j-1", 0, ["first"])
    committed = logs.size("j-1")
    logs.append("j-1", 1, ["sent again after the restart"])
    logs.note("j-1", "mpirun exited with code 0")
    assert logs.rollback("j-1", committed) == len(b"[1] sent again after the restart\n")
    assert logs.read("j-1")[0] == b"[0] first\n[jupiter] mpirun exited with code 0\n"
    assert logs.rollback("j-1", logs.size("j-1")) == 0  # nothing past the committed size: untouched
    # Across a quota cut, offsets stay logical.
    for i in range(200):
        logs.append("j-2", 0, [f"line {i:04d} " + "x" * 40])
    committed = logs.size("j-2")
    logs.append("j-2", 0, ["uncommitted"])
    assert logs.rollback("j-2", committed) > 0 and logs.size("j-2") == committed
    assert b"uncommitted" not in logs.read("j-2", committed - 60)[0]


def test_a_new_job_whose_first_output_was_never_committed_is_rolled_back_at_start_up(tmp_path):
    """The coordinator-SIGKILL case: the first lines of a job are written to its log, the process
    dies before their count commits, and the next coordinator must not keep them (the agent sends
    them again)."""
    from coordinator.joblogs import JobLogs
    from coordinator.jobs import Jobs
    from coordinator.registry import Registry
    from coordinator.store import JobRow, Store
    from shared.cluster_config import load_cluster_config

    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        logs = JobLogs(tmp_path / "jobs")
        jobs = Jobs(store, Registry(store, load_cluster_config(None), heartbeat_interval_s=1, down_after_s=30),
                    logs, default_backend="ring")
        with store.write() as s:
            s.add(JobRow(id="j-00000000aa", name="job", status="running", backend="ring", world_size=2,
                         spec={}, command=[], spec_hash="x"))
        logs.note("j-00000000aa", "all ranks running")
        logs.append("j-00000000aa", 1, ["rank 1 line, never counted"])
        jobs.recover_logs()
        assert logs.read("j-00000000aa")[0] == b"[jupiter] all ranks running\n"
    finally:
        store.close()
