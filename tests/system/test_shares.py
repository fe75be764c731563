"""Unequal shares of the global batch in the built-in trainer, as real MLX ring ranks: a fixed 3:1
split gives the parameters of one process on the same global batches, `auto` moves sequences off
a rank slowed on purpose (JUPITER_TRAIN_SLOWDOWN), and a 2-rank Jupiter job says so in its log.

The tolerance of the comparisons with one process: float32 parameters within rtol 1e-4, atol 1e-5
(measured here: at most 5e-6 after one step at 3:1, 1e-6 at 1:1), the loss and the gradient norm
of every step within 1e-5 relative. They are not bit-identical because the ranks add the
per-token gradients in another order than one process does; the first AdamW step divides each
gradient by its own magnitude, which turns the rounding of a gradient close to zero into a
difference of up to a few 1e-6 in that parameter."""

from __future__ import annotations

import re

import pytest

mx = pytest.importorskip("mlx.core")

from mlx.utils import tree_flatten  # noqa: E402

import tests.system.test_training_ranks as ranks_mod  # noqa: E402
from agent.training.trainer import TrainConfig, train  # noqa: E402
from shared.progress import parse  # noqa: E402
from tests.system.test_training_ranks import MICRO, Ranks  # noqa: E402

SHARES_LINE = re.compile(r"shares: rank 0 (\d+)/(\d+), rank 1 (\d+)/\d+ \(measured ([\d,]+) vs ([\d,]+) tokens/s\)")


def _one_process(tmp_path, capsys, **kw) -> tuple[dict, list[dict]]:
    """The same run as one process, in-process: (final weights, its progress records)."""
    capsys.readouterr()
    one = train(TrainConfig(domain="sample", preset="micro", max_bytes=200_000, eval_every_epoch=False,
                            checkpoint_every=0, checkpoint_dir=str(tmp_path / "ck1"), log_every=1, **kw),
                log=lambda m: None)
    lines = [r for r in (parse(x) for x in capsys.readouterr().out.splitlines()) if r and "final_loss" not in r]
    return dict(tree_flatten(one.params)), lines


