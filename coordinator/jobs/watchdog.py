"""The stall watchdog's rules, as pure functions over a job's `watch` record.

MLX collectives never time out: a rank that blocks or is stopped leaves the others spinning in
their next all_sum for ever, and nothing exits. Output and progress are the only signs of life,
so each job keeps a small record of them (its row's `watch`, a JSON dict):

    output_at    when any rank last printed (coordinator time)
    last         {"rank", "line", "at"}: who printed last, and what
    progress_at  when a progress report last arrived; `gaps` the last few intervals between the
                 reports of one rank (`progress_rank`, the first to report)
    stopped      {rank: node}: ranks whose agent says a process of theirs is stopped (state T)
    dump_at      when the ranks were asked for their Python stacks (the job stalled)
    where        {rank: "func (file:line)"}: where each rank's main thread was, from those stacks
    stalled      true once a stall ended the attempt (reset when the next attempt is placed)

A job stalls when no rank printed or reported progress for its limit: the job's
`stall_timeout_s`, or else adaptive (`limit_s`). Then the ranks dump their stacks into the log,
and DUMP_WAIT_S later the attempt fails with an error naming the last output and each rank's place.
"""

from __future__ import annotations

import re
import statistics
import time

# Before the first progress report: loading a model and data, compiling, a first eval: all of
# that can take minutes, and prints little.
FIRST_REPORT_S = 600.0
# After it: ten of the job's usual intervals between reports, but never less than this. A
# checkpoint save or an eval pass between two reports may take a minute or two; a job stuck
# for a few minutes on a cluster of Macs costs little next to a false alarm that fails a run.
MIN_LIMIT_S = 120.0
INTERVALS = 10
GAPS_KEPT = 16
# Between asking the ranks for their stacks and failing the job: an agent answers its long-poll at
# once and reports output within a second, so the stacks are in the log by then.
DUMP_WAIT_S = 4.0
LINE_CHARS = 200

_THREAD = re.compile(r"^(Current thread|Thread) 0x[0-9a-f]+ \(most recent call first\):")
_FRAME = re.compile(r'^  File "(?P<file>[^"]*)", line (?P<line>\d+) in (?P<func>.+)$')


def limit_s(stall_timeout_s: float | None, watch: dict) -> float:
    """How long the job may stay silent: its own limit, else adaptive."""
    if stall_timeout_s:
        return stall_timeout_s
    gaps = watch.get("gaps") or []
    if not watch.get("progress_at") or not gaps:
        return FIRST_REPORT_S
    return max(MIN_LIMIT_S, INTERVALS * statistics.median(gaps))


def silent_since(watch: dict, started_at: float | None, booted_at: float) -> float:
    """Since when the job has been silent. A coordinator that just started counts as a sign of
    life: the agents send what they buffered while it was away within moments."""
    return max(watch.get("output_at") or 0.0, watch.get("progress_at") or 0.0, started_at or 0.0, booted_at)


def saw_output(watch: dict, now: float, rank: int, lines: list[str]) -> dict:
    """The watch after `lines` from `rank` arrived."""
    if watch.get("dump_at") is not None:
        # The stacks asked for, not a sign of life: read where the rank was from them.
        where = stack_top(lines)
        if where and str(rank) not in (watch.get("where") or {}):
            return {**watch, "where": {**(watch.get("where") or {}), str(rank): where}}
        return watch
    text = next((line for line in reversed(lines) if line.strip()), None)
    out = {**watch, "output_at": now}
    if text is not None:
        out["last"] = {"rank": rank, "line": text[:LINE_CHARS], "at": now}
    return out


def saw_progress(watch: dict, now: float, rank: int) -> dict:
    """The watch after a report from `rank` that carried progress arrived. The usual interval is
    that of one rank's reports (the first to report): every rank may report, and the gaps between
    two ranks' reports say nothing of either's pace."""
    out = {**watch, "progress_at": now}
    if watch.get("progress_rank") is None:
        out["progress_rank"] = rank
    elif watch["progress_rank"] == rank:
        before = watch.get("rank_progress_at")
        if before is not None and now > before:
            out["gaps"] = [*(watch.get("gaps") or []), round(now - before, 3)][-GAPS_KEPT:]
    if out["progress_rank"] == rank:
        out["rank_progress_at"] = now
    return out


def saw_stopped(watch: dict, rank: int, node: str, stopped: bool) -> dict | None:
    """The watch after the agent said whether `rank` is stopped; None if that is no news."""
    have = watch.get("stopped") or {}
    if stopped == (str(rank) in have):
        return None
    now_stopped = {**have, str(rank): node} if stopped else {k: v for k, v in have.items() if k != str(rank)}
    return {**watch, "stopped": now_stopped}


def stack_top(lines: list[str]) -> str | None:
    """Where the main thread was, from a faulthandler dump among `lines`: the innermost frame of
    the thread whose outermost frame is module code (the main thread), else of the current one."""
    threads: list[tuple[bool, list[str]]] = []
    for line in lines:
        head = _THREAD.match(line)
        if head:
            threads.append((head.group(1) == "Current thread", []))
        elif threads and (frame := _FRAME.match(line)):
            name = frame["file"].rsplit("/", 1)[-1]
            threads[-1][1].append(f"{frame['func']} ({name}:{frame['line']})")
    with_frames = [(current, frames) for current, frames in threads if frames]
    if not with_frames:
        return None
    main = [frames for _, frames in with_frames if frames[-1].startswith("<module>")]
    current = [frames for is_current, frames in with_frames if is_current]
    return (main or current or [with_frames[0][1]])[0][0]


def stall_error(silent_s: float, limit: float, explicit: bool, watch: dict, nodes: dict[int, str]) -> str:
    """The job's error: that it stalled, for how long, who said what last, and where each rank was."""
    why = f"stall_timeout_s {limit:g}" if explicit else f"adaptive limit {limit:g} s"
    parts = [f"stalled: no rank printed or reported progress for {silent_s:.0f} s ({why})"]
    last = watch.get("last")
    if last:
        ago = max(0.0, (watch.get("dump_at") or time.time()) - last["at"])
        node = nodes.get(last["rank"])
        parts.append(f"last output {ago:.0f} s before: rank {last['rank']}" + (f" on {node}" if node else "")
                     + f": {last['line']!r}")
    else:
        parts.append("no rank printed anything")
    stopped = watch.get("stopped") or {}
    where = watch.get("where") or {}
    places = []
    for rank in sorted(nodes):
        if str(rank) in stopped:
            places.append(f"rank {rank} stopped (process state T)")
        elif str(rank) in where:
            places.append(f"rank {rank} in {where[str(rank)]}")
    if places:
        parts.append("where: " + ", ".join(places))
    parts.append("each rank's Python stack is in the log")
    return "; ".join(parts)


def warnings(watch: dict, active: bool) -> list[str]:
    """What is wrong with a job while it runs, a sentence each (JobOut.warnings)."""
    if not active:
        return []
    out = [f"rank {rank} on node {node} is stopped (process state T: SIGSTOP, Ctrl-Z or a debugger); "
           f"every other rank waits for it" for rank, node in sorted((watch.get("stopped") or {}).items(),
                                                                       key=lambda kv: int(kv[0]))]
    if watch.get("dump_at") is not None:
        out.append(f"stalled: no output or progress for {watch.get('silent_s', 0):.0f} s; "
                   f"the ranks' Python stacks are being dumped into the log")
    return out
