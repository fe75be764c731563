"""Jobs for the built-in trainer: `{"domain": ..., "epochs": ..., "preset": ...}` becomes the
command `python -m agent.training ...`, with cluster.yaml's training settings, after the domain
is checked here (so a domain with no usable data fails before any rank starts)."""

from __future__ import annotations

from shared.cluster_config import ClusterConfig, ConfigError
from shared.schemas import JobSpec

TRAINER_STOP_GRACE_S = 120.0  # rank 0 saves a checkpoint on SIGTERM; a 1b one is ~12 GB
# Checkpoints go into the rank's own folder, and are the job's artifacts unless it names others:
# collected from rank 0 while it runs and when it ends, restored into a restarted attempt's
# folders, where `--resume auto` finds them, whichever nodes it runs on.
CHECKPOINT_DIR = "checkpoints"
ARTIFACTS = [f"{CHECKPOINT_DIR}/**"]  # not the writer's hidden .tmp-* folders (shared/schemas/artifacts.py)


class DomainRejected(ValueError):
    pass


def check_domain(name: str) -> str:
    """The domain's one-line summary, or DomainRejected naming what is wrong."""
    from shared.domains import check_domain as check
    from shared.domains import load_domain

    try:
        report = check(load_domain(name))
    except ConfigError as exc:
        raise DomainRejected(f"domain: {exc}") from None
    if not report.usable:
        raise DomainRejected(f"domain: {report.summary()}")
    return report.summary()


def check_preset(name: str | None) -> None:
    from shared.presets import PRESETS

    if name is not None and name not in PRESETS:
        raise DomainRejected(f"preset: unknown preset {name!r}; one of {', '.join(PRESETS)}")


def trainer_command(spec: JobSpec, config: ClusterConfig) -> list[str]:
    cmd = ["python", "-m", "agent.training", "--domain", spec.domain]
    if spec.epochs is not None:
        cmd += ["--epochs", str(spec.epochs)]
    if spec.preset is not None:
        cmd += ["--preset", spec.preset]
    if spec.steps is not None:
        cmd += ["--steps", str(spec.steps)]
    cmd += ["--sync-every", str(config.sync_every_n_steps)]
    if config.gradient_compression:
        cmd.append("--grad-compression")
    cmd.append("--checkpoint-on-failure" if config.checkpoint_on_failure else "--no-checkpoint-on-failure")
    # Checkpoints in the rank's folder, collected and restored as artifacts. No agent collects an
    # mpi job's files: its ranks keep the trainer's default, $JUPITER_JOB_DIR/checkpoints on each host.
    if (spec.backend or config.backend) != "mpi":
        cmd += ["--checkpoint-dir", CHECKPOINT_DIR]
    # Every attempt resumes from the job's newest checkpoint if there is one (a restart).
    cmd += ["--resume", "auto"]
    return cmd


def with_defaults(spec: JobSpec) -> JobSpec:
    """The spec as stored: the checkpoints are the job's artifacts unless it names its own."""
    return spec if spec.artifacts else spec.model_copy(update={"artifacts": list(ARTIFACTS)})
