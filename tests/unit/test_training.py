"""agent.training in-process: presets and model_info, tokenizer, sharding, loss falling, exact resume,
bf16 and gradient compression, refusals. The multi-rank tests are in test_training_ranks.py."""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap

import pytest

mx = pytest.importorskip("mlx.core")

from mlx.utils import tree_flatten  # noqa: E402

from agent.training import checkpoint as ckpt  # noqa: E402
from shared import presets as P  # noqa: E402
from agent.training.data import DataError, Sharding, eval_ids  # noqa: E402
from agent.training.model import GPT  # noqa: E402
from agent.training.tokenizer import EOT, VOCAB_SIZE, decode, encode  # noqa: E402
from agent.training.trainer import TrainConfig, UsageError, train  # noqa: E402

LN_VOCAB = math.log(VOCAB_SIZE)


def micro(tmp_path, **kw) -> TrainConfig:
    base = dict(domain="sample", preset="micro", steps=12, max_bytes=200_000, checkpoint_dir=str(tmp_path / "ck"),
                checkpoint_every=0, eval_max_windows=32, log_every=1000)
    base.update(kw)
    return TrainConfig(**base)


def quiet(msg: str) -> None:
    pass


def flat(params) -> dict:
    return dict(tree_flatten(params))


# --------------------------------------------------------------------------- presets


@pytest.mark.parametrize("name", list(P.PRESETS))
def test_param_count_formula_matches_the_real_module(name):
    preset = P.get_preset(name)
    for p in (preset, dataclasses.replace(preset, tie_embeddings=False)):
        model = GPT(p)  # arrays stay lazy: counting needs no memory, even for 1b
        real = sum(v.size for _, v in tree_flatten(model.parameters()))
        assert real == P.param_count(p), (p.name, p.tie_embeddings)
    assert P.model_info(name)["params"] == P.param_count(preset)


def test_model_info_is_sane_and_monotone():
    infos = [P.model_info(n) for n in P.PRESETS]
    fixed = [P.model_info(n, batch=8, seq=128) for n in P.PRESETS]
    for seq in (infos, fixed):
        assert all(a["params"] < b["params"] for a, b in zip(seq, seq[1:]))
        assert all(a["memory_bytes"]["total"] < b["memory_bytes"]["total"] for a, b in zip(seq, seq[1:]))
        assert all(a["flops_per_token"] < b["flops_per_token"] for a, b in zip(seq, seq[1:]))
    one_b = P.model_info("1b")
    assert 0.9e9 < one_b["params"] < 1.2e9 and one_b["params_human"].endswith("B")
    m = one_b["memory_bytes"]
    assert m["total"] == m["weights"] + m["gradients"] + m["optimizer"] + m["activations"]
    assert m["weights"] == 4 * one_b["params"] and m["optimizer"] == 8 * one_b["params"]
    assert one_b["memory_gb"]["total"] > 16  # 1B params with AdamW do not fit a 16 GB Mac
    bf = P.model_info("1b", dtype="bfloat16")["memory_bytes"]
    assert bf["weights"] == 6 * one_b["params"]             # fp32 master + bf16 copy
    assert bf["activations"] < m["activations"]
    split = P.model_info("small", batch=32, world_size=4)
    assert split["batch_per_rank"] == 8
    assert split["memory_bytes"]["activations"] < P.model_info("small", batch=32)["memory_bytes"]["activations"]
    assert P.model_info("small", sync_every=4)["memory_bytes"]["gradients"] == 2 * 4 * split["params"]
    json.dumps(one_b)  # JSON-ready for the CLI
    with pytest.raises(ValueError, match="unknown preset"):
        P.model_info("huge")
    with pytest.raises(ValueError, match="dtype"):
        P.model_info("tiny", dtype="float16")


# --------------------------------------------------------------------------- tokenizer and data


def test_byte_tokenizer_round_trip():
    text = "def f(x):\n    return 'é' * 2\n"
    toks = encode(text)
    assert toks.dtype == mx.uint16 and toks.size == len(text.encode())
    assert decode(toks) == text
    assert decode([104, 105, EOT, 33]) == "hi\n\n!"
    assert VOCAB_SIZE == 257
    with pytest.raises(ValueError):
        decode([300])


