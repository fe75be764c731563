"""What a run writes into a checkpoint (rank 0 only): the settings that fix the training curve,
the full training config, and where the next step reads; and the save when a run fails. The
on-disk format and the atomic write are checkpoint.py's."""

from __future__ import annotations

import dataclasses
from typing import Any

from agent.training import checkpoint as ckpt
from agent.training.run_state import Run
from agent.training.tokenizer import EOT, VOCAB_SIZE
from shared.presets import param_count


def curve_settings(run: Run, digest: str) -> dict[str, Any]:
    """What fixes the training curve besides the weights: a checkpoint must agree on all of it."""
    return {"model": run.preset.to_dict(), "seq_len": run.seq, "batch_size": run.batch,
            "sync_every": run.cfg.sync_every, "seed": run.cfg.seed, "data_digest": digest}


def save(run: Run, step: int, reason: str, params: Any, opt_state: Any, last_loss: float | None) -> str | None:
    """Checkpoint `step` (rank 0; the others return None) and return its path."""
    if run.rank != 0:
        return None
    epoch, micro = run.sharding.position(step)
    config = {
        "curve": curve_settings(run, run.data.digest),
        "tokenizer": {"kind": "bytes", "vocab_size": VOCAB_SIZE, "eot": EOT},
        "train": dataclasses.asdict(run.cfg),
        "world_size": run.world,
        "param_count": param_count(run.preset),
    }
    state = {
        "step": step, "total_steps": run.total_steps,
        "epoch": run.epoch_of(step),  # as in progress lines
        "next": {"epoch_index": epoch, "micro_batch": micro},  # where step + 1 reads (0-based)
        "steps_per_epoch": run.sharding.steps_per_epoch, "global_batch": run.batch,
        "sync_every": run.cfg.sync_every,
        "seed": run.cfg.seed,
        "rng": {"model_init": "mx.random.seed(seed)", "data_order": "random.Random('jupiter/<seed>/<epoch>')",
                "note": "nothing else is random: no dropout, no sampling"},
        "data": {"domain": run.cfg.domain, "digest": run.data.digest, "train_tokens": int(run.data.train.size),
                 "holdout_tokens": int(run.data.holdout.size), "windows": run.sharding.n_windows},
        "world_size": run.world, "last_loss": last_loss,
        "eval_losses": [list(e) for e in run.eval_losses], "reason": reason,
    }
    path = ckpt.save(run.ckpt_dir, step, params, opt_state, config, state, keep=run.cfg.keep_checkpoints)
    return str(path)


def save_on_failure(run: Run, committed: tuple[Any, Any, int], reason: str, last_loss: float | None) -> str | None:
    """With --checkpoint-on-failure: the last completed step (params, optimizer state, step), if
    this run completed any."""
    params, opt_state, step = committed
    if not run.cfg.checkpoint_on_failure or run.rank != 0 or step <= run.start_step:
        return None
    try:
        return save(run, step, reason, params, opt_state, last_loss)
    except Exception as exc:  # never hide the original failure behind a save error
        run.log(f"could not save the checkpoint on failure: {exc}")
        return None
