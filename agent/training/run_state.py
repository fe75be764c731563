"""`Run`: what one training run carries from setup to its result — the group, the data and its
sharding, the model, the optimizer and the weights. `setup.setup` fills it in; the step, eval,
checkpoint and loop modules read it (and the step replaces its weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import mlx.optimizers as optim

from agent.training.config import TrainConfig
from agent.training.data import Sharding, TokenData
from agent.training.model import GPT
from agent.training.shares import Planner
from shared.presets import Preset


class Run:
    # set by setup.setup, in this order
    preset: Preset
    seq: int
    batch: int                          # global sequences per micro-step, a multiple of the world size
                                        # (split equally or by shares: sharding.counts)
    ckpt_dir: Path
    data: TokenData                     # identical on every rank
    sharding: Sharding
    n_eval: int                         # held-out windows
    total_steps: int
    warmup: int
    lr: float
    model: GPT
    optimizer: optim.AdamW
    params: Any                         # float32 master weights (tree); train_step replaces them
    start_step: int
    resumed_from: str | None
    eval_losses: list[tuple[int, float]]
    value_and_grad: Callable            # (params, x, y) -> (local mean loss, gradients)
    value_and_grad_part: Callable       # (params, x, y) -> (local loss sum / global batch tokens, gradients)
    eval_loss: Callable                 # (params, x, y) -> local mean loss
    update: Callable                    # (global gradients, params) -> (new params, gradient norm); clips
    shares: Planner                     # how the global batch is split between the ranks (shares.py)
    share: float                        # this rank's fraction of the global batch, kept current
    slowdown: float | None              # test aid: this rank's speed under JUPITER_TRAIN_SLOWDOWN

    def __init__(self, cfg: TrainConfig, group: mx.distributed.Group | None, log: Callable[[str], None] | None,
                 progress: bool = True):
        self.cfg = cfg
        self.progress = progress
        self.group = group if group is not None else mx.distributed.init()
        self.rank = self.group.rank()
        self.world = self.group.size()
        self._log = log or (lambda msg: print(f"[train] {msg}", flush=True))

    def log(self, msg: str) -> None:
        """A plain log line, from rank 0 only."""
        if self.rank == 0:
            self._log(msg)

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.seq * self.cfg.sync_every

    def epoch_of(self, step: int) -> int:
        """The 1-based epoch that step `step` (1-based, 0 = none yet) belongs to."""
        return max(1, (max(step, 1) - 1) // self.sharding.steps_per_epoch + 1)
