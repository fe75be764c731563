"""The built-in trainer as a Jupiter job: `jupiter start` end to end, domain checks before any
rank starts, and an automatic restart that resumes from the checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from tests.support.harness import REPO, AgentProcess, CoordinatorProcess, wait_for
from tests.system.test_jobs import _processes_of, log_of, wait_job


@pytest.fixture(scope="module")
def trainers(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainers")
    cfg = root / "cluster.yaml"
    cfg.write_text("backend: ring\nsync_every_n_steps: 2\ncheckpoint_on_failure: true\n"
                   "auto_restart_failed_nodes: true\nnodes: []\n")
    coord = CoordinatorProcess(root / "leader", heartbeat_interval=1.0, down_after=20.0, config=cfg).start()
    agents = [AgentProcess(coord, f"t{i}", root / "agents" / f"t{i}").start() for i in (1, 2)]
    with coord.client() as c:
        wait_for(lambda: sum(n.status == "ready" for n in c.nodes()) == 2, timeout=60)
    yield coord
    for a in agents:
        a.stop()
    coord.stop()


def idle(c):
    wait_for(lambda: all(n.status == "ready" for n in c.nodes()), timeout=60, what="nodes idle")


def test_jupiter_start_trains_to_the_end_and_exits_0(trainers):
    env = dict(os.environ, JUPITER_URL=trainers.url, JUPITER_TOKEN=trainers.admin_token)
    with trainers.client() as c:
        idle(c)
    out = subprocess.run([sys.executable, "-m", "shared.cli", "start", "--domain", "sample", "--preset", "micro",
                          "--steps", "40", "--nodes", "2", "--backend", "ring"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "succeeded: final loss" in out.stderr and "checkpoint: " in out.stderr
    with trainers.client() as c:
        [listed] = [j for j in c.jobs() if j.name == "train-sample"][:1]
        assert listed.loss_history == []  # lists leave the histories out; the job itself has it
        job = c.job(listed.id)
        assert job.status == "succeeded" and job.world_size == 2
        assert job.command[:3] == ["python", "-m", "agent.training"]
        assert "--sync-every" in job.command and job.command[job.command.index("--sync-every") + 1] == "2"
        assert job.progress["step"] == 40 and job.progress["total_steps"] == 40
        assert len(job.loss_history) >= 2 and job.loss_history[-1].loss < job.loss_history[0].loss
        assert os.path.isdir(job.progress["checkpoint"])


@pytest.mark.parametrize("body, needle", [
    ({"domain": "unreal_engine", "nodes": 2}, "domain 'unreal_engine' has no usable data"),
    ({"domain": "no_such_domain", "nodes": 2}, "no_such_domain"),
    ({"domain": "../../etc", "nodes": 2}, "domain"),
    ({"domain": "sample", "preset": "enormous"}, "unknown preset 'enormous'"),
    ({"command": ["python"], "epochs": 3}, "for the built-in trainer"),
])
def test_trainer_specs_are_checked_before_any_rank_starts(trainers, body, needle):
    with trainers.client() as c:
        before = len(c.jobs())
    r = httpx.post(trainers.url + "/jobs", json=body, headers={"Authorization": f"Bearer {trainers.admin_token}"})
    assert r.status_code == 422 and needle in str(r.json()["detail"]), r.text
    with trainers.client() as c:
        assert len(c.jobs()) == before


def test_a_killed_rank_with_auto_restart_resumes_from_the_checkpoint_and_succeeds(trainers):
    with trainers.client() as c:
        idle(c)
        job = c.submit({"name": "restartable", "domain": "sample", "preset": "micro", "steps": 300, "nodes": 2,
                        "backend": "ring"})
        wait_for(lambda: (c.job(job.id).progress.get("step") or 0) >= 60, timeout=120, what="training under way")
        rank1 = next(p for p in _processes_of(job.id) if p.environ().get("JUPITER_RANK") == "1")
        rank1.send_signal(signal.SIGKILL)
        done = wait_job(c, job.id, timeout=300)
        text = log_of(c, job.id)
        assert done.status == "succeeded", (done.error, text[-3000:])
        assert done.attempt == 1 and len(done.attempts) == 1
        assert "rank 1 on node t2 was killed by SIGKILL" in done.attempts[0].error
        assert "resumed from" in text  # attempt 2 picked up rank 0's checkpoint ...
        resumed_at = int(text.split("resumed from", 1)[1].split("at step", 1)[1].split()[0])
        assert resumed_at >= 60            # ... saved when the peer was lost, not from scratch
        assert done.progress["step"] == 300
