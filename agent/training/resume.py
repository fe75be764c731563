"""What rank 0 reads before a run starts: the domain's tokens and, with --resume, a checkpoint,
which must fit this run exactly (the same curve settings, arrays of the right shapes) before the
other ranks hear anything. Then the checkpoint's weights and optimizer state go into the fresh
model's trees. The other ranks receive all of it from rank 0 (setup.py)."""

from __future__ import annotations

from typing import Any

import mlx.optimizers as optim

from agent.training import checkpoint as ckpt
from agent.training.config import UsageError
from agent.training.data import DataError, TokenData, load_tokens
from agent.training.model import GPT
from agent.training.run_state import Run
from agent.training.saving import curve_settings
from shared.domains import ConfigError, load_domain

# The outcome codes rank 0 sends in the setup header: 0 ok, else which error the others report.
READ_OK, NO_DATA, BAD_DOMAIN, CANNOT_RESUME = 0, 1, 2, 3


def read_inputs(run: Run) -> tuple[TokenData | None, ckpt.Checkpoint | None, str | None, int]:
    """Rank 0 reads the data and the checkpoint to resume. (data, checkpoint, error, code)."""
    c = run.cfg
    try:
        domain = load_domain(c.domain, c.domains_dir)
    except ConfigError as exc:
        return None, None, str(exc), BAD_DOMAIN
    try:
        data = load_tokens(domain, run.seq, c.max_bytes)
    except DataError as exc:
        return None, None, str(exc), NO_DATA
    resume = None
    try:
        path = ckpt.resolve(c.resume, run.ckpt_dir)
        if path is not None:
            resume = ckpt.load(path)
            validate(run, resume, data.digest)  # before the others hear anything
        elif c.resume == "auto":
            run.log(f"--resume auto: no checkpoint in {run.ckpt_dir}, starting fresh")
    except UsageError as exc:
        return None, None, str(exc), CANNOT_RESUME
    except (OSError, ValueError, KeyError) as exc:
        return None, None, f"cannot resume: {exc}", CANNOT_RESUME
    return data, resume, None, READ_OK


def validate(run: Run, resume: ckpt.Checkpoint, digest: str) -> None:
    saved = resume.config.get("curve", {})
    for key, value in curve_settings(run, digest).items():
        if key in saved and saved[key] != value:
            raise UsageError(f"cannot resume from {resume.path}: it was made with {key}={saved[key]!r}, "
                             f"this run has {key}={value!r}")
    # the arrays must fit this model and its optimizer exactly (lazy templates: nothing computed)
    template = GPT(run.preset).parameters()
    opt = optim.AdamW(learning_rate=1e-3)
    opt.init(template)
    try:
        ckpt.fill(template, resume.params, f"{resume.path}/model.safetensors")
        ckpt.fill(opt.state, resume.optimizer_state, f"{resume.path}/optimizer.safetensors")
    except ValueError as exc:
        raise UsageError(f"cannot resume: {exc}") from None


def load_into(run: Run, params: Any, resume: ckpt.Checkpoint) -> Any:
    """Rank 0: the checkpoint's weights (returned) and optimizer state (into run.optimizer), already
    checked by `validate`."""
    params = ckpt.fill(params, resume.params, f"{resume.path}/model.safetensors")
    run.optimizer.state = ckpt.fill(run.optimizer.state, resume.optimizer_state,
                                    f"{resume.path}/optimizer.safetensors")
    run.resumed_from = str(resume.path)
    old_total = resume.state.get("total_steps")
    if old_total is not None and old_total != run.total_steps:
        run.log(f"note: the checkpoint's run had {old_total} steps, this one has {run.total_steps}; "
                f"the learning-rate schedule follows the new length")
    return params
