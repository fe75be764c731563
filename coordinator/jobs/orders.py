"""What an agent must start and stop, from the ranks stored for its node and the ranks it says it has.

Orders are a function of the store and the agent's list, so they are recomputed whenever asked
(the agent's long-poll wakes when the store changes for its node) and never cached. jaccl,
jaccl-ring and nccl ranks other than 0 are ordered only once rank 0 has started (rendezvous.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coordinator.jobs import rendezvous, repository as repo
from coordinator.jobs.placement import ring_of
from coordinator.jobs.spec import stop_grace_of
from coordinator.store import JobRow, RankRow
from shared.backends import backend_vars
from shared.schemas import JobSpec, RankAssignment, RankState, StackDumpOrder, StopOrder
from shared.status import ACTIVE, TERMINAL, RankStatus

if TYPE_CHECKING:
    from coordinator.jobs.lifecycle import Jobs


def orders_for(jobs: Jobs, node_id: str, reported: list[RankState]
               ) -> tuple[list[RankAssignment], list[StopOrder], list[StackDumpOrder]]:
    """Ranks to start, to stop, and whose Python stacks to dump (their job stalled)."""
    have = {(r.job_id, r.attempt, r.rank) for r in reported}
    running = {(r.job_id, r.attempt) for r in reported if r.state != RankStatus.EXITED}
    undumped = {(r.job_id, r.attempt) for r in reported if r.state != RankStatus.EXITED and not r.stacks_dumped}
    start: list[RankAssignment] = []
    stop: list[StopOrder] = []
    dump: list[StackDumpOrder] = []
    with jobs.store.read() as s:
        rows = repo.orders_view(s, node_id)
        jobs_here = {job.id: job for _, job in rows}
        wanted: dict[str, list[RankRow]] = {}
        for rank, job in rows:
            # Ranks the agent starts (not those a launcher here starts, e.g. mpirun) and has not yet.
            if job.backend not in jobs.launchers and job.status in ACTIVE and rank.attempt == job.attempt \
                    and rank.state == RankStatus.ASSIGNED and (rank.job_id, rank.attempt, rank.rank) not in have:
                wanted.setdefault(job.id, []).append(rank)
        for job_id, mine in wanted.items():
            job = jobs_here[job_id]
            everyone = repo.ranks(s, job_id, job.attempt)
            ready = rendezvous.may_start(job.backend, mine, everyone)  # the rest wait for rank 0
            if ready:
                start += assignments(job, ready, everyone)
        for job_id, attempt in sorted(running):
            job = jobs_here.get(job_id) or repo.job(s, job_id)
            if job is None or job.status in TERMINAL or attempt != job.attempt:
                why = "unknown job" if job is None else job.status if job.status in TERMINAL else "an old attempt"
                stop.append(StopOrder(job_id=job_id, attempt=attempt, reason=why))
            elif (job.watch or {}).get("dump_at") is not None and (job_id, attempt) in undumped:
                dump.append(StackDumpOrder(job_id=job_id, attempt=attempt, reason="the job stalled"))
    return start, stop, dump


def assignments(job: JobRow, mine: list[RankRow], everyone: list[RankRow]) -> list[RankAssignment]:
    """The start orders for `mine`, ranks of `job` whose attempt has `everyone`: one ring hostfile
    for all (ring), or the backend's variables and device file from the job's plan (jaccl,
    jaccl-ring, nccl: placement.py froze them there)."""
    spec = JobSpec.model_validate(job.spec)
    ring = ring_of(everyone) if job.backend == "ring" else None
    plan = job.plan or {}
    command = list(job.command)
    out = []
    for r in sorted(mine, key=lambda r: r.rank):
        mlx_env, mlx_files = backend_vars(job.backend, world_size=job.world_size, local_rank=r.local_rank,
                                          coordinator=plan.get("coordinator"), devices=plan.get("devices"))
        out.append(RankAssignment(job_id=job.id, rank=r.rank, attempt=r.attempt, world_size=job.world_size,
                                  command=command, stop_grace_s=stop_grace_of(spec), env=spec.env,
                                  secret_env=spec.secret_env, backend=job.backend, hostfile=ring,
                                  mlx_env=mlx_env, mlx_files=mlx_files,
                                  start_timeout_s=spec.start_timeout_s, local_rank=r.local_rank,
                                  workdir=spec.workdir, artifacts=list(spec.artifacts) if r.rank == 0 else [],
                                  restore_artifacts=r.attempt > 0 and bool(spec.artifacts)))
    return out
