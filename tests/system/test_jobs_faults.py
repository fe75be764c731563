"""Jobs when things break: the coordinator restarts, an agent dies or freezes, a rank is killed."""

from __future__ import annotations

import signal
import time

import psutil
import pytest

from tests.support.harness import AgentProcess, CoordinatorProcess, wait_for
from tests.system.test_jobs import ALLSUM, EXPECTED, _processes_of, log_of, wait_job


class Cluster:
    """A coordinator and two agents that this test may kill, freeze and restart at will;
    whatever is left is stopped when the test ends."""

    def __init__(self, tmp_path, **kw):
        self.tmp_path = tmp_path
        self.coords = [CoordinatorProcess(tmp_path / "leader", **kw).start()]
        self.agents = [AgentProcess(self.coord, f"a{i}", tmp_path / "agents" / f"a{i}").start() for i in (1, 2)]
        with self.coord.client() as c:
            wait_for(lambda: sum(n.status == "ready" for n in c.nodes()) == 2, timeout=60, what="agents ready")

    @property
    def coord(self) -> CoordinatorProcess:
        return self.coords[-1]

    def restart_coordinator(self) -> CoordinatorProcess:
        old = self.coord
        again = CoordinatorProcess(old.home, heartbeat_interval=old.heartbeat_interval,
                                   down_after=old.down_after, port=old.port)
        again.admin_token, again.join_token = old.admin_token, old.join_token
        self.coords.append(again.start())
        return again

    def restart_agent(self, i: int) -> AgentProcess:
        name = self.agents[i].name
        self.agents[i] = AgentProcess(self.coord, name, self.tmp_path / "agents" / name).start()
        return self.agents[i]

    def close(self) -> None:
        for a in self.agents:
            if a.proc and psutil.pid_exists(a.proc.pid) and psutil.Process(a.proc.pid).status() == psutil.STATUS_STOPPED:
                psutil.Process(a.proc.pid).resume()
            a.stop()
        for c in reversed(self.coords):
            c.stop()


@pytest.fixture
def make_cluster(tmp_path):
    made = []

    def _make(**kw) -> Cluster:
        made.append(Cluster(tmp_path, **kw))
        return made[-1]

    yield _make
    for cl in made:
        cl.close()


def test_coordinator_sigkill_mid_job_neither_loses_nor_fails_it(make_cluster):
    cl = make_cluster(heartbeat_interval=0.5, down_after=4.0)
    with cl.coord.client() as c:
        job = c.submit({"command": ["python", ALLSUM, "--sleep", "4"], "nodes": 2, "backend": "ring"})
        wait_for(lambda: EXPECTED in log_of(c, job.id), timeout=30, what="ranks running")
    cl.coord.kill()
    time.sleep(1.5)
    with cl.restart_coordinator().client() as c:
        assert c.job(job.id).status == "running"
        done = wait_job(c, job.id, timeout=40)
        assert done.status == "succeeded", done.error
        assert log_of(c, job.id).count(EXPECTED) == 2
        assert all(n.status == "ready" for n in c.nodes())


def test_coordinator_restart_after_the_job_ended_reports_the_true_outcome(make_cluster):
    cl = make_cluster(heartbeat_interval=0.5, down_after=4.0)
    with cl.coord.client() as c:
        job = c.submit({"command": ["python", ALLSUM, "--sleep", "1.5", "--fail-rank", "1", "--code", "5"],
                        "nodes": 2, "backend": "ring"})
        wait_for(lambda: EXPECTED in log_of(c, job.id), timeout=30)
    cl.coord.kill()
    time.sleep(3)  # rank 1 exits 5 while nobody listens
    with cl.restart_coordinator().client() as c:
        done = wait_job(c, job.id, timeout=20)
        assert done.status == "failed" and "rank 1 on node a2 exited with code 5" in done.error


def test_coordinator_restart_reattaches_to_a_running_mpirun(make_cluster):
    cl = make_cluster(heartbeat_interval=0.5, down_after=4.0)
    with cl.coord.client() as c:
        job = c.submit({"command": ["python", ALLSUM, "--backend", "mpi", "--sleep", "4"], "nodes": 2,
                        "backend": "mpi"})
        wait_for(lambda: log_of(c, job.id).count(EXPECTED) == 2, timeout=30, what="mpi ranks running")
    cl.coord.kill()
    time.sleep(1)
    with cl.restart_coordinator().client() as c:
        done = wait_job(c, job.id, timeout=40)
        assert done.status == "succeeded", done.error
        assert [r.exit_code for r in done.ranks] == [0, 0]
        assert log_of(c, job.id).count(EXPECTED) == 2  # re-attaching did not replay the output


