"""The job lifecycle in-process: a real Jobs over a real SQLite file, with the agents' reports
and the launcher played by the test. Every path a job can take, in well under a second each."""

from __future__ import annotations

import json

import pytest

from coordinator.joblogs import JobLogs
from coordinator.jobs import Jobs, LauncherNews
from coordinator.jobs import transitions as t
from coordinator.registry import Registry
from coordinator.store import Store
from shared.cluster_config import load_cluster_config
from shared.progress import PREFIX
from shared.schemas import JobSpec, RankOutput, RankReport, RankState, RegisterRequest
from tests.support.harness import registration, sample_facts


class Cluster:
    """Jobs, a registry with two registered nodes, and helpers that speak as their agents do."""

    def __init__(self, tmp_path, nodes=("a", "b")):
        self.path = tmp_path
        self.store = Store(f"sqlite:///{tmp_path / 'coordinator.db'}")
        self.jobs = self._jobs()
        self.node = {}
        for i, name in enumerate(nodes):
            facts = sample_facts(f"m-{name}", hostname=f"{name}.local")
            req = RegisterRequest.model_validate(registration(name, f"10.9.0.{i + 1}", facts))
            row, _, _ = self.jobs.registry.register(req)
            self.node[name] = row.id
        self.woken: list[str] = []
        self.jobs.on_node_orders = self.woken.append

    def _jobs(self) -> Jobs:
        registry = Registry(self.store, load_cluster_config(None), heartbeat_interval_s=1, down_after_s=30)
        jobs = Jobs(self.store, registry, JobLogs(self.path / "jobs"), default_backend="ring")
        registry.busy_of = jobs.busy_nodes
        return jobs

    def restart(self) -> None:
        """A new coordinator on the same database (the old one was killed)."""
        self.jobs = self._jobs()
        self.jobs.recover_logs()

    def submit(self, **spec) -> str:
        spec.setdefault("command", ["python", "train.py"])
        row, created = self.jobs.submit(JobSpec.model_validate(spec))
        assert created
        return row.id

    def status(self, job_id: str) -> str:
        return self.jobs.get_row(job_id).status

    def start_orders(self, name: str, have=()) -> list:
        return self.jobs.orders_for(self.node[name], list(have))[0]

    def stop_orders(self, name: str, have) -> list:
        return self.jobs.orders_for(self.node[name], list(have))[1]

    def say(self, name: str, job_id: str, rank: int, state: str, *, attempt=0, code=None, reason=None,
            complete=False):
        st = RankState(job_id=job_id, rank=rank, attempt=attempt, state=state, exit_code=code, reason=reason)
        return self.jobs.report(self.node[name], RankReport(ranks=[st]), complete=complete)

    def print(self, name: str, job_id: str, rank: int, seq: int, lines: list[str], attempt=0):
        out = RankOutput(job_id=job_id, rank=rank, attempt=attempt, seq=seq, lines=lines)
        return self.jobs.report(self.node[name], RankReport(output=[out]))

    def run_both(self, job_id: str, attempt=0) -> None:
        self.say("a", job_id, 0, "running", attempt=attempt)
        self.say("b", job_id, 1, "running", attempt=attempt)

    def log(self, job_id: str) -> str:
        return self.jobs.logs.read(job_id)[0].decode()

    def close(self):
        self.store.close()


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.close()


