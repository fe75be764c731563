"""agent.training as real MLX ring ranks (subprocesses on 127.0.0.1, started by hand with MLX_RANK
and MLX_HOSTFILE as an agent does): the same parameters as one process over the same global
batches, identical replicas, gradient compression, SIGTERM and a lost peer with
--checkpoint-on-failure, the CLI's refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

mx = pytest.importorskip("mlx.core")

from agent.training import checkpoint as ckpt  # noqa: E402
from agent.training.trainer import TrainConfig, train  # noqa: E402
from shared.progress import parse  # noqa: E402
from tests.support.harness import free_ports  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
VENV_PY = REPO / ".venv" / "bin" / "python"
PYTHON = str(VENV_PY) if VENV_PY.exists() else sys.executable
RUN_TIMEOUT = 120
MICRO = ["--domain", "sample", "--preset", "micro", "--max-bytes", "200000", "--eval-max-windows", "32"]


def _clean_env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLX_", "OMPI_", "PMIX_", "PRTE_", "JUPITER_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env



class Ranks:
    """`python -m agent.training ARGS` as ranks 0..n-1 of one ring, output in files."""

    def __init__(self, tmp: Path, args: list[str], n: int = 2, extra: dict[int, list[str]] | None = None):
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        hostfile = tmp / "ring.json"
        hostfile.write_text(json.dumps([[f"127.0.0.1:{p}"] for p in free_ports(n)]))
        self.procs: list[subprocess.Popen] = []
        for rank in range(n):
            env = _clean_env(MLX_RANK=str(rank), MLX_HOSTFILE=str(hostfile))
            out = open(tmp / f"rank{rank}.out", "w")
            err = open(tmp / f"rank{rank}.err", "w")
            argv = [PYTHON, "-m", "agent.training", *args, *(extra or {}).get(rank, [])]
            self.procs.append(subprocess.Popen(argv, cwd=REPO, env=env,
                                               stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                               start_new_session=True))
            out.close()
            err.close()

    def out(self, rank: int) -> str:
        return (self.tmp / f"rank{rank}.out").read_text()

    def err(self, rank: int) -> str:
        return (self.tmp / f"rank{rank}.err").read_text()

    def progress(self, rank: int = 0) -> list[dict]:
        return [r for r in (parse(line) for line in self.out(rank).splitlines()) if r is not None]

    def wait(self, timeout: float = RUN_TIMEOUT) -> list[int]:
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.wait(timeout=max(1, deadline - time.monotonic()))
        return [p.returncode for p in self.procs]

    def wait_for_step(self, step: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any((r.get("step") or 0) >= step for r in self.progress(0)):
                return
            if any(p.poll() is not None for p in self.procs):
                raise AssertionError(f"a rank ended early:\n{self.out(0)}\n{self.err(0)}\n{self.err(1)}")
            time.sleep(0.1)
        raise AssertionError(f"no progress line for step {step}:\n{self.out(0)}")

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            p.wait(timeout=10)

    def __enter__(self) -> "Ranks":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()

    def report(self) -> str:
        return "\n".join(f"--- rank {r} out\n{self.out(r)}\n--- rank {r} err\n{self.err(r)}"
                         for r in range(len(self.procs)))


def _load(path: Path) -> dict:
    return mx.load(str(path))


@pytest.mark.parametrize("sync_every", [1, 4])
def test_two_ranks_match_one_process_over_the_same_global_batches(tmp_path, sync_every):
    steps = 6
    args = MICRO + ["--steps", str(steps), "--sync-every", str(sync_every), "--checkpoint-every", "0",
                    "--checkpoint-dir", str(tmp_path / "ck2"), "--dump-params", str(tmp_path / "p{rank}.safetensors")]
    with Ranks(tmp_path / "run", args) as ranks:
        # meanwhile, the same run as one process, in-process
        one = train(TrainConfig(domain="sample", preset="micro", max_bytes=200_000, eval_max_windows=32,
                                steps=steps, sync_every=sync_every, checkpoint_every=0,
                                checkpoint_dir=str(tmp_path / "ck1")), log=lambda m: None)
        assert ranks.wait() == [0, 0], ranks.report()
    p0, p1 = _load(tmp_path / "p0.safetensors"), _load(tmp_path / "p1.safetensors")
    single = {k: v for k, v in _flat(one.params).items()}
    assert sorted(p0) == sorted(single)
    for k in p0:
        assert mx.array_equal(p0[k], p1[k]).item(), f"replicas differ on {k}"      # bit-identical replicas
        assert mx.allclose(p0[k], single[k], rtol=1e-4, atol=1e-5).item(), f"{k} differs from 1 process"
    # rank 0's checkpoint holds the same weights; rank 1 wrote nothing and printed only its own
    # progress lines (its step time and share, no loss)
    final = ckpt.latest(tmp_path / "ck2")
    assert final is not None and final.name == f"step-{steps:08d}"
    saved = _load(final / "model.safetensors")
    assert all(mx.array_equal(saved[k], p0[k]).item() for k in p0)
    assert ranks.err(1) == ""
    mine = ranks.progress(1)
    assert len(mine) == len(ranks.out(1).splitlines()) and mine, ranks.report()
    assert all(set(r) == {"step", "step_time_s", "share"} and 0 < r["share"] < 1 for r in mine)
    assert mine[0]["step"] == 1 and mine[-1]["step"] == steps
    lines = ranks.progress(0)
    assert lines[-1]["checkpoint"] == str(final) and lines[-1]["final_loss"] == pytest.approx(one.final_loss, rel=1e-4)
    assert all({"step", "total_steps", "epoch", "loss", "tokens_per_s", "eta_s"} <= set(r) for r in lines[:-1])
    assert any("eval_loss" in r for r in lines)
    assert f"2 rank(s); global batch 8 x 64 tokens (4 per rank), sync every {sync_every}" in ranks.out(0)


def _flat(tree) -> dict:
    from mlx.utils import tree_flatten

    return dict(tree_flatten(tree))


def test_two_ranks_with_gradient_compression_converge(tmp_path):
    args = MICRO + ["--steps", "30", "--grad-compression", "--bf16", "--checkpoint-every", "0",
                    "--checkpoint-dir", str(tmp_path / "ck"), "--log-every", "1"]
    with Ranks(tmp_path / "run", args) as ranks:
        assert ranks.wait() == [0, 0], ranks.report()
    assert "gradient compression: all-reduce in bfloat16, half the bytes" in ranks.out(0)
    losses = [r["loss"] for r in ranks.progress(0) if "final_loss" not in r]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0


def test_only_rank_0_needs_the_data(tmp_path):
    """Rank 0 reads the domain and ships the token stream: a rank whose node has no such domain
    (here: an empty domains folder) still trains on identical data."""
    empty = tmp_path / "no-domains"
    empty.mkdir()
    args = MICRO + ["--steps", "3", "--checkpoint-every", "0", "--checkpoint-dir", str(tmp_path / "ck"),
                    "--dump-params", str(tmp_path / "p{rank}.safetensors")]
    with Ranks(tmp_path / "run", args, extra={1: ["--domains-dir", str(empty)]}) as ranks:
        assert ranks.wait() == [0, 0], ranks.report()
    p0, p1 = _load(tmp_path / "p0.safetensors"), _load(tmp_path / "p1.safetensors")
    assert all(mx.array_equal(p0[k], p1[k]).item() for k in p0)


def test_a_rank_0_refusal_reaches_every_rank(tmp_path):
    """No usable data on rank 0: every rank exits 2 with one line naming the domain (nobody hangs)."""
    args = ["--domain", "unreal_engine", "--checkpoint-dir", str(tmp_path / "ck")]
    with Ranks(tmp_path / "run", args) as ranks:
        assert ranks.wait(60) == [2, 2], ranks.report()
    assert "'unreal_engine' has no usable data" in ranks.err(0)
    assert "'unreal_engine' has no usable data (on rank 0's node)" in ranks.err(1)
    assert all(len(ranks.err(r).strip().splitlines()) == 1 for r in (0, 1)), ranks.report()


def test_sigterm_saves_a_checkpoint_then_the_run_resumes_on_one_rank(tmp_path):
    ck = tmp_path / "ck"
    args = MICRO + ["--steps", "100000", "--checkpoint-on-failure", "--checkpoint-every", "0",
                    "--checkpoint-dir", str(ck), "--log-every", "1"]
    with Ranks(tmp_path / "run", args) as ranks:
        ranks.wait_for_step(3)
        for p in ranks.procs:  # what Jupiter's stop does: TERM every rank
            os.killpg(p.pid, signal.SIGTERM)
        codes = ranks.wait(60)
    assert codes[0] == 143, ranks.report()
    assert codes[1] in (143, 1), ranks.report()
    path = ckpt.latest(ck)
    assert path is not None, ranks.report()
    state = json.loads((path / "state.json").read_text())
    assert state["reason"] == "SIGTERM" and state["step"] >= 3 and state["world_size"] == 2
    assert f"checkpoint saved to {path}" in ranks.err(0)
    last = ranks.progress(0)[-1]
    assert last["status"] == "terminated" and last["checkpoint"] == str(path)
    # the global batches do not depend on the world size: one process carries on from there
    step = state["step"]
    cont = subprocess.run([PYTHON, "-m", "agent.training", *MICRO, "--steps", "100000", "--stop-at-step", str(step + 3),
                           "--checkpoint-dir", str(ck), "--resume", "auto", "--checkpoint-every", "0"],
                          cwd=REPO, env=_clean_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert cont.returncode == 0, cont.stdout + cont.stderr
    assert f"resumed from {path} at step {step}" in cont.stdout
    assert ckpt.latest(ck).name == f"step-{step + 3:08d}"


def test_a_lost_peer_makes_rank_0_checkpoint_and_exit_1(tmp_path):
    ck = tmp_path / "ck"
    args = MICRO + ["--steps", "100000", "--checkpoint-on-failure", "--checkpoint-every", "0",
                    "--checkpoint-dir", str(ck), "--log-every", "1"]
    with Ranks(tmp_path / "run", args) as ranks:
        ranks.wait_for_step(3)
        os.killpg(ranks.procs[1].pid, signal.SIGKILL)
        ranks.procs[0].wait(timeout=60)
        assert ranks.procs[0].returncode == 1, ranks.report()
    path = ckpt.latest(ck)
    assert path is not None, ranks.report()
    state = json.loads((path / "state.json").read_text())
    assert state["reason"] == "peer lost" and state["step"] >= 3
    assert "lost a peer" in ranks.err(0) and f"checkpoint saved to {path}" in ranks.err(0)


def test_cli_refuses_a_domain_without_data_in_one_line(tmp_path):
    r = subprocess.run([PYTHON, "-m", "agent.training", "--domain", "unreal_engine", "--checkpoint-dir", str(tmp_path)],
                       cwd=REPO, env=_clean_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "'unreal_engine' has no usable data" in lines[0], r.stderr
    assert "JUPITER_PROGRESS" not in r.stdout and not any(tmp_path.iterdir())


def test_cli_refuses_bad_domain_names_and_flags(tmp_path):
    for args, words in ((["--domain", "../etc"], "not valid"), (["--domain", "nope"], "no domain 'nope'")):
        r = subprocess.run([PYTHON, "-m", "agent.training", *args], cwd=REPO, env=_clean_env(),
                           capture_output=True, text=True, timeout=RUN_TIMEOUT)
        assert r.returncode == 2 and words in r.stderr, r.stderr
    r = subprocess.run([PYTHON, "-m", "agent.training", "--preset", "huge"], cwd=REPO, env=_clean_env(),
                       capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert r.returncode == 2 and "invalid choice" in r.stderr
