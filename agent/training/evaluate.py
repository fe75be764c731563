"""The held-out loss: every rank scores its share of the held-out windows with the current
weights, and one all_sum makes the mean over all of them, the same on every rank."""

from __future__ import annotations

import mlx.core as mx

from agent.training.data import eval_ids, windows
from agent.training.run_state import Run
from agent.training.stopping import Stopper


def evaluate(run: Run, stopper: Stopper | None = None) -> float | None:
    """The mean held-out loss, or None without held-out windows. Checks `stopper` between chunks
    (an eval can take a while)."""
    if run.n_eval == 0:
        return None
    ids = eval_ids(run.n_eval, run.world, run.rank, run.cfg.eval_max_windows)
    per = max(1, run.sharding.per_rank)
    total = mx.array(0.0)
    count = 0
    for i in range(0, len(ids), per):
        if stopper:
            stopper.check()
        chunk = ids[i:i + per]
        x, y = windows(run.data.holdout, chunk, run.seq)
        total = total + run.eval_loss(run.params, x, y) * len(chunk)
        mx.eval(total)
        count += len(chunk)
    both = mx.stack([total, mx.array(float(count))])
    if run.world > 1:
        both = mx.distributed.all_sum(both, group=run.group)
    mx.eval(both)
    s, n = both.tolist()
    return s / n if n else None