def test_an_agent_killed_mid_job_fails_it_naming_the_node_and_stops_the_rest(make_cluster):
    cl = make_cluster(heartbeat_interval=0.5, down_after=2.0)
    with cl.coord.client() as c:
        job = c.submit({"command": ["python", ALLSUM, "--sleep", "60"], "nodes": 2, "backend": "ring"})
        wait_for(lambda: EXPECTED in log_of(c, job.id), timeout=30)
        victim = next(p for p in _processes_of(job.id) if p.environ().get("JUPITER_NODE") == "a2")
        cl.agents[1].stop(signal.SIGKILL)
        victim.kill()  # the agent's rank dies with its host
        t0 = time.monotonic()
        done = wait_job(c, job.id, timeout=20)
        assert time.monotonic() - t0 < 10
        assert done.status == "failed"
        assert "node a2" in done.error and ("went down" in done.error or "exited" in done.error)
        wait_for(lambda: not _processes_of(job.id), timeout=20, what="rank 0 stopped")
        wait_for(lambda: {n.name: n.status for n in c.nodes()}["a2"] == "down", timeout=10)
        cl.restart_agent(1)
        wait_for(lambda: {n.name: n.status for n in c.nodes()}["a2"] == "ready", timeout=30)


def test_a_rank_killed_with_sigkill_fails_the_job_at_once_naming_it(make_cluster):
    cl = make_cluster(heartbeat_interval=1.0, down_after=10.0)
    with cl.coord.client() as c:
        job = c.submit({"command": ["python", ALLSUM, "--sleep", "60"], "nodes": 2, "backend": "ring"})
        wait_for(lambda: len(_processes_of(job.id)) == 2 and EXPECTED in log_of(c, job.id), timeout=30)
        rank1 = next(p for p in _processes_of(job.id) if p.environ().get("JUPITER_RANK") == "1")
        t0 = time.monotonic()
        rank1.send_signal(signal.SIGKILL)
        done = wait_job(c, job.id, timeout=15)
        assert time.monotonic() - t0 < 5
        assert done.status == "failed" and "rank 1 on node a2 was killed by SIGKILL" in done.error
        wait_for(lambda: not _processes_of(job.id), timeout=15)


def test_ranks_that_never_start_hit_the_start_timeout(make_cluster):
    cl = make_cluster(heartbeat_interval=1.0, down_after=30.0)
    frozen = psutil.Process(cl.agents[1].proc.pid)
    frozen.suspend()  # the agent on a2 hears nothing: its rank never starts
    with cl.coord.client() as c:
        job = c.submit({"command": ["python", ALLSUM], "nodes": 2, "backend": "ring", "start_timeout_s": 2})
        done = wait_job(c, job.id, timeout=20)
        assert done.status == "failed"
        assert "rank 1 on node a2 did not start within 2 s" in done.error
        frozen.resume()
        wait_for(lambda: not _processes_of(job.id), timeout=20, what="rank 0 stopped")


def test_timeout_s_fails_a_job_that_runs_too_long(make_cluster):
    cl = make_cluster(heartbeat_interval=1.0, down_after=30.0)
    with cl.coord.client() as c:
        job = c.submit({"command": ["python", ALLSUM, "--sleep", "60"], "nodes": 2, "backend": "ring",
                        "timeout_s": 2})
        done = wait_job(c, job.id, timeout=30)
        assert done.status == "failed" and "timed out after 2 s" in done.error
        wait_for(lambda: not _processes_of(job.id), timeout=20)


def test_an_agent_stopped_with_sigterm_takes_its_ranks_with_it(make_cluster):
    cl = make_cluster(heartbeat_interval=1.0, down_after=30.0)
    with cl.coord.client() as c:
        job = c.submit({"command": ["python", ALLSUM, "--sleep", "60"], "nodes": 2, "backend": "ring"})
        wait_for(lambda: EXPECTED in log_of(c, job.id), timeout=30)
        assert cl.agents[0].stop(signal.SIGTERM) == 0
        done = wait_job(c, job.id, timeout=20)
        assert done.status == "failed" and "rank 0 on node a1" in done.error
        assert "its agent was shut down" in done.error
        wait_for(lambda: not _processes_of(job.id), timeout=20)