def test_pending_until_placed_then_starting_running_succeeded(cluster):
    job = cluster.submit(nodes=3)
    assert cluster.jobs.schedule() == []
    assert cluster.status(job) == "pending"
    assert "needs 3 node(s), 2 eligible" in cluster.jobs.get_row(job).pending_reason
    cluster.jobs.cancel(job)
    job = cluster.submit(nodes=2)
    assert cluster.jobs.schedule() == [job]
    assert cluster.status(job) == "starting"
    assert set(cluster.woken) == set(cluster.node.values())  # both agents' long-polls woken
    assert cluster.jobs.busy_nodes() == frozenset(cluster.node.values())
    [order] = cluster.start_orders("b")
    assert (order.rank, order.world_size, order.command) == (1, 2, ["python", "train.py"])
    assert len(order.hostfile) == 2  # the ring, the same for every rank
    assert cluster.start_orders("a")[0].hostfile == order.hostfile
    cluster.say("a", job, 0, "running")
    assert cluster.status(job) == "starting"
    cluster.say("b", job, 1, "running")
    assert cluster.status(job) == "running"
    assert cluster.start_orders("a", have=[RankState(job_id=job, rank=0, state="running")]) == []
    cluster.say("a", job, 0, "exited", code=0)
    assert cluster.status(job) == "running"
    cluster.say("b", job, 1, "exited", code=0)
    done = cluster.jobs.get_row(job)
    assert (done.status, done.exit_code) == ("succeeded", 0)
    assert cluster.jobs.busy_nodes() == frozenset()
    assert "all ranks running" in cluster.log(job) and "succeeded" in cluster.log(job)


def test_a_tick_that_changes_nothing_wakes_nobody(cluster):
    """on_change wakes the scheduler, which ticks: a tick that told of no change kept the
    coordinator spinning a whole core for as long as any job ran."""
    job = cluster.submit(nodes=2)
    cluster.jobs.schedule()
    cluster.run_both(job)
    told: list[str] = []
    cluster.jobs.on_change = told.append
    cluster.jobs.tick()
    assert told == [] and cluster.status(job) == "running"
    cluster.say("a", job, 0, "exited", code=0)  # a real change is still told
    assert told == [job]


def test_a_failing_rank_fails_the_job_and_the_other_is_told_to_stop(cluster):
    job = cluster.submit(nodes=2)
    cluster.jobs.schedule()
    cluster.run_both(job)
    cluster.say("b", job, 1, "exited", code=3)
    row = cluster.jobs.get_row(job)
    assert row.status == "failed" and row.error == "rank 1 on node b exited with code 3" and row.exit_code == 3
    [stop] = cluster.stop_orders("a", [RankState(job_id=job, rank=0, state="running")])
    assert (stop.job_id, stop.reason) == (job, "failed")
    assert cluster.jobs.busy_nodes() == frozenset({cluster.node["a"]})  # until rank 0 has stopped
    cluster.say("a", job, 0, "exited", code=-15)
    assert cluster.jobs.busy_nodes() == frozenset()
    assert cluster.jobs.get_row(job).error == "rank 1 on node b exited with code 3"  # terminal stays


def test_cancel_stops_every_rank_and_is_idempotent(cluster):
    job = cluster.submit(nodes=2)
    cluster.jobs.schedule()
    cluster.run_both(job)
    assert cluster.jobs.cancel(job).status == "cancelled"
    assert cluster.jobs.cancel(job).status == "cancelled"
    for name, rank in (("a", 0), ("b", 1)):
        [stop] = cluster.stop_orders(name, [RankState(job_id=job, rank=rank, state="running")])
        assert stop.reason == "cancelled"


def test_a_cancelled_job_closes_ranks_no_agent_picked_up(cluster):
    job = cluster.submit(nodes=2)
    cluster.jobs.schedule()
    cluster.jobs.cancel(job)
    assert {r.reason for r in cluster.jobs.ranks(job)} == {"never started"}
    assert cluster.jobs.busy_nodes() == frozenset()


def test_timeouts_fail_the_job_with_the_reason(cluster):
    late = cluster.submit(nodes=2, start_timeout_s=5)
    cluster.jobs.schedule()
    cluster.say("a", late, 0, "running")
    placed = cluster.jobs.get_row(late).placed_at
    cluster.jobs.handle(late, t.Tick(placed + 4))
    assert cluster.status(late) == "starting"
    cluster.jobs.handle(late, t.Tick(placed + 6))
    assert cluster.jobs.get_row(late).error == "rank 1 on node b did not start within 5 s"
    cluster.say("a", late, 0, "exited", code=-15)
    slow = cluster.submit(nodes=2, timeout_s=30)
    cluster.jobs.schedule()
    cluster.run_both(slow)
    started = cluster.jobs.get_row(slow).started_at
    cluster.jobs.handle(slow, t.Tick(started + 31))
    assert cluster.jobs.get_row(slow).error == "timed out after 30 s (timeout_s)"


