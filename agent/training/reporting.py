"""What rank 0 tells the user: the start-up lines (data, model, batch, optimizer, where the
checkpoints go), a progress line every few steps, and the final line (docs/progress.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from shared.presets import param_count
from shared.progress import report

if TYPE_CHECKING:
    from agent.training.config import TrainResult
    from agent.training.run_state import Run


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
    """The steps since the last progress line: each line shows their mean loss and throughput."""

    def __init__(self, run: Run, stop_at: int):
        self.run = run
        self.stop_at = stop_at
        self.every = run.cfg.log_every or max(1, run.total_steps // 100)
        self.loss, self.steps, self.time = 0.0, 0, 0.0

    def add_loss(self, loss: float) -> None:
        self.loss += loss
        self.steps += 1

    def after_step(self, step: int, train_time: float, eval_loss: float | None, norm: float) -> None:
        """A progress line when one is due (every `every` steps, the first and last of this run,
        after an eval); `train_time` is this run's time in steps so far, for the ETA."""
        run = self.run
        due = (step % self.every == 0 or step == self.stop_at or step == run.start_step + 1
               or eval_loss is not None)
        if not (run.rank == 0 and run.progress and due):
            return
        tokens_per_s = self.steps * run.tokens_per_step / max(self.time, 1e-9)
        eta = (self.stop_at - step) * train_time / (step - run.start_step)
        report(step=step, total_steps=run.total_steps, epoch=(step - 1) // run.sharding.steps_per_epoch + 1,
               loss=round(self.loss / self.steps, 6),
               eval_loss=None if eval_loss is None else round(eval_loss, 6),
               tokens_per_s=round(tokens_per_s, 1), eta_s=round(eta, 1),
               lr=float(f"{run.optimizer.learning_rate.item():.6g}"), grad_norm=round(norm, 6))
        self.loss, self.steps, self.time = 0.0, 0, 0.0


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
