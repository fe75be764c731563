"""Jobs on the wire: the job request (docs/jobs.md) and the views of jobs clients read."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from shared.backends import BACKEND_VARS, JACCL_ALIASES
from shared.rankenv import RANK_VARS
from shared.schemas.common import NodeName, PlainText, Role, Wire

ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Set by Jupiter for every rank; a job may not override them.
RESERVED_ENV = ("MLX_RANK", "MLX_HOSTFILE", "MLX_MPI_LIBNAME", *sorted(BACKEND_VARS - {"CUDA_VISIBLE_DEVICES"}),
                *sorted(JACCL_ALIASES),
                *sorted(RANK_VARS))
JobStatus = Literal["pending", "starting", "running", "succeeded", "failed", "cancelled"]
Backend = Literal["ring", "mpi", "jaccl", "jaccl-ring", "nccl"]  # shared/backends.py JOB_BACKENDS
Arg = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[^\x00]*$")]
EnvValue = Annotated[str, StringConstraints(max_length=8192, pattern=r"^[^\x00]*$")]
# How rank output is read for progress (docs/progress.md): `auto` reads Jupiter's own lines and
# mlx-lm's reports, `jupiter` only JUPITER_PROGRESS lines, `mlx-lm` only mlx-lm's, `none` nothing.
ProgressFormat = Literal["auto", "jupiter", "mlx-lm", "none"]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


def _relative_glob(value: str) -> str:
    parts = value.split("/")
    if value.startswith("/") or ".." in parts or "\\" in value:
        raise ValueError(f"{value!r} must be a path relative to rank 0's folder, without '..' or backslashes")
    return value


# A glob relative to rank 0's folder ("adapters/**", "checkpoints/latest/*.safetensors"): never
# absolute, never climbing out with "..", plain text.
ArtifactGlob = Annotated[str, StringConstraints(min_length=1, max_length=256), PlainText,
                         AfterValidator(_relative_glob)]


# A path on the nodes (absolute, or relative to the rank's folder, e.g. inside a shipped workdir).
# It becomes one argv item of the rank's command: never an option ("-..."), no control characters.
NodePath = Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[^-\x00-\x1f\x7f]"),
                     PlainText]


class FinetuneSpec(Wire):
    """mlx-lm LoRA fine-tuning across the nodes (docs/finetune.md): `python -m mlx_lm lora` on
    every rank, data-parallel, followed like the built-in trainer."""

    model: NodePath = Field(..., description="Model folder on the nodes (config.json, weights, tokenizer), "
                                             "absolute or relative to the rank's folder (a shipped workdir).")
    data: NodePath = Field(..., description="Folder with train.jsonl and valid.jsonl, like model.")
    iters: int = Field(..., ge=1, le=10_000_000, description="Training steps in all, across restarts.")
    batch_size: int = Field(4, ge=1, le=65_536, description="Global batch; must divide by the ranks.")
    num_layers: int | None = Field(None, ge=-1, le=4096, description="Layers to adapt (-1: all; mlx-lm: 16).")
    learning_rate: float | None = Field(None, gt=0, le=1)
    steps_per_report: int = Field(10, ge=1, le=1_000_000)
    steps_per_eval: int = Field(200, ge=1, le=1_000_000)
    val_batches: int = Field(25, ge=-1, le=1_000_000)
    save_every: int = Field(100, ge=1, le=1_000_000, description="Save (and collect) the adapters this often.")
    max_seq_length: int = Field(2048, ge=1, le=1_048_576)
    fine_tune_type: Literal["lora", "dora", "full"] = "lora"
    seed: int = Field(0, ge=0, le=2**31)


class JobSpec(Wire):
    """A job request (docs/jobs.md). Give `command` (an argv list, never a shell string) or `domain`
    (the built-in trainer)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "demo", "command": ["python", "train.py", "--lr", "3e-4"], "nodes": 2, "node_names": None,
         "processes_per_node": 1, "backend": "ring", "env": {"SEED": "1"}, "roles": ["trainer", "hybrid"],
         "min_memory_gb": 0, "timeout_s": None, "idempotency_key": "demo-2026-12-01"}]})

    name: NodeName = Field("job", examples=["demo"])
    command: list[Arg] | None = Field(None, min_length=1, max_length=1024,
                                      examples=[["python", "-c", "print('hello from a rank')"]])
    domain: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = Field(
        None, description="Built-in trainer on config/domains/<domain>.yaml instead of a command.")
    epochs: int | None = Field(None, ge=1, le=10_000)
    preset: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,32}$")] | None = Field(
        None, description="Model size for the built-in trainer: micro, tiny, small, base, 1b.")
    steps: int | None = Field(None, ge=1, le=10_000_000, description="Built-in trainer: stop after this many steps.")
    finetune: FinetuneSpec | None = Field(None, description="mlx-lm LoRA fine-tuning instead of a command "
                                                             "(docs/finetune.md).")
    nodes: int = Field(1, ge=1, le=256, description="How many nodes to place the job on.")
    node_names: list[NodeName] | None = Field(None, max_length=256,
                                              description="Exactly these nodes, in this rank order.")
    processes_per_node: int = Field(1, ge=1, le=64)
    backend: Backend | None = Field(None, description=(
        "Default: cluster.yaml's backend, else the fastest the chosen nodes support (jaccl, jaccl-ring, "
        "nccl, ring in that order); the job's `backend_reason` says which and why."))
    env: dict[Annotated[str, StringConstraints(pattern=ENV_KEY_RE.pattern)], EnvValue] = Field(
        default_factory=dict, max_length=256, examples=[{"KEY": "value"}])
    secret_env: dict[Annotated[str, StringConstraints(pattern=ENV_KEY_RE.pattern)], EnvValue] = Field(
        default_factory=dict, max_length=256, examples=[{"API_KEY": "..."}],
        description="Like env, but never shown back: no API answer, log or page carries its values.")
    roles: list[Role] | None = Field(None, max_length=4, description="Eligible node roles; null: any.")
    min_memory_gb: float = Field(0, ge=0, le=1 << 20)
    timeout_s: float | None = Field(None, gt=0, le=30 * 86400, description="Fail the job after this long running.")
    pending_timeout_s: float | None = Field(None, gt=0, le=30 * 86400,
                                            description="Fail the job if it cannot be placed within this long.")
    start_timeout_s: float = Field(60, gt=0, le=3600, description="All ranks must start within this long.")
    stall_timeout_s: float | None = Field(None, gt=0, le=30 * 86400, description=(
        "Fail the job (dumping each Python rank's stack into the log first) when no rank printed or reported "
        "progress for this long. Null: adaptive, 10 minutes until the first progress report, then 10x the "
        "usual interval between reports, never under 2 minutes (docs/reliability.md#stalls)."))
    max_restarts: int | None = Field(None, ge=0, le=20, description=(
        "Relaunch after a failed rank or node, on the remaining eligible nodes. Default: 2 for the "
        "built-in trainer when cluster.yaml has auto_restart_failed_nodes, else 0."))
    idempotency_key: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,128}$")] | None = None
    progress_format: ProgressFormat = Field("auto", description=(
        "How rank output is read for progress: auto (Jupiter's lines and mlx-lm's reports), jupiter, "
        "mlx-lm or none (docs/progress.md)."))
    workdir: Sha256 | None = Field(None, description=(
        "SHA-256 of an archive uploaded with PUT /files/{sha256}: every rank runs in its own unpacked "
        "copy (docs/jobs.md#workdir)."))
    artifacts: list[ArtifactGlob] = Field(default_factory=list, max_length=64, description=(
        "Globs of files in rank 0's folder kept by the coordinator when it ends "
        "(GET /jobs/{id}/artifacts, docs/jobs.md#artifacts)."))

    @model_validator(mode="after")
    def _consistent(self) -> "JobSpec":
        kinds = [k for k in ("command", "domain", "finetune") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of command (an argv list), domain (the built-in trainer) or "
                             "finetune (mlx-lm fine-tuning)")
        if self.domain is None and (self.epochs or self.preset or self.steps):
            raise ValueError("epochs, preset and steps are for the built-in trainer (domain), not a command")
        for field_name, values in (("env", self.env), ("secret_env", self.secret_env)):
            bad = sorted(k for k in values if k in RESERVED_ENV)
            if bad:
                raise ValueError(f"{field_name}: {', '.join(bad)} is set by Jupiter for every rank and cannot be "
                                 f"overridden")
        both = sorted(set(self.env) & set(self.secret_env))
        if both:
            raise ValueError(f"secret_env: {', '.join(both)} is also in env; give each name in one of them")
        if self.node_names is not None:
            if len(set(self.node_names)) != len(self.node_names):
                raise ValueError("node_names: a node may appear only once")
            if "nodes" not in self.model_fields_set:
                self.nodes = len(self.node_names)
            elif self.nodes != len(self.node_names):
                raise ValueError(f"nodes is {self.nodes} but node_names lists {len(self.node_names)}")
        if self.nodes * self.processes_per_node > 4096:
            raise ValueError("nodes x processes_per_node is over 4096 ranks")
        return self


