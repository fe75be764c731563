"""The job state machine as pure functions: (job, ranks, event) in, (new status, effects) out.

    pending -> starting -> running -> succeeded | failed | cancelled
                  ^                       |
                  +---- restart ----------+   (a failure with restarts left: a new attempt)

Nothing here reads a clock, a file, the database or a lock: the caller (coordinator/jobs/lifecycle.py)
passes the time in and carries the effects out. That is what lets tests/unit walk every path in
microseconds, and what keeps the rules in one screen.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

from coordinator.jobs import watchdog
from shared.status import ACTIVE, TERMINAL, JobStatus, RankStatus

# A rank only ever moves forward; a stale report (sent before a newer one arrived) is ignored.
RANK_ORDER = {RankStatus.ASSIGNED: 0, RankStatus.STARTING: 1, RankStatus.RUNNING: 2,
              RankStatus.EXITED: 3}


@dataclass(frozen=True)
class Job:
    """What the rules need to know of a job (a projection of its row and spec)."""

    status: str
    attempt: int = 0
    max_restarts: int = 0
    created_at: float = 0.0
    placed_at: float | None = None
    started_at: float | None = None
    pending_reason: str | None = None
    pending_timeout_s: float | None = None
    start_timeout_s: float = 60.0
    timeout_s: float | None = None
    stall_timeout_s: float | None = None
    watch: dict = field(default_factory=dict)   # signs of life (coordinator/jobs/watchdog.py)
    booted_at: float = 0.0                      # when this coordinator started


@dataclass(frozen=True)
class Rank:
    """One rank of the job's current attempt."""

    rank: int
    node_name: str
    state: str = RankStatus.ASSIGNED
    exit_code: int | None = None
    reason: str | None = None
    ended_at: float | None = None


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class RanksChanged:
    """Reports (from agents or the mpi launcher) moved some ranks on."""


@dataclass(frozen=True)
class Cancel:
    reason: str = "cancelled by request"


@dataclass(frozen=True)
class NodeDown:
    """A node holding ranks of the job went silent for `grace_s`; `rank` is the first one it held."""

    rank: int
    node_name: str
    grace_s: float


@dataclass(frozen=True)
class LauncherFailed:
    """The launcher itself failed (could not start mpirun, or mpirun exited non-zero although
    every rank exited 0): no rank is to blame."""

    error: str
    exit_code: int | None = None


@dataclass(frozen=True)
class Tick:
    now: float


Event = RanksChanged | Cancel | NodeDown | LauncherFailed | Tick


# ---------------------------------------------------------------- effects


@dataclass(frozen=True)
class MarkRunning:
    """Every rank runs: the job is `running` from now."""


@dataclass(frozen=True)
class DumpStacks:
    """The job stalled: ask every rank for its Python stacks (into the log) before it is failed."""

    silent_s: float
    limit_s: float


@dataclass(frozen=True)
class Finish:
    """The job ends in `status` (terminal); whatever of it still runs is stopped."""

    status: str
    exit_code: int | None = None
    error: str | None = None
    stalled: bool = False


@dataclass(frozen=True)
class Restart:
    """The attempt failed with restarts left: record it, stop its ranks, and queue the job again."""

    error: str
    stalled: bool = False


@dataclass(frozen=True)
class Decision:
    status: str                      # the job's status once the effects are applied
    effects: tuple = field(default_factory=tuple)


Effect = MarkRunning | DumpStacks | Finish | Restart


# ---------------------------------------------------------------- the rules


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


def rank_moves(current: str, reported: str) -> bool:
    """Whether a rank in `current` takes a report saying `reported` (never backwards)."""
    return RANK_ORDER[reported] > RANK_ORDER[current]


def conclude(job: Job, status: str, *, exit_code: int | None = None, error: str | None = None,
             stalled: bool = False) -> Decision:
    """Ending the job in `status`: once only, and a failure with restarts left restarts instead."""
    if job.status in TERMINAL:
        return Decision(job.status)
    if status == JobStatus.FAILED and job.status in ACTIVE and job.attempt < job.max_restarts:
        return Decision(JobStatus.PENDING, (Restart(error or "failed", stalled),))
    return Decision(status, (Finish(status, exit_code, error, stalled),))


def _first_failure(ranks: list[Rank]) -> Rank | None:
    failed = [r for r in ranks if r.state == RankStatus.EXITED and r.exit_code != 0]
    return min(failed, key=lambda r: (r.ended_at or 0, r.rank)) if failed else None


def _failure_text(r: Rank) -> str:
    why = r.reason or describe_exit(r.exit_code)
    if r.reason and r.exit_code is not None:
        why = f"{describe_exit(r.exit_code)} ({r.reason})"
    return f"rank {r.rank} on node {r.node_name} {why}"


