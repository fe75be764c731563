"""A training run's settings and outcome: `TrainConfig` (what the CLI flags map onto), its checks,
`TrainResult`, the exit codes, and where checkpoints go by default."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from shared.paths import jupiter_home
from shared.presets import Preset, get_preset

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TERM = 143


class UsageError(ValueError):
    """A setting that cannot work (bad preset, incompatible checkpoint...): exit 2, one line."""


@dataclass
class TrainConfig:
    """Everything a run needs; the CLI maps its flags one to one onto these fields."""

    domain: str = "sample"
    domains_dir: str | None = None      # default: the repo's config/domains
    epochs: int = 1
    preset: str = "tiny"
    steps: int | None = None            # cap on the total optimizer steps (tests, quick runs)
    batch_size: int | None = None       # global sequences per micro-step (preset default)
    seq_len: int | None = None          # preset default
    lr: float | None = None             # peak learning rate (preset default)
    warmup: int | None = None           # warmup steps; default 5 % of the run, at most 200
    min_lr_ratio: float = 0.1           # cosine decays to lr * this
    weight_decay: float = 0.01
    clip: float = 1.0                   # max global gradient norm; 0 = no clipping
    sync_every: int = 1                 # micro-steps per optimizer step (local accumulation)
    grad_compression: bool = False
    bf16: bool = False
    seed: int = 0
    max_bytes: int | None = None        # override the domain's max_bytes
    checkpoint_dir: str | None = None   # default: $JUPITER_JOB_DIR/checkpoints under Jupiter, or ./checkpoints/<domain>
    checkpoint_every: int = 200         # steps; 0 = only at the end (and on failure)
    keep_checkpoints: int = 3
    resume: str | None = None           # a checkpoint path, or "auto"
    checkpoint_on_failure: bool = False
    eval_every_epoch: bool = True
    eval_max_windows: int | None = 256  # held-out windows per eval (None = all)
    log_every: int | None = None        # steps between progress lines; default ~100 lines per run
    stop_at_step: int | None = None     # end this run after that step (checkpointed), schedule unchanged
    dump_params: str | None = None      # test aid: every rank writes its final weights here ({rank})
    compile: bool = True
    shares: str = "auto"                # the batch split: auto (measured), equal, or a ratio like 3:1


@dataclass
class TrainResult:
    status: str                   # completed | stopped | nothing_to_do | terminated | peer_lost | diverged
    exit_code: int
    rank: int
    world_size: int
    step: int                     # optimizer steps done in total (resumed ones included)
    total_steps: int
    start_step: int
    epoch: int                    # current epoch, 1-based
    final_loss: float | None
    losses: list[float]           # global training loss of every step of this run
    eval_losses: list[tuple[int, float]]
    checkpoint: str | None        # the last checkpoint rank 0 wrote in this run
    tokens_per_s: float | None
    elapsed_s: float
    params: dict = field(repr=False, default_factory=dict)  # final weights of this rank (tree)
    message: str = ""


def check_config(c: TrainConfig) -> Preset:
    """The preset of `c`, or UsageError for the first setting that cannot work."""
    try:
        preset = get_preset(c.preset)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for name in ("epochs", "sync_every"):
        if getattr(c, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(c, name)}")
    for name in ("steps", "batch_size", "seq_len", "max_bytes", "stop_at_step"):
        v = getattr(c, name)
        if v is not None and v < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if c.lr is not None and not (c.lr > 0 and math.isfinite(c.lr)):
        raise UsageError(f"--lr must be a positive number, got {c.lr}")
    if c.warmup is not None and c.warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {c.warmup}")
    if c.clip < 0 or c.weight_decay < 0 or not 0 <= c.min_lr_ratio <= 1:
        raise UsageError("--clip and --weight-decay must be >= 0, --min-lr-ratio within [0, 1]")
    if c.checkpoint_every < 0:
        raise UsageError(f"--checkpoint-every must be >= 0, got {c.checkpoint_every}")
    from agent.training.shares import parse

    try:
        parse(c.shares)  # whether a ratio fits the world size is checked once the world is known
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return preset


def default_checkpoint_dir(domain: str) -> Path:
    # Under Jupiter: the job's folder on this node, kept across attempts (a restart resumes from it).
    job_dir = os.environ.get("JUPITER_JOB_DIR")
    if job_dir and os.path.isabs(job_dir):
        return Path(job_dir) / "checkpoints"
    job = os.environ.get("JUPITER_JOB_ID")
    if job and re.match(r"^[A-Za-z0-9_.-]{1,128}$", job) and job not in (".", ".."):
        return jupiter_home() / "checkpoints" / job
    return Path.cwd() / "checkpoints" / domain
