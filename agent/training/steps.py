"""One optimizer step on every rank, in lockstep (the recipe is in trainer.py's docstring):
`sync_every` local micro-steps summed, one all-reduce of the mean gradient, clipping, one AdamW
update. The loop times each call (the per-step timing in docs/benchmarks.md)."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map

from agent.training.data import windows
from agent.training.run_state import Run


def _micro_batch(run: Run, epoch: int, micro: int) -> tuple[mx.array, mx.array]:
    return windows(run.data.train, run.sharding.rank_ids(epoch, micro), run.seq)


def train_step(run: Run, step: int) -> tuple[float, float]:
    """Optimizer step number `step` (0-based). Returns (global loss, grad norm)."""
    c = run.cfg
    epoch, micro0 = run.sharding.position(step)
    accum = None
    loss_sum = None
    for k in range(c.sync_every):
        x, y = _micro_batch(run, epoch, micro0 + k)
        loss, grads = run.value_and_grad(run.params, x, y)
        accum = grads if accum is None else tree_map(mx.add, accum, grads)
        loss_sum = loss if loss_sum is None else loss_sum + loss
        if c.sync_every > 1:
            mx.eval(accum, loss_sum)  # keep one micro-step's graph alive at a time
    grads = accum if c.sync_every == 1 else tree_map(lambda g: g / c.sync_every, accum)
    local_loss = loss_sum / c.sync_every
    # the one synchronisation of this step
    if c.grad_compression:
        grads = tree_map(lambda g: g.astype(mx.bfloat16), grads)
    grads = nn.average_gradients(grads, group=run.group)
    if c.grad_compression:
        grads = tree_map(lambda g: g.astype(mx.float32), grads)
    if c.clip > 0:
        grads, norm = optim.clip_grad_norm(grads, c.clip)
    else:
        norm = mx.sqrt(sum(mx.sum(mx.square(g)) for _, g in tree_flatten(grads)))
    global_loss = (mx.distributed.all_sum(local_loss, group=run.group) / run.world
                   if run.world > 1 else local_loss)
    new_params = run.optimizer.apply_gradients(grads, run.params)
    mx.eval(new_params, run.optimizer.state, global_loss, norm)
    run.params = new_params
    return global_loss.item(), norm.item()
