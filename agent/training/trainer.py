"""The rank-side trainer: data-parallel AdamW over MLX distributed, with local accumulation,
gradient compression, checkpoints and a clean stop.

One optimizer step (every rank, in lockstep):

1. K = `sync_every` micro-steps: each computes the local gradient of the mean loss over this
   rank's slice of one global batch; the K gradients are summed locally, then divided by K.
2. Once per step (on the K-th micro-step) the mean gradient is averaged across ranks with
   `mlx.nn.average_gradients` (in bfloat16 with `grad_compression`, cast back to float32 after).
   No rank ever applies an unsynced gradient, so the replicas stay identical. With unequal shares
   of the global batch (`--shares`, shares.py) each rank's part is weighted by its tokens and the
   parts are summed instead, which gives the same mean over the whole batch.
3. The global norm of the synced gradient is clipped (`clip`), and AdamW (linear warmup, then
   cosine decay) makes ONE update. The result is the same as one process taking the mean over
   all K * B sequences.

`bf16`: float32 master weights and optimizer state; the forward and backward passes run in
bfloat16 (the weights are cast on the way in, the gradients come back as float32), the loss is
computed in float32. Checkpoints hold the float32 master weights.

Rank 0 prints the job's progress lines and writes checkpoints; every other rank prints only its own
step time and share (docs/progress.md, per-rank keys). Rank 0 alone reads the
domain and, when resuming, the checkpoint; it sends the token stream, the weights and the
optimizer state to the other ranks over the same collective, so every rank starts from
identical bytes even when only rank 0's node holds the data.

Where each part lives: config.py (settings, result, exit codes), setup.py (batch shape, data
shared from rank 0, model and optimizer), resume.py (reading and checking a checkpoint),
steps.py (one optimizer step), evaluate.py (held-out loss), loop.py (the loop and how a run
ends), saving.py (what goes into a checkpoint), reporting.py (log and progress lines),
collectives.py (broadcasts from rank 0, a lost peer), stopping.py (SIGTERM/SIGINT), shares.py
(how the global batch is split between the ranks). This module
is the entry point the CLI and in-process callers use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import mlx.core as mx
from mlx.utils import tree_flatten

from agent.training.collectives import PEER_LOST as _PEER_LOST  # noqa: F401  (cli.py tells a lost peer by it)
from agent.training.config import (EXIT_FAILED, EXIT_OK, EXIT_TERM, EXIT_USAGE, TrainConfig, TrainResult,
                                   UsageError, default_checkpoint_dir)
from agent.training.loop import run_loop
from agent.training.reporting import final_line
from agent.training.setup import setup
from agent.training.stopping import Terminated

# What other modules and tests import from here (the pieces live in the modules named above).
__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_TERM", "EXIT_USAGE", "Terminated", "TrainConfig", "TrainResult",
           "UsageError", "default_checkpoint_dir", "final_line", "train"]


def train(config: TrainConfig, *, group: mx.distributed.Group | None = None,
          log: Callable[[str], None] | None = None, progress: bool = True) -> TrainResult:
    """Train as this rank (world from `group`, default `mx.distributed.init()`), in-process.

    `log` receives rank 0's plain log lines (default: print with a "[train] " prefix);
    `progress=False` silences the JUPITER_PROGRESS lines. The CLI prints the final line
    (`final_line`) itself; an in-process caller gets everything in the returned TrainResult.

    Raises UsageError / DataError / ConfigError (all ValueError) for settings or data that cannot
    work; a SIGTERM (with `checkpoint_on_failure`) or a lost peer returns a result with a non-zero
    `exit_code` instead of raising."""
    run = setup(config, group, log, progress)
    result = run_loop(run)
    if config.dump_params:
        path = Path(config.dump_params.replace("{rank}", str(run.rank)))
        path.parent.mkdir(parents=True, exist_ok=True)
        mx.save_safetensors(str(path), dict(tree_flatten(result.params)))
    return result
