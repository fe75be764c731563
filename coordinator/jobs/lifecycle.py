"""The job lifecycle's I/O edge: events in, coordinator/jobs/transitions.py decides, effects out.

`Jobs` is the one owner of job and rank state. It holds the jobs lock, which serialises every
transition (a report, a cancel and a node going down cannot interleave), feeds the pure rules
the job as stored, and carries out what they decide: rows written, log notes, nodes told their
orders changed, the mpi launcher asked to stop. Slow work (starting mpirun) happens after the
lock is released. The other modules here do one step each and are called from this class:
placement (pending -> starting), ingest (reports from agents and the mpi launcher), orders (what
an agent must start and stop), views (what clients read); spec.py reads a job spec.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable

from coordinator.joblogs import JobLogs
from coordinator.jobs import choice, ingest, orders, placement, repository as repo, views
from coordinator.jobs.spec import (SpecConflict, SpecRejected, check, command_of, max_restarts_for,
                                   spec_hash, stored)
from coordinator.jobs import transitions as t
from coordinator.registry import Registry
from coordinator.store import JobRow, RankRow, Store
from shared.progress_tracker import ProgressTracker
from shared.schemas import (JobDetail, JobOut, JobSpec, RankAssignment, RankReport, RankState, StackDumpOrder,
                            StopOrder)
from shared.status import ACTIVE, TERMINAL, JobStatus, RankStatus

log = logging.getLogger("jupiter.jobs")


class JobNotFound(Exception):
    pass


class Launcher:
    """What the lifecycle asks of a launcher that runs ranks itself (mpi); agents need none."""

    def start(self, job: JobRow, ranks: list[RankRow]) -> None: ...
    def stop(self, job: JobRow) -> None: ...
    def dump_stacks(self, job: JobRow) -> None: ...


def job_facts(row: JobRow, booted_at: float = 0.0) -> t.Job:
    """The stored job as the pure rules see it."""
    spec = JobSpec.model_validate(row.spec) if row.spec else None
    return t.Job(status=row.status, attempt=row.attempt, max_restarts=row.max_restarts,
                 created_at=row.created_at, placed_at=row.placed_at, started_at=row.started_at,
                 pending_reason=row.pending_reason,
                 pending_timeout_s=spec.pending_timeout_s if spec else None,
                 start_timeout_s=spec.start_timeout_s if spec else 60.0,
                 timeout_s=spec.timeout_s if spec else None,
                 stall_timeout_s=spec.stall_timeout_s if spec else None,
                 watch=dict(row.watch or {}), booted_at=booted_at)


def rank_facts(rows: list[RankRow]) -> list[t.Rank]:
    return [t.Rank(rank=r.rank, node_name=r.node_name, state=r.state, exit_code=r.exit_code,
                   reason=r.reason, ended_at=r.ended_at) for r in rows]


class Jobs:
    def __init__(self, store: Store, registry: Registry, logs: JobLogs, *, default_backend: str):
        self.store = store
        self.registry = registry
        self.logs = logs
        self.default_backend = default_backend
        self.lock = threading.RLock()
        self.launchers: dict[str, Launcher] = {}  # backend -> the launcher that runs its ranks
        self.on_node_orders: Callable[[str], None] = lambda node_id: None  # wakes a node's long-poll
        self.on_change: Callable[[str], None] = lambda job_id: None         # wakes event streams
        self.wake_scheduler: Callable[[], None] = lambda: None              # places and ticks anew
        self.has_file: Callable[[str], bool] = lambda sha256: True          # the file store's (app.py)
        self._busy: tuple[int, frozenset[str]] = (-1, frozenset())          # (store generation, nodes)
        self.trackers: dict[str, ProgressTracker] = {}  # job -> its progress, while it runs (ingest.py)
        self.booted_at = time.time()  # a job is not silent for longer than this coordinator has run

    # ---------------------------------------------------------------- commands from clients

    def submit(self, spec: JobSpec) -> tuple[JobRow, bool]:
        """Store a new pending job, or return the one already stored under the same key (a
        SpecConflict when its spec differs). SpecRejected names the field this coordinator refuses."""
        config = self.registry.config
        views, interfaces = self.registry.list_views(), self.registry.interfaces()
        backend, why = choice.choose(spec, self.default_backend, views, config, interfaces)
        check(spec, backend, {n.name for n in views})
        blocked = choice.never_runs(spec, backend, views, config, interfaces)
        if blocked:
            raise SpecRejected(f"backend: {backend} cannot run on these nodes: {blocked}")
        if spec.workdir is not None and not self.has_file(spec.workdir):
            raise SpecRejected(f"workdir: no archive {spec.workdir} on this coordinator; upload it first "
                               f"(PUT /files/{{sha256}}, or jupiter submit --workdir DIR)")
        digest = spec_hash(spec)
        with self.lock, self.store.write() as s:
            if spec.idempotency_key:
                old = repo.by_idempotency_key(s, spec.idempotency_key)
                if old is not None:
                    if old.spec_hash != digest:
                        raise SpecConflict(f"idempotency_key {spec.idempotency_key!r} was used for a "
                                           f"different job ({old.id})")
                    return old, False
            row = JobRow(id="j-" + secrets.token_hex(5), name=spec.name, status=JobStatus.PENDING, backend=backend,
                         world_size=spec.nodes * spec.processes_per_node, spec=stored(spec).model_dump(mode="json"),
                         command=command_of(spec, config), idempotency_key=spec.idempotency_key,
                         spec_hash=digest, pending_reason="waiting for the scheduler",
                         max_restarts=max_restarts_for(spec, config), plan={"why": why})
            s.add(row)
        self.logs.note(row.id, f"submitted: {row.world_size} rank(s), backend {backend}: {why}")
        self.on_change(row.id)  # the API wakes the scheduler (api/jobs.py)
        return row, True

    def cancel(self, job_id: str) -> JobRow:
        if self.get_row(job_id) is None:
            raise JobNotFound(job_id)
        self.handle(job_id, t.Cancel())
        return self.get_row(job_id)

    # ---------------------------------------------------------------- events

    def schedule(self) -> list[str]:
        """Place every pending job that fits; returns the ids placed."""
        return placement.schedule(self)

    def report(self, node_id: str | None, report: RankReport, *, complete: bool = False,
               launcher: ingest.LauncherNews | None = None) -> dict[str, int]:
        """Output and rank states from the agent on `node_id` (or from the mpi launcher, which
        reports like an agent for every node of its job: node_id None)."""
        return ingest.ingest(self, node_id, report, complete=complete, launcher=launcher)

    def launcher_failed(self, job_id: str, attempt: int, error: str, exit_code: int | None = None) -> None:
        """A launcher failure no rank is to blame for (mpirun could not start, or exited non-zero
        although every rank exited 0)."""
        with self.lock:
            row = self.get_row(job_id)
            if row is not None and row.attempt == attempt:
                self.handle(job_id, t.LauncherFailed(error, exit_code))

    def node_down(self, node_id: str, grace_s: float) -> None:
        """Every active job with a rank on a node that went silent fails, naming node and rank."""
        hit: dict[str, RankRow] = {}
        with self.lock:
            with self.store.write() as s:
                now = time.time()
                for rank, job in repo.live_ranks_on(s, node_id):
                    rank.state, rank.ended_at = RankStatus.EXITED, now
                    rank.reason = f"node went down (no heartbeat for {grace_s:g} s)"
                    s.add(rank)
                    if job.status not in TERMINAL and rank.attempt == job.attempt:
                        hit.setdefault(job.id, rank)
            for job_id, rank in hit.items():
                self.handle(job_id, t.NodeDown(rank.rank, rank.node_name, grace_s))

    def tick(self) -> float | None:
        """Timeouts (pending too long, ranks not started in time, past timeout_s, stalled) for
        the jobs whose deadline has come. Returns when to call again at the latest: at once after
        a timeout (its effects may set a new deadline), in a second while a job waits to be placed
        (the caller places pending jobs then too), else at the next deadline (None: there is none).
        Reading one job and its ranks per job every second cost the ranks' cores more than
        anything else the coordinator does while they train."""
        now = time.time()
        with self.store.read() as s:
            facts = [(row.id, job_facts(row, self.booted_at)) for row in repo.unfinished(s)]
        handled, due = False, [now + 1.0] if any(j.status == JobStatus.PENDING for _, j in facts) else []
        for job_id, job in facts:
            at = t.due_at(job)
            if at is not None and at <= now:
                handled = self.handle(job_id, t.Tick(now)) is not None or handled
            elif at is not None:
                due.append(at)
        return now if handled else min(due, default=None)

    def handle(self, job_id: str, event: t.Event) -> t.Decision | None:
        """Decide what `event` does to the job as stored now, and carry it out."""
        with self.lock:
            with self.store.read() as s:
                row = repo.job(s, job_id)
                if row is None:
                    return None
                ranks = repo.ranks(s, job_id, row.attempt)
            decision = t.decide(job_facts(row, self.booted_at), rank_facts(ranks), event)
            for effect in decision.effects:
                self._apply(row, effect)
        if decision.effects or not isinstance(event, t.Tick):  # a tick that changed nothing is not news
            self.on_change(job_id)
        # Only an attempt that ended (its nodes free, or the job pending again) can let the
        # scheduler place anything, and only a job that started running gets closer deadlines
        # (timeout_s, the stall limit; transitions.due_at): waking it for every progress report
        # made it read every running job again, about once a second, on the ranks' cores.
        if any(isinstance(e, t.Finish | t.Restart | t.MarkRunning) for e in decision.effects):
            self.wake_scheduler()
        return decision

    # ---------------------------------------------------------------- effects

    def _apply(self, job: JobRow, effect: t.Effect) -> None:
        match effect:
            case t.MarkRunning():
                self._update(job.id, status=JobStatus.RUNNING, started_at=time.time())
                self.logs.note(job.id, "all ranks running")
            case t.DumpStacks(silent_s=silent, limit_s=limit):
                self._dump_stacks(job, silent, limit)
            case t.Finish(status=status, exit_code=code, error=error, stalled=stalled):
                self._finish(job, status, code, error, stalled)
            case t.Restart(error=error, stalled=stalled):
                self._restart(job, error, stalled)

    def _dump_stacks(self, job: JobRow, silent: float, limit: float) -> None:
        """The job stalled: note when, and have every rank dump its Python stacks into the log
        (agents through their orders, the mpi launcher through mpirun); tick fails it shortly."""
        with self.store.write() as s:
            row = repo.job(s, job.id)
            row.watch = {**(row.watch or {}), "dump_at": time.time(), "silent_s": round(silent, 1),
                         "limit_s": limit}
            s.add(row)
            nodes = repo.nodes_of(s, job.id)
        self.logs.note(job.id, f"no rank printed or reported progress for {silent:.0f} s (limit {limit:g} s): "
                               f"the job stalled; asking each rank for its Python stack")
        launcher = self.launchers.get(job.backend)
        if launcher is not None:
            launcher.dump_stacks(row)
        for node_id in nodes:
            self.on_node_orders(node_id)

    def _finish(self, job: JobRow, status: str, exit_code: int | None, error: str | None,
                stalled: bool = False) -> None:
        now = time.time()
        with self.store.write() as s:
            row = repo.job(s, job.id)
            row.status, row.ended_at, row.exit_code, row.error = status, now, exit_code, error
            if stalled:
                row.watch = {**(row.watch or {}), "stalled": True}
            s.add(row)
            _close_unstarted(s, job.id, now)
            nodes = repo.nodes_of(s, job.id)
        self.logs.note(job.id, f"{status}" + (f": {error}" if error else ""))
        self.trackers.pop(job.id, None)  # per-job caches end with the job (a late line rebuilds it)
        self._stop_launched(row)
        for node_id in nodes:
            self.on_node_orders(node_id)

    def _restart(self, job: JobRow, error: str, stalled: bool = False) -> None:
        now = time.time()
        with self.store.write() as s:
            row = repo.job(s, job.id)
            # The next attempt is watched afresh; that this one stalled stays until it is placed.
            row.watch = {"stalled": True} if stalled else {}
            row.attempts = [*row.attempts, {"attempt": row.attempt, "nodes": row.nodes, "error": error,
                                            "started_at": row.placed_at, "ended_at": now}]
            row.attempt += 1
            row.status, row.placed_at, row.nodes = JobStatus.PENDING, None, []
            row.pending_reason = f"restarting (attempt {row.attempt + 1} of {row.max_restarts + 1}) after: {error}"
            s.add(row)
            _close_unstarted(s, job.id, now)
            nodes = repo.nodes_of(s, job.id)
        self.logs.note(job.id, f"attempt {job.attempt + 1} failed: {error}; restarting "
                               f"({job.max_restarts - job.attempt} restart(s) left)")
        self._stop_launched(job)
        for node_id in nodes:
            self.on_node_orders(node_id)

    def _stop_launched(self, job: JobRow) -> None:
        launcher = self.launchers.get(job.backend)
        if launcher is not None:
            launcher.stop(job)  # returns at once; the TERM/KILL runs on its own thread

    # ---------------------------------------------------------------- orders for agents

    def orders_for(self, node_id: str, reported: list[RankState]
                   ) -> tuple[list[RankAssignment], list[StopOrder], list[StackDumpOrder]]:
        """What the agent on `node_id` must start, stop and dump the stacks of, given the ranks it has."""
        return orders.orders_for(self, node_id, reported)

    # ---------------------------------------------------------------- reads


    def busy_nodes(self) -> frozenset[str]:
        """Nodes holding a rank that has not exited. Read on every node view, so kept until the
        store next changes (the store's generation counts its writes)."""
        generation = self.store.generation
        if self._busy[0] != generation:
            with self.store.read() as s:
                self._busy = (generation, frozenset(repo.busy_nodes(s)))
        return self._busy[1]

    def recover_logs(self) -> None:
        """At start-up: drop output a previous coordinator wrote to a log but never committed
        (it was killed in between); the agents and the mpi launcher send it again."""
        for job in self.list_rows(limit=10_000):
            if job.log_bytes is not None:
                dropped = self.logs.rollback(job.id, job.log_bytes)
                if dropped:
                    log.info("job %s: %d bytes of output logged but not committed before a restart were "
                             "dropped; they are sent again", job.id, dropped)

    def _update(self, job_id: str, **values) -> None:
        with self.store.write() as s:
            row = repo.job(s, job_id)
            for k, v in values.items():
                setattr(row, k, v)
            s.add(row)

    def get_row(self, job_id: str) -> JobRow | None:
        with self.store.read() as s:
            return repo.job(s, job_id)

    def ranks(self, job_id: str, attempt: int | None = None) -> list[RankRow]:
        """The ranks of one attempt of the job; by default its current one."""
        with self.store.read() as s:
            job = repo.job(s, job_id)
            if job is None:
                return []
            return repo.ranks(s, job_id, job.attempt if attempt is None else attempt)

    def list_rows(self, status: str | None = None, limit: int = 200) -> list[JobRow]:
        with self.store.read() as s:
            return repo.jobs(s, status=status, limit=limit)

    def view(self, job: JobRow, history: bool = True, env: bool = True) -> JobOut:
        # The nodes' pressure facts name a straggler's likely cause; read only when there is one.
        return views.job_out(job, history=history, env=env,
                             pressure=lambda: views.node_pressure(self.registry))

    def detail(self, job_id: str) -> JobDetail:
        with self.store.read() as s:  # one read: the job and the ranks of the attempt it is on
            job = repo.job(s, job_id)
            if job is None:
                raise JobNotFound(job_id)
            ranks = repo.ranks(s, job_id, job.attempt)
        return views.job_detail(job, ranks, pressure=lambda: views.node_pressure(self.registry))

    def hostfile(self, job_id: str, fmt: str) -> str:
        job = self.get_row(job_id)
        if job is None:
            raise JobNotFound(job_id)
        hosts = {n.id: n.host for n in self.registry.list_views()}
        return views.hostfile(job, self.ranks(job_id), hosts, fmt)


def _close_unstarted(s, job_id: str, now: float) -> None:
    # Ranks no agent ever picked up will never report; close them here.
    for rank in repo.unstarted(s, job_id):
        rank.state, rank.reason, rank.ended_at = RankStatus.EXITED, "never started", now
        s.add(rank)


__all__ = ["ACTIVE", "JobNotFound", "Jobs", "Launcher"]
