"""A job spec as this coordinator reads it: what it refuses (naming the field), the command it
runs, its digest (for idempotent resubmission), its restarts and stop grace. Pure functions;
Jobs.submit (lifecycle.py) stores the job.
"""

from __future__ import annotations

import hashlib
import json

from coordinator import finetune_jobs, trainer_jobs
from shared.backends import RDMA
from shared.schemas import JobSpec

DEFAULT_STOP_GRACE_S = 5.0


class SpecConflict(Exception):
    pass


class SpecRejected(ValueError):
    """A spec that validates as JSON but cannot run here; the message names the field."""


def spec_hash(spec: JobSpec) -> str:
    # secret_env counts (the same key with another secret is another job); the digest is stored,
    # never shown. Fields added later are left out while they hold their defaults, so digests of
    # jobs stored before they existed still match.
    later = {"secret_env": {}, "progress_format": "auto", "workdir": None, "artifacts": [], "finetune": None,
             "stall_timeout_s": None}
    exclude = {"idempotency_key"} | {k for k, default in later.items() if getattr(spec, k) == default}
    body = spec.model_dump(mode="json", exclude=exclude)
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def command_of(spec: JobSpec, config) -> list[str]:
    if spec.domain is not None:
        return trainer_jobs.trainer_command(spec, config)
    if spec.finetune is not None:
        return finetune_jobs.finetune_command(spec)
    return list(spec.command)


def stored(spec: JobSpec) -> JobSpec:
    """The spec as the job keeps it: a job kind's defaults filled in (a finetune job's artifacts,
    the built-in trainer's checkpoints)."""
    if spec.domain is not None:
        return trainer_jobs.with_defaults(spec)
    return finetune_jobs.with_defaults(spec) if spec.finetune is not None else spec


def stop_grace_of(spec: JobSpec) -> float:
    return trainer_jobs.TRAINER_STOP_GRACE_S if spec.domain is not None else DEFAULT_STOP_GRACE_S


def max_restarts_for(spec: JobSpec, config) -> int:
    if spec.max_restarts is not None:
        return spec.max_restarts
    return 2 if spec.domain is not None and config.auto_restart_failed_nodes else 0


def check(spec: JobSpec, backend: str, known_nodes: set[str]) -> None:
    """Raise SpecRejected for what the schema alone cannot know."""
    if spec.domain is not None:
        try:
            trainer_jobs.check_preset(spec.preset)
            trainer_jobs.check_domain(spec.domain)
        except trainer_jobs.DomainRejected as exc:
            raise SpecRejected(str(exc)) from None
    if spec.finetune is not None:
        try:
            finetune_jobs.check(spec, backend)
        except finetune_jobs.FinetuneRejected as exc:
            raise SpecRejected(str(exc)) from None
    if backend in RDMA and spec.nodes < 2:
        raise SpecRejected(f"nodes: {backend} needs at least 2 Macs cabled to each other (one rank runs no "
                           "collective over RDMA); use ring for one node")
    if backend in RDMA and spec.processes_per_node > 1:
        raise SpecRejected(f"processes_per_node: {backend} runs one rank per Mac: JACCL has one RDMA device "
                           "per peer node, which two ranks on one Mac cannot share")
    if backend == "nccl":
        _no_own_gpus(spec)
    if spec.workdir is not None and backend == "mpi":
        raise SpecRejected("workdir: the mpi backend starts ranks through mpirun, which does not unpack a "
                           "workdir; use ring")
    for name in spec.node_names or []:
        if name not in known_nodes:
            raise SpecRejected(f"node_names: no node named {name!r}")


def _no_own_gpus(spec: JobSpec) -> None:
    """An nccl job may not set CUDA_VISIBLE_DEVICES: the agent gives each rank its own GPU over it,
    so the job's value would be silently lost. Judged on the backend chosen, named or not."""
    field = next((f for f in ("env", "secret_env") if "CUDA_VISIBLE_DEVICES" in getattr(spec, f)), None)
    if field is None:
        return
    chosen = ("" if spec.backend else
              " (nccl is the backend chosen for this job, which names none: name another backend to keep it)")
    raise SpecRejected(f"{field}.CUDA_VISIBLE_DEVICES: Jupiter gives each nccl rank one GPU (CUDA_VISIBLE_DEVICES "
                       f"is the rank's index on its node), so the job's own value would be overridden{chosen}; to "
                       f"limit the GPUs a node offers, start its agent with CUDA_VISIBLE_DEVICES set")