def after_ranks_changed(job: Job, ranks: list[Rank]) -> Decision:
    """The first rank to fail fails the job (naming it); all exited 0 is success; all running
    (or already done) moves a starting job to running."""
    if job.status in TERMINAL:
        return Decision(job.status)
    bad = _first_failure(ranks)
    if bad is not None:
        return conclude(job, JobStatus.FAILED, exit_code=bad.exit_code if bad.exit_code is not None else 1,
                        error=_failure_text(bad))
    if ranks and all(r.state == RankStatus.EXITED for r in ranks):
        return conclude(job, JobStatus.SUCCEEDED, exit_code=0)
    if job.status == JobStatus.STARTING and ranks and \
            all(r.state in (RankStatus.RUNNING, RankStatus.EXITED) for r in ranks):
        return Decision(JobStatus.RUNNING, (MarkRunning(),))
    return Decision(job.status)


def after_tick(job: Job, ranks: list[Rank], now: float) -> Decision:
    """Timeouts: pending too long, ranks not started in time, running past timeout_s, silent for
    longer than the stall limit."""
    if job.status == JobStatus.PENDING and job.pending_timeout_s and now - job.created_at > job.pending_timeout_s:
        return conclude(job, JobStatus.FAILED,
                        error=f"could not be placed within {job.pending_timeout_s:g} s: {job.pending_reason}")
    if job.status == JobStatus.STARTING and job.placed_at and now - job.placed_at > job.start_timeout_s:
        late = [r for r in ranks if r.state in (RankStatus.ASSIGNED, RankStatus.STARTING)]
        names = ", ".join(f"rank {r.rank} on node {r.node_name}" for r in late) or "a rank"
        return conclude(job, JobStatus.FAILED, error=f"{names} did not start within {job.start_timeout_s:g} s")
    if job.status == JobStatus.RUNNING and job.timeout_s and job.started_at and now - job.started_at > job.timeout_s:
        return conclude(job, JobStatus.FAILED, error=f"timed out after {job.timeout_s:g} s (timeout_s)")
    if job.status == JobStatus.RUNNING:
        return _stall_check(job, ranks, now)
    return Decision(job.status)


def _stall_check(job: Job, ranks: list[Rank], now: float) -> Decision:
    """Silent for longer than the limit: ask for the ranks' stacks; DUMP_WAIT_S later, fail."""
    w = job.watch
    if w.get("dump_at") is None:
        silent = now - watchdog.silent_since(w, job.started_at, job.booted_at)
        limit = watchdog.limit_s(job.stall_timeout_s, w)
        if silent > limit:
            return Decision(job.status, (DumpStacks(silent, limit),))
        return Decision(job.status)
    if now - w["dump_at"] < watchdog.DUMP_WAIT_S:
        return Decision(job.status)
    error = watchdog.stall_error(w.get("silent_s", 0.0), w.get("limit_s", 0.0), bool(job.stall_timeout_s), w,
                                 {r.rank: r.node_name for r in ranks})
    return conclude(job, JobStatus.FAILED, error=error, stalled=True)


def due_at(job: Job) -> float | None:
    """The earliest time at which a Tick could change `job` (None: no Tick ever will), so that
    the caller ticks each job at its deadline rather than every job every second.

    Reports never bring a deadline closer except by making the job `running` (the caller is told
    through the MarkRunning effect): output and progress only move `silent_since` on, and a
    progress report that shortens the adaptive stall limit also restarts it from now, so the stall
    comes no sooner than watchdog.MIN_LIMIT_S after that report."""
    if job.status == JobStatus.PENDING:
        return job.created_at + job.pending_timeout_s if job.pending_timeout_s else None
    if job.status == JobStatus.STARTING:
        return job.placed_at + job.start_timeout_s if job.placed_at else None
    if job.status != JobStatus.RUNNING:
        return None
    w = job.watch
    if w.get("dump_at") is not None:
        stall = w["dump_at"] + watchdog.DUMP_WAIT_S
    else:
        stall = watchdog.silent_since(w, job.started_at, job.booted_at) + watchdog.limit_s(job.stall_timeout_s, w)
    if job.timeout_s and job.started_at:
        return min(stall, job.started_at + job.timeout_s)
    return stall


def decide(job: Job, ranks: list[Rank], event: Event) -> Decision:
    """The one entry point: what `event` does to `job`, whose current attempt has `ranks`."""
    match event:
        case RanksChanged():
            return after_ranks_changed(job, ranks)
        case Cancel(reason=reason):
            return conclude(job, JobStatus.CANCELLED, error=reason)
        case NodeDown(rank=rank, node_name=name, grace_s=grace):
            return conclude(job, JobStatus.FAILED,
                            error=f"rank {rank} on node {name}: node went down (no heartbeat for {grace:g} s)")
        case LauncherFailed(error=error, exit_code=code):
            return conclude(job, JobStatus.FAILED, exit_code=code, error=error)
        case Tick(now=now):
            return after_tick(job, ranks, now)
    raise TypeError(f"not a job event: {event!r}")
