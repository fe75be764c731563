"""Jobs end to end: a real coordinator, two real agents, real MLX ranks that really all-reduce."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from shared.client import ApiError
from tests.support.harness import REPO, AgentProcess, CoordinatorProcess, free_port_run, wait_for

ALLSUM = str(REPO / "tests" / "support" / "ranks" / "allsum.py")
EXPECTED = "sum [0, 3, 6, 9]"  # ranks 0 and 1 contribute arange(4) * 1 and * 2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A coordinator whose heartbeat is slow (5 s), so anything fast here is the long-poll's doing."""
    root = tmp_path_factory.mktemp("cluster")
    coord = CoordinatorProcess(root / "leader", heartbeat_interval=5.0, down_after=30.0).start()
    agents = [AgentProcess(coord, f"a{i}", root / "agents" / f"a{i}").start() for i in (1, 2)]
    with coord.client() as c:
        wait_for(lambda: sorted(n.name for n in c.nodes() if n.status == "ready") == ["a1", "a2"], timeout=60)
    yield coord
    for a in agents:
        a.stop()
    coord.stop()


def wait_job(c, job_id, statuses=("succeeded", "failed", "cancelled"), timeout=60):
    return wait_for(lambda: (j := c.job(job_id)).status in statuses and j, timeout=timeout, every=0.1,
                    what=f"job {job_id} in {statuses}")


def wait_idle(c):
    wait_for(lambda: all(n.status == "ready" for n in c.nodes()), timeout=30, what="nodes idle")


def log_of(c, job_id):
    return c.logs(job_id)[0]


def just_after_a_heartbeat(c, name="a1"):
    """Wait for a fresh heartbeat from `name` and return its time: its next one is a whole
    heartbeat interval (5 s here) away, so anything an order starts in the next 4 s was not
    waiting for a heartbeat. (The API shows a beat the moment it lands.)"""
    def beat():
        return next(n.last_heartbeat for n in c.nodes() if n.name == name)
    last = beat()
    return wait_for(lambda: (b := beat()) != last and b, timeout=15, every=0.02, what=f"a heartbeat from {name}")


@pytest.mark.parametrize("backend", ["ring", "mpi"])
def test_two_rank_allsum_succeeds_with_both_ranks_in_the_log(cluster, backend):
    with cluster.client() as c:
        wait_idle(c)
        beat = just_after_a_heartbeat(c)
        job = c.submit({"name": f"allsum-{backend}", "command": ["python", ALLSUM, "--backend", backend],
                        "nodes": 2, "backend": backend})
        done = wait_job(c, job.id)
        text = log_of(c, job.id)
        assert done.status == "succeeded", (done.error, text)
        assert done.exit_code == 0 and done.nodes == ["a1", "a2"] and done.world_size == 2
        for rank in (0, 1):
            assert f"[{rank}] rank {rank} of 2 job {job.id} jrank {rank} {EXPECTED}" in text, text
        assert [r.exit_code for r in done.ranks] == [0, 0]
        # It started at once, not a 5 s heartbeat later: before a1's next beat, 5 s after `beat`
        # (4 s leaves a loaded machine room; an order that waits for a heartbeat takes 5 s).
        assert done.started_at >= done.created_at > beat
        assert (done.started_at - beat).total_seconds() < 4.0, (beat, done.created_at, done.started_at, text)


def test_a_failing_rank_fails_the_job_naming_it_and_stops_the_others(cluster):
    with cluster.client() as c:
        wait_idle(c)
        t0 = time.monotonic()
        job = c.submit({"command": ["python", ALLSUM, "--fail-rank", "1", "--code", "3", "--sleep", "60"],
                        "nodes": 2, "backend": "ring"})
        done = wait_job(c, job.id, timeout=30)
        assert time.monotonic() - t0 < 15
        assert done.status == "failed" and done.exit_code == 3
        assert "rank 1 on node a2 exited with code 3" in done.error
        wait_for(lambda: c.job(job.id).ranks[0].state == "exited", timeout=15, what="rank 0 stopped")
        assert c.job(job.id).ranks[0].exit_code != 0  # it was stopped, not left to sleep for a minute
        assert not _processes_of(job.id)