@pytest.mark.parametrize("shares, steps, sync_every, counts", [
    ("3:1", 1, 1, (6, 2)),
    ("3:1", 3, 2, (6, 2)),
    ("1:1", 1, 1, (4, 4)),
])
def test_fixed_shares_give_the_one_process_step(tmp_path, capsys, shares, steps, sync_every, counts):
    args = MICRO + ["--steps", str(steps), "--sync-every", str(sync_every), "--shares", shares,
                    "--checkpoint-every", "0", "--no-eval-every-epoch", "--log-every", "1",
                    "--checkpoint-dir", str(tmp_path / "ck2"), "--dump-params", str(tmp_path / "p{rank}.safetensors")]
    with Ranks(tmp_path / "run", args) as ranks:
        single, one_lines = _one_process(tmp_path, capsys, steps=steps, sync_every=sync_every)
        assert ranks.wait() == [0, 0], ranks.report()
    p0, p1 = mx.load(str(tmp_path / "p0.safetensors")), mx.load(str(tmp_path / "p1.safetensors"))
    assert sorted(p0) == sorted(single)
    for k in p0:
        assert mx.array_equal(p0[k], p1[k]).item(), f"replicas differ on {k}"
        assert mx.allclose(p0[k], single[k], rtol=1e-4, atol=1e-5).item(), f"{k} differs from 1 process"
    two_lines = [r for r in ranks.progress(0) if "final_loss" not in r]
    assert len(two_lines) == len(one_lines) == steps
    for a, b in zip(two_lines, one_lines, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
    shown = f"shares: rank 0 {counts[0]}/8, rank 1 {counts[1]}/8 (fixed by --shares {shares})"
    assert shown in ranks.out(0), ranks.out(0)
    assert ranks.err(1) == ""
    # each rank's progress lines, where they carry its share, carry this split
    for rank in (0, 1):
        assert all(r["share"] == pytest.approx(counts[rank] / 8) for r in ranks.progress(rank) if "share" in r)


def test_auto_shares_move_sequences_off_a_slowed_rank(tmp_path, capsys, monkeypatch):
    clean = ranks_mod._clean_env
    monkeypatch.setattr(ranks_mod, "_clean_env", lambda **kw: dict(clean(**kw), JUPITER_TRAIN_SLOWDOWN="1:0.25"))
    steps = 12
    args = MICRO + ["--steps", str(steps), "--batch-size", "16", "--checkpoint-every", "0", "--no-eval-every-epoch",
                    "--checkpoint-dir", str(tmp_path / "ck2"), "--dump-params", str(tmp_path / "p{rank}.safetensors")]
    with Ranks(tmp_path / "run", args) as ranks:
        assert ranks.wait() == [0, 0], ranks.report()
        single, _ = _one_process(tmp_path, capsys, steps=steps, batch_size=16)
    out = ranks.out(0)
    assert "shares: 8/16 each to start" in out and "JUPITER_TRAIN_SLOWDOWN=1:0.25" in out
    moved = SHARES_LINE.findall(out)
    assert moved, out
    n0, total, n1, fast, slow = moved[0]
    assert int(n0) + int(n1) == int(total) == 16 and int(n0) >= 11, out   # about 4:1, at least 11:5
    assert float(fast.replace(",", "")) > 2 * float(slow.replace(",", "")), out
    # whatever the split did, the weights are one process's on the same global batches
    p0, p1 = mx.load(str(tmp_path / "p0.safetensors")), mx.load(str(tmp_path / "p1.safetensors"))
    for k in p0:
        assert mx.array_equal(p0[k], p1[k]).item(), f"replicas differ on {k}"
        assert mx.allclose(p0[k], single[k], rtol=1e-4, atol=1e-5).item(), f"{k} differs from 1 process"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from tests.support.harness import AgentProcess, CoordinatorProcess, wait_for

    root = tmp_path_factory.mktemp("shares")
    cfg = root / "cluster.yaml"
    cfg.write_text("backend: ring\nnodes: []\n")
    coord = CoordinatorProcess(root / "leader", heartbeat_interval=1.0, down_after=20.0, config=cfg).start()
    agents = [AgentProcess(coord, f"s{i}", root / "agents" / f"s{i}").start() for i in (1, 2)]
    try:
        with coord.client() as c:
            wait_for(lambda: sum(n.status == "ready" for n in c.nodes()) == 2, timeout=60)
        yield coord
    finally:
        for a in agents:
            a.stop()
        coord.stop()


def test_a_two_rank_job_reports_its_shares(cluster):
    from tests.system.test_jobs import log_of, wait_job

    with cluster.client() as c:
        job = c.submit({"name": "shares", "domain": "sample", "preset": "micro", "steps": 150, "nodes": 2,
                        "backend": "ring", "env": {"JUPITER_TRAIN_SLOWDOWN": "1:0.25"}})
        done = wait_job(c, job.id, timeout=180)
        text = log_of(c, job.id)
    assert done.status == "succeeded", (done.error, text[-3000:])
    assert "shares: 4/8 each to start" in text, text[-3000:]
    n0, total, n1, _, _ = SHARES_LINE.findall(text)[0]
    assert int(n0) > int(n1) and int(n0) + int(n1) == int(total) == 8, text[-3000:]
    assert done.progress["step"] == 150
    # With its share cut, nobody waits for rank 1, but it is the slower one: named, about 4x slower.
    [slow] = done.stragglers
    assert (slow.rank, slow.node) == (1, done.nodes[1]) and 50 < slow.slower_pct < 90, done.stragglers
    assert [r.rank for r in done.rank_progress] == [0, 1] and done.rank_progress[1].share < 0.5
