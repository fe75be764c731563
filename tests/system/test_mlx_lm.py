"""Real mlx-lm LoRA fine-tuning as a plain command job: a real coordinator, two real agents, ring and
mpi. Progress comes from mlx-lm's own output (shared.progress_formats), the log holds no terminal
control, and a rank killed under mpirun is named as killed, even after output with no newline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from coordinator.launchers.mpirun_output import Follower
from shared.text import CONTROL_RE
from tests.support.harness import REPO, two_agents, wait_for
from tests.support.tinylm import build
from tests.system.test_jobs import log_of, wait_idle, wait_job

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
ITERS = 6


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build(tmp_path_factory.mktemp("tinylm"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with two_agents(tmp_path_factory.mktemp("cluster"), heartbeat_interval=1.0, down_after=30.0) as coord:
        yield coord


def lora(tiny, iters: int = ITERS, report: int = 2, evals: int = 3) -> list[str]:
    model, data = tiny
    return ["python", "-m", "mlx_lm", "lora", "--model", str(model), "--train", "--data", str(data),
            "--iters", str(iters), "--batch-size", "2", "--num-layers", "2", "--steps-per-report", str(report),
            "--steps-per-eval", str(evals), "--val-batches", "2", "--adapter-path", "adapters"]


def no_control(text: str) -> None:
    bad = CONTROL_RE.search(text.replace("\n", ""))
    assert bad is None, (repr(bad.group(0)), text)


@pytest.mark.parametrize("backend", ["ring", "mpi"])
def test_mlx_lm_lora_on_two_ranks_is_followed_from_its_own_output(cluster, tiny, backend):
    with cluster.client() as c:
        wait_idle(c)
        job = c.submit({"name": f"lora-{backend}", "command": lora(tiny), "nodes": 2, "backend": backend,
                        "env": OFFLINE})
        done = wait_job(c, job.id, timeout=60)
        text = log_of(c, job.id)
        assert done.status == "succeeded", (done.error, text)
        p = done.progress
        assert p["step"] == p["total_steps"] == ITERS, (p, text)
        assert 0 < p["loss"] < 20 and 0 < p["eval_loss"] < 20 and p["tokens_per_s"] > 0, p
        assert [pt.step for pt in done.loss_history] == [2, 4, 6], done.loss_history
        no_control(text)
        assert "[0]   iter   train_loss     tok/s     tokens" in text, text  # mlx-lm's table, stored plain
        assert "\x1b" not in text and "\r" not in text


def _rank_process(job_id: str, rank: int) -> psutil.Process | None:
    """The mlx-lm process of `rank` (not the rank shim in front of it)."""
    for p in psutil.process_iter(["pid"]):
        try:
            env, cmd = p.environ(), " ".join(p.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if env.get("JUPITER_JOB_ID") == job_id and env.get("JUPITER_RANK") == str(rank) and "mlx_lm" in cmd \
                and "agent.rankshim" not in cmd:
            return p
    return None


def test_a_rank_sigkilled_mid_run_under_mpirun_is_named_as_killed(cluster, tiny):
    with cluster.client() as c:
        wait_idle(c)
        job = c.submit({"name": "lora-kill", "command": lora(tiny, iters=100_000, report=5, evals=100_000),
                        "nodes": 2, "backend": "mpi", "env": OFFLINE})
        wait_for(lambda: c.job(job.id).progress.get("step", 0) >= 10, timeout=45, what="training under way")
        victim = wait_for(lambda: _rank_process(job.id, 1), timeout=10, what="rank 1's mlx-lm process")
        victim.send_signal(signal.SIGKILL)
        done = wait_job(c, job.id, timeout=30)
        text = log_of(c, job.id)
        assert done.status == "failed", (done.error, text)
        assert "rank 1 on node a2 was killed by SIGKILL" in done.error, (done.error, text)
        no_control(text)


def test_a_rank_whose_last_output_has_no_newline_is_still_named_under_mpirun(cluster):
    """The exit line comes after a progress bar left without a newline: still a line of its own."""
    script = ("import os, signal, sys, time\n"
              "rank = int(os.environ['JUPITER_RANK'])\n"
              "print('started', flush=True)\n"
              "if rank == 1:\n"
              "    sys.stdout.write('\\x1b[1mtrain\\x1b[0m 50%\\r\\x1b[2Ktrain 80%'); sys.stdout.flush()\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n"
              "time.sleep(30)\n")
    with cluster.client() as c:
        wait_idle(c)
        job = c.submit({"name": "bar-kill", "command": ["python", "-c", script], "nodes": 2, "backend": "mpi"})
        done = wait_job(c, job.id, timeout=30)
        text = log_of(c, job.id)
        assert done.status == "failed", (done.error, text)
        assert "rank 1 on node a2 was killed by SIGKILL" in done.error, (done.error, text)
        assert "[1] train 80%" in text.splitlines(), text
        no_control(text)


# --------------------------------------------------------------------------- the shim on its own


@pytest.mark.parametrize("tail, code", [("'\\rbar 100%'", 0), ("'\\x1b[?25h'", 3), ("''", 0), ("'done\\n'", 0)])
def test_the_shims_exit_line_is_always_a_line_of_its_own(tmp_path, tail, code):
    script = f"import sys; print('one', flush=True); sys.stdout.write({tail}); sys.stdout.flush(); sys.exit({code})"
    out = subprocess.run([sys.executable, "-m", "agent.rankshim", "--", sys.executable, "-c", script],
                         cwd=REPO, capture_output=True, timeout=30, env=dict(os.environ, JUPITER_RANK="1"))
    assert out.returncode == code
    lines = out.stdout.decode().split("\n")
    assert lines[-1] == "" and lines[-2] == f'JUPITER_RANK_EXIT {{"rank": 1, "code": {code}}}', lines
    tagged = [f"[1,1]<stdout>: {line}" for line in lines[:-1]]
    report, _ = Follower("j-1", 0).read(tagged)
    assert [(s.rank, s.state, s.exit_code) for s in report.ranks] == [(1, "running", None), (1, "exited", code)]
    assert report.output[0].lines[0] == "one"


def test_the_shim_passes_output_on_as_it_comes_and_stderr_with_it(tmp_path):
    script = ("import sys, time; print('first', flush=True); print('err', file=sys.stderr, flush=True); "
              "time.sleep(5); print('last')")
    proc = subprocess.Popen([sys.executable, "-m", "agent.rankshim", "--", sys.executable, "-c", script], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout.readline().startswith(b"JUPITER_RANK_START")
        assert proc.stdout.readline() == b"first\n"  # long before the command ends
        assert proc.stdout.readline() == b"err\n"
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_the_shim_does_not_wait_for_what_the_command_left_behind(tmp_path):
    """A process the command started keeps the pipe open: the exit line comes all the same."""
    script = "import subprocess, sys; subprocess.Popen(['sleep', '10']); print('bye', end='')"
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "agent.rankshim", "--", sys.executable, "-c", script],
                         cwd=REPO, capture_output=True, timeout=15)
    assert time.monotonic() - t0 < 6
    assert out.stdout.decode().endswith('bye\nJUPITER_RANK_EXIT {"rank": 0, "code": 0}\n'), out.stdout