def test_sharding_gives_each_rank_its_own_slice_of_the_same_global_batches():
    one = Sharding(n_windows=103, global_batch=8, sync_every=3, world=1, rank=0, seed=5)
    two = [Sharding(103, 8, 3, 2, r, 5) for r in range(2)]
    assert one.micro_per_epoch == 12 and one.steps_per_epoch == 4  # remainders dropped
    assert all(s.steps_per_epoch == 4 for s in two)
    for epoch in (0, 1):
        for micro in range(12):
            g = one.global_batch_ids(epoch, micro)
            a, b = two[0].rank_ids(epoch, micro), two[1].rank_ids(epoch, micro)
            assert a + b == g and not set(a) & set(b) and len(a) == 4
    assert one.order(0) != one.order(1)                       # reshuffled every epoch
    assert one.order(0) == Sharding(103, 8, 3, 4, 3, 5).order(0)  # independent of the world size
    assert one.order(0) != Sharding(103, 8, 3, 1, 0, 6).order(0)  # but not of the seed
    assert one.position(5) == (1, 3)
    assert eval_ids(10, 3, 1, None) == [1, 4, 7] and eval_ids(10, 2, 0, 4) == [0, 2]
    with pytest.raises(ValueError, match="multiple"):
        Sharding(100, 7, 1, 2, 0, 0)


# --------------------------------------------------------------------------- training


def test_loss_falls_on_sample(tmp_path):
    r = train(micro(tmp_path, steps=40, max_bytes=None), log=quiet)
    assert r.status == "completed" and r.exit_code == 0 and r.step == 40 and len(r.losses) == 40
    assert r.losses[0] > LN_VOCAB - 0.5                       # starts near uniform over 257 tokens
    assert sum(r.losses[-5:]) / 5 < sum(r.losses[:5]) / 5 - 1.5
    assert r.eval_losses and r.eval_losses[-1][0] == 40 and r.eval_losses[-1][1] < LN_VOCAB - 1.5
    assert r.final_loss == r.losses[-1]
    # the final checkpoint is complete and says where the next step would read
    path = ckpt.latest(tmp_path / "ck")
    assert str(path) == r.checkpoint and path.name == "step-00000040"
    state = json.loads((path / "state.json").read_text())
    assert state["step"] == 40 and state["reason"] == "final" and state["next"] == {"epoch_index": 0, "micro_batch": 40}
    loaded = ckpt.load(path)
    assert all(mx.array_equal(loaded.params[k], v).item() for k, v in flat(r.params).items())
    assert int(loaded.optimizer_state["step"].item()) == 40


def test_every_epoch_ends_with_an_eval_and_a_new_order(tmp_path):
    d = tmp_path / "domains"
    d.mkdir()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(400)))
    (d / "fox.yaml").write_text(f"sources: [{{path: {corpus}}}]\nholdout_fraction: 0.1\n")
    logs: list[str] = []
    r = train(micro(tmp_path, domain="fox", domains_dir=str(d), steps=None, epochs=3, max_bytes=None), log=logs.append)
    spe = r.total_steps // 3
    assert r.status == "completed" and spe >= 2 and r.total_steps == 3 * spe
    assert [s for s, _ in r.eval_losses] == [spe, 2 * spe, 3 * spe]
    assert r.eval_losses[-1][1] < r.eval_losses[0][1]
    assert sum("done at step" in line for line in logs) == 3
    assert r.epoch == 3


def test_resume_continues_exactly_the_same_curve(tmp_path):
    kw = dict(steps=10, sync_every=2, checkpoint_every=3, keep_checkpoints=2)
    straight = train(micro(tmp_path / "a", **kw), log=quiet)
    first = train(micro(tmp_path / "b", stop_at_step=5, **kw), log=quiet)
    assert first.status == "stopped" and first.exit_code == 0 and first.step == 5
    assert [p.name for _, p in ckpt.list_checkpoints(tmp_path / "b" / "ck")] == ["step-00000003", "step-00000005"]
    second = train(micro(tmp_path / "b", resume="auto", **kw), log=quiet)
    assert second.status == "completed" and second.start_step == 5 and second.step == 10
    assert first.losses == straight.losses[:5]
    assert second.losses == straight.losses[5:]               # bit for bit: same data, state, schedule
    a, b = flat(straight.params), flat(second.params)
    assert all(mx.array_equal(a[k], b[k]).item() for k in a)
    # resuming a finished run does nothing; an incompatible one is refused
    done = train(micro(tmp_path / "b", resume="auto", **kw), log=quiet)
    assert done.status == "nothing_to_do" and done.step == 10
    with pytest.raises(UsageError, match="seq_len"):
        train(micro(tmp_path / "b", resume="auto", seq_len=32, **kw), log=quiet)
    with pytest.raises(UsageError, match="no checkpoint"):
        train(micro(tmp_path / "c", resume=str(tmp_path / "nowhere"), **kw), log=quiet)


