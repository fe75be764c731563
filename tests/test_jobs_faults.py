"""Jobs when things break: the coordinator restarts, an agent dies or freezes, a rank is killed."""

from __future__ import annotations

import signal
import time

import psutil

from tests.harness import AgentProcess, CoordinatorProcess, wait_for
from tests.test_jobs import ALLSUM, EXPECTED, _processes_of, log_of, wait_job


def _cluster(tmp_path, **kw):
    coord = CoordinatorProcess(tmp_path / "leader", **kw).start()
    agents = [AgentProcess(coord, f"a{i}", tmp_path / "agents" / f"a{i}").start() for i in (1, 2)]
    with coord.client() as c:
        wait_for(lambda: sum(n.status == "ready" for n in c.nodes()) == 2, timeout=60, what="agents ready")
    return coord, agents


def _restart(coord: CoordinatorProcess) -> CoordinatorProcess:
    again = CoordinatorProcess(coord.home, heartbeat_interval=coord.heartbeat_interval,
                               down_after=coord.down_after, port=coord.port)
    again.admin_token, again.join_token = coord.admin_token, coord.join_token
    return again.start()


def test_coordinator_sigkill_mid_job_neither_loses_nor_fails_it(tmp_path):
    coord, agents = _cluster(tmp_path, heartbeat_interval=0.5, down_after=4.0)
    again = None
    try:
        with coord.client() as c:
            job = c.submit({"command": ["python", ALLSUM, "--sleep", "4"], "nodes": 2, "backend": "ring"})
            wait_for(lambda: EXPECTED in log_of(c, job.id), timeout=30, what="ranks running")
        coord.kill()
        time.sleep(1.5)
        again = _restart(coord)
        with again.client() as c:
            assert c.job(job.id).status == "running"
            done = wait_job(c, job.id, timeout=40)
            assert done.status == "succeeded", done.error
            assert log_of(c, job.id).count(EXPECTED) == 2
            assert all(n.status == "ready" for n in c.nodes())
    finally:
        if again:
            again.stop()
        for a in agents:
            a.stop()
        coord.stop()


def test_coordinator_restart_after_the_job_ended_reports_the_true_outcome(tmp_path):
    coord, agents = _cluster(tmp_path, heartbeat_interval=0.5, down_after=4.0)
    again = None
    try:
        with coord.client() as c:
            job = c.submit({"command": ["python", ALLSUM, "--sleep", "1.5", "--fail-rank", "1", "--code", "5"],
                            "nodes": 2, "backend": "ring"})
            wait_for(lambda: EXPECTED in log_of(c, job.id), timeout=30)
        coord.kill()
        time.sleep(3)  # rank 1 exits 5 while nobody listens
        again = _restart(coord)
        with again.client() as c:
            done = wait_job(c, job.id, timeout=20)
            assert done.status == "failed" and "rank 1 on node a2 exited with code 5" in done.error
    finally:
        if again:
            again.stop()
        for a in agents:
            a.stop()
        coord.stop()


def test_an_agent_killed_mid_job_fails_it_naming_the_node_and_stops_the_rest(tmp_path):
    coord, agents = _cluster(tmp_path, heartbeat_interval=0.5, down_after=2.0)
    try:
        with coord.client() as c:
            job = c.submit({"command": ["python", ALLSUM, "--sleep", "60"], "nodes": 2, "backend": "ring"})
            wait_for(lambda: EXPECTED in log_of(c, job.id), timeout=30)
            victim = next(p for p in _processes_of(job.id) if p.environ().get("JUPITER_NODE") == "a2")
            agents[1].stop(signal.SIGKILL)
            victim.kill()  # the agent's rank dies with its host
            t0 = time.monotonic()
            done = wait_job(c, job.id, timeout=20)
            assert time.monotonic() - t0 < 10
            assert done.status == "failed"
            assert "node a2" in done.error and ("went down" in done.error or "exited" in done.error)
            wait_for(lambda: not _processes_of(job.id), timeout=20, what="rank 0 stopped")
            wait_for(lambda: {n.name: n.status for n in c.nodes()}["a2"] == "down", timeout=10)
            agents[1] = AgentProcess(coord, "a2", tmp_path / "agents" / "a2").start()
            wait_for(lambda: {n.name: n.status for n in c.nodes()}["a2"] == "ready", timeout=30)
    finally:
        for a in agents:
            a.stop()
        coord.stop()