class AttemptOut(BaseModel):
    attempt: int
    nodes: list[str]
    started_at: datetime | None
    ended_at: datetime | None
    error: str | None


class LossPoint(BaseModel):
    step: int | None
    loss: float


class JobOut(BaseModel):
    id: str
    name: str
    status: JobStatus
    backend: str
    backend_reason: str | None = Field(None, description=(
        "Why this backend: named by the job or cluster.yaml, or the fastest the nodes support and what "
        "ruled out the faster ones."))
    world_size: int
    nodes: list[str] = Field(..., description="Node names in rank order (empty while pending).")
    command: list[str]
    env: dict[str, str] | None = Field(None, description="The job's env; in the job itself (GET /jobs/{id}), "
                                                          "left out of lists. secret_env is never shown.")
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    exit_code: int | None
    error: str | None = Field(None, description="A sentence: which rank on which node, and why.")
    pending_reason: str | None = None
    progress: dict = Field(default_factory=dict, description="Latest JUPITER_PROGRESS values.")
    loss_history: list[LossPoint] = Field(default_factory=list)
    idempotency_key: str | None = None
    attempt: int = Field(0, description="0 for the first run; n after n automatic restarts.")
    attempts: list[AttemptOut] = Field(default_factory=list, description="Earlier attempts that failed.")
    workdir: str | None = Field(None, description="SHA-256 of the job's uploaded workdir archive, if any.")
    artifacts: list[str] = Field(default_factory=list, description="The job's artifact globs.")
    stalled: bool = Field(False, description="The job, or the attempt that ended last, was stopped because no "
                                             "rank printed or reported progress for its stall timeout.")
    warnings: list[str] = Field(default_factory=list, description=(
        "What is wrong while it runs, a sentence each: a rank stopped (process state T), a stall being handled."))
    rank_progress: list[RankProgress] = Field(default_factory=list, description=(
        "Each reporting rank's latest step and speed (docs/progress.md#per-rank)."))
    stragglers: list[Straggler] = Field(default_factory=list, description=(
        "Ranks persistently slower than the others, with the likely cause the node's facts show."))


class RankProgress(BaseModel):
    rank: int
    node: str | None = None
    step: int | None = None
    step_time_s: float | None = Field(None, description="Seconds of this rank's own work per step.")
    share: float | None = Field(None, description="This rank's fraction of the global batch.")


class Straggler(BaseModel):
    rank: int
    node: str
    slower_pct: float = Field(..., description="How much slower than the median of the other ranks, in percent.")
    cause: str | None = Field(None, description="The likely cause the node's facts show (thermal pressure, "
                                                "memory pressure, swap, another process), or null.")


class RankOut(BaseModel):
    rank: int
    node: str
    state: str
    exit_code: int | None
    reason: str | None


class JobDetail(JobOut):
    ranks: list[RankOut] = Field(default_factory=list)
