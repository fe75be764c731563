"""Which backend a job runs on, decided once at submit: the job's own, else cluster.yaml's, else
(`auto`) the fastest the nodes support — jaccl, then jaccl-ring, then nccl, then ring
(shared/backends.py FASTEST_FIRST) — with the reason stored beside it (JobOut.backend_reason).

Pure over node views: "supports" means the scheduler could place the job on them were every live
node idle, so a job chosen for jaccl waits for busy Macs rather than falling back to ring."""

from __future__ import annotations

from coordinator import scheduler
from coordinator.finetune_jobs import BACKEND as FINETUNE_BACKEND
from shared.backends import FASTEST_FIRST, RDMA
from shared.cluster_config import ClusterConfig
from shared.schemas import JobSpec, NetInterface, NodeOut

_REASON_CHARS = 240  # per ruled-out backend: the scheduler's reasons can list every node


def choose(spec: JobSpec, default: str, views: list[NodeOut], config: ClusterConfig,
           interfaces: dict[str, list[NetInterface]]) -> tuple[str, str]:
    """(backend, why) for a new job; `default` is cluster.yaml's backend."""
    if spec.backend:
        return spec.backend, "named by the job"
    if spec.finetune is not None:
        return FINETUNE_BACKEND, "fine-tuning runs on ring: the agents ship its model and collect its adapters"
    if default != "auto":
        return default, "cluster.yaml's backend"
    idle = [n.model_copy(update={"status": "ready"}) if n.status == "busy" else n for n in views]
    ruled_out = []
    for backend in FASTEST_FIRST:
        if backend == "ring":
            break
        why_not = _cannot(spec, backend, idle, config, interfaces)
        if why_not is None:
            faster = f" ({'; '.join(ruled_out)})" if ruled_out else ""
            return backend, f"the fastest backend these nodes support{faster}"
        ruled_out.append(f"{backend}: {_short(why_not)}")
    return "ring", "the fastest backend these nodes support (" + "; ".join(ruled_out) + ")"


def never_runs(spec: JobSpec, backend: str, views: list[NodeOut], config: ClusterConfig,
               interfaces: dict[str, list[NetInterface]]) -> str | None:
    """Why a job naming jaccl, jaccl-ring or nccl could not run on the known nodes even were all of
    them idle and up, or None. Only said once there are enough nodes to judge: a job submitted
    before its nodes have joined waits for them like any other."""
    if backend not in RDMA and backend != "nccl":
        return None
    known = [n for n in views if n.admitted]
    if len(known) < spec.nodes:
        return None
    up = [n.model_copy(update={"status": "ready"}) if n.status in ("busy", "down") else n for n in known]
    return _cannot(spec, backend, up, config, interfaces)


def _cannot(spec: JobSpec, backend: str, idle: list[NodeOut], config: ClusterConfig,
            interfaces: dict[str, list[NetInterface]]) -> str | None:
    """Why `backend` cannot run this job on these nodes even when idle, or None."""
    # Quick answers first: placing a job costs a topology search per backend, and most clusters
    # have no RDMA and no NVIDIA GPU at all.
    if backend in RDMA and (spec.nodes < 2 or spec.processes_per_node > 1):
        return "it runs one rank on each of at least 2 Macs"
    if backend in RDMA and not any(n.thunderbolt.rdma_enabled for n in idle):
        return "no node has RDMA enabled"
    if backend == "nccl" and not any(n.device_type == "nvidia" and n.mlx_device == "gpu" for n in idle):
        return "no NVIDIA node whose MLX has CUDA"
    got = scheduler.place(spec, backend, idle, config, set(), interfaces)
    return got.reason if isinstance(got, scheduler.Unplaceable) else None


def _short(text: str) -> str:
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS - 3] + "..."
