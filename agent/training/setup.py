"""Setting up a run on every rank: the batch shape, the data (rank 0 reads it and sends it to
the others, with the checkpoint to resume), the step counts, the model with AdamW and its
learning-rate schedule, and the compiled loss. Afterwards every rank holds identical bytes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map

from agent.training import checkpoint as ckpt
from agent.training import resume as resuming
from agent.training import shares
from agent.training.collectives import broadcast_ints, broadcast_tokens, broadcast_tree
from agent.training.config import TrainConfig, UsageError, check_config, default_checkpoint_dir
from agent.training.data import DataError, Sharding, TokenData, n_windows
from agent.training.model import GPT, loss_fn
from agent.training.reporting import announce
from agent.training.run_state import Run


def setup(cfg: TrainConfig, group: mx.distributed.Group | None, log: Callable[[str], None] | None,
          progress: bool = True) -> Run:
    """A run ready for its first step (raises UsageError / DataError / ConfigError)."""
    run = Run(cfg, group, log, progress)
    run.preset = check_config(cfg)
    run.seq = cfg.seq_len or run.preset.seq_len
    run.batch = _global_batch(run, cfg.batch_size or run.preset.batch_size)
    shares.plan(run)
    run.ckpt_dir = (Path(os.path.expanduser(cfg.checkpoint_dir)) if cfg.checkpoint_dir
                    else default_checkpoint_dir(cfg.domain)).absolute()
    resume, resume_step = _share_inputs(run)
    _plan_steps(run)
    _build_model(run, resume, resume_step)
    _compile_loss(run)
    _compile_update(run)
    announce(run)
    shares.start(run)
    return run


def _global_batch(run: Run, batch: int) -> int:
    if batch % run.world:
        fixed = max(run.world, batch - batch % run.world)
        run.log(f"global batch {batch} is not a multiple of {run.world} ranks: using {fixed}")
        batch = fixed
    return batch


def _share_inputs(run: Run) -> tuple[ckpt.Checkpoint | None, int]:
    """Rank 0 reads; everyone learns the outcome from one header, then gets rank 0's tokens.
    Sets run.data; returns (the checkpoint on rank 0 else None, its step or -1 on every rank)."""
    c = run.cfg
    data, resume, error, code = (None, None, None, resuming.READ_OK)
    if run.rank == 0:
        data, resume, error, code = resuming.read_inputs(run)
    digest = int(data.digest[:15], 16) if data else 0
    header = [code, data.train.size if data else 0, data.holdout.size if data else 0,
              data.files if data else 0, data.bytes if data else 0, digest,
              int(resume.state["step"]) if resume else -1]
    if run.world > 1:
        header = broadcast_ints(header, run.group, run.rank)
    code, n_train, n_hold, n_files, n_bytes, digest, resume_step = header
    if code:
        if run.rank == 0:
            raise (DataError if code == resuming.NO_DATA else UsageError)(error)
        what = {resuming.NO_DATA: f"domain {c.domain!r} has no usable data (on rank 0's node)",
                resuming.BAD_DOMAIN: f"domain {c.domain!r} could not be loaded on rank 0's node",
                }.get(code, "rank 0 could not resume")
        raise (DataError if code == resuming.NO_DATA else UsageError)(what)
    if run.world > 1:
        train = broadcast_tokens(data.train if data else None, n_train, run.group, run.rank)
        hold = broadcast_tokens(data.holdout if data else None, n_hold, run.group, run.rank)
        if run.rank != 0:
            data = TokenData(domain=c.domain, train=train, holdout=hold, files=n_files, bytes=n_bytes,
                             digest=f"{digest:015x}")
    assert data is not None
    run.data = data
    run.sharding = Sharding(n_windows(n_train, run.seq), run.batch, c.sync_every, run.world, run.rank, c.seed)
    run.n_eval = n_windows(n_hold, run.seq)
    return resume, resume_step


def _plan_steps(run: Run) -> None:
    """Total steps, warmup and peak learning rate."""
    c = run.cfg
    spe = run.sharding.steps_per_epoch
    if spe == 0:
        raise DataError(
            f"domain {c.domain!r} gives {run.sharding.n_windows} training windows of {run.seq} tokens, "
            f"fewer than one optimizer step needs ({run.batch} x sync-every {c.sync_every}); "
            f"lower --batch-size, --sync-every or --seq-len, or add data")
    run.total_steps = c.epochs * spe
    if c.steps is not None:
        run.total_steps = min(run.total_steps, c.steps)
    run.warmup = c.warmup if c.warmup is not None else max(1, min(200, run.total_steps // 20))
    run.warmup = min(run.warmup, max(0, run.total_steps - 1))
    run.lr = c.lr or run.preset.lr


def lr_schedule(run: Run) -> Any:
    """Linear warmup to the peak, then cosine decay to lr * min_lr_ratio at the last step."""
    peak, end = run.lr, run.lr * run.cfg.min_lr_ratio
    decay = optim.cosine_decay(peak, max(1, run.total_steps - run.warmup), end)
    if run.warmup <= 0:
        return decay
    warm = optim.linear_schedule(peak / run.warmup, peak, run.warmup)
    return optim.join_schedules([warm, decay], [run.warmup])


def _build_model(run: Run, resume: ckpt.Checkpoint | None, resume_step: int) -> None:
    """Model and optimizer (same seed everywhere; rank 0's copy wins anyway), resumed on rank 0,
    then rank 0's weights and optimizer state on every rank."""
    c = run.cfg
    mx.random.seed(c.seed)
    run.model = GPT(run.preset)
    params = run.model.parameters()
    run.optimizer = optim.AdamW(learning_rate=lr_schedule(run), betas=[0.9, 0.95], eps=1e-8,
                                weight_decay=c.weight_decay, bias_correction=True)
    run.optimizer.init(params)
    run.start_step = 0
    run.resumed_from = None
    if run.rank == 0 and resume is not None:  # validated by resume.read_inputs
        params = resuming.load_into(run, params, resume)
    if resume_step >= 0:
        run.start_step = resume_step
    if run.world > 1:
        params = broadcast_tree(params, run.group, run.rank)
        run.optimizer.state = broadcast_tree(run.optimizer.state, run.group, run.rank)
    mx.eval(params, run.optimizer.state)
    run.params = params
    run.eval_losses = [tuple(x) for x in resume.state.get("eval_losses", [])] if resume is not None else []


def _compile_loss(run: Run) -> None:
    """The local loss and its gradient (bfloat16 compute with --bf16), compiled unless --no-compile."""
    c = run.cfg
    model = run.model

    def local_loss(p, x, y, scale=None):
        if c.bf16:
            p = tree_map(lambda a: a.astype(mx.bfloat16), p)
        model.update(p)
        return loss_fn(model, x, y, scale)

    def part_of_global(p, x, y):  # unequal shares: this slice's part of the global batch's mean
        return local_loss(p, x, y, 1.0 / (run.batch * run.seq))

    run.value_and_grad = mx.value_and_grad(local_loss)
    run.value_and_grad_part = mx.value_and_grad(part_of_global)
    run.eval_loss = local_loss
    if c.compile:  # each compiles on its first call, once per slice shape (MLX keeps every shape's graph)
        run.value_and_grad = mx.compile(run.value_and_grad)
        run.value_and_grad_part = mx.compile(run.value_and_grad_part)
        run.eval_loss = mx.compile(local_loss)


def _compile_update(run: Run) -> None:
    """Clipping and the AdamW update as one compiled function (unless --no-compile): uncompiled,
    MLX builds and schedules a few hundred small ops per step, about 1 % of a step of the smaller
    presets. It must come after every assignment of `run.optimizer.state` above, as the compiled
    function reads and writes that very dict."""
    c = run.cfg
    optimizer = run.optimizer

    def update(grads, params):
        if c.clip > 0:
            grads, norm = optim.clip_grad_norm(grads, c.clip)
        else:
            norm = mx.sqrt(sum(mx.sum(mx.square(g)) for _, g in tree_flatten(grads)))
        return optimizer.apply_gradients(grads, params), norm

    run.update = mx.compile(update, inputs=[optimizer.state], outputs=[optimizer.state]) if c.compile else update
