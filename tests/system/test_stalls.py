"""Jobs that stop without a word: a rank that blocks for ever, a rank that is stopped (SIGSTOP),
a trainer that wedges and restarts from its checkpoint. Real coordinator, real agents, real MLX
ranks; the stall watchdog's rules are also walked in-process in tests/unit/test_watchdog.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import psutil
import pytest

from tests.support.harness import REPO, two_agents, wait_for
from tests.system.test_jobs import _processes_of, log_of, wait_job

STALL = str(REPO / "tests" / "support" / "ranks" / "stall.py")
HEARTBEAT_S = 0.5


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with two_agents(tmp_path_factory.mktemp("stalls"), heartbeat_interval=HEARTBEAT_S, down_after=30.0) as coord:
        yield coord


def _idle(c):
    wait_for(lambda: all(n.status == "ready" for n in c.nodes()), timeout=60, what="nodes idle")


def _rank_process(job_id: str, rank: int, runs: str) -> psutil.Process:
    """The rank's process that runs `runs` (its command, not an mpi rank's shim)."""
    def find():
        for p in _processes_of(job_id):
            try:
                if p.environ().get("JUPITER_RANK") == str(rank) and runs in " ".join(p.cmdline()):
                    return p
            except psutil.Error:
                pass
        return None
    return wait_for(find, timeout=30, what=f"rank {rank}'s process")


@pytest.mark.parametrize("backend", ["ring", "mpi"])
def test_a_rank_that_blocks_for_ever_fails_the_job_as_stalled_with_every_ranks_stack(cluster, backend):
    limit = 6.0
    with cluster.client() as c:
        _idle(c)
        job = c.submit({"command": ["python", STALL], "nodes": 2, "backend": backend, "stall_timeout_s": limit})
        wait_for(lambda: log_of(c, job.id).count("ready") == 2, timeout=60, what="both ranks in the ring")
        quiet_from = time.monotonic()
        done = wait_job(c, job.id, timeout=limit + 30)
        took = time.monotonic() - quiet_from
        text = log_of(c, job.id)
    assert done.status == "failed" and done.stalled, (done.status, done.error)
    assert took <= limit + 10, took
    assert done.error.startswith("stalled: no rank printed or reported progress for "), done.error
    assert f"stall_timeout_s {limit:g}" in done.error
    assert re.search(r"last output \d+ s before: rank [01] on a[12]: 'rank [01] of 2 ready'", done.error), done.error
    # Where each rank was, from its own stack: rank 1 asleep, rank 0 in the all_sum (both at module level).
    assert "rank 0 in <module> (stall.py:20)" in done.error and "rank 1 in <module> (stall.py:19)" in done.error, \
        done.error
    for rank in (0, 1):
        block = [line for line in text.splitlines() if line.startswith(f"[{rank}]")]
        assert any("(most recent call first):" in line for line in block), text[-3000:]
        assert any('stall.py", line' in line for line in block), text[-3000:]
    wait_for(lambda: not _processes_of(job.id), timeout=15, what="every rank stopped")


@pytest.mark.parametrize("backend", ["ring", "mpi"])
def test_a_stopped_rank_is_reported_within_a_heartbeat_and_again_when_it_continues(cluster, backend):
    """Ring: the agent looks at every heartbeat. Mpi: each rank's shim looks every second."""
    with cluster.client() as c:
        _idle(c)
        job = c.submit({"command": ["python", STALL, "--tick", "0.2"], "nodes": 2, "backend": backend})
        wait_for(lambda: log_of(c, job.id).count("tick") >= 4, timeout=60, what="both ranks ticking")
        proc = _rank_process(job.id, 1, STALL)
        proc.suspend()
        stopped_at = time.monotonic()
        try:
            running = wait_for(lambda: (j := c.job(job.id)).warnings and j, timeout=10, every=0.05,
                               what="the stopped rank reported")
            took = time.monotonic() - stopped_at
            assert running.status == "running"
            assert running.warnings == [f"rank 1 on node {running.nodes[1]} is stopped (process state T: SIGSTOP, "
                                        f"Ctrl-Z or a debugger); every other rank waits for it"]
            # One heartbeat (or the shim's second) to notice, then the report goes at once.
            assert took <= 2 * HEARTBEAT_S + 1.0 if backend == "ring" else took <= 3.0, took
            assert "rank 1 on node" in log_of(c, job.id)
        finally:
            proc.resume()
        wait_for(lambda: not c.job(job.id).warnings, timeout=10, what="the warning gone once it continues")
        assert "continues (no longer stopped)" in log_of(c, job.id)
        c.cancel(job.id)
        assert wait_job(c, job.id).status == "cancelled"


def test_a_stalled_trainer_job_restarts_from_its_checkpoint_and_finishes(cluster):
    with cluster.client() as c:
        _idle(c)
        job = c.submit({"name": "wedged", "domain": "sample", "preset": "micro", "steps": 500, "nodes": 2,
                        "backend": "ring", "max_restarts": 1, "stall_timeout_s": 8})
        wait_for(lambda: c.job(job.id).progress.get("checkpoint") == "checkpoints/step-00000200",
                 timeout=240, every=0.2, what="the checkpoint at step 200 announced")
        assert c.job(job.id).status == "running", c.job(job.id)
        _rank_process(job.id, 1, "agent.training").suspend()  # wedged: rank 0 now waits in its all-reduce for ever
        done = wait_job(c, job.id, timeout=400)
        text = log_of(c, job.id)
    assert done.status == "succeeded", (done.error, text[-3000:])
    assert done.attempt == 1 and done.attempts[0].error.startswith("stalled: "), done.attempts
    assert "rank 1 stopped (process state T)" in done.attempts[0].error
    assert not done.stalled  # the attempt that ended last finished
    resumed = re.search(r"resumed from \S+/checkpoints/step-(\d+) at step (\d+)", text)
    assert resumed and int(resumed.group(2)) >= 200, text[-3000:]
    assert done.progress["step"] == 500


def test_the_cli_submits_with_a_stall_timeout_and_shows_the_job_as_stalled(cluster):
    env = dict(os.environ, JUPITER_URL=cluster.url, JUPITER_TOKEN=cluster.admin_token)
    with cluster.client() as c:
        _idle(c)
    done = subprocess.run([sys.executable, "-m", "shared.cli", "submit", "--nodes", "2", "--backend", "ring",
                           "--stall-timeout", "4", "--", "python", STALL], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0 and "stalled: no rank printed or reported progress" in done.stderr, done.stderr
    assert "Current thread 0x" in done.stdout or "Thread 0x" in done.stdout  # the stacks, streamed with the log
    listed = subprocess.run([sys.executable, "-m", "shared.cli", "jobs"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0 and "failed (stalled)" in listed.stdout, listed.stdout
