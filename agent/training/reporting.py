"""What the ranks tell the user: rank 0's start-up lines (data, model, batch, optimizer, where the
checkpoints go), a progress line every few seconds from every rank, and rank 0's final line
(docs/progress.md)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from shared.presets import param_count
from shared.progress import report

if TYPE_CHECKING:
    from agent.training.config import TrainResult
    from agent.training.run_state import Run


# Progress lines cost the machine a report each: the agent sends every output line to the
# coordinator, which parses and stores it (about 8 ms of CPU between them, on the cores the ranks
# train on). So by default a line waits until LINE_EVERY_S has passed since the last one, and until
# 1 % of the run's steps have, unless QUIET_MAX_S has: a short run shows a line every 2 s, a long
# one every 1 % of it, and a slow one at least every 30 s (a line per step when a step takes longer).
LINE_EVERY_S = 2.0
QUIET_MAX_S = 30.0


def _fmt_lr(x: float) -> str:
    return f"{x:.3g}"


def announce(run: Run) -> None:
    """The plain log lines before the first step."""
    c, d, s = run.cfg, run.data, run.sharding
    run.log(f"domain {c.domain}: {d.bytes:,} bytes from {d.files:,} file(s) -> {d.train.size:,} training "
            f"tokens, {d.holdout.size:,} held out (sha256 {d.digest[:12]})")
    for note in d.notes:
        run.log(f"note: {note}")
    p = run.preset
    run.log(f"model {p.name}: {param_count(p):,} parameters (d_model {p.d_model}, {p.n_layers} layers, "
            f"{p.n_heads} heads, d_ff {p.d_ff}, vocab {p.vocab_size}), "
            + ("bfloat16 compute with float32 master weights" if c.bf16 else "float32"))
    run.log(f"{run.world} rank(s); global batch {run.batch} x {run.seq} tokens ({s.per_rank} per rank), "
            f"sync every {c.sync_every} -> {run.tokens_per_step:,} tokens per step; "
            f"{s.steps_per_epoch} steps per epoch, {run.total_steps} steps in all")
    run.log(f"AdamW: lr {_fmt_lr(run.lr)}, warmup {run.warmup}, cosine to {_fmt_lr(run.lr * c.min_lr_ratio)}, "
            f"weight decay {c.weight_decay}, clip {c.clip or 'off'}")
    if c.grad_compression:
        run.log("gradient compression: all-reduce in bfloat16, half the bytes"
                + (" (1 rank: nothing to reduce, the rounding still applies)" if run.world == 1 else ""))
    if c.sync_every > 1:
        run.log(f"local accumulation: {c.sync_every} micro-steps per optimizer step, one all-reduce per step")
    run.log(f"checkpoints: {run.ckpt_dir}" + (f" every {c.checkpoint_every} steps" if c.checkpoint_every else "")
            + " and at the end" + (", and on SIGTERM or a lost peer" if c.checkpoint_on_failure else ""))
    if run.resumed_from:
        e, m = run.sharding.position(run.start_step)
        run.log(f"resumed from {run.resumed_from} at step {run.start_step} (epoch {e + 1}, batch {m})")


class ProgressWindow:
    """The steps since the last progress line: each line shows their mean loss, throughput and
    step time. Every rank prints at the same cadence; rank 0's line is the job's progress, the
    others' carry only their own `step_time_s` and `share` (docs/progress.md, "Per-rank keys").

    When a line is due: the first step of this run, the last, a step with an eval, a step that
    saves a periodic checkpoint, and otherwise by the clock (above). An explicit `log_every` (the
    `--log-every` flag) wins over the clock: a line every `log_every` steps, however short they are.

    The loop adds `time` (seconds in the step, waiting for peers included), `add_loss` and, once
    per step, `add_work` (this rank's own compute in the step, without the waiting); a window in
    which `add_work` was never called reports the full step time as `step_time_s`."""

    def __init__(self, run: Run, stop_at: int, clock: Callable[[], float] = time.monotonic):
        self.run = run
        self.stop_at = stop_at
        self.clock = clock
        self.every = run.cfg.log_every          # explicit: every that many steps, no clock
        self.min_steps = max(1, run.total_steps // 100)
        self.loss, self.steps, self.time = 0.0, 0, 0.0
        self.work, self.worked = 0.0, 0
        self.line_at = clock()
        self.line_step = run.start_step

    def add_loss(self, loss: float) -> None:
        self.loss += loss
        self.steps += 1

    def add_work(self, seconds: float) -> None:
        """This rank's own work in one step (its compute, not the wait for its peers)."""
        self.work += seconds
        self.worked += 1

    def due(self, step: int, eval_loss: float | None) -> bool:
        run, c = self.run, self.run.cfg
        if step == run.start_step + 1 or step == self.stop_at or eval_loss is not None:
            return True
        if c.checkpoint_every and step % c.checkpoint_every == 0:
            return True
        if self.every:
            return step % self.every == 0
        quiet = self.clock() - self.line_at
        return (quiet >= LINE_EVERY_S and step - self.line_step >= self.min_steps) or quiet >= QUIET_MAX_S

    def after_step(self, step: int, train_time: float, eval_loss: float | None, norm: float) -> None:
        """A progress line when one is due (see the class); `train_time` is this run's time in
        steps so far, for the ETA."""
        run = self.run
        if not (run.progress and self.steps and self.due(step, eval_loss)):
            return
        own = self.work / self.worked if self.worked else self.time / self.steps
        share = getattr(run, "share", 1 / run.world)
        per_rank = {"step_time_s": round(own, 6), "share": float(f"{share:.6g}")}
        if run.rank == 0:
            tokens_per_s = self.steps * run.tokens_per_step / max(self.time, 1e-9)
            eta = (self.stop_at - step) * train_time / (step - run.start_step)
            report(step=step, total_steps=run.total_steps, epoch=(step - 1) // run.sharding.steps_per_epoch + 1,
                   loss=round(self.loss / self.steps, 6),
                   eval_loss=None if eval_loss is None else round(eval_loss, 6),
                   tokens_per_s=round(tokens_per_s, 1), eta_s=round(eta, 1),
                   lr=float(f"{run.optimizer.learning_rate.item():.6g}"), grad_norm=round(norm, 6), **per_rank)
        else:
            report(step=step, **per_rank)  # no loss: rank 0's loss history stays rank 0's
        self.loss, self.steps, self.time = 0.0, 0, 0.0
        self.work, self.worked = 0.0, 0
        self.line_at, self.line_step = self.clock(), step


def announce_checkpoint(run: Run, step: int, path: str | None) -> None:
    """A progress line naming a periodic checkpoint as it is saved (rank 0), relative to the
    rank's folder when it is inside it (`checkpoints/step-00000200`): what a job's artifacts hold.
    The checkpoint of a run's end is named by the final line."""
    if not (run.rank == 0 and run.progress and path):
        return
    try:
        shown = Path(path).relative_to(Path.cwd()).as_posix()
    except ValueError:
        shown = path
    report(step=step, checkpoint=shown)


def final_line(result: TrainResult) -> None:
    """The last progress line (rank 0): step, loss, final checkpoint."""
    last_eval = result.eval_losses[-1][1] if result.eval_losses else None
    report(step=result.step, total_steps=result.total_steps, epoch=result.epoch, loss=result.final_loss,
           eval_loss=last_eval, final_loss=result.final_loss, checkpoint=result.checkpoint, status=result.status,
           tokens_per_s=round(result.tokens_per_s, 1) if result.tokens_per_s else None,
           elapsed_s=round(result.elapsed_s, 2))
