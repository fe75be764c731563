"""Jobs for mlx-lm fine-tuning: `{"finetune": {...}}` becomes `python -m agent.finetune ...` on
every rank (agent/finetune.py runs mlx-lm's LoRA training with Jupiter's progress lines and
resumable saves). What the spec alone cannot know is checked here, before any rank starts: the
batch must divide by the ranks, and every node it could run on must have mlx-lm.
"""

from __future__ import annotations

from shared.schemas import JobSpec

BACKEND = "ring"  # the agents start the ranks: they ship the model, collect and restore the adapters
ADAPTERS = "adapters"  # relative to each rank's folder; collected as the job's artifacts
# A finetune job's own progress lines carry step, loss and eval loss across restarts; mlx-lm's
# table rows (counted from 1 again after a resume) would contradict them.
PROGRESS_FORMAT = "jupiter"


class FinetuneRejected(ValueError):
    pass


def finetune_command(spec: JobSpec) -> list[str]:
    f = spec.finetune
    cmd = ["python", "-m", "agent.finetune", "--model", f.model, "--data", f.data, "--iters", str(f.iters),
           "--batch-size", str(f.batch_size), "--steps-per-report", str(f.steps_per_report),
           "--steps-per-eval", str(f.steps_per_eval), "--val-batches", str(f.val_batches),
           "--save-every", str(f.save_every), "--max-seq-length", str(f.max_seq_length),
           "--fine-tune-type", f.fine_tune_type, "--seed", str(f.seed), "--adapter-path", ADAPTERS]
    if f.num_layers is not None:
        cmd += ["--num-layers", str(f.num_layers)]
    if f.learning_rate is not None:
        cmd += ["--learning-rate", repr(f.learning_rate)]
    return cmd


def with_defaults(spec: JobSpec) -> JobSpec:
    """The spec as stored: the adapters are the job's artifacts (so they download, and a restart
    resumes from them), and progress is read from the job's own lines."""
    update: dict = {}
    if not spec.artifacts:
        update["artifacts"] = [f"{ADAPTERS}/**"]
    if spec.progress_format == "auto":
        update["progress_format"] = PROGRESS_FORMAT
    return spec.model_copy(update=update) if update else spec


def check(spec: JobSpec, backend: str) -> None:
    """FinetuneRejected naming the field, for what the schema alone cannot know."""
    f = spec.finetune
    ranks = spec.nodes * spec.processes_per_node
    if f.batch_size % ranks:
        raise FinetuneRejected(f"finetune.batch_size: {f.batch_size} does not divide by the job's {ranks} ranks "
                               f"(mlx-lm splits each batch evenly); use a multiple of {ranks}")
    if backend != BACKEND:
        # The agents ship the model, collect the adapters and restore them for a restart; under
        # mpirun no agent starts the ranks, so none of that would happen.
        raise FinetuneRejected(f"backend: finetune jobs run on ring (the agents ship the model and collect the "
                               f"adapters), not {backend}")


def missing_mlx_lm(node_mlx_lm: dict[str, str | None]) -> str | None:
    """Why nodes cannot take a finetune rank: those whose agent found no mlx-lm. None if all have it."""
    without = sorted(name for name, version in node_mlx_lm.items() if not version)
    if not without:
        return None
    return (f"mlx-lm is not installed for the rank Python on {', '.join(without)} "
            f"(install it there: python -m pip install mlx-lm)")
