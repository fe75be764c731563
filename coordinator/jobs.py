"""Jobs from submission to a terminal status: the state machine, and the reports that drive it.

    pending -> starting -> running -> succeeded | failed | cancelled

The scheduler places a pending job (ranks, ports, hostfile); launchers start its ranks (agents
for `ring`, mpirun for `mpi`); rank reports move it on. A terminal status never changes. One lock
serialises every transition, so a report, a cancel and a node going down cannot interleave.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

from sqlmodel import select

from coordinator import trainer_jobs
from coordinator.joblogs import JobLogs
from coordinator.registry import Registry
from coordinator.scheduler import Placement, Unplaceable, pick_ports, place, reservation
from coordinator.store import JobRow, RankRow, Store
from shared import hostfiles
from shared.progress import ProgressTracker, parse as parse_progress
from shared.status import ACTIVE, JobStatus
from shared.schemas import (
    TERMINAL,
    AttemptOut,
    JobDetail,
    JobOut,
    JobSpec,
    LossPoint,
    RankAssignment,
    RankOut,
    RankReport,
    RankState,
    StopOrder,
)

log = logging.getLogger("jupiter.jobs")

STATE_ORDER = {"assigned": 0, "starting": 1, "running": 2, "exited": 3}


class SpecConflict(Exception):
    pass


class SpecRejected(ValueError):
    """A spec that validates as JSON but cannot run here; the message names the field."""


class JobNotFound(Exception):
    pass


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc)


def spec_hash(spec: JobSpec) -> str:
    # secret_env counts (the same key with another secret is another job); the digest is stored,
    # never shown. Left out when empty, so digests of jobs stored before it existed still match.
    body = spec.model_dump(mode="json", exclude={"idempotency_key"} | (set() if spec.secret_env else {"secret_env"}))
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        import signal

        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


class Jobs:
    def __init__(self, store: Store, registry: Registry, logs: JobLogs, *, default_backend: str):
        self.store = store
        self.registry = registry
        self.logs = logs
        self.default_backend = default_backend
        self.lock = threading.RLock()
        self._trackers: dict[str, ProgressTracker] = {}
        self._mpirun_lines: dict[str, list[str]] = {}  # recent untagged mpirun output, per job
        self.on_node_orders: Callable[[str], None] = lambda node_id: None  # wakes a long-poll
        self.on_mpi_place: Callable[[JobRow, list[RankRow]], None] | None = None
        self.on_mpi_stop: Callable[[JobRow], None] | None = None
        self.on_change: Callable[[str], None] = lambda job_id: None      # wakes event streams
        self._orders_cache: dict[str, tuple[tuple, tuple[list[RankAssignment], list[StopOrder]]]] = {}
        self._refresh_busy()

    # ------------------------------------------------------------------ submission

    def submit(self, spec: JobSpec) -> tuple[JobRow, bool]:
        """Store a new pending job, or return the one already stored under the same key."""
        if spec.domain is not None:
            try:
                trainer_jobs.check_preset(spec.preset)
                trainer_jobs.check_domain(spec.domain)
            except trainer_jobs.DomainRejected as exc:
                raise SpecRejected(str(exc)) from None
        backend = spec.backend or self.default_backend
        if backend == "jaccl":
            raise SpecRejected("backend: jaccl needs RDMA over Thunderbolt 5 topology support, "
                               "which this version does not have yet; use ring or mpi")
        known = {n.name for n in self.registry.list_views()}
        for name in spec.node_names or []:
            if name not in known:
                raise SpecRejected(f"node_names: no node named {name!r}")
        digest = spec_hash(spec)
        with self.lock, self.store.write() as s:
            if spec.idempotency_key:
                old = s.exec(select(JobRow).where(JobRow.idempotency_key == spec.idempotency_key)).first()
                if old is not None:
                    if old.spec_hash != digest:
                        raise SpecConflict(f"idempotency_key {spec.idempotency_key!r} was used for a "
                                           f"different job ({old.id})")
                    return old, False
            row = JobRow(id="j-" + secrets.token_hex(5), name=spec.name, status="pending", backend=backend,
                         world_size=spec.nodes * spec.processes_per_node, spec_json=spec.model_dump_json(),
                         command_json=json.dumps(self.command_of(spec)), idempotency_key=spec.idempotency_key,
                         spec_hash=digest, pending_reason="waiting for the scheduler",
                         max_restarts=self.max_restarts_for(spec))
            s.add(row)
        self.logs.note(row.id, f"submitted: {row.world_size} rank(s), backend {backend}")
        self.on_change(row.id)
        return row, True

    def max_restarts_for(self, spec: JobSpec) -> int:
        if spec.max_restarts is not None:
            return spec.max_restarts
        return 2 if spec.domain is not None and self.registry.config.auto_restart_failed_nodes else 0

    # ------------------------------------------------------------------ scheduling

    def schedule(self) -> list[str]:
        """Place every pending job that fits, oldest first; the first that must wait for busy nodes
        holds the nodes it could use, so younger jobs only run beside it. Returns the ids placed."""
        placed = []
        with self.lock:
            with self.store.read() as s:
                pending = list(s.exec(select(JobRow).where(JobRow.status == "pending").order_by(JobRow.created_at)))
            if not pending:
                return placed
            views = self.registry.list_views()
            interfaces = self.registry.interfaces()
            held: set[str] = set()  # nodes kept for the oldest job that waits only for busy nodes
            holder: str | None = None
            for job in pending:
                spec = JobSpec.model_validate_json(job.spec_json)
                result = place(spec, job.backend, views, self.registry.config, self.registry.busy_nodes | held,
                               interfaces, prefer_rank0=self._previous_rank0(job))
                if isinstance(result, Unplaceable):
                    reason = result.reason
                    if holder is None:
                        held = reservation(spec, job.backend, views, self.registry.config, interfaces)
                        holder = job.id if held else None
                    elif held:
                        reason += f" (nodes held for the older job {holder})"
                    if job.pending_reason != reason:
                        self._update(job.id, pending_reason=reason)
                        self.on_change(job.id)
                    continue
                self._start(job, spec, result)
                placed.append(job.id)
        return placed

    def _previous_rank0(self, job: JobRow) -> str | None:
        """Where rank 0 of the last attempt ran: its checkpoints are on that node's disk."""
        if job.attempt == 0:
            return None
        with self.store.read() as s:
            row = s.get(RankRow, (job.id, job.attempt - 1, 0))
            return row.node_id if row else None

    def _start(self, job: JobRow, spec: JobSpec, placement: Placement) -> None:
        ppn = spec.processes_per_node
        in_use = self._ports_in_use()
        ports = pick_ports(placement.addresses, ppn, in_use)
        ranks = []
        for i, node in enumerate(placement.nodes):
            for local in range(ppn):
                ranks.append(RankRow(job_id=job.id, attempt=job.attempt, rank=i * ppn + local, node_id=node.id,
                                     node_name=node.name,
                                     local_rank=local, port=ports[i][local], address=placement.addresses[i]))
        names = [n.name for n in placement.nodes]
        if job.backend == "ring" and len(ranks) > 1:
            try:
                hostfiles.ring([hostfiles.Slot(host=r.address, address=r.address, port=r.port, rank=r.rank)
                                for r in ranks])
            except ValueError as exc:
                self.finish(job.id, "failed", error=f"cannot build the ring hostfile: {exc}")
                return
        now = time.time()
        with self.store.write() as s:
            row = s.get(JobRow, job.id)
            row.status, row.placed_at, row.pending_reason = "starting", now, None
            row.nodes_json = json.dumps(names)
            s.add(row)
            for r in ranks:
                s.add(r)
        self._refresh_busy()
        self.logs.note(job.id, "placed on " + ", ".join(f"{n} (rank {i * ppn}{'-' + str(i * ppn + ppn - 1) if ppn > 1 else ''})"
                                                     for i, n in enumerate(names)))
        if job.backend == "mpi" and self.on_mpi_place:
            self.on_mpi_place(self.get_row(job.id), ranks)
        for node_id in {r.node_id for r in ranks}:
            self.on_node_orders(node_id)
        self.on_change(job.id)

    def _ports_in_use(self) -> set[tuple[str, int]]:
        with self.store.read() as s:
            rows = s.exec(select(RankRow.address, RankRow.port).where(RankRow.state != "exited"))
            return {(a, p) for a, p in rows if p is not None}

    def _refresh_busy(self) -> None:
        """A node is busy while it holds a rank that has not exited, whatever the job's status:
        a cancelled job's ranks still stopping must not share the node with the next job."""
        with self.store.read() as s:
            rows = s.exec(select(RankRow.node_id).where(RankRow.state != "exited"))
            self.registry.busy_nodes = set(rows)

    # ------------------------------------------------------------------ orders for agents

    def orders_for(self, node_id: str, reported: list[RankState]) -> tuple[list[RankAssignment], list[StopOrder]]:
        """What the agent on `node_id` must start and stop, given the ranks it says it has.

        Asked on every heartbeat and long-poll wake-up; the answer only changes when the store
        does or the agent's list does, so it is kept per node until either changes."""
        have = {(r.job_id, r.attempt, r.rank) for r in reported}
        running = {(r.job_id, r.attempt) for r in reported if r.state != "exited"}
        key = (self.store.generation, frozenset(have), frozenset(running))
        cached = self._orders_cache.get(node_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        answer = self._orders_from_store(node_id, have, running)
        self._orders_cache[node_id] = (key, answer)
        return answer

    def _orders_from_store(self, node_id: str, have: set, running: set
                           ) -> tuple[list[RankAssignment], list[StopOrder]]:
        start, stop = [], []
        with self.store.read() as s:
            rows = list(s.exec(select(RankRow, JobRow).join(JobRow, JobRow.id == RankRow.job_id)
                               .where(RankRow.node_id == node_id)
                               .where((JobRow.status.in_(ACTIVE)) | (RankRow.state != "exited"))))
            jobs_here = {job.id: job for _, job in rows}
            for rank, job in rows:
                if job.backend != "ring" or job.status not in ACTIVE or rank.attempt != job.attempt:
                    continue
                if rank.state == "assigned" and (rank.job_id, rank.attempt, rank.rank) not in have:
                    start.append(self._assignment(s, job, rank))
            for job_id, attempt in sorted(running):
                job = jobs_here.get(job_id) or s.get(JobRow, job_id)
                if job is None or job.status in TERMINAL or attempt != job.attempt:
                    why = "unknown job" if job is None else job.status if job.status in TERMINAL else "an old attempt"
                    stop.append(StopOrder(job_id=job_id, attempt=attempt, reason=why))
        return start, stop

    def _assignment(self, s, job: JobRow, rank: RankRow) -> RankAssignment:
        spec = JobSpec.model_validate_json(job.spec_json)
        all_ranks = list(s.exec(select(RankRow).where(RankRow.job_id == job.id)
                                .where(RankRow.attempt == rank.attempt).order_by(RankRow.rank)))
        slots = [hostfiles.Slot(host=r.address, address=r.address, port=r.port, rank=r.rank) for r in all_ranks]
        # One rank needs no ring: MLX hangs on a 1-entry ring file; without one init() gives size 1.
        ring = hostfiles.ring(slots) if job.world_size > 1 else None
        return RankAssignment(job_id=job.id, rank=rank.rank, attempt=rank.attempt, world_size=job.world_size,
                              command=json.loads(job.command_json), stop_grace_s=self.stop_grace_of(spec),
                              env=spec.env, secret_env=spec.secret_env, backend=job.backend, hostfile=ring,
                              start_timeout_s=spec.start_timeout_s, local_rank=rank.local_rank)

    # ------------------------------------------------------------------ reports from agents

    def report(self, node_id: str, report: RankReport, *, complete: bool = False) -> dict[str, int]:
        """Store output and rank states sent by the agent on `node_id`. With `complete`, the list
        of ranks is everything the agent has: a rank it ran before and no longer knows is lost."""
        acked: dict[str, int] = {}
        changed: set[str] = set()
        if not (report.output or report.ranks or complete):
            return acked
        logged: dict[str, int] = {}  # job -> its log's size before this report wrote to it
        with self.lock, self._logs_undone_on_failure(logged):
            with self.store.write() as s:
                for out in report.output:
                    rank = s.get(RankRow, (out.job_id, out.attempt, out.rank))
                    if rank is None or rank.node_id != node_id:
                        continue
                    if out.seq > rank.lines_stored:  # lines the agent had to drop: keep what came
                        fresh, rank.lines_stored = out.lines, out.seq
                    else:  # a resend overlaps what is stored: skip the lines already in the log
                        fresh = out.lines[rank.lines_stored - out.seq:]
                    if fresh:
                        logged.setdefault(out.job_id, self.logs.size(out.job_id))
                        self.logs.append(out.job_id, out.rank, fresh)
                        self._track(s, out.job_id, out.rank, fresh)
                        rank.lines_stored += len(fresh)
                        s.add(rank)
                        changed.add(out.job_id)
                    acked[f"{out.job_id}/{out.attempt}/{out.rank}"] = rank.lines_stored
                for job_id in logged:  # committed with the line counts, or not at all
                    job = s.get(JobRow, job_id)
                    job.log_bytes = self.logs.size(job_id)
                    s.add(job)
                for st in report.ranks:
                    rank = s.get(RankRow, (st.job_id, st.attempt, st.rank))
                    if rank is None or rank.node_id != node_id or rank.state == "exited":
                        continue
                    if STATE_ORDER[st.state] > STATE_ORDER[rank.state]:  # never move back on a stale report
                        rank.state = st.state
                        rank.pid = st.pid
                        if st.state in ("starting", "running") and rank.started_at is None:
                            rank.started_at = time.time()
                        if st.state == "exited":
                            rank.exit_code, rank.reason, rank.ended_at = st.exit_code, st.reason, time.time()
                        s.add(rank)
                        changed.add(st.job_id)
                if complete:
                    have = {(r.job_id, r.attempt, r.rank) for r in report.ranks}
                    lost = s.exec(select(RankRow).where(RankRow.node_id == node_id)
                                  .where(RankRow.state.in_(("starting", "running"))))
                    for rank in lost:
                        if (rank.job_id, rank.attempt, rank.rank) not in have:
                            rank.state, rank.exit_code, rank.ended_at = "exited", None, time.time()
                            rank.reason = "the agent no longer knows this rank (agent restarted?)"
                            s.add(rank)
                            changed.add(rank.job_id)
            for job_id in changed:
                self._evaluate(job_id)
        return acked

    def _track(self, s, job_id: str, rank: int, lines: list[str]) -> None:
        records = [rec for rec in (parse_progress(line) for line in lines) if rec is not None]
        if not records:
            return
        tracker = self._tracker(s, job_id)
        for rec in records:
            tracker.feed(rank, rec)
        job = s.get(JobRow, job_id)
        job.progress_json = json.dumps(tracker.to_dict())
        s.add(job)

    @contextlib.contextmanager
    def _logs_undone_on_failure(self, logged: dict[str, int]):
        """If the transaction that counts freshly logged lines fails, take the lines out of the
        log again: the agent resends them, and they must not be there twice."""
        try:
            yield
        except BaseException:
            for job_id, size in logged.items():
                self.logs.rollback(job_id, size)
            raise

    def recover_logs(self) -> None:
        """At start-up: drop output a previous coordinator wrote to a log but never committed
        (it was killed in between); the agents and the mpi follower send it again."""
        for job in self.list_rows(limit=10_000):
            if job.log_bytes is not None:
                dropped = self.logs.rollback(job.id, job.log_bytes)
                if dropped:
                    log.info("job %s: %d bytes of output logged but not committed before a restart were "
                             "dropped; they are sent again", job.id, dropped)

    def _tracker(self, s, job_id: str) -> ProgressTracker:
        t = self._trackers.get(job_id)
        if t is None:
            job = s.get(JobRow, job_id)
            t = ProgressTracker.from_dict(json.loads(job.progress_json or "{}")) if job else ProgressTracker()
            t.label = f"job {job_id}"
            self._trackers[job_id] = t
        return t

    # ------------------------------------------------------------------ transitions

    def _evaluate(self, job_id: str) -> None:
        job = self.get_row(job_id)
        ranks = self.ranks(job_id)
        self._refresh_busy()
        if job is None or job.status in TERMINAL:
            self.on_change(job_id)
            return
        failed = sorted((r for r in ranks if r.state == "exited" and r.exit_code != 0),
                        key=lambda r: (r.ended_at or 0, r.rank))
        if failed:
            r = failed[0]
            why = r.reason or describe_exit(r.exit_code)
            if r.reason and r.exit_code is not None:
                why = f"{describe_exit(r.exit_code)} ({r.reason})"
            self.finish(job_id, "failed", exit_code=r.exit_code if r.exit_code is not None else 1,
                        error=f"rank {r.rank} on node {r.node_name} {why}")
            return
        if ranks and all(r.state == "exited" for r in ranks):
            self.finish(job_id, "succeeded", exit_code=0)
            return
        if job.status == "starting" and ranks and all(r.state in ("running", "exited") for r in ranks):
            self._update(job_id, status="running", started_at=time.time())
            self.logs.note(job_id, "all ranks running")
        self.on_change(job_id)

    def finish(self, job_id: str, status: str, *, exit_code: int | None = None, error: str | None = None) -> bool:
        """Move a job to a terminal status (once) and stop whatever of it still runs; a failure
        with restarts left goes back to pending instead, as a new attempt."""
        with self.lock:
            job = self.get_row(job_id)
            if job is None or job.status in TERMINAL:
                return False
            if status == "failed" and job.status in ACTIVE and job.attempt < job.max_restarts:
                self._restart(job, error or "failed")
                return False
            now = time.time()
            with self.store.write() as s:
                row = s.get(JobRow, job_id)
                row.status, row.ended_at, row.exit_code, row.error = status, now, exit_code, error
                s.add(row)
                self._close_unstarted(s, job_id, now)
                nodes = set(s.exec(select(RankRow.node_id).where(RankRow.job_id == job_id)))
            self.logs.note(job_id, f"{status}" + (f": {error}" if error else ""))
            # Per-job caches end with the job (a late report rebuilds the tracker from the row).
            self._trackers.pop(job_id, None)
            self._mpirun_lines.pop(job_id, None)
            self._refresh_busy()
            if job.backend == "mpi" and self.on_mpi_stop:
                self.on_mpi_stop(row)
        for node_id in nodes:
            self.on_node_orders(node_id)
        self.on_change(job_id)
        return True

    @staticmethod
    def _close_unstarted(s, job_id: str, now: float) -> None:
        # Ranks no agent ever picked up will never report; close them here.
        for rank in s.exec(select(RankRow).where(RankRow.job_id == job_id).where(RankRow.state == "assigned")):
            rank.state, rank.reason, rank.ended_at = "exited", "never started", now
            s.add(rank)

    def _restart(self, job: JobRow, error: str) -> None:
        """Record the failed attempt, stop its ranks, and queue the job again."""
        now = time.time()
        with self.store.write() as s:
            row = s.get(JobRow, job.id)
            attempts = json.loads(row.attempts_json)
            attempts.append({"attempt": row.attempt, "nodes": json.loads(row.nodes_json), "error": error,
                             "started_at": row.placed_at, "ended_at": now})
            row.attempts_json = json.dumps(attempts)
            row.attempt += 1
            row.status, row.placed_at, row.nodes_json = "pending", None, "[]"
            row.pending_reason = f"restarting (attempt {row.attempt + 1} of {row.max_restarts + 1}) after: {error}"
            s.add(row)
            self._close_unstarted(s, job.id, now)
            nodes = set(s.exec(select(RankRow.node_id).where(RankRow.job_id == job.id)))
        self.logs.note(job.id, f"attempt {job.attempt + 1} failed: {error}; restarting "
                               f"({job.max_restarts - job.attempt} restart(s) left)")
        self._refresh_busy()
        if job.backend == "mpi" and self.on_mpi_stop:
            self.on_mpi_stop(job)
        for node_id in nodes:
            self.on_node_orders(node_id)
        self.on_change(job.id)

    def cancel(self, job_id: str) -> JobRow:
        job = self.get_row(job_id)
        if job is None:
            raise JobNotFound(job_id)
        if job.status not in TERMINAL:
            self.finish(job_id, "cancelled", error="cancelled by request")
        return self.get_row(job_id)

    def node_down(self, node_id: str, grace_s: float) -> None:
        """Every active job with a rank on a node that went silent fails, naming node and rank."""
        with self.lock:
            with self.store.write() as s:
                rows = list(s.exec(select(RankRow, JobRow).join(JobRow, JobRow.id == RankRow.job_id)
                                   .where(RankRow.node_id == node_id).where(RankRow.state != "exited")))
                hit = []
                for rank, job in rows:
                    rank.state, rank.ended_at = "exited", time.time()
                    rank.reason = f"node went down (no heartbeat for {grace_s:g} s)"
                    s.add(rank)
                    if job.status not in TERMINAL and rank.attempt == job.attempt:
                        hit.append((job.id, rank))
            for job_id, rank in hit:
                self.finish(job_id, "failed", exit_code=None,
                            error=f"rank {rank.rank} on node {rank.node_name}: node went down "
                                  f"(no heartbeat for {grace_s:g} s)")
            self._refresh_busy()

    def tick(self) -> None:
        """Timeouts: pending too long, ranks not started in time, running past timeout_s."""
        now = time.time()
        with self.store.read() as s:
            jobs = list(s.exec(select(JobRow).where(JobRow.status.in_([JobStatus.PENDING, *ACTIVE]))))
        for job in jobs:
            spec = JobSpec.model_validate_json(job.spec_json)
            if job.status == "pending" and spec.pending_timeout_s and now - job.created_at > spec.pending_timeout_s:
                self.finish(job.id, "failed", error=f"could not be placed within {spec.pending_timeout_s:g} s: "
                                                    f"{job.pending_reason}")
            elif job.status == "starting" and job.placed_at and now - job.placed_at > spec.start_timeout_s:
                late = [r for r in self.ranks(job.id) if r.state in ("assigned", "starting")]
                names = ", ".join(f"rank {r.rank} on node {r.node_name}" for r in late) or "a rank"
                self.finish(job.id, "failed", error=f"{names} did not start within {spec.start_timeout_s:g} s")
            elif job.status == "running" and spec.timeout_s and job.started_at and now - job.started_at > spec.timeout_s:
                self.finish(job.id, "failed", error=f"timed out after {spec.timeout_s:g} s (timeout_s)")

    # ------------------------------------------------------------------ the mpi launcher's reports

    def mpi_started(self, job_id: str, state: dict, cmdline: str) -> None:
        """mpirun is up; each rank counts as running once its shim says it started on its host."""
        with self.lock:
            now = time.time()
            with self.store.write() as s:
                job = s.get(JobRow, job_id)
                job.launcher_json = json.dumps(state)
                s.add(job)
                for rank in s.exec(select(RankRow).where(RankRow.job_id == job_id)
                                   .where(RankRow.attempt == job.attempt).where(RankRow.state == "assigned")):
                    rank.state, rank.started_at = "starting", now
                    s.add(rank)
            self._mpirun_lines[job_id] = []
            self.logs.note(job_id, f"launched: {cmdline}")
            self.on_change(job_id)

    def mpi_output(self, job_id: str, attempt: int, by_rank: dict, offset: int) -> None:
        from shared.rankmarkers import parse_marker, parse_start

        with self.lock:
            current = self.get_row(job_id)
            if current is None or current.attempt != attempt:
                return  # the tail of an attempt that was already given up on
            exits, starts = [], []
            with self.store.write() as s:
                for rank, lines in by_rank.items():
                    keep = []
                    for line in lines:
                        marker, started = parse_marker(line), parse_start(line)
                        if marker:
                            exits.append(marker)
                        elif started is not None:
                            starts.append(started)
                        else:
                            keep.append(line)
                    self.logs.append(job_id, rank, keep)
                    if rank == "mpirun":
                        self._mpirun_lines.setdefault(job_id, []).extend(keep)
                        del self._mpirun_lines[job_id][:-200]
                    if isinstance(rank, int) and keep:
                        self._track(s, job_id, rank, keep)
                job = s.get(JobRow, job_id)
                state = json.loads(job.launcher_json or "{}")
                state["offset"] = offset
                job.launcher_json = json.dumps(state)
                job.log_bytes = self.logs.size(job_id)  # what was logged up to `offset`
                s.add(job)
                now = time.time()
                for r in starts:
                    rank = s.get(RankRow, (job_id, job.attempt, r))
                    if rank is not None and rank.state in ("assigned", "starting"):
                        rank.state = "running"
                        s.add(rank)
                for r, code in exits:
                    rank = s.get(RankRow, (job_id, job.attempt, r))
                    if rank is not None and rank.state != "exited":
                        rank.state, rank.exit_code, rank.ended_at = "exited", code, now
                        s.add(rank)
            if exits or starts:
                self._evaluate(job_id)
            else:
                self.on_change(job_id)

    def mpi_exited(self, job_id: str, attempt: int, code: int | None) -> None:
        with self.lock:
            now = time.time()
            unreachable = self._unreachable_host(job_id, attempt) if code else None
            self._mpirun_lines.pop(job_id, None)  # this mpirun is over; a restart starts a new list
            with self.store.write() as s:
                left = list(s.exec(select(RankRow).where(RankRow.job_id == job_id)
                                   .where(RankRow.attempt == attempt).where(RankRow.state != "exited")))
                # The rank on the host mpirun could not reach goes first: that is the cause.
                left.sort(key=lambda r: (unreachable is None or r.node_id != unreachable[0], r.rank))
                for i, rank in enumerate(left):
                    never_started = rank.state in ("assigned", "starting")
                    rank.ended_at = now + i * 1e-6
                    rank.state, rank.exit_code = "exited", code
                    if code is None:
                        rank.reason = "the mpirun launcher was lost"
                    elif unreachable and rank.node_id == unreachable[0]:
                        rank.reason = f"mpirun could not start it on {unreachable[1]}: {unreachable[2]}"
                    elif never_started:
                        rank.reason = f"mpirun exited with code {code} before this rank started"
                    else:
                        rank.reason = f"mpirun exited with code {code} before this rank reported"
                    s.add(rank)
            self.logs.note(job_id, f"mpirun exited with code {code}")
            job = self.get_row(job_id)
            if job is None or job.attempt != attempt:
                self._refresh_busy()
                return
            if job.status not in TERMINAL and code not in (0, None) and \
                    all(r.exit_code == 0 for r in self.ranks(job_id)):
                self.finish(job_id, "failed", exit_code=code, error=f"mpirun exited with code {code} "
                                                                  "although every rank exited 0 (see the log)")
                return
            self._evaluate(job_id)

    def _unreachable_host(self, job_id: str, attempt: int) -> tuple[str, str, str] | None:
        """(node id, host, mpirun's line) when mpirun's output names a host it could not reach."""
        import re

        for line in self._mpirun_lines.get(job_id, []):
            m = re.search(r"(?:connect to host|Remote host:?|unable to reach|host)\s+([A-Za-z0-9][\w.:-]*)", line)
            if not m:
                continue
            host = m.group(1).rstrip(".:")
            for rank in self.ranks(job_id):
                node = next((n for n in self.registry.list_views() if n.id == rank.node_id), None)
                if rank.attempt == attempt and (rank.address == host or (node and node.host == host)):
                    return rank.node_id, host, line.strip()
        return None

    # ------------------------------------------------------------------ reads

    def _update(self, job_id: str, **values) -> None:
        with self.store.write() as s:
            row = s.get(JobRow, job_id)
            for k, v in values.items():
                setattr(row, k, v)
            s.add(row)

    def get_row(self, job_id: str) -> JobRow | None:
        with self.store.read() as s:
            return s.get(JobRow, job_id)

    def ranks(self, job_id: str) -> list[RankRow]:
        """The ranks of the job's current attempt."""
        with self.store.read() as s:
            job = s.get(JobRow, job_id)
            if job is None:
                return []
            return list(s.exec(select(RankRow).where(RankRow.job_id == job_id)
                               .where(RankRow.attempt == job.attempt).order_by(RankRow.rank)))

    def command_of(self, spec: JobSpec) -> list[str]:
        if spec.domain is not None:
            return trainer_jobs.trainer_command(spec, self.registry.config)
        return list(spec.command)

    def stop_grace_of(self, spec: JobSpec) -> float:
        return trainer_jobs.TRAINER_STOP_GRACE_S if spec.domain is not None else 5.0

    def list_rows(self, status: str | None = None, limit: int = 200) -> list[JobRow]:
        with self.store.read() as s:
            q = select(JobRow).order_by(JobRow.created_at.desc()).limit(limit)
            if status:
                q = q.where(JobRow.status == status)
            return list(s.exec(q))

    def view(self, job: JobRow, history: bool = True, env: bool = True) -> JobOut:
        """The job as clients see it. `env=False` (lists) leaves the job's env out; secret_env
        is never in any view."""
        spec = JobSpec.model_validate_json(job.spec_json)
        prog = json.loads(job.progress_json or "{}")
        tracker = ProgressTracker.from_dict(prog) if prog else ProgressTracker()
        return JobOut(
            id=job.id, name=job.name, status=job.status, backend=job.backend, world_size=job.world_size,
            nodes=json.loads(job.nodes_json), command=json.loads(job.command_json) or [],
            env=dict(spec.env) if env else None,
            created_at=_utc(job.created_at), started_at=_utc(job.started_at), ended_at=_utc(job.ended_at),
            exit_code=job.exit_code, error=job.error, pending_reason=job.pending_reason,
            progress=tracker.latest,
            loss_history=[LossPoint(step=s, loss=l) for s, l in tracker.history] if history else [],
            idempotency_key=job.idempotency_key, attempt=job.attempt,
            attempts=[AttemptOut(attempt=a["attempt"], nodes=a["nodes"], error=a["error"],
                                 started_at=_utc(a["started_at"]), ended_at=_utc(a["ended_at"]))
                      for a in json.loads(job.attempts_json or "[]")])

    def detail(self, job_id: str) -> JobDetail:
        job = self.get_row(job_id)
        if job is None:
            raise JobNotFound(job_id)
        ranks = [RankOut(rank=r.rank, node=r.node_name, state=r.state, exit_code=r.exit_code, reason=r.reason)
                 for r in self.ranks(job_id)]
        return JobDetail(**self.view(job).__dict__, ranks=ranks)

    def hostfile(self, job_id: str, fmt: str) -> str:
        job = self.get_row(job_id)
        if job is None:
            raise JobNotFound(job_id)
        ranks = self.ranks(job_id)
        if not ranks:
            raise SpecRejected("the job is not placed yet, so it has no hostfile")
        hosts = {n.id: n.host for n in self.registry.list_views()}
        slots = [hostfiles.Slot(host=hosts.get(r.node_id, r.address), address=r.address, port=r.port, rank=r.rank)
                 for r in ranks]
        return hostfiles.render(fmt, slots, backend=job.backend)
