"""What clients read of a job: its view, its detail with ranks, and its hostfile in any format."""

from __future__ import annotations

from datetime import datetime, timezone

from coordinator.store import JobRow, RankRow
from shared import hostfiles
from shared.progress import ProgressTracker
from shared.schemas import AttemptOut, JobDetail, JobOut, JobSpec, LossPoint, RankOut


class NotPlaced(ValueError):
    pass


def utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc)


def job_out(job: JobRow, *, history: bool = True, env: bool = True) -> JobOut:
    """The job as clients see it. `env=False` (lists) leaves the job's env out; secret_env is
    never in any view."""
    spec = JobSpec.model_validate(job.spec)
    tracker = ProgressTracker.from_dict(job.progress) if job.progress else ProgressTracker()
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
        workdir=spec.workdir, artifacts=list(spec.artifacts))


def job_detail(job: JobRow, ranks: list[RankRow]) -> JobDetail:
    out = [RankOut(rank=r.rank, node=r.node_name, state=r.state, exit_code=r.exit_code, reason=r.reason)
           for r in ranks]
    return JobDetail(**job_out(job).__dict__, ranks=out)


def hostfile(job: JobRow, ranks: list[RankRow], hosts: dict[str, str], fmt: str) -> str:
    """`fmt` for the current attempt's ranks; `hosts` maps node ids to their hosts."""
    if not ranks:
        raise NotPlaced("the job is not placed yet, so it has no hostfile")
    slots = [hostfiles.Slot(host=hosts.get(r.node_id, r.address), address=r.address, port=r.port, rank=r.rank)
             for r in ranks]
    return hostfiles.render(fmt, slots, backend=job.backend)