@pytest.mark.parametrize("opts", [dict(bf16=True), dict(grad_compression=True), dict(bf16=True, grad_compression=True)])
def test_bf16_and_gradient_compression_still_converge(tmp_path, opts):
    logs: list[str] = []
    r = train(micro(tmp_path, steps=30, **opts), log=logs.append)
    assert r.status == "completed"
    assert sum(r.losses[-5:]) / 5 < sum(r.losses[:5]) / 5 - 1.0
    assert all(v.dtype == mx.float32 for v in flat(r.params).values())  # master weights stay fp32
    text = "\n".join(logs)
    if opts.get("grad_compression"):
        assert "gradient compression: all-reduce in bfloat16, half the bytes" in text
    if opts.get("bf16"):
        assert "bfloat16 compute with float32 master weights" in text


def test_no_usable_data_is_refused_with_the_domain_named(tmp_path):
    with pytest.raises(DataError) as e:
        train(micro(tmp_path, domain="unreal_engine"), log=quiet)
    assert "'unreal_engine' has no usable data" in str(e.value) and "\n" not in str(e.value)
    d = tmp_path / "domains"
    d.mkdir()
    (d / "small.yaml").write_text(textwrap.dedent(f"""
        sources: [{{path: {tmp_path / 'small.txt'}}}]
    """))
    (tmp_path / "small.txt").write_text("just a few bytes of text\n" * 8)
    with pytest.raises(DataError, match="'small' gives 2 training windows of 64 tokens"):
        train(micro(tmp_path, domain="small", domains_dir=str(d)), log=quiet)


@pytest.mark.parametrize("kw, words", [(dict(preset="huge"), "unknown preset"), (dict(epochs=0), "epochs"),
                                       (dict(lr=-1.0), "lr"), (dict(sync_every=0), "sync-every")])
def test_bad_settings_are_refused(tmp_path, kw, words):
    with pytest.raises(UsageError, match=words):
        train(micro(tmp_path, **kw), log=quiet)


def test_default_checkpoint_dir(monkeypatch, tmp_path):
    from agent.training.trainer import default_checkpoint_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JUPITER_JOB_ID", raising=False)
    assert default_checkpoint_dir("sample") == tmp_path / "checkpoints" / "sample"
    monkeypatch.setenv("JUPITER_JOB_ID", "j-0123abcd")
    monkeypatch.setenv("JUPITER_HOME", str(tmp_path / "home"))
    assert default_checkpoint_dir("sample") == tmp_path / "home" / "checkpoints" / "j-0123abcd"
    monkeypatch.setenv("JUPITER_JOB_ID", "../../etc")
    assert default_checkpoint_dir("sample") == tmp_path / "checkpoints" / "sample"


def test_checkpoint_files_are_atomic_and_found_again(tmp_path):
    params = {"a": mx.arange(4, dtype=mx.float32), "blocks": [{"w": mx.ones((2, 3))}]}
    opt = {"step": mx.array(7, dtype=mx.uint64), "a": {"m": mx.zeros((4,))}}
    root = tmp_path / "ck"
    (root / ".tmp-step-00000001-999").mkdir(parents=True)          # a killed writer's leftovers
    p5 = ckpt.save(root, 5, params, opt, {"x": 1}, {"step": 5}, keep=2)
    assert sorted(f.name for f in p5.iterdir()) == ["config.json", "model.safetensors", "optimizer.safetensors",
                                                    "state.json"]
    assert not list(root.glob(".tmp-*")) and (root / "latest").read_text().strip() == "step-00000005"
    ckpt.save(root, 9, params, opt, {"x": 1}, {"step": 9}, keep=2)
    ckpt.save(root, 12, params, opt, {"x": 1}, {"step": 12}, keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(root)] == [9, 12]  # pruned to the newest 2
    again = ckpt.save(root, 12, params, opt, {"x": 2}, {"step": 12}, keep=2)  # the same step, replaced
    assert json.loads((again / "config.json").read_text())["x"] == 2
    (root / "latest").write_text("garbage\n")                       # a bad pointer: scan instead
    assert ckpt.latest(root).name == "step-00000012"
    assert ckpt.resolve("auto", root) == again and ckpt.resolve(str(root), tmp_path) == again
    assert ckpt.resolve(str(again), tmp_path) == again and ckpt.resolve("auto", tmp_path / "none") is None
    with pytest.raises(FileNotFoundError):
        ckpt.resolve(str(tmp_path / "none"), tmp_path)
    loaded = ckpt.load(again)
    tree = ckpt.fill({"blocks": [{"w": mx.zeros((2, 3))}], "a": mx.zeros((4,))}, loaded.params, "model")
    assert list(tree) == ["blocks", "a"]                            # the template's order, not the file's
    assert mx.array_equal(tree["a"], params["a"]).item()
    with pytest.raises(ValueError, match="does not fit"):
        ckpt.fill({"a": mx.zeros((4,))}, loaded.params, "model")
    with pytest.raises(ValueError, match=r"float32\[5\]"):
        ckpt.fill({"blocks": [{"w": mx.zeros((2, 3))}], "a": mx.zeros((5,))}, loaded.params, "model")