def test_a_job_that_cannot_be_placed_in_time_fails(cluster):
    job = cluster.submit(nodes=5, pending_timeout_s=60)
    cluster.jobs.schedule()
    created = cluster.jobs.get_row(job).created_at
    cluster.jobs.tick()
    assert cluster.status(job) == "pending"
    cluster.jobs.handle(job, t.Tick(created + 61))
    assert cluster.jobs.get_row(job).error.startswith("could not be placed within 60 s: needs 5 node(s)")


def test_a_node_going_down_fails_its_jobs_naming_node_and_rank(cluster):
    job = cluster.submit(nodes=2)
    cluster.jobs.schedule()
    cluster.run_both(job)
    cluster.jobs.node_down(cluster.node["b"], 4.0)
    row = cluster.jobs.get_row(job)
    assert row.status == "failed" and row.error == "rank 1 on node b: node went down (no heartbeat for 4 s)"
    assert cluster.node["b"] not in cluster.jobs.busy_nodes()


def test_a_failed_attempt_restarts_on_fresh_ranks_and_keeps_its_history(cluster):
    job = cluster.submit(nodes=2, max_restarts=1)
    cluster.jobs.schedule()
    cluster.run_both(job)
    cluster.say("b", job, 1, "exited", code=3)
    row = cluster.jobs.get_row(job)
    assert row.status == "pending" and row.attempt == 1 and "restarting (attempt 2 of 2)" in row.pending_reason
    # The old attempt's rank 0 must stop before its node takes the new attempt.
    [stop] = cluster.stop_orders("a", [RankState(job_id=job, rank=0, state="running")])
    assert (stop.attempt, stop.reason) == (0, "an old attempt")
    assert cluster.jobs.schedule() == []
    cluster.say("a", job, 0, "exited", code=-15)
    assert cluster.jobs.schedule() == [job]
    assert [o.attempt for o in cluster.start_orders("a")] == [1]
    cluster.run_both(job, attempt=1)
    cluster.say("a", job, 0, "exited", code=0, attempt=1)
    cluster.say("b", job, 1, "exited", code=0, attempt=1)
    view = cluster.jobs.view(cluster.jobs.get_row(job))
    assert view.status == "succeeded" and view.attempt == 1
    [first] = view.attempts
    assert first.error == "rank 1 on node b exited with code 3" and first.nodes == ["a", "b"]


def test_output_is_stored_once_and_progress_reaches_the_view(cluster):
    job = cluster.submit(nodes=2)
    cluster.jobs.schedule()
    cluster.run_both(job)
    lines = ["hello", PREFIX + json.dumps({"step": 1, "total_steps": 10, "loss": 2.5})]
    assert cluster.print("a", job, 0, 0, lines) == {f"{job}/0/0": 2}
    assert cluster.print("a", job, 0, 0, lines + ["again"]) == {f"{job}/0/0": 3}  # a resend overlaps
    assert cluster.log(job).count("[0] hello") == 1 and "[0] again" in cluster.log(job)
    view = cluster.jobs.view(cluster.jobs.get_row(job))
    assert view.progress["step"] == 1 and [p.loss for p in view.loss_history] == [2.5]
    assert cluster.print("b", job, 0, 3, ["not b's rank"]) == {}  # a node speaks only for its ranks
    assert "not b's rank" not in cluster.log(job)


def test_a_coordinator_restart_keeps_running_ranks_and_their_progress(cluster):
    job = cluster.submit(nodes=2)
    cluster.jobs.schedule()
    cluster.run_both(job)
    cluster.print("a", job, 0, 0, [PREFIX + json.dumps({"step": 3, "loss": 1.5})])
    cluster.jobs.logs.append(job, 1, ["written but never committed"])  # killed mid-report
    cluster.restart()
    assert cluster.status(job) == "running"
    assert "never committed" not in cluster.log(job)
    # The agents carry on: their next reports are complete (they did not restart) and arrive.
    cluster.say("a", job, 0, "running", complete=True)
    cluster.print("a", job, 0, 1, [PREFIX + json.dumps({"step": 4, "loss": 1.0})])
    assert [p.loss for p in cluster.jobs.view(cluster.jobs.get_row(job)).loss_history] == [1.5, 1.0]
    cluster.say("a", job, 0, "exited", code=0)
    cluster.say("b", job, 1, "exited", code=0)
    assert cluster.status(job) == "succeeded"


