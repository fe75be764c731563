"""The rank-side training loop: data-parallel AdamW over MLX distributed, with local accumulation,
gradient compression, checkpoints and a clean stop.

One optimizer step (every rank, in lockstep):

1. K = `sync_every` micro-steps: each computes the local gradient of the mean loss over this
   rank's slice of one global batch; the K gradients are summed locally, then divided by K.
2. Once per step (on the K-th micro-step) the mean gradient is averaged across ranks with
   `mlx.nn.average_gradients` (in bfloat16 with `grad_compression`, cast back to float32 after).
   No rank ever applies an unsynced gradient, so the replicas stay identical.
3. The global norm of the synced gradient is clipped (`clip`), and AdamW (linear warmup, then
   cosine decay) makes ONE update. The result is the same as one process taking the mean over
   all K * B sequences.

`bf16`: float32 master weights and optimizer state; the forward and backward passes run in
bfloat16 (the weights are cast on the way in, the gradients come back as float32), the loss is
computed in float32. Checkpoints hold the float32 master weights.

Only rank 0 prints (progress lines, docs/progress.md) and writes checkpoints. Rank 0 alone reads the
domain and, when resuming, the checkpoint; it sends the token stream, the weights and the
optimizer state to the other ranks over the same collective, so every rank starts from
identical bytes even when only rank 0's node holds the data.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map

from agent.training import checkpoint as ckpt
from agent.training.data import DataError, Sharding, TokenData, eval_ids, load_tokens, n_windows, windows
from agent.training.model import GPT, loss_fn
from shared.presets import Preset, get_preset, param_count
from agent.training.tokenizer import EOT, VOCAB_SIZE
from shared.domains import ConfigError, load_domain
from shared.paths import jupiter_home
from shared.progress import report

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TERM = 143

_PEER_LOST = re.compile(r"peer|connection|socket|closed|\[ring\]|\[mpi\]|\bmpi\b", re.IGNORECASE)


class UsageError(ValueError):
    """A setting that cannot work (bad preset, incompatible checkpoint...): exit 2, one line."""


class Terminated(Exception):
    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum


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


def default_checkpoint_dir(domain: str) -> Path:
    # Under Jupiter: the job's folder on this node, kept across attempts (a restart resumes from it).
    job_dir = os.environ.get("JUPITER_JOB_DIR")
    if job_dir and os.path.isabs(job_dir):
        return Path(job_dir) / "checkpoints"
    job = os.environ.get("JUPITER_JOB_ID")
    if job and re.match(r"^[A-Za-z0-9_.-]{1,128}$", job) and job not in (".", ".."):
        return jupiter_home() / "checkpoints" / job
    return Path.cwd() / "checkpoints" / domain


def _fmt_lr(x: float) -> str:
    return f"{x:.3g}"


def _is_peer_loss(exc: BaseException, world: int) -> bool:
    return world > 1 and isinstance(exc, RuntimeError) and bool(_PEER_LOST.search(str(exc)))


class _Stopper:
    """SIGTERM/SIGINT set a flag that the loop checks between steps (no I/O in the handler)."""

    def __init__(self, enabled: bool):
        self.signum: int | None = None
        self._old: dict[int, Any] = {}
        self.enabled = enabled and threading.current_thread() is threading.main_thread()

    def _handler(self, signum, frame) -> None:
        self.signum = signum

    def __enter__(self) -> "_Stopper":
        if self.enabled:
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    def check(self) -> None:
        if self.signum is not None:
            raise Terminated(self.signum)


# --------------------------------------------------------------------------- collectives


def _broadcast_tree(tree: Any, group: mx.distributed.Group, rank: int) -> Any:
    """Rank 0's values of `tree` on every rank (all_sum of rank 0's arrays and zeros elsewhere)."""
    res = tree_map(lambda v: mx.distributed.all_sum(v if rank == 0 else mx.zeros_like(v), group=group), tree)
    mx.eval(res)
    return res  # the same nesting and key order as `tree` (reductions over the tree keep their order)


def _broadcast_ints(values: list[int], group: mx.distributed.Group, rank: int) -> list[int]:
    x = mx.array(values if rank == 0 else [0] * len(values), dtype=mx.int64)
    return [int(v) for v in mx.distributed.all_sum(x, group=group).tolist()]


_CHUNK = 1 << 24  # tokens per all_sum while shipping the stream


def _broadcast_tokens(tokens: mx.array | None, n: int, group: mx.distributed.Group, rank: int) -> mx.array:
    parts = []
    for start in range(0, n, _CHUNK):
        m = min(_CHUNK, n - start)
        part = tokens[start:start + m] if rank == 0 else mx.zeros((m,), dtype=mx.uint16)
        part = mx.distributed.all_sum(part, group=group)
        mx.eval(part)
        parts.append(part)
    return mx.concatenate(parts) if len(parts) > 1 else (parts[0] if parts else mx.zeros((0,), mx.uint16))


# --------------------------------------------------------------------------- the run


class _Run:
    def __init__(self, cfg: TrainConfig, group: mx.distributed.Group | None, log: Callable[[str], None] | None,
                 progress: bool = True):
        self.cfg = cfg
        self.progress = progress
        self.group = group if group is not None else mx.distributed.init()
        self.rank = self.group.rank()
        self.world = self.group.size()
        self._log = log or (lambda msg: print(f"[train] {msg}", flush=True))
        self.stopper: _Stopper | None = None

    def log(self, msg: str) -> None:
        if self.rank == 0:
            self._log(msg)

    # ---------------------------------------------------------------- setup

    def _check_config(self) -> Preset:
        c = self.cfg
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
        return preset

    def _rank0_prepare(self, seq: int) -> tuple[TokenData | None, ckpt.Checkpoint | None, str | None, int]:
        """Rank 0 reads the data and the checkpoint to resume. (data, checkpoint, error, code)."""
        c = self.cfg
        try:
            domain = load_domain(c.domain, c.domains_dir)
        except ConfigError as exc:
            return None, None, str(exc), 2
        try:
            data = load_tokens(domain, seq, c.max_bytes)
        except DataError as exc:
            return None, None, str(exc), 1
        resume = None
        try:
            path = ckpt.resolve(c.resume, self.ckpt_dir)
            if path is not None:
                resume = ckpt.load(path)
                self._validate_resume(resume, data.digest)  # before the others hear anything
            elif c.resume == "auto":
                self.log(f"--resume auto: no checkpoint in {self.ckpt_dir}, starting fresh")
        except UsageError as exc:
            return None, None, str(exc), 3
        except (OSError, ValueError, KeyError) as exc:
            return None, None, f"cannot resume: {exc}", 3
        return data, resume, None, 0

    def setup(self) -> None:
        c = self.cfg
        preset = self._check_config()
        self.preset = preset
        self.seq = c.seq_len or preset.seq_len
        batch = c.batch_size or preset.batch_size
        if batch % self.world:
            fixed = max(self.world, batch - batch % self.world)
            self.log(f"global batch {batch} is not a multiple of {self.world} ranks: using {fixed}")
            batch = fixed
        self.batch = batch
        self.ckpt_dir = (Path(os.path.expanduser(c.checkpoint_dir)) if c.checkpoint_dir
                         else default_checkpoint_dir(c.domain)).absolute()

        # rank 0 reads; everyone learns the outcome from one header
        data, resume, error, code = (None, None, None, 0)
        if self.rank == 0:
            data, resume, error, code = self._rank0_prepare(self.seq)
        digest = int(data.digest[:15], 16) if data else 0
        header = [code, data.train.size if data else 0, data.holdout.size if data else 0,
                  data.files if data else 0, data.bytes if data else 0, digest,
                  int(resume.state["step"]) if resume else -1]
        if self.world > 1:
            header = _broadcast_ints(header, self.group, self.rank)
        code, n_train, n_hold, n_files, n_bytes, digest, resume_step = header
        if code:
            if self.rank == 0:
                raise (DataError if code == 1 else UsageError)(error)
            what = {1: f"domain {c.domain!r} has no usable data (on rank 0's node)",
                    2: f"domain {c.domain!r} could not be loaded on rank 0's node"}.get(code, "rank 0 could not resume")
            raise (DataError if code == 1 else UsageError)(what)
        if self.world > 1:
            train = _broadcast_tokens(data.train if data else None, n_train, self.group, self.rank)
            hold = _broadcast_tokens(data.holdout if data else None, n_hold, self.group, self.rank)
            if self.rank != 0:
                data = TokenData(domain=c.domain, train=train, holdout=hold, files=n_files, bytes=n_bytes,
                                 digest=f"{digest:015x}")
        assert data is not None
        self.data = data
        self.sharding = Sharding(n_windows(n_train, self.seq), self.batch, c.sync_every, self.world,
                                 self.rank, c.seed)
        self.n_eval = n_windows(n_hold, self.seq)
        spe = self.sharding.steps_per_epoch
        if spe == 0:
            raise DataError(
                f"domain {c.domain!r} gives {self.sharding.n_windows} training windows of {self.seq} tokens, "
                f"fewer than one optimizer step needs ({self.batch} x sync-every {c.sync_every}); "
                f"lower --batch-size, --sync-every or --seq-len, or add data")
        self.total_steps = c.epochs * spe
        if c.steps is not None:
            self.total_steps = min(self.total_steps, c.steps)
        self.warmup = c.warmup if c.warmup is not None else max(1, min(200, self.total_steps // 20))
        self.warmup = min(self.warmup, max(0, self.total_steps - 1))
        self.lr = c.lr or preset.lr

        # model and optimizer (same seed everywhere; rank 0's copy wins anyway)
        mx.random.seed(c.seed)
        self.model = GPT(preset)
        params = self.model.parameters()
        self.optimizer = optim.AdamW(learning_rate=self._schedule(), betas=[0.9, 0.95], eps=1e-8,
                                     weight_decay=c.weight_decay, bias_correction=True)
        self.optimizer.init(params)
        self.start_step = 0
        self.resumed_from: str | None = None
        if self.rank == 0 and resume is not None:  # validated by _rank0_prepare
            params = ckpt.fill(params, resume.params, f"{resume.path}/model.safetensors")
            self.optimizer.state = ckpt.fill(self.optimizer.state, resume.optimizer_state,
                                             f"{resume.path}/optimizer.safetensors")
            self.resumed_from = str(resume.path)
            old_total = resume.state.get("total_steps")
            if old_total is not None and old_total != self.total_steps:
                self.log(f"note: the checkpoint's run had {old_total} steps, this one has {self.total_steps}; "
                         f"the learning-rate schedule follows the new length")
        if resume_step >= 0:
            self.start_step = resume_step
        if self.world > 1:
            params = _broadcast_tree(params, self.group, self.rank)
            self.optimizer.state = _broadcast_tree(self.optimizer.state, self.group, self.rank)
        mx.eval(params, self.optimizer.state)
        self.params = params
        self.eval_losses: list[tuple[int, float]] = (
            [tuple(x) for x in resume.state.get("eval_losses", [])] if resume is not None else [])

        def local_loss(p, x, y):
            if c.bf16:
                p = tree_map(lambda a: a.astype(mx.bfloat16), p)
            self.model.update(p)
            return loss_fn(self.model, x, y)

        self._value_and_grad = mx.value_and_grad(local_loss)
        self._eval_loss = local_loss
        if c.compile:
            self._value_and_grad = mx.compile(self._value_and_grad)
            self._eval_loss = mx.compile(local_loss)
        self._announce()

    def _schedule(self):
        peak, end = self.lr, self.lr * self.cfg.min_lr_ratio
        decay = optim.cosine_decay(peak, max(1, self.total_steps - self.warmup), end)
        if self.warmup <= 0:
            return decay
        warm = optim.linear_schedule(peak / self.warmup, peak, self.warmup)
        return optim.join_schedules([warm, decay], [self.warmup])

    def _curve_settings(self, digest: str) -> dict[str, Any]:
        """What fixes the training curve besides the weights: a checkpoint must agree on all of it."""
        return {"model": self.preset.to_dict(), "seq_len": self.seq, "batch_size": self.batch,
                "sync_every": self.cfg.sync_every, "seed": self.cfg.seed, "data_digest": digest}

    def _validate_resume(self, resume: ckpt.Checkpoint, digest: str) -> None:
        saved = resume.config.get("curve", {})
        for key, value in self._curve_settings(digest).items():
            if key in saved and saved[key] != value:
                raise UsageError(f"cannot resume from {resume.path}: it was made with {key}={saved[key]!r}, "
                                 f"this run has {key}={value!r}")
        # the arrays must fit this model and its optimizer exactly (lazy templates: nothing computed)
        template = GPT(self.preset).parameters()
        opt = optim.AdamW(learning_rate=1e-3)
        opt.init(template)
        try:
            ckpt.fill(template, resume.params, f"{resume.path}/model.safetensors")
            ckpt.fill(opt.state, resume.optimizer_state, f"{resume.path}/optimizer.safetensors")
        except ValueError as exc:
            raise UsageError(f"cannot resume: {exc}") from None

    def _announce(self) -> None:
        c, d, s = self.cfg, self.data, self.sharding
        self.log(f"domain {c.domain}: {d.bytes:,} bytes from {d.files:,} file(s) -> {d.train.size:,} training "
                 f"tokens, {d.holdout.size:,} held out (sha256 {d.digest[:12]})")
        for note in d.notes:
            self.log(f"note: {note}")
        p = self.preset
        self.log(f"model {p.name}: {param_count(p):,} parameters (d_model {p.d_model}, {p.n_layers} layers, "
                 f"{p.n_heads} heads, d_ff {p.d_ff}, vocab {p.vocab_size}), "
                 + ("bfloat16 compute with float32 master weights" if c.bf16 else "float32"))
        self.log(f"{self.world} rank(s); global batch {self.batch} x {self.seq} tokens ({s.per_rank} per rank), "
                 f"sync every {c.sync_every} -> {self.tokens_per_step:,} tokens per step; "
                 f"{s.steps_per_epoch} steps per epoch, {self.total_steps} steps in all")
        self.log(f"AdamW: lr {_fmt_lr(self.lr)}, warmup {self.warmup}, cosine to {_fmt_lr(self.lr * c.min_lr_ratio)}, "
                 f"weight decay {c.weight_decay}, clip {c.clip or 'off'}")
        if c.grad_compression:
            self.log("gradient compression: all-reduce in bfloat16, half the bytes"
                     + (" (1 rank: nothing to reduce, the rounding still applies)" if self.world == 1 else ""))
        if c.sync_every > 1:
            self.log(f"local accumulation: {c.sync_every} micro-steps per optimizer step, one all-reduce per step")
        self.log(f"checkpoints: {self.ckpt_dir}" + (f" every {c.checkpoint_every} steps" if c.checkpoint_every else "")
                 + " and at the end" + (", and on SIGTERM or a lost peer" if c.checkpoint_on_failure else ""))
        if self.resumed_from:
            e, m = self.sharding.position(self.start_step)
            self.log(f"resumed from {self.resumed_from} at step {self.start_step} (epoch {e + 1}, batch {m})")

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.seq * self.cfg.sync_every

    # ---------------------------------------------------------------- steps

    def _micro_batch(self, epoch: int, micro: int) -> tuple[mx.array, mx.array]:
        return windows(self.data.train, self.sharding.rank_ids(epoch, micro), self.seq)

    def train_step(self, step: int) -> tuple[float, float]:
        """Optimizer step number `step` (0-based). Returns (global loss, grad norm)."""
        c = self.cfg
        epoch, micro0 = self.sharding.position(step)
        accum = None
        loss_sum = None
        for k in range(c.sync_every):
            x, y = self._micro_batch(epoch, micro0 + k)
            loss, grads = self._value_and_grad(self.params, x, y)
            accum = grads if accum is None else tree_map(mx.add, accum, grads)
            loss_sum = loss if loss_sum is None else loss_sum + loss
            if c.sync_every > 1:
                mx.eval(accum, loss_sum)  # keep one micro-step's graph alive at a time
        grads = accum if c.sync_every == 1 else tree_map(lambda g: g / c.sync_every, accum)
        local_loss = loss_sum / c.sync_every
        # the one synchronisation of this step
        if c.grad_compression:
            grads = tree_map(lambda g: g.astype(mx.bfloat16), grads)
        grads = nn.average_gradients(grads, group=self.group)
        if c.grad_compression:
            grads = tree_map(lambda g: g.astype(mx.float32), grads)
        if c.clip > 0:
            grads, norm = optim.clip_grad_norm(grads, c.clip)
        else:
            norm = mx.sqrt(sum(mx.sum(mx.square(g)) for _, g in tree_flatten(grads)))
        global_loss = (mx.distributed.all_sum(local_loss, group=self.group) / self.world
                       if self.world > 1 else local_loss)
        new_params = self.optimizer.apply_gradients(grads, self.params)
        mx.eval(new_params, self.optimizer.state, global_loss, norm)
        self.params = new_params
        return global_loss.item(), norm.item()

    def evaluate(self) -> float | None:
        if self.n_eval == 0:
            return None
        ids = eval_ids(self.n_eval, self.world, self.rank, self.cfg.eval_max_windows)
        per = max(1, self.sharding.per_rank)
        total = mx.array(0.0)
        count = 0
        for i in range(0, len(ids), per):
            if self.stopper:
                self.stopper.check()
            chunk = ids[i:i + per]
            x, y = windows(self.data.holdout, chunk, self.seq)
            total = total + self._eval_loss(self.params, x, y) * len(chunk)
            mx.eval(total)
            count += len(chunk)
        both = mx.stack([total, mx.array(float(count))])
        if self.world > 1:
            both = mx.distributed.all_sum(both, group=self.group)
        mx.eval(both)
        s, n = both.tolist()
        return s / n if n else None

    # ---------------------------------------------------------------- checkpoints

    def save(self, step: int, reason: str, params: Any, opt_state: Any, last_loss: float | None) -> str | None:
        if self.rank != 0:
            return None
        epoch, micro = self.sharding.position(step)
        config = {
            "curve": self._curve_settings(self.data.digest),
            "tokenizer": {"kind": "bytes", "vocab_size": VOCAB_SIZE, "eot": EOT},
            "train": dataclasses.asdict(self.cfg),
            "world_size": self.world,
            "param_count": param_count(self.preset),
        }
        state = {
            "step": step, "total_steps": self.total_steps,
            "epoch": max(1, (max(step, 1) - 1) // self.sharding.steps_per_epoch + 1),  # as in progress lines
            "next": {"epoch_index": epoch, "micro_batch": micro},  # where step + 1 reads (0-based)
            "steps_per_epoch": self.sharding.steps_per_epoch, "global_batch": self.batch,
            "sync_every": self.cfg.sync_every,
            "seed": self.cfg.seed,
            "rng": {"model_init": "mx.random.seed(seed)", "data_order": "random.Random('jupiter/<seed>/<epoch>')",
                    "note": "nothing else is random: no dropout, no sampling"},
            "data": {"domain": self.cfg.domain, "digest": self.data.digest, "train_tokens": int(self.data.train.size),
                     "holdout_tokens": int(self.data.holdout.size), "windows": self.sharding.n_windows},
            "world_size": self.world, "last_loss": last_loss,
            "eval_losses": [list(e) for e in self.eval_losses], "reason": reason,
        }
        path = ckpt.save(self.ckpt_dir, step, params, opt_state, config, state, keep=self.cfg.keep_checkpoints)
        return str(path)

    # ---------------------------------------------------------------- loop

    def run(self) -> TrainResult:
        c = self.cfg
        t_start = time.monotonic()
        step = self.start_step
        stop_at = self.total_steps if c.stop_at_step is None else min(self.total_steps, c.stop_at_step)
        spe = self.sharding.steps_per_epoch
        log_every = c.log_every or max(1, self.total_steps // 100)
        losses: list[float] = []
        last_ckpt: str | None = None
        final_loss = None
        committed = (self.params, tree_map(lambda a: a, self.optimizer.state), step)
        win_loss, win_steps, win_time = 0.0, 0, 0.0
        train_time = 0.0   # seconds spent in training steps (evals and checkpoints excluded)
        tokens_per_s = None
        status, code, message = "completed", EXIT_OK, ""
        if step >= self.total_steps:
            self.log(f"the checkpoint is already at step {step} of {self.total_steps}: nothing to train")
            return self._result("nothing_to_do", EXIT_OK, step, None, losses, self.resumed_from, None, t_start)
        with _Stopper(c.checkpoint_on_failure) as stopper:
            self.stopper = stopper
            try:
                while step < stop_at:
                    stopper.check()
                    t0 = time.monotonic()
                    loss, norm = self.train_step(step)
                    dt = time.monotonic() - t0
                    train_time += dt
                    win_time += dt
                    step += 1
                    if not math.isfinite(loss):  # the same global loss on every rank: all stop here
                        status, code = "diverged", EXIT_FAILED
                        message = (f"the loss became {loss} at step {step}; lower --lr or keep --clip on "
                                   f"(the last good checkpoint, if any, is in {self.ckpt_dir})")
                        break
                    committed = (self.params, tree_map(lambda a: a, self.optimizer.state), step)
                    losses.append(loss)
                    final_loss = loss
                    win_loss += loss
                    win_steps += 1
                    epoch_done = step % spe == 0
                    eval_loss = None
                    if epoch_done and c.eval_every_epoch:
                        eval_loss = self.evaluate()
                    elif step == stop_at and step == self.total_steps and c.eval_every_epoch:
                        eval_loss = self.evaluate()  # a run capped by --steps still ends with an eval
                    if eval_loss is not None:
                        self.eval_losses.append((step, eval_loss))
                    due = (step % log_every == 0 or step == stop_at or step == self.start_step + 1
                           or eval_loss is not None)
                    if self.rank == 0 and self.progress and due:
                        tokens_per_s = win_steps * self.tokens_per_step / max(win_time, 1e-9)
                        eta = (stop_at - step) * train_time / (step - self.start_step)
                        report(step=step, total_steps=self.total_steps, epoch=(step - 1) // spe + 1,
                               loss=round(win_loss / win_steps, 6),
                               eval_loss=None if eval_loss is None else round(eval_loss, 6),
                               tokens_per_s=round(tokens_per_s, 1), eta_s=round(eta, 1),
                               lr=float(f"{self.optimizer.learning_rate.item():.6g}"), grad_norm=round(norm, 6))
                        win_loss, win_steps, win_time = 0.0, 0, 0.0
                    if epoch_done:
                        self.log(f"epoch {step // spe} done at step {step}: train loss {loss:.4f}"
                                 + (f", eval loss {eval_loss:.4f}" if eval_loss is not None else ""))
                    if c.checkpoint_every and step % c.checkpoint_every == 0 and step < stop_at:
                        last_ckpt = self.save(step, "periodic", self.params, self.optimizer.state, loss) or last_ckpt
                if status == "diverged":
                    pass
                elif step < self.total_steps:
                    status, message = "stopped", f"stopped after step {step} of {self.total_steps} (--stop-at-step)"
                if status != "diverged":
                    last_ckpt = self.save(step, "final" if status == "completed" else "stopped", self.params,
                                          self.optimizer.state, final_loss) or last_ckpt
            except Terminated as exc:
                status, code = "terminated", 128 + exc.signum
                name = signal.Signals(exc.signum).name
                message = f"stopped by {name} after step {committed[2]}"
                last_ckpt = self._save_on_failure(committed, name, final_loss) or last_ckpt
            except Exception as exc:
                if not _is_peer_loss(exc, self.world):
                    raise
                if stopper.signum is not None:  # TERMed while a peer was already gone
                    status, code = "terminated", 128 + stopper.signum
                    name = signal.Signals(stopper.signum).name
                    message = f"stopped by {name} after step {committed[2]} ({exc})"
                else:
                    status, code = "peer_lost", EXIT_FAILED
                    name = "peer lost"
                    message = f"lost a peer after step {committed[2]}: {exc}"
                last_ckpt = self._save_on_failure(committed, name, final_loss) or last_ckpt
            finally:
                self.stopper = None
        if status in ("terminated", "peer_lost", "diverged"):  # back to the last completed step
            self.params = committed[0]
            step = committed[2]
        done = step - self.start_step
        tokens_per_s = done * self.tokens_per_step / train_time if train_time > 0 and done > 0 else None
        return self._result(status, code, step, final_loss, losses, last_ckpt, tokens_per_s, t_start, message)

    def _save_on_failure(self, committed, reason: str, last_loss) -> str | None:
        params, opt_state, step = committed
        if not self.cfg.checkpoint_on_failure or self.rank != 0 or step <= self.start_step:
            return None
        try:
            return self.save(step, reason, params, opt_state, last_loss)
        except Exception as exc:  # never hide the original failure behind a save error
            self.log(f"could not save the checkpoint on failure: {exc}")
            return None

    def _result(self, status, code, step, final_loss, losses, last_ckpt, tokens_per_s, t_start, message=""):
        spe = self.sharding.steps_per_epoch
        return TrainResult(status=status, exit_code=code, rank=self.rank, world_size=self.world, step=step,
                           total_steps=self.total_steps, start_step=self.start_step,
                           epoch=max(1, (max(step, 1) - 1) // spe + 1), final_loss=final_loss, losses=losses,
                           eval_losses=list(self.eval_losses), checkpoint=last_ckpt, tokens_per_s=tokens_per_s,
                           elapsed_s=time.monotonic() - t_start, params=self.params, message=message)


def train(config: TrainConfig, *, group: mx.distributed.Group | None = None,
          log: Callable[[str], None] | None = None, progress: bool = True) -> TrainResult:
    """Train as this rank (world from `group`, default `mx.distributed.init()`), in-process.

    `log` receives rank 0's plain log lines (default: print with a "[train] " prefix);
    `progress=False` silences the JUPITER_PROGRESS lines. The CLI prints the final line
    (`final_line`) itself; an in-process caller gets everything in the returned TrainResult.

    Raises UsageError / DataError / ConfigError (all ValueError) for settings or data that cannot
    work; a SIGTERM (with `checkpoint_on_failure`) or a lost peer returns a result with a non-zero
    `exit_code` instead of raising."""
    run = _Run(config, group, log, progress)
    run.setup()
    result = run.run()
    if config.dump_params:
        path = Path(config.dump_params.replace("{rank}", str(run.rank)))
        path.parent.mkdir(parents=True, exist_ok=True)
        mx.save_safetensors(str(path), dict(tree_flatten(result.params)))
    return result


def final_line(result: TrainResult) -> None:
    """The last progress line (rank 0): step, loss, final checkpoint."""
    last_eval = result.eval_losses[-1][1] if result.eval_losses else None
    report(step=result.step, total_steps=result.total_steps, epoch=result.epoch, loss=result.final_loss,
           eval_loss=last_eval, final_loss=result.final_loss, checkpoint=result.checkpoint, status=result.status,
           tokens_per_s=round(result.tokens_per_s, 1) if result.tokens_per_s else None,
           elapsed_s=round(result.elapsed_s, 2))
