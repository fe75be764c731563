"""The training loop of a set-up run: steps until the end (or --stop-at-step), an eval after
each epoch, progress lines, periodic and final checkpoints; and how a run ends otherwise — a
diverged loss, SIGTERM/SIGINT, a lost peer — always back at the last completed step."""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from mlx.utils import tree_map

from agent.training.collectives import is_peer_loss
from agent.training.config import EXIT_FAILED, EXIT_OK, TrainResult
from agent.training.evaluate import evaluate
from agent.training.reporting import ProgressWindow, announce_checkpoint
from agent.training.run_state import Run
from agent.training.saving import save, save_on_failure
from agent.training.shares import rebalance
from agent.training.steps import train_step
from agent.training.stopping import Stopper, Terminated


@dataclass
class _Tally:
    """How far the loop got; the failure paths read it too."""

    step: int
    committed: tuple[Any, Any, int]  # (params, optimizer state, step) after the last completed step
    losses: list[float] = field(default_factory=list)
    final_loss: float | None = None
    last_ckpt: str | None = None
    train_time: float = 0.0          # seconds spent in training steps (evals and checkpoints excluded)
    status: str = "completed"
    code: int = EXIT_OK
    message: str = ""


def _commit(run: Run, step: int) -> tuple[Any, Any, int]:
    return (run.params, tree_map(lambda a: a, run.optimizer.state), step)


def run_loop(run: Run) -> TrainResult:
    t_start = time.monotonic()
    tally = _Tally(step=run.start_step, committed=_commit(run, run.start_step))
    if tally.step >= run.total_steps:
        run.log(f"the checkpoint is already at step {tally.step} of {run.total_steps}: nothing to train")
        return _result(run, tally, "nothing_to_do", EXIT_OK, run.resumed_from, None, t_start)
    with Stopper(run.cfg.checkpoint_on_failure) as stopper:
        try:
            _train(run, tally, stopper)
        except Terminated as exc:
            tally.status, tally.code = "terminated", 128 + exc.signum
            name = signal.Signals(exc.signum).name
            tally.message = f"stopped by {name} after step {tally.committed[2]}"
            tally.last_ckpt = save_on_failure(run, tally.committed, name, tally.final_loss) or tally.last_ckpt
        except Exception as exc:
            if not is_peer_loss(exc, run.world):
                raise
            if stopper.signum is not None:  # TERMed while a peer was already gone
                tally.status, tally.code = "terminated", 128 + stopper.signum
                name = signal.Signals(stopper.signum).name
                tally.message = f"stopped by {name} after step {tally.committed[2]} ({exc})"
            else:
                tally.status, tally.code = "peer_lost", EXIT_FAILED
                name = "peer lost"
                tally.message = f"lost a peer after step {tally.committed[2]}: {exc}"
            tally.last_ckpt = save_on_failure(run, tally.committed, name, tally.final_loss) or tally.last_ckpt
    if tally.status in ("terminated", "peer_lost", "diverged"):  # back to the last completed step
        run.params = tally.committed[0]
        tally.step = tally.committed[2]
    done = tally.step - run.start_step
    tokens_per_s = done * run.tokens_per_step / tally.train_time if tally.train_time > 0 and done > 0 else None
    return _result(run, tally, tally.status, tally.code, tally.last_ckpt, tokens_per_s, t_start)


def _train(run: Run, tally: _Tally, stopper: Stopper) -> None:
    """The steps; returns early on a diverged loss (without a checkpoint: the last one is good)."""
    c = run.cfg
    stop_at = run.total_steps if c.stop_at_step is None else min(run.total_steps, c.stop_at_step)
    spe = run.sharding.steps_per_epoch
    window = ProgressWindow(run, stop_at)
    while tally.step < stop_at:
        stopper.check()
        t0 = time.monotonic()
        out = train_step(run, tally.step)
        dt = time.monotonic() - t0
        loss, norm = out.loss, out.norm
        tally.train_time += dt
        window.time += dt
        add_work = getattr(window, "add_work", None)  # this rank's own compute, without waiting for peers
        if add_work is not None:
            add_work(out.work)
        tally.step += 1
        step = tally.step
        if not math.isfinite(loss):  # the same global loss on every rank: all stop here
            tally.status, tally.code = "diverged", EXIT_FAILED
            tally.message = (f"the loss became {loss} at step {step}; lower --lr or keep --clip on "
                             f"(the last good checkpoint, if any, is in {run.ckpt_dir})")
            return
        tally.committed = _commit(run, step)
        if out.times is not None:  # auto shares: the split of the next steps (the same on every rank)
            rebalance(run, out.times)
        tally.losses.append(loss)
        tally.final_loss = loss
        window.add_loss(loss)
        epoch_done = step % spe == 0
        eval_loss = None
        if epoch_done and c.eval_every_epoch:
            eval_loss = evaluate(run, stopper)
        elif step == stop_at and step == run.total_steps and c.eval_every_epoch:
            eval_loss = evaluate(run, stopper)  # a run capped by --steps still ends with an eval
        if eval_loss is not None:
            run.eval_losses.append((step, eval_loss))
        window.after_step(step, tally.train_time, eval_loss, norm)
        if epoch_done:
            run.log(f"epoch {step // spe} done at step {step}: train loss {loss:.4f}"
                    + (f", eval loss {eval_loss:.4f}" if eval_loss is not None else ""))
        if c.checkpoint_every and step % c.checkpoint_every == 0 and step < stop_at:
            saved = save(run, step, "periodic", run.params, run.optimizer.state, loss)
            tally.last_ckpt = saved or tally.last_ckpt
            announce_checkpoint(run, step, saved)
    if tally.step < run.total_steps:
        tally.status = "stopped"
        tally.message = f"stopped after step {tally.step} of {run.total_steps} (--stop-at-step)"
    reason = "final" if tally.status == "completed" else "stopped"
    tally.last_ckpt = save(run, tally.step, reason, run.params, run.optimizer.state, tally.final_loss) or tally.last_ckpt


def _result(run: Run, tally: _Tally, status: str, code: int, last_ckpt: str | None, tokens_per_s: float | None,
            t_start: float) -> TrainResult:
    return TrainResult(status=status, exit_code=code, rank=run.rank, world_size=run.world, step=tally.step,
                       total_steps=run.total_steps, start_step=run.start_step, epoch=run.epoch_of(tally.step),
                       final_loss=tally.final_loss, losses=tally.losses, eval_losses=list(run.eval_losses),
                       checkpoint=last_ckpt, tokens_per_s=tokens_per_s, elapsed_s=time.monotonic() - t_start,
                       params=run.params, message=tally.message)
