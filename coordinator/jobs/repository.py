"""Every query about jobs and ranks: the only module of coordinator/jobs/ that speaks SQL.

Each function takes an open session (Store.read() or Store.write()), so a caller can make
several of them one transaction: a report's lines, their counts and the rank states commit together.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import Session, select

from coordinator.store import JobRow, RankRow
from shared.status import ACTIVE, JobStatus, RankStatus


def job(s: Session, job_id: str) -> JobRow | None:
    return s.get(JobRow, job_id)


def by_idempotency_key(s: Session, key: str) -> JobRow | None:
    return s.exec(select(JobRow).where(JobRow.idempotency_key == key)).first()


def jobs(s: Session, *, status: str | None = None, limit: int = 200) -> list[JobRow]:
    """Newest first."""
    q = select(JobRow).order_by(JobRow.created_at.desc()).limit(limit)
    if status:
        q = q.where(JobRow.status == status)
    return list(s.exec(q))


def pending(s: Session) -> list[JobRow]:
    """Oldest first: the order the scheduler serves them in."""
    return list(s.exec(select(JobRow).where(JobRow.status == JobStatus.PENDING).order_by(JobRow.created_at)))


def unfinished(s: Session) -> list[JobRow]:
    return list(s.exec(select(JobRow).where(JobRow.status.in_([JobStatus.PENDING, *ACTIVE]))))


def rank(s: Session, job_id: str, attempt: int, number: int) -> RankRow | None:
    return s.get(RankRow, (job_id, attempt, number))


def ranks(s: Session, job_id: str, attempt: int) -> list[RankRow]:
    """One attempt's ranks, in rank order."""
    return list(s.exec(select(RankRow).where(RankRow.job_id == job_id)
                       .where(RankRow.attempt == attempt).order_by(RankRow.rank)))


def ranks_in(s: Session, job_id: str, attempt: int, states: Iterable[str]) -> list[RankRow]:
    return list(s.exec(select(RankRow).where(RankRow.job_id == job_id).where(RankRow.attempt == attempt)
                       .where(RankRow.state.in_(tuple(states))).order_by(RankRow.rank)))


def nodes_of(s: Session, job_id: str) -> set[str]:
    """Every node that held a rank of the job, in any attempt."""
    return set(s.exec(select(RankRow.node_id).where(RankRow.job_id == job_id)))


def unstarted(s: Session, job_id: str) -> list[RankRow]:
    return list(s.exec(select(RankRow).where(RankRow.job_id == job_id)
                       .where(RankRow.state == RankStatus.ASSIGNED)))


def busy_nodes(s: Session) -> set[str]:
    """Nodes holding a rank that has not exited, whatever its job's status: a cancelled job's
    ranks still stopping must not share the node with the next job."""
    return set(s.exec(select(RankRow.node_id).where(RankRow.state != RankStatus.EXITED)))


def ports_in_use(s: Session) -> set[tuple[str, int]]:
    rows = s.exec(select(RankRow.address, RankRow.port).where(RankRow.state != RankStatus.EXITED))
    return {(a, p) for a, p in rows if p is not None}


def live_ranks_on(s: Session, node_id: str) -> list[tuple[RankRow, JobRow]]:
    """The node's ranks that have not exited, with their jobs."""
    return list(s.exec(select(RankRow, JobRow).join(JobRow, JobRow.id == RankRow.job_id)
                       .where(RankRow.node_id == node_id).where(RankRow.state != RankStatus.EXITED)))


def started_on(s: Session, node_id: str, launched_elsewhere: Iterable[str]) -> list[RankRow]:
    """The node's ranks its agent has picked up and not reported ended (not those of backends
    `launched_elsewhere`, whose ranks a launcher on the coordinator starts)."""
    return list(s.exec(select(RankRow).join(JobRow, JobRow.id == RankRow.job_id)
                       .where(RankRow.node_id == node_id).where(JobRow.backend.notin_(tuple(launched_elsewhere)))
                       .where(RankRow.state.in_((RankStatus.STARTING, RankStatus.RUNNING)))))


def orders_view(s: Session, node_id: str) -> list[tuple[RankRow, JobRow]]:
    """What an agent's orders are made from: its ranks of active jobs, and any still running."""
    return list(s.exec(select(RankRow, JobRow).join(JobRow, JobRow.id == RankRow.job_id)
                       .where(RankRow.node_id == node_id)
                       .where((JobRow.status.in_(ACTIVE)) | (RankRow.state != RankStatus.EXITED))))
