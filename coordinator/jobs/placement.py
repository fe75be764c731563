"""pending -> starting: where each pending job's ranks go, oldest job first.

The choice of nodes is coordinator/scheduler.py's (pure, over node views); this module turns a
placement into rank rows with ports and addresses, stores them, and hands an mpi job to its
launcher once the jobs lock is released (starting mpirun takes a while).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from coordinator.jobs import repository as repo
from coordinator.jobs import transitions as t
from coordinator.scheduler import Placement, Unplaceable, pick_ports, place, reservation
from coordinator.store import JobRow, RankRow
from shared import hostfiles
from shared.backends import RDMA, RENDEZVOUS, backend_vars
from shared.schemas import JobSpec
from shared.status import JobStatus

if TYPE_CHECKING:
    from coordinator.jobs.lifecycle import Jobs


def rank_rows(job: JobRow, placement: Placement, ppn: int, ports: list[list[int]]) -> list[RankRow]:
    """Ranks numbered node by node: node i holds ranks i*ppn .. i*ppn+ppn-1."""
    return [RankRow(job_id=job.id, attempt=job.attempt, rank=i * ppn + local, node_id=node.id, node_name=node.name,
                    local_rank=local, port=ports[i][local], address=placement.addresses[i])
            for i, node in enumerate(placement.nodes) for local in range(ppn)]


def ring_of(ranks: list[RankRow]) -> list[list[str]] | None:
    """The ring hostfile for these ranks; None for one rank (MLX hangs on a 1-entry ring file,
    and without one init() gives size 1). Raises ValueError when no ring can be built."""
    if len(ranks) <= 1:
        return None
    return hostfiles.ring([hostfiles.Slot(host=r.address, address=r.address, port=r.port, rank=r.rank)
                           for r in ranks])


def plan_of(job: JobRow, placement: Placement, ranks: list[RankRow]) -> dict:
    """The job's plan for this attempt: what it kept from submit ("why"), and what its ranks are
    told, frozen now. jaccl, jaccl-ring, nccl: rank 0's address and port is the rendezvous every
    rank dials ("coordinator"); jaccl*: the RDMA device matrix ("devices"), as the nodes' facts
    name the devices at this moment (they change at reboot: a restarted job reads them again)."""
    plan = {k: v for k, v in (job.plan or {}).items() if k not in ("coordinator", "devices", "left_out")}
    if job.backend in RENDEZVOUS:
        rank0 = min(ranks, key=lambda r: r.rank)
        plan["coordinator"] = f"{rank0.address}:{rank0.port}"
    if job.backend in RDMA:
        plan["devices"] = placement.devices
    if placement.left_out:
        plan["left_out"] = [{"node": name, "why": why} for name, why in placement.left_out]
    return plan


def placed_note(names: list[str], ppn: int) -> str:
    def span(i: int) -> str:
        return f"rank {i * ppn}" + (f"-{i * ppn + ppn - 1}" if ppn > 1 else "")
    return "placed on " + ", ".join(f"{n} ({span(i)})" for i, n in enumerate(names))


def schedule(jobs: Jobs) -> list[str]:
    """Place every pending job that fits, oldest first; the first that must wait for busy nodes
    holds the nodes it could use, so younger jobs only run beside it. Returns the ids placed."""
    placed: list[str] = []
    launches: list[tuple[JobRow, list[RankRow]]] = []
    with jobs.lock:
        with jobs.store.read() as s:
            pending = repo.pending(s)
        if not pending:
            return placed
        registry, config = jobs.registry, jobs.registry.config
        views, interfaces = registry.list_views(), registry.interfaces()
        held: set[str] = set()  # nodes kept for the oldest job that waits only for busy nodes
        holder: str | None = None
        for job in pending:
            spec = JobSpec.model_validate(job.spec)
            result = place(spec, job.backend, views, config, jobs.busy_nodes() | held, interfaces,
                           prefer_rank0=_previous_rank0(jobs, job))
            if isinstance(result, Unplaceable):
                reason = result.reason
                if holder is None:
                    held = reservation(spec, job.backend, views, config, interfaces)
                    holder = job.id if held else None
                elif held:
                    reason += f" (nodes held for the older job {holder})"
                if job.pending_reason != reason:
                    jobs._update(job.id, pending_reason=reason)
                    jobs.on_change(job.id)
                continue
            ranks = _start(jobs, job, spec, result)
            if ranks:
                placed.append(job.id)
                if job.backend in jobs.launchers:
                    launches.append((jobs.get_row(job.id), ranks))
    for job, ranks in launches:  # outside the lock: mpirun takes a while to start
        jobs.launchers[job.backend].start(job, ranks)
    return placed


def _previous_rank0(jobs: Jobs, job: JobRow) -> str | None:
    """Where rank 0 of the last attempt ran: its checkpoints are on that node's disk."""
    if job.attempt == 0:
        return None
    with jobs.store.read() as s:
        row = repo.rank(s, job.id, job.attempt - 1, 0)
        return row.node_id if row else None


def _start(jobs: Jobs, job: JobRow, spec: JobSpec, placement: Placement) -> list[RankRow]:
    ppn = spec.processes_per_node
    with jobs.store.read() as s:
        in_use = repo.ports_in_use(s)
    ranks = rank_rows(job, placement, ppn, pick_ports(placement.addresses, ppn, in_use))
    if job.backend == "ring":
        try:
            ring_of(ranks)
        except ValueError as exc:
            jobs.handle(job.id, t.LauncherFailed(f"cannot build the ring hostfile: {exc}"))
            return []
    plan = plan_of(job, placement, ranks)
    try:
        backend_vars(job.backend, world_size=job.world_size, local_rank=0, coordinator=plan.get("coordinator"),
                     devices=plan.get("devices"))
    except ValueError as exc:
        jobs.handle(job.id, t.LauncherFailed(f"cannot give the ranks their {job.backend} settings: {exc}"))
        return []
    names = [n.name for n in placement.nodes]
    with jobs.store.write() as s:
        row = repo.job(s, job.id)
        row.status, row.placed_at, row.pending_reason = JobStatus.STARTING, time.time(), None
        row.nodes, row.watch = names, {}  # a new attempt: watched afresh (watchdog.py)
        row.plan = plan
        s.add(row)
        for r in ranks:
            s.add(r)
    note = placed_note(names, ppn)
    jobs.logs.note(job.id, f"{note}; {placement.note}" if placement.note else note)
    for node_id in {r.node_id for r in ranks}:
        jobs.on_node_orders(node_id)
    jobs.on_change(job.id)
    return ranks