def test_an_agent_that_restarted_loses_its_ranks_and_says_so(cluster):
    job = cluster.submit(nodes=2)
    cluster.jobs.schedule()
    cluster.run_both(job)
    cluster.jobs.report(cluster.node["b"], RankReport(), complete=True)  # a fresh agent: nothing running
    row = cluster.jobs.get_row(job)
    assert row.status == "failed" and "rank 1 on node b" in row.error and "agent restarted" in row.error


def test_the_mpi_launcher_reports_like_an_agent_and_stale_attempts_only_free_nodes(cluster):
    started, stopped = [], []

    class FakeLauncher:
        def start(self, job, ranks):
            started.append((job.id, [r.rank for r in ranks]))

        def stop(self, job):
            stopped.append(job.id)

    cluster.jobs.launchers["mpi"] = FakeLauncher()
    job = cluster.submit(nodes=2, backend="mpi", max_restarts=1)
    cluster.jobs.schedule()
    assert started == [(job, [0, 1])]
    assert cluster.start_orders("a") == []  # mpirun starts mpi ranks, not the agents
    states = [RankState(job_id=job, rank=r, state="running") for r in (0, 1)]
    out = [RankOutput(job_id=job, rank=1, seq=0, lines=["from rank 1"])]
    cluster.jobs.report(None, RankReport(ranks=states, output=out),
                        launcher=LauncherNews(job, 0, state={"pid": 1, "offset": 10}, lines=["mpirun says hi"]))
    row = cluster.jobs.get_row(job)
    assert row.status == "running" and row.launcher["offset"] == 10
    assert "[1] from rank 1" in cluster.log(job) and "[mpirun] mpirun says hi" in cluster.log(job)
    cluster.jobs.report(None, RankReport(ranks=[RankState(job_id=job, rank=0, state="exited", exit_code=7)]),
                        launcher=LauncherNews(job, 0))
    assert cluster.status(job) == "pending" and stopped == [job]  # restarting
    # The old mpirun's tail: output dropped, but its ranks' ends free the nodes.
    late = [RankOutput(job_id=job, rank=1, seq=1, lines=["late line"])]
    cluster.jobs.report(None, RankReport(ranks=[RankState(job_id=job, rank=1, state="exited", exit_code=-15)],
                                         output=late), launcher=LauncherNews(job, 0, note="mpirun exited"))
    assert "late line" not in cluster.log(job) and cluster.jobs.busy_nodes() == frozenset()
    cluster.jobs.launcher_failed(job, 0, "stale")  # about an old attempt: ignored
    assert cluster.status(job) == "pending"
    assert cluster.jobs.schedule() == [job]
    cluster.jobs.launcher_failed(job, 1, "mpirun could not be started: no mpirun found")
    assert cluster.jobs.get_row(job).error == "mpirun could not be started: no mpirun found"


def test_an_idempotent_resubmission_returns_the_stored_job(cluster):
    spec = JobSpec.model_validate({"command": ["true"], "idempotency_key": "k1"})
    first, created = cluster.jobs.submit(spec)
    again, created_again = cluster.jobs.submit(spec)
    assert created and not created_again and again.id == first.id


def test_a_new_agents_complete_report_does_not_touch_ranks_a_launcher_runs(cluster):
    class Quiet:
        def start(self, job, ranks): ...
        def stop(self, job): ...

    cluster.jobs.launchers["mpi"] = Quiet()
    job = cluster.submit(nodes=2, backend="mpi")
    cluster.jobs.schedule()
    states = [RankState(job_id=job, rank=r, state="running") for r in (0, 1)]
    cluster.jobs.report(None, RankReport(ranks=states), launcher=LauncherNews(job, 0))
    cluster.jobs.report(cluster.node["a"], RankReport(), complete=True)  # the agent knows no mpi rank
    assert cluster.status(job) == "running"