def test_a_diverging_run_stops_with_a_reason(tmp_path):
    r = train(micro(tmp_path, lr=1e6, clip=0.0, steps=30), log=quiet)
    assert r.status == "diverged" and r.exit_code == 1 and "lower --lr" in r.message
    assert r.step < 30 and r.checkpoint is None


# --------------------------------------------------------------------------- unequal shares


def test_sharding_by_counts_slices_the_same_global_batch():
    one = Sharding(103, 8, 1, 1, 0, 5)
    three = [Sharding(103, 8, 1, 2, r, 5, counts=[6, 2]) for r in range(2)]
    for micro in range(12):
        a, b = three[0].rank_ids(0, micro), three[1].rank_ids(0, micro)
        assert a + b == one.global_batch_ids(0, micro) and len(a) == 6 and len(b) == 2
    assert three[0].count == 6 and three[1].count == 2 and three[0].per_rank == 4
    even = Sharding(103, 8, 1, 2, 1, 5)
    assert even.rank_ids(1, 3) == Sharding(103, 8, 1, 2, 1, 5, counts=[4, 4]).rank_ids(1, 3)


def test_slices_weighted_by_tokens_give_the_one_process_gradient():
    """The arithmetic of unequal shares, without ranks: 6 and 2 sequences of one global batch of 8,
    each slice's token sum scaled by 1 / (the batch's tokens), summed, against the mean over all 8.
    Float32; the only difference is the order of the additions. The unweighted average of the
    two slices' means (what equal-share code would compute) is far off."""
    from agent.training.data import windows
    from agent.training.model import loss_fn

    mx.random.seed(0)
    model = GPT(P.get_preset("micro"))
    params = model.parameters()
    tokens = mx.random.randint(0, VOCAB_SIZE, (8 * 64 + 1,)).astype(mx.uint16)
    x, y = windows(tokens, list(range(8)), 64)

    def loss(p, x, y, scale=None):
        model.update(p)
        return loss_fn(model, x, y, scale)

    vg = mx.value_and_grad(loss)
    full_loss, full = vg(params, x, y)
    scale = 1.0 / (8 * 64)
    (la, ga), (lb, gb) = (vg(params, x[s], y[s], scale) for s in (slice(0, 6), slice(6, 8)))
    weighted = {k: ga_k + gb_k for (k, ga_k), (_, gb_k) in zip(tree_flatten(ga), tree_flatten(gb), strict=True)}
    (_, ma), (_, mb) = (vg(params, x[s], y[s]) for s in (slice(0, 6), slice(6, 8)))
    naive = {k: (a + b) / 2 for (k, a), (_, b) in zip(tree_flatten(ma), tree_flatten(mb), strict=True)}

    def rel_err(tree: dict) -> float:
        return max((mx.max(mx.abs(tree[k] - g)) / mx.max(mx.abs(g))).item() for k, g in tree_flatten(full))

    assert abs((la + lb).item() - full_loss.item()) < 1e-6 * full_loss.item()
    assert rel_err(weighted) < 1e-5
    assert rel_err(naive) > 1e-2


def test_sum_gradients_keeps_the_tree_whatever_the_buckets():
    from agent.training.collectives import sum_gradients

    group = mx.distributed.init()  # one process: the sum of one is itself
    tree = {"a": mx.arange(6, dtype=mx.float32).reshape(2, 3), "b": [{"w": mx.ones((4,))}, {"w": mx.zeros((1,))}]}
    for bucket in (1, 16, 1 << 20):
        out = sum_gradients(tree, group, bucket_bytes=bucket)
        assert [k for k, _ in tree_flatten(out)] == [k for k, _ in tree_flatten(tree)]
        assert all(mx.array_equal(a, b).item() and a.shape == b.shape
                   for (_, a), (_, b) in zip(tree_flatten(out), tree_flatten(tree), strict=True))


def test_shares_settings_are_checked(tmp_path):
    with pytest.raises(UsageError, match="--shares must be auto, equal or a ratio"):
        train(micro(tmp_path, shares="fast"), log=quiet)
    with pytest.raises(UsageError, match="names 2 rank"):
        train(micro(tmp_path, shares="3:1"), log=quiet)  # one rank here
    logs: list[str] = []
    r = train(micro(tmp_path, shares="equal", steps=3), log=logs.append)
    assert r.status == "completed" and not any(line.startswith("shares:") for line in logs)
