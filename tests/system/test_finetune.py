"""`jupiter finetune` end to end: real mlx-lm LoRA on two real agents, a tiny model built here,
the model and data shipped with the job, progress followed, adapters downloaded, and a restart
that resumes from the saved adapters instead of from step 0."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from shared.apierror import ApiError
from tests.support.harness import REPO, AgentProcess, CoordinatorProcess, wait_for
from tests.support.tinylm import build


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    coord = CoordinatorProcess(root / "leader").start()
    # the agents upload a running rank 0's changed artifacts every second (30 s by default)
    agents = [AgentProcess(coord, f"f{i}", root / "agents" / f"f{i}",
                           extra_env={"JUPITER_ARTIFACTS_EVERY_S": "1"}).start() for i in (1, 2)]
    with coord.client() as c:
        # ready, and the MLX probe found mlx-lm beside MLX (finetune ranks go only there)
        wait_for(lambda: sorted(n.name for n in c.nodes() if n.status == "ready" and n.mlx_lm_version)
                 == ["f1", "f2"], timeout=90)
    coord.model, coord.data = build(root / "tiny")
    yield coord
    for a in agents:
        a.stop()
    coord.stop()


def wait_job(c, job_id, timeout=180):
    wait_for(lambda: c.job(job_id).status in ("succeeded", "failed", "cancelled"), timeout=timeout)
    return c.job(job_id)


def log_of(c, job_id) -> str:
    return c.logs(job_id)[0]


def test_jupiter_finetune_ships_the_model_follows_progress_and_brings_the_adapters_back(cluster, tmp_path):
    env = dict(os.environ, JUPITER_URL=cluster.url, JUPITER_TOKEN=cluster.admin_token, COLUMNS="160")
    out = tmp_path / "adapters"
    done = subprocess.run([sys.executable, "-m", "shared.cli", "finetune", "--model", str(cluster.model),
                           "--data", str(cluster.data), "--nodes", "2", "--iters", "12", "--batch-size", "4",
                           "--num-layers", "2", "--steps-per-report", "2", "--steps-per-eval", "6",
                           "--save-every", "6", "--name", "ft-cli", "-o", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "model (" in done.stderr and "uploaded" in done.stderr  # shipped: the nodes never held it
    assert "12/12" in done.stderr and "succeeded: final loss" in done.stderr and "eval loss" in done.stderr
    assert (out / "adapters.safetensors").stat().st_size > 0
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapters.safetensors"]
    with cluster.client() as c:
        [job] = [j for j in c.jobs() if j.name == "ft-cli"]
        job = c.job(job.id)
        assert job.world_size == 2 and job.progress["step"] == job.progress["total_steps"] == 12
        assert job.progress["eval_loss"] > 0 and len(job.loss_history) >= 5
        assert job.artifacts == ["adapters/**"]
        # the same model again: nothing is uploaded a second time
        again = subprocess.run([sys.executable, "-m", "shared.cli", "finetune", "--model", str(cluster.model),
                                "--data", str(cluster.data), "--nodes", "2", "--iters", "2", "--batch-size", "2",
                                "--num-layers", "2", "-d"], cwd=REPO, env=env, capture_output=True, text=True,
                               timeout=120)
        assert again.returncode == 0 and "already on the coordinator" in again.stderr, again.stderr
        assert wait_job(c, again.stdout.strip()).status == "succeeded"


def test_a_batch_that_does_not_divide_by_the_ranks_is_refused_naming_it(cluster):
    with cluster.client() as c, pytest.raises(ApiError) as refused:
        c.submit({"nodes": 2, "finetune": {"model": "/m", "data": "/d", "iters": 5, "batch_size": 3}})
    assert refused.value.status == 422
    assert "finetune.batch_size: 3 does not divide by the job's 2 ranks" in str(refused.value)


def test_a_rank_killed_mid_run_restarts_from_the_saved_adapters(cluster):
    with cluster.client() as c:
        sha = _upload(c, cluster)
        job = c.submit({"name": "ft-restart", "nodes": 2, "max_restarts": 1, "workdir": sha, "finetune": {
            "model": "model", "data": "data", "iters": 1500, "batch_size": 4, "num_layers": 2,
            "steps_per_report": 10, "steps_per_eval": 500, "val_batches": 1, "save_every": 20}})
        # once a save has reached the coordinator, kill rank 1's process
        wait_for(lambda: _saved_step(c, job.id) >= 20, timeout=120)
        saved = _saved_step(c, job.id)
        _kill_rank(job.id, rank=1)
        done = wait_job(c, job.id, timeout=240)
        log = log_of(c, job.id)
        assert done.status == "succeeded", (done.error, log[-3000:])
        assert done.attempt == 1 and "rank 1" in done.attempts[0].error
        resumed = [line for line in log.splitlines() if "resuming from the adapters saved at step" in line]
        assert resumed, log[-3000:]
        step = int(resumed[-1].split("saved at step ")[1].split()[0])
        assert step >= saved >= 20  # not from step 0
        assert done.progress["step"] == 1500 and done.progress.get("final_loss") is not None


def _upload(c, cluster) -> str:
    import tempfile

    from shared.workdir import pack

    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "w.tar.gz"
        packed = pack({"model": cluster.model, "data": cluster.data}, archive)
        if not c.has_file(packed.sha256):
            c.upload_file(packed.sha256, archive)
    return packed.sha256


def _saved_step(c, job_id) -> int:
    """The step of the adapters the coordinator holds for the job (in their safetensors metadata)."""
    import tempfile

    from agent.finetune import resume_point

    if "adapters/adapters.safetensors" not in {a.path for a in c.artifacts(job_id)}:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        c.download_artifact(job_id, "adapters/adapters.safetensors", Path(tmp) / "adapters.safetensors")
        return resume_point(Path(tmp), 1 << 30)


def _kill_rank(job_id: str, rank: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for p in psutil.process_iter(["cmdline"]):
            try:
                env = p.environ()
            except psutil.Error:
                continue
            if env.get("JUPITER_JOB_ID") == job_id and env.get("JUPITER_RANK") == str(rank) \
                    and "agent.finetune" in " ".join(p.info["cmdline"] or []):
                p.kill()
                return
        time.sleep(0.2)
    raise AssertionError(f"rank {rank} of {job_id} not found")