def test_a_rank_killed_with_sigkill_fails_the_job_at_once_naming_it(tmp_path):
    coord, agents = _cluster(tmp_path, heartbeat_interval=1.0, down_after=10.0)
    try:
        with coord.client() as c:
            job = c.submit({"command": ["python", ALLSUM, "--sleep", "60"], "nodes": 2, "backend": "ring"})
            wait_for(lambda: len(_processes_of(job.id)) == 2 and EXPECTED in log_of(c, job.id), timeout=30)
            rank1 = next(p for p in _processes_of(job.id) if p.environ().get("JUPITER_RANK") == "1")
            t0 = time.monotonic()
            rank1.send_signal(signal.SIGKILL)
            done = wait_job(c, job.id, timeout=15)
            assert time.monotonic() - t0 < 5
            assert done.status == "failed" and "rank 1 on node a2 was killed by SIGKILL" in done.error
            wait_for(lambda: not _processes_of(job.id), timeout=15)
    finally:
        for a in agents:
            a.stop()
        coord.stop()


def test_ranks_that_never_start_hit_the_start_timeout(tmp_path):
    coord, agents = _cluster(tmp_path, heartbeat_interval=1.0, down_after=30.0)
    frozen = psutil.Process(agents[1].proc.pid)
    try:
        frozen.suspend()  # the agent on a2 hears nothing: its rank never starts
        with coord.client() as c:
            job = c.submit({"command": ["python", ALLSUM], "nodes": 2, "backend": "ring", "start_timeout_s": 2})
            done = wait_job(c, job.id, timeout=20)
            assert done.status == "failed"
            assert "rank 1 on node a2 did not start within 2 s" in done.error
            frozen.resume()
            wait_for(lambda: not _processes_of(job.id), timeout=20, what="rank 0 stopped")
    finally:
        if frozen.status() == psutil.STATUS_STOPPED:
            frozen.resume()
        for a in agents:
            a.stop()
        coord.stop()


def test_timeout_s_fails_a_job_that_runs_too_long(tmp_path):
    coord, agents = _cluster(tmp_path, heartbeat_interval=1.0, down_after=30.0)
    try:
        with coord.client() as c:
            job = c.submit({"command": ["python", ALLSUM, "--sleep", "60"], "nodes": 2, "backend": "ring",
                            "timeout_s": 2})
            done = wait_job(c, job.id, timeout=30)
            assert done.status == "failed" and "timed out after 2 s" in done.error
            wait_for(lambda: not _processes_of(job.id), timeout=20)
    finally:
        for a in agents:
            a.stop()
        coord.stop()


def test_an_agent_stopped_with_sigterm_takes_its_ranks_with_it(tmp_path):
    coord, agents = _cluster(tmp_path, heartbeat_interval=1.0, down_after=30.0)
    try:
        with coord.client() as c:
            job = c.submit({"command": ["python", ALLSUM, "--sleep", "60"], "nodes": 2, "backend": "ring"})
            wait_for(lambda: EXPECTED in log_of(c, job.id), timeout=30)
            assert agents[0].stop(signal.SIGTERM) == 0
            done = wait_job(c, job.id, timeout=20)
            assert done.status == "failed" and "rank 0 on node a1" in done.error
            assert "its agent was shut down" in done.error
            wait_for(lambda: not _processes_of(job.id), timeout=20)
    finally:
        for a in agents:
            a.stop()
        coord.stop()



def test_coordinator_restart_reattaches_to_a_running_mpirun(tmp_path):
    coord, agents = _cluster(tmp_path, heartbeat_interval=0.5, down_after=4.0)
    again = None
    try:
        with coord.client() as c:
            job = c.submit({"command": ["python", ALLSUM, "--backend", "mpi", "--sleep", "4"], "nodes": 2,
                            "backend": "mpi"})
            wait_for(lambda: log_of(c, job.id).count(EXPECTED) == 2, timeout=30, what="mpi ranks running")
        coord.kill()
        time.sleep(1)
        again = _restart(coord)
        with again.client() as c:
            done = wait_job(c, job.id, timeout=40)
            assert done.status == "succeeded", done.error
            assert [r.exit_code for r in done.ranks] == [0, 0]
            assert log_of(c, job.id).count(EXPECTED) == 2  # re-attaching did not replay the output
    finally:
        if again:
            again.stop()
        for a in agents:
            a.stop()
        coord.stop()