def _processes_of(job_id: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("JUPITER_JOB_ID") == job_id:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


@pytest.mark.parametrize("backend", ["ring", "mpi"])
def test_cancel_leaves_no_process_behind(cluster, backend):
    with cluster.client() as c:
        wait_idle(c)
        job = c.submit({"command": ["python", ALLSUM, "--backend", backend, "--sleep", "120"], "nodes": 2,
                        "backend": backend})
        wait_for(lambda: EXPECTED in log_of(c, job.id) and len(_processes_of(job.id)) >= 2, timeout=30,
                 what="ranks running")
        assert c.cancel(job.id).status == "cancelled"
        assert c.cancel(job.id).status == "cancelled"  # idempotent
        wait_for(lambda: not _processes_of(job.id), timeout=20, what="no process left")
        assert c.job(job.id).status == "cancelled"


def test_a_second_job_waits_pending_then_runs_as_soon_as_nodes_free(cluster, tmp_path):
    gate = tmp_path / "gate"  # the first job ends when this file appears
    wait = "import os, sys, time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.02)"
    hold = ["python", "-c", wait, str(gate)]
    with cluster.client() as c:
        wait_idle(c)
        try:
            first = c.submit({"command": hold, "nodes": 2, "backend": "ring"})
            second = c.submit({"command": ["python", ALLSUM], "nodes": 2, "backend": "ring"})
            wait_for(lambda: c.job(first.id).status == "running", timeout=30)
            pending = c.job(second.id)
            assert pending.status == "pending" and "busy" in pending.pending_reason
            beat = just_after_a_heartbeat(c)
        finally:
            gate.touch()  # the nodes free up just after a1's heartbeat: its next is 5 s away
        one = wait_job(c, first.id)
        two = wait_job(c, second.id)
        assert (one.status, two.status) == ("succeeded", "succeeded")
        assert two.started_at >= one.ended_at > beat
        # Not a heartbeat later: before a1's next beat (4 s leaves a loaded machine room).
        assert (two.started_at - beat).total_seconds() < 4.0, (beat, one.ended_at, two.started_at)


def test_a_wide_job_is_not_overtaken_by_younger_narrow_ones(cluster):
    """1-node job A holds a1; 2-node job B waits; 1-node job C, submitted after B, must not take the
    free a2 and keep B waiting: it runs after B."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(3)"]
    quick = [sys.executable, "-c", "print('done')"]
    with cluster.client() as c:
        wait_idle(c)
        a = c.submit({"command": sleeper, "nodes": 1, "backend": "ring"})
        wait_for(lambda: c.job(a.id).status == "running", timeout=30)
        b = c.submit({"command": quick, "nodes": 2, "backend": "ring"})
        narrow = c.submit({"command": quick, "nodes": 1, "backend": "ring"})
        time.sleep(1.0)
        held = c.job(narrow.id)
        assert held.status == "pending" and f"nodes held for the older job {b.id}" in held.pending_reason
        jobs = [wait_job(c, j.id) for j in (a, b, narrow)]
        assert [j.status for j in jobs] == ["succeeded"] * 3
        assert jobs[1].started_at >= jobs[0].ended_at  # B needed both nodes
        assert jobs[2].started_at >= jobs[1].started_at


def test_mlx_hostfile_runs_under_the_real_mlx_launch(cluster, tmp_path):
    with cluster.client() as c:
        wait_idle(c)
        job = c.submit({"command": ["python", ALLSUM], "nodes": 2, "backend": "ring"})
        wait_job(c, job.id)
        hostfile = json.loads(c.hostfile(job.id, "mlx"))
        assert hostfile["backend"] == "ring" and [h["ssh"] for h in hostfile["hosts"]] == ["127.0.0.1", "127.0.0.1"]
        ring = json.loads(c.hostfile(job.id, "ring"))
        assert len(ring) == 2 and all(len(r) == 1 and r[0].startswith("127.0.0.1:") for r in ring)
        assert c.hostfile(job.id, "openmpi") == "127.0.0.1 slots=2\n"
    path = tmp_path / "hosts.json"
    path.write_text(json.dumps(hostfile))
    launch = os.path.join(os.path.dirname(sys.executable), "mlx.launch")
    out = subprocess.run([launch, "--hostfile", str(path), "--backend", "ring", "--starting-port", str(free_port_run(2)),
                          "--", sys.executable, ALLSUM], capture_output=True, text=True, timeout=120,
                         stdin=subprocess.PIPE, env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert out.stdout.count(EXPECTED) == 2, out.stdout + out.stderr


def test_idempotent_resubmission(cluster):
    spec = {"command": ["python", ALLSUM], "nodes": 2, "backend": "ring", "idempotency_key": "nightly-2026-12-01"}
    with cluster.client() as c:
        wait_idle(c)
        before = len(c.jobs())
        r1 = httpx.post(cluster.url + "/jobs", json=spec, headers={"Authorization": f"Bearer {cluster.admin_token}"})
        r2 = httpx.post(cluster.url + "/jobs", json=spec, headers={"Authorization": f"Bearer {cluster.admin_token}"})
        assert (r1.status_code, r2.status_code) == (201, 200)
        assert r1.json()["id"] == r2.json()["id"]
        r3 = httpx.post(cluster.url + "/jobs", json=dict(spec, nodes=1),
                        headers={"Authorization": f"Bearer {cluster.admin_token}"})
        assert r3.status_code == 409 and "nightly-2026-12-01" in r3.json()["detail"]
        assert len(c.jobs()) == before + 1
        wait_job(c, r1.json()["id"])


@pytest.mark.parametrize("body, needle", [
    ({"command": "python train.py"}, "command"),
    ({"command": []}, "command"),
    ({"command": ["python"], "env": {"1BAD": "x"}}, "env"),
    ({"command": ["python"], "env": {"MLX_RANK": "3"}}, "MLX_RANK"),
    ({"command": ["python"], "nodes": 0}, "nodes"),
    ({"command": ["python"], "nodes": 100000}, "nodes"),
    ({"command": ["python"], "processes_per_node": 1000}, "processes_per_node"),
    ({"command": ["python"], "backend": "tcp"}, "backend"),
    ({"command": ["python"], "node_names": ["no-such-node"]}, "no-such-node"),
    ({"command": ["python"], "node_names": ["a1; rm -rf /"]}, "node_names"),
    ({"command": ["python"], "roles": ["boss"]}, "roles"),
    ({"domain": "unreal_engine"}, "no usable data"),
    ({"command": ["python"], "domain": "sample"}, "exactly one"),
    ({"command": ["python", "a\x00b"]}, "command"),
    ({"command": ["python"], "idempotency_key": "../../etc/passwd"}, "idempotency_key"),
    ({"command": ["python"], "surprise": 1}, "surprise"),
])
def test_bad_specs_are_4xx_naming_the_field_and_store_nothing(cluster, body, needle):
    with cluster.client() as c:
        before = len(c.jobs())
    r = httpx.post(cluster.url + "/jobs", json=body, headers={"Authorization": f"Bearer {cluster.admin_token}"})
    assert r.status_code == 422, r.text
    assert needle in json.dumps(r.json()["detail"]), r.json()
    with cluster.client() as c:
        assert len(c.jobs()) == before


def test_unknown_jobs_and_bad_ids(cluster):
    h = {"Authorization": f"Bearer {cluster.admin_token}"}
    for path in ("/jobs/j-0000000000", "/jobs/j-0000000000/logs", "/jobs/j-0000000000/hostfile",
                 "/jobs/j-0000000000/events"):
        assert httpx.get(cluster.url + path, headers=h).status_code == 404
    assert httpx.post(cluster.url + "/jobs/j-0000000000/cancel", headers=h).status_code == 404
    assert httpx.get(cluster.url + "/jobs/..%2f..%2fetc", headers=h).status_code in (404, 422)
    assert httpx.get(cluster.url + "/jobs?status=exploded", headers=h).status_code == 422
    j = httpx.post(cluster.url + "/jobs", headers={"Authorization": f"Bearer {cluster.join_token}"},
                   json={"command": ["python"]})
    assert j.status_code == 403  # a join token cannot run code


def test_events_stream_progress_and_logs_and_ends(cluster):
    with cluster.client() as c:
        wait_idle(c)
        job = c.submit({"command": ["python", ALLSUM, "--progress", "20"], "nodes": 2, "backend": "ring"})
        events = list(c.events(job.id))
        kinds = [e for e, _ in events]
        assert kinds[0] == "status" and kinds[-1] == "end"
        assert "progress" in kinds and "log" in kinds
        statuses = [d["status"] for e, d in events if e == "status"]
        assert statuses[-1] == "succeeded" and "running" in statuses
        logs = [d for e, d in events if e == "log"]
        assert any(EXPECTED in line and line.startswith("[0] ") for line in logs)
        done = c.job(job.id)
        assert done.progress["step"] == 20 and done.progress["total_steps"] == 20
        assert done.loss_history[0].step == 1 and done.loss_history[-1].loss == pytest.approx(0.5)
        assert len(done.loss_history) == 20
        # Progress lines are tracked and kept in the stored log; ordinary lines are kept.
        text = log_of(c, job.id)
        assert "JUPITER_PROGRESS" in text and EXPECTED in text
        # Each rank printed one line per step (20 each): each is in the stored log exactly once.
        every_step = sorted((rank, step) for rank in (0, 1) for step in range(1, 21))
        shown = sorted((int(line[1:line.index("]")]), json.loads(line.split("JUPITER_PROGRESS ", 1)[1])["step"])
                       for line in text.splitlines() if "JUPITER_PROGRESS" in line)
        assert shown == every_step, shown
        # Progress reaches the stream once, as `progress` events: none of its log events is a
        # progress line. Each rank's ordinary line is in the log and in the stream, once each.
        assert not [line for line in logs if "JUPITER_PROGRESS" in line]
        assert [d for e, d in events if e == "progress"][-1]["step"] == 20
        for where, lines in (("log", text.splitlines()), ("events", logs)):
            assert sum(EXPECTED in line for line in lines) == 2, (where, lines)


QUOTED_PROGRESS = ("print('JUPITER_PROGRESS {\"step\": 7, \"loss\": 1.5}'); print('JUPITER_PROGRESS {\"step\": 8');"
                   " print('  JUPITER_PROGRESS {\"step\": 9}'); print('done')")


def test_events_stream_leaves_out_only_well_formed_progress_lines(cluster):
    """The stream drops exactly the lines the tracker took as progress; a garbled or indented one
    is ordinary log text (docs/progress.md) and stays a `log` event. The stored log keeps all."""
    with cluster.client() as c:
        wait_idle(c)
        job = c.submit({"command": ["python", "-c", QUOTED_PROGRESS], "nodes": 1, "backend": "ring"})
        events = list(c.events(job.id))
        logs = [d for e, d in events if e == "log"]
        assert [d["step"] for e, d in events if e == "progress"] == [7]
        assert '[0] JUPITER_PROGRESS {"step": 8' in logs and '[0]   JUPITER_PROGRESS {"step": 9}' in logs
        assert "[0] done" in logs and not any('"step": 7' in line for line in logs)
        assert '[0] JUPITER_PROGRESS {"step": 7, "loss": 1.5}' in log_of(c, job.id).splitlines()


def test_a_job_that_does_not_read_jupiter_lines_streams_them_as_log_text(cluster):
    with cluster.client() as c:
        wait_idle(c)
        job = c.submit({"command": ["python", "-c", QUOTED_PROGRESS], "nodes": 1, "backend": "ring",
                        "progress_format": "none"})
        events = list(c.events(job.id))
        assert not [d for e, d in events if e == "progress"] and c.job(job.id).progress == {}
        assert '[0] JUPITER_PROGRESS {"step": 7, "loss": 1.5}' in [d for e, d in events if e == "log"]


def test_an_open_stream_does_not_hold_up_the_coordinator_stopping(tmp_path):
    """SIGTERM with a stream open on a job that will not end soon: the stream is closed cleanly
    (a whole chunked body) and the coordinator exits promptly, not when the job ends."""
    coord = CoordinatorProcess(tmp_path / "leader").start()  # no agents: the job stays pending
    try:
        with coord.client() as c:
            job = c.submit({"command": ["python", "-c", "pass"], "nodes": 1})
            stream = c.events(job.id)
            first = next(stream)
            assert first[0] == "status" and first[1]["status"] == "pending"
            started = time.monotonic()
            coord.proc.send_signal(signal.SIGTERM)
            rest = [e for e, _ in stream]  # ends without a transport error, and without an `end`
            assert "end" not in rest and set(rest) <= {"log", "status"}, rest
            coord.proc.wait(timeout=8)
            assert time.monotonic() - started < 5
    finally:
        coord.kill()
    assert "Waiting for connections to close" not in coord.log_path.read_text()


def test_logs_by_offset(cluster):
    with cluster.client() as c:
        wait_idle(c)
        job = c.submit({"command": ["python", ALLSUM], "nodes": 2, "backend": "ring"})
        wait_job(c, job.id)
        full, end = c.logs(job.id, 0)
        assert end == len(full.encode())
        half = len(full.encode()) // 2
        rest, end2 = c.logs(job.id, half)
        assert end2 == end and full.encode().endswith(rest.encode())
        assert c.logs(job.id, end) == ("", end)
        assert all(line.startswith("[") for line in full.splitlines())


def test_pending_job_times_out_with_a_reason_and_can_be_cancelled(cluster):
    with cluster.client() as c:
        job = c.submit({"command": ["python", ALLSUM], "nodes": 3, "pending_timeout_s": 1.5})
        done = wait_job(c, job.id, timeout=15)
        assert done.status == "failed" and "could not be placed within 1.5 s" in done.error
        assert "needs 3 node(s)" in done.error
        other = c.submit({"command": ["python", ALLSUM], "nodes": 3})
        assert c.job(other.id).status == "pending"
        assert c.cancel(other.id).status == "cancelled"


def test_cli_submit_follows_to_the_end_and_exits_with_the_outcome(cluster):
    env = dict(os.environ, JUPITER_URL=cluster.url, JUPITER_TOKEN=cluster.admin_token)
    ok = subprocess.run([sys.executable, "-m", "shared.cli", "submit", "--nodes", "2", "--backend", "ring", "--",
                         "python", ALLSUM], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count(EXPECTED) == 2 and "succeeded" in ok.stderr
    bad = subprocess.run([sys.executable, "-m", "shared.cli", "submit", "--nodes", "2", "--backend", "ring", "--",
                          "python", ALLSUM, "--fail-rank", "0", "--code", "7"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 7 and "rank 0 on node a1 exited with code 7" in bad.stderr
    jobs = subprocess.run([sys.executable, "-m", "shared.cli", "jobs"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    assert jobs.returncode == 0 and "failed" in jobs.stdout
    badenv = subprocess.run([sys.executable, "-m", "shared.cli", "submit", "--env", "NOEQUALS", "--", "true"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert badenv.returncode != 0 and "--env" in badenv.stderr


def test_a_missing_executable_fails_the_job_clearly(cluster):
    with cluster.client() as c:
        wait_idle(c)
        job = c.submit({"command": ["/no/such/binary"], "nodes": 1, "backend": "ring"})
        done = wait_job(c, job.id)
        assert done.status == "failed" and "rank 0" in done.error and "code 127" in done.error
        assert "cannot start" in done.error or "cannot start" in log_of(c, job.id)


FAIL_FIRST_ATTEMPT = ("import os, sys; a, r = os.environ['JUPITER_ATTEMPT'], os.environ['JUPITER_RANK']; "
                      "print('attempt', a, 'rank', r); sys.exit(3 if a == '0' and r == '1' else 0)")


@pytest.mark.parametrize("backend", ["ring", "mpi"])
def test_max_restarts_relaunches_a_failed_job_and_shows_each_attempt(cluster, backend):
    with cluster.client() as c:
        wait_idle(c)
        job = c.submit({"command": ["python", "-c", FAIL_FIRST_ATTEMPT], "nodes": 2, "backend": backend,
                        "max_restarts": 1})
        done = wait_job(c, job.id)
        assert done.status == "succeeded" and done.attempt == 1, (done.error, log_of(c, job.id))
        [first] = done.attempts
        assert first.attempt == 0 and "rank 1 on node a2 exited with code 3" in first.error
        assert first.nodes == ["a1", "a2"]
        text = log_of(c, job.id)
        assert "attempt 1 failed" in text and "[1] attempt 1 rank 1" in text
        # Without restarts the same job simply fails.
        once = c.submit({"command": ["python", "-c", FAIL_FIRST_ATTEMPT], "nodes": 2, "backend": backend})
        assert wait_job(c, once.id).status == "failed"



PROGRESS_SCRIPT = ("import time\nfor i in (1, 2, 3):\n"
                   "    print('JUPITER_PROGRESS {\"step\": %d, \"total_steps\": 3, \"loss\": %s}' % (i, 1.5 / i), "
                   "flush=True)\n    time.sleep(0.3)\n")


def test_cli_submit_shows_a_progress_bar_once_the_job_reports_progress(cluster):
    env = dict(os.environ, JUPITER_URL=cluster.url, JUPITER_TOKEN=cluster.admin_token, COLUMNS="160")
    done = subprocess.run([sys.executable, "-m", "shared.cli", "submit", "--backend", "ring", "--",
                           "python", "-c", PROGRESS_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "3/3" in done.stderr and "loss 0.5000" in done.stderr  # the bar, at its end
    assert "succeeded (final loss 0.5000)" in done.stderr
    quiet = subprocess.run([sys.executable, "-m", "shared.cli", "submit", "--backend", "ring", "--",
                            "python", "-c", "print('no progress here')"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=120)
    assert quiet.returncode == 0 and "no progress here" in quiet.stdout
    assert "/3" not in quiet.stderr and "loss" not in quiet.stderr  # no bar for a job that reports none
