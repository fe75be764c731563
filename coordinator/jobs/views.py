"""What clients read of a job: its view, its detail with ranks, and its hostfile in any format."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from coordinator import stragglers
from coordinator.jobs import watchdog
from coordinator.store import JobRow, RankRow
from shared import hostfiles
from shared.backends import RDMA
from shared.progress_tracker import ProgressTracker
from shared.schemas import AttemptOut, JobDetail, JobOut, JobSpec, LossPoint, RankOut, RankProgress
from shared.status import ACTIVE, JobStatus

# Node name -> its pressure facts (NodeOut.pressure), or a function giving them when asked.
Pressures = Mapping[str, Any] | Callable[[], Mapping[str, Any]]


class NotPlaced(ValueError):
    pass


def utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc)


def node_pressure(registry) -> dict[str, Any]:
    """Each node's pressure facts by name, from the registry's views (None where a node has none)."""
    return {n.name: getattr(n, "pressure", None) for n in registry.list_views()}


def job_out(job: JobRow, *, history: bool = True, env: bool = True, pressure: Pressures | None = None) -> JobOut:
    """The job as clients see it. `env=False` (lists) leaves the job's env out; secret_env is
    never in any view. `pressure` gives the causes of stragglers; it is read only when there is one."""
    spec = JobSpec.model_validate(job.spec)
    tracker = ProgressTracker.from_dict(job.progress) if job.progress else ProgressTracker()
    ranks, slow = per_rank(job, spec, tracker, pressure)
    return JobOut(
        id=job.id, name=job.name, status=job.status, backend=job.backend, world_size=job.world_size,
        nodes=list(job.nodes), command=list(job.command or []),
        env=dict(spec.env) if env else None,
        created_at=utc(job.created_at), started_at=utc(job.started_at), ended_at=utc(job.ended_at),
        exit_code=job.exit_code, error=job.error, pending_reason=job.pending_reason,
        progress=tracker.latest,
        loss_history=[LossPoint(step=s, loss=l) for s, l in tracker.history] if history else [],
        idempotency_key=job.idempotency_key, attempt=job.attempt,
        attempts=[AttemptOut(attempt=a["attempt"], nodes=a["nodes"], error=a["error"],
                             started_at=utc(a["started_at"]), ended_at=utc(a["ended_at"]))
                  for a in job.attempts or []],
        workdir=spec.workdir, artifacts=list(spec.artifacts), rank_progress=ranks, stragglers=slow,
        stalled=bool((job.watch or {}).get("stalled")),
        warnings=watchdog.warnings(job.watch or {}, job.status in ACTIVE),
        backend_reason=(job.plan or {}).get("why"))


def per_rank(job: JobRow, spec: JobSpec, tracker: ProgressTracker, pressure: Pressures | None):
    """The job's `rank_progress` and `stragglers` (coordinator/stragglers.py). A job waiting to be
    placed again has no stragglers: the ranks they were are gone. A finished job keeps its last
    verdict, without a cause: its nodes' pressure now says nothing of then."""
    def node_of(rank: int) -> str | None:
        i = rank // spec.processes_per_node
        return job.nodes[i] if i < len(job.nodes) else None

    ranks = [RankProgress(rank=r, node=node_of(r), step=step, step_time_s=took, share=share)
             for r, (step, took, share) in sorted(tracker.rank_latest().items()) if r < job.world_size]
    if job.status == JobStatus.PENDING:
        return ranks, []
    series = {r: s for r, s in tracker.rank_series().items() if r < job.world_size}
    slow = stragglers.stragglers(series, node_of, pressure if job.status in ACTIVE else None, job.world_size)
    return ranks, slow


def job_detail(job: JobRow, ranks: list[RankRow], pressure: Pressures | None = None) -> JobDetail:
    out = [RankOut(rank=r.rank, node=r.node_name, state=r.state, exit_code=r.exit_code, reason=r.reason)
           for r in ranks]
    return JobDetail(**job_out(job, pressure=pressure).__dict__, ranks=out)


def hostfile(job: JobRow, ranks: list[RankRow], hosts: dict[str, str], fmt: str) -> str:
    """`fmt` for the current attempt's ranks; `hosts` maps node ids to their hosts."""
    if not ranks:
        raise NotPlaced("the job is not placed yet, so it has no hostfile")
    slots = [hostfiles.Slot(host=hosts.get(r.node_id, r.address), address=r.address, port=r.port, rank=r.rank)
             for r in ranks]
    if fmt == "mlx" and job.backend in RDMA:
        # mlx.launch's jaccl needs each host's "rdma" row: the device matrix frozen at placement
        # (one rank per node, so host i is rank i).
        ordered = sorted(slots, key=lambda s: s.rank)
        return hostfiles.mlx([(s.host, [s.address]) for s in ordered], backend=job.backend,
                             rdma=(job.plan or {}).get("devices"))
    return hostfiles.render(fmt, slots, backend=job.backend)
