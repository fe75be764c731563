"""Reports in: rank output and rank states, from agents and from the mpi launcher alike.

One transaction per report: the lines' counts (which make a resend idempotent), the log's
committed size, progress parsed from the lines, and the rank states commit together. The lines
are appended to the log inside it and taken out again if it fails, so a failed commit never
leaves a line twice; a coordinator killed in between drops them at start-up (Jobs.recover_logs)
and the sender, never acknowledged, sends them again. Then the changed jobs go through the rules.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from coordinator.jobs import rendezvous, repository as repo
from coordinator.jobs import transitions as t
from coordinator.jobs import watchdog
from shared.progress_tracker import ProgressTracker
from shared.progress_formats import reader_for
from shared.text import shown
from shared.schemas import RankReport
from shared.status import RankStatus

if TYPE_CHECKING:
    from coordinator.jobs.lifecycle import Jobs


@dataclass
class LauncherNews:
    """What a launcher that runs ranks itself (mpi) sends beside its rank report."""

    job_id: str
    attempt: int
    state: dict | None = None      # kept as the job's launcher_json: how to find mpirun again
    lines: list[str] = field(default_factory=list)  # the launcher's own output, logged as [mpirun]
    note: str | None = None


def ingest(jobs: Jobs, node_id: str | None, report: RankReport, *, complete: bool = False,
           launcher: LauncherNews | None = None) -> dict[str, int]:
    """Store `report` from the agent on `node_id`; node_id None is the launcher of
    `launcher.job_id`, which speaks for every node of that job. With `complete`, the report's
    ranks are all the agent has: a rank it ran before and no longer knows is lost."""
    acked: dict[str, int] = {}
    changed: set[str] = set()  # jobs whose ranks moved on: through the rules
    spoke: set[str] = set()    # jobs with new output only: the rules look at rank states, not lines
    wake: set[str] = set()  # nodes whose ranks held back for rank 0 may start now
    complete = complete or report.complete
    if not (report.output or report.ranks or complete or launcher):
        return acked
    logged: dict[str, int] = {}  # job -> its log's size before this report wrote to it
    with jobs.lock, _logs_undone_on_failure(jobs, logged):
        with jobs.store.write() as s:
            now = time.time()
            if launcher is not None:
                job = repo.job(s, launcher.job_id)
                if job is None:
                    return acked
                if launcher.note:
                    jobs.logs.note(job.id, launcher.note)
                if job.attempt != launcher.attempt:
                    # The tail of an attempt already given up on: its output is dropped, but its
                    # ranks' ends still count (they free their nodes).
                    report = RankReport.model_construct(ranks=report.ranks, output=[])
                    launcher = LauncherNews(launcher.job_id, launcher.attempt)
                if launcher.lines:
                    logged.setdefault(job.id, jobs.logs.size(job.id))
                    jobs.logs.append(job.id, "mpirun", [shown(line) for line in launcher.lines])
                if launcher.state is not None:
                    job.launcher = launcher.state
                    s.add(job)
                changed.add(job.id)

            def mine(job_id: str, attempt: int, number: int):
                rank = repo.rank(s, job_id, attempt, number)
                if rank is None or (node_id is not None and rank.node_id != node_id) or \
                        (node_id is None and (launcher is None or job_id != launcher.job_id)):
                    return None
                return rank

            for out in report.output:
                rank = mine(out.job_id, out.attempt, out.rank)
                if rank is None:
                    continue
                if out.seq > rank.lines_stored:  # lines the sender had to drop: keep what came
                    fresh, rank.lines_stored = out.lines, out.seq
                else:  # a resend overlaps what is stored: skip the lines already in the log
                    fresh = out.lines[rank.lines_stored - out.seq:]
                if fresh:
                    # Stored as a terminal would show them (no colour codes, no redrawn progress
                    # bars), one for one: the line counts above stay those the sender numbered.
                    fresh = [shown(line) for line in fresh]
                    logged.setdefault(out.job_id, jobs.logs.size(out.job_id))
                    jobs.logs.append(out.job_id, out.rank, fresh)
                    progressed = _track(jobs, s, out.job_id, out.rank, fresh)
                    _saw_life(s, out.job_id, out.rank, fresh, progressed, now)
                    rank.lines_stored += len(fresh)
                    s.add(rank)
                    spoke.add(out.job_id)
                acked[f"{out.job_id}/{out.attempt}/{out.rank}"] = rank.lines_stored
            for job_id in logged:  # committed with the line counts, or not at all
                job = repo.job(s, job_id)
                job.log_bytes = jobs.logs.size(job_id)
                s.add(job)
            for order, st in enumerate(report.ranks):
                rank = mine(st.job_id, st.attempt, st.rank)
                if rank is not None and rank.state != RankStatus.EXITED and _saw_stopped(jobs, s, rank, st.stopped):
                    changed.add(st.job_id)
                if rank is None or not t.rank_moves(rank.state, st.state):
                    continue
                before, rank.state, rank.pid = rank.state, st.state, st.pid
                wake |= _held_back_for(s, rank, before)
                if st.state in (RankStatus.STARTING, RankStatus.RUNNING) and rank.started_at is None:
                    rank.started_at = now
                if st.state == RankStatus.EXITED:
                    # In report order: the first rank a sender lists as failed is the cause.
                    rank.exit_code, rank.reason, rank.ended_at = st.exit_code, st.reason, now + order * 1e-6
                s.add(rank)
                changed.add(st.job_id)
            if complete and node_id is not None:
                have = {(r.job_id, r.attempt, r.rank) for r in report.ranks}
                # Only ranks the agent itself starts: an mpi rank is mpirun's, not the agent's.
                for rank in repo.started_on(s, node_id, jobs.launchers):
                    if (rank.job_id, rank.attempt, rank.rank) not in have:
                        rank.state, rank.exit_code, rank.ended_at = RankStatus.EXITED, None, now
                        rank.reason = "the agent no longer knows this rank (agent restarted?)"
                        s.add(rank)
                        changed.add(rank.job_id)
        for job_id in changed:
            jobs.handle(job_id, t.RanksChanged())
        # After the rules: a rank 0 that failed has failed its job by now, and no one starts for it.
        for woken in wake:
            jobs.on_node_orders(woken)
    for job_id in spoke - changed:  # news for those who watch the job: its log and progress moved
        jobs.on_change(job_id)
    return acked


def _held_back_for(s, rank, before: str) -> set[str]:
    """The nodes of `rank`'s attempt when its move from `before` lets the ranks held back for it
    start (rank 0 of a jaccl, jaccl-ring or nccl job started: rendezvous.py), else none."""
    if rank.rank != 0:  # most reports: nothing to read
        return set()
    job = repo.job(s, rank.job_id)
    if job is None or job.attempt != rank.attempt or \
            not rendezvous.releases_others(job.backend, rank.rank, before, rank.state):
        return set()
    return {r.node_id for r in repo.ranks(s, rank.job_id, rank.attempt)}


def _saw_life(s, job_id: str, rank: int, lines: list[str], progressed: bool, now: float) -> None:
    """Output (and progress) from a rank: the job is alive (the stall watchdog's record)."""
    job = repo.job(s, job_id)
    if job is None:
        return
    watch = watchdog.saw_output(job.watch or {}, now, rank, lines)
    job.watch = watchdog.saw_progress(watch, now, rank) if progressed else watch
    s.add(job)


def _saw_stopped(jobs: Jobs, s, rank, stopped: bool) -> bool:
    """Whether the agent's news that `rank` is (or no longer is) stopped changed the job."""
    job = repo.job(s, rank.job_id)
    if job is None or job.attempt != rank.attempt:
        return False
    watch = watchdog.saw_stopped(job.watch or {}, rank.rank, rank.node_name, stopped)
    if watch is None:
        return False
    job.watch = watch
    s.add(job)
    jobs.logs.note(job.id, f"rank {rank.rank} on node {rank.node_name} is stopped (process state T: SIGSTOP, "
                           f"Ctrl-Z or a debugger); every other rank waits for it" if stopped else
                           f"rank {rank.rank} on node {rank.node_name} continues (no longer stopped)")
    return True


def _track(jobs: Jobs, s, job_id: str, rank: int, lines: list[str]) -> bool:
    """Reports among `lines`, read in the job's progress_format (shared.progress_formats), feed
    the job's tracker, kept in the job's row. Whether there were any."""
    job = repo.job(s, job_id)  # loaded for its log size below anyway
    if job is None:
        return False
    read = reader_for((job.spec or {}).get("progress_format"), job.command)
    records = [rec for rec in map(read, lines) if rec is not None]
    if not records:
        return False
    tracker = jobs.trackers.get(job_id)
    if tracker is None:  # the first progress since start-up (or since the job ended): from the row
        tracker = ProgressTracker.from_dict(job.progress or {})
        tracker.label = f"job {job_id}"
        jobs.trackers[job_id] = tracker
    for rec in records:
        tracker.feed(rank, rec)
    job.progress = tracker.to_dict()
    s.add(job)
    return True


@contextlib.contextmanager
def _logs_undone_on_failure(jobs: Jobs, logged: dict[str, int]):
    """If the transaction that counts freshly logged lines fails, take the lines out of the
    log again: the sender resends them, and they must not be there twice."""
    try:
        yield
    except BaseException:
        for job_id, size in logged.items():
            jobs.logs.rollback(job_id, size)
        raise
