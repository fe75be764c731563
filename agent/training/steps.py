"""One optimizer step on every rank, in lockstep (the recipe is in trainer.py's docstring):
`sync_every` local micro-steps summed, one all-reduce of the mean gradient (the loss rides
along), clipping and one AdamW update (compiled together: setup.py). The loop times each call (the per-step timing in docs/benchmarks.md).

With unequal shares (shares.py) each rank's loss is the sum over its slice's tokens divided by the
global batch's tokens, so every token's gradient is scaled exactly as in one process's mean over
the whole batch, and the all-sum of these parts is that mean (the order of the additions aside).
With equal shares the path is the plain average of each rank's mean, as it always was."""

from __future__ import annotations

import time
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from agent.training.collectives import all_sum_flat, sum_gradients
from agent.training.data import windows
from agent.training.run_state import Run


@dataclass
class StepOut:
    loss: float                 # the global loss (the same on every rank)
    norm: float                 # the global gradient norm, before clipping
    work: float                 # this rank's own seconds: its slice's forward and backward, no waiting
    times: list[float] | None   # every rank's `work`, the same list on every rank (auto shares only)


def _micro_batch(run: Run, epoch: int, micro: int) -> tuple[mx.array, mx.array]:
    return windows(run.data.train, run.sharding.rank_ids(epoch, micro), run.seq)


def _spin(seconds: float) -> None:
    """Busy, like compute (a sleep would leave the core to the other rank)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def train_step(run: Run, step: int) -> StepOut:
    """Optimizer step number `step` (0-based)."""
    c = run.cfg
    epoch, micro0 = run.sharding.position(step)
    equal = run.shares.equal
    value_and_grad = run.value_and_grad if equal else run.value_and_grad_part
    t0 = time.perf_counter()
    accum = None
    loss_sum = None
    for k in range(c.sync_every):
        x, y = _micro_batch(run, epoch, micro0 + k)
        loss, grads = value_and_grad(run.params, x, y)
        accum = grads if accum is None else tree_map(mx.add, accum, grads)
        loss_sum = loss if loss_sum is None else loss_sum + loss
        if c.sync_every > 1:
            mx.eval(accum, loss_sum)  # keep one micro-step's graph alive at a time
    grads = accum if c.sync_every == 1 else tree_map(lambda g: g / c.sync_every, accum)
    local_loss = loss_sum / c.sync_every
    mx.eval(grads, local_loss)  # this rank's own work ends here: what follows waits for its peers
    if run.slowdown:
        _spin((time.perf_counter() - t0) * (1.0 / run.slowdown - 1.0))
    work = time.perf_counter() - t0
    grads, global_loss, times = _synchronise(run, grads, local_loss, work)
    new_params, norm = run.update(grads, run.params)
    mx.eval(new_params, run.optimizer.state, global_loss, norm)
    if times is not None:
        times = times.tolist()
    run.params = new_params
    return StepOut(global_loss.item(), norm.item(), work, times)


def _synchronise(run: Run, grads, local_loss: mx.array, work: float):
    """The one synchronisation of a step: (the global gradient, the global loss, every rank's
    `work` or None), all lazy. The loss rides in the gradient's last all-sum bucket (a second
    collective per step cost about 1 % of a step on 2 ranks); while shares are being measured,
    every rank's time rides with it, rank r's at slot 1 + r and zeros elsewhere, so the sums are
    exact and every rank reads the same numbers."""
    if run.world == 1:
        return grads, local_loss, None
    equal = run.shares.equal
    slots = mx.zeros((1 + run.world,) if run.shares.measuring else (1,), dtype=mx.float32)
    slots[0] = local_loss
    if run.shares.measuring:
        slots[1 + run.rank] = work
    if run.cfg.grad_compression:  # the gradient travels as bfloat16; the loss and times must not
        grads = tree_map(lambda g: g.astype(mx.bfloat16), grads)
        grads = nn.average_gradients(grads, group=run.group) if equal else sum_gradients(grads, group=run.group)
        grads = tree_map(lambda g: g.astype(mx.float32), grads)
        summed = mx.distributed.all_sum(slots, group=run.group)
    else:
        flat = all_sum_flat(tree_flatten(grads) + [("", slots)], run.group)
        summed = flat.pop()[1]
        grads = tree_unflatten(flat)
        if equal:
            grads = tree_map(lambda g: g / run.world, grads)
    global_loss = summed[0] / run.world if equal else summed[0]
    return grads, global_loss, (summed[1:] if run.shares.measuring else None)
