"""Job load: many small jobs submitted at once onto a small real cluster.

    .venv/bin/python bench/load_jobs.py [--jobs 100] [--agents 3] [--timeout 600]

One coordinator and `--agents` real agents (tests/support/harness.py: `jupiter coordinator`, `jupiter
agent`, all on 127.0.0.1). `--jobs` jobs `["python", "-c", "print('x')"]` on the ring backend,
alternately on 1 and 2 nodes, are POSTed concurrently; then the run waits until every job has
ended (bounded by `--timeout`).

Checks, from the API and from the coordinator's SQLite file (read-only):
- every job accounted for: all `succeeded`, each rank's `x` in its log;
- no node double-booked: for every node, the [started_at, ended_at] intervals of the jobs it
  ran never overlap (API); nor do the bookings [placed_at, last rank on it exited] (database),
  nor the ranks' own [started, exited] intervals;
- all run in turn: how often a job started before one submitted earlier (a 1-node job may pass
  a 2-node job that waits for two free nodes), and the longest wait.

Reports total time (first POST to last job ended), throughput and latencies. Prints one JSON
object; stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.harness import AgentProcess, CoordinatorProcess, wait_for  # noqa: E402

COMMAND = ["python", "-c", "print('x')"]
TERMINAL = {"succeeded", "failed", "cancelled"}


def _ts(iso: str | None) -> float | None:
    return None if iso is None else datetime.fromisoformat(iso).timestamp()


def _overlaps(intervals: dict[str, list[tuple[float, float, str]]]) -> list[dict]:
    """Pairs of intervals on the same node where the later one starts before the earlier ends."""
    found = []
    for node, spans in intervals.items():
        spans = sorted(spans)
        for (s1, e1, a), (s2, e2, b) in zip(spans, spans[1:]):
            if s2 < e1:
                found.append({"node": node, "first": a, "second": b, "overlap_ms": round((e1 - s2) * 1000, 1)})
    return found


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))], 3)


async def _submit_all(url: str, token: str, n: int) -> tuple[list[dict], float]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits,
                                 timeout=60) as c:
        t0 = time.time()
        rs = await asyncio.gather(*(c.post("/jobs", json={"name": f"load-{i:03d}", "command": COMMAND,
                                                           "nodes": 1 + i % 2, "backend": "ring",
                                                           "idempotency_key": f"load-{i:03d}"})
                                    for i in range(n)))
    bad = [r.text for r in rs if r.status_code != 201]
    if bad:
        raise SystemExit(f"{len(bad)} submissions refused: {bad[:3]}")
    return [r.json() for r in rs], t0


def run(args) -> dict:
    home = Path(tempfile.mkdtemp(prefix="jupiter-load-jobs-"))
    coord = CoordinatorProcess(home / "leader", heartbeat_interval=1.0, down_after=10.0).start()
    agents = []
    try:
        agents = [AgentProcess(coord, f"a{i}", home / "agents" / f"a{i}").start() for i in range(1, args.agents + 1)]
        names = sorted(a.name for a in agents)
        with coord.client() as c:
            wait_for(lambda: sorted(n.name for n in c.nodes() if n.status == "ready") == names, timeout=90,
                     what="agents ready")
        cproc = psutil.Process(coord.proc.pid)
        cproc.cpu_percent(None)
        cpu0 = cproc.cpu_times()
        load_before = os.getloadavg()

        submitted, t0 = asyncio.run(_submit_all(coord.url, coord.admin_token, args.jobs))
        ids = [j["id"] for j in submitted]
        deadline = time.monotonic() + args.timeout
        rss_max = 0.0
        with httpx.Client(base_url=coord.url, headers={"Authorization": f"Bearer {coord.admin_token}"},
                          timeout=30) as h:
            while True:
                rows = h.get("/jobs", params={"limit": 1000}).json()
                rss_max = max(rss_max, cproc.memory_info().rss / 2 ** 20)
                mine = [j for j in rows if j["id"] in set(ids)]
                if len(mine) == len(ids) and all(j["status"] in TERMINAL for j in mine):
                    break
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            t_end = time.time()
            jobs = {j["id"]: j for j in h.get("/jobs", params={"limit": 1000}).json() if j["id"] in set(ids)}
            logs = {jid: h.get(f"/jobs/{jid}/logs").text for jid in ids}
        cpu1 = cproc.cpu_times()
        load_after = os.getloadavg()
        db = sqlite3.connect(f"file:{coord.home / 'coordinator.db'}?mode=ro", uri=True)
        try:
            placed = dict(db.execute("SELECT id, placed_at FROM jobs").fetchall())
            rank_rows = db.execute("SELECT job_id, rank, node_name, started_at, ended_at FROM ranks").fetchall()
        finally:
            db.close()
    finally:
        for a in agents:
            a.stop()
        coord.stop()
        shutil.rmtree(home, ignore_errors=True)

    by_status: dict[str, int] = defaultdict(int)
    for j in jobs.values():
        by_status[j["status"]] += 1
    missing = [jid for jid in ids if jid not in jobs]
    # Every rank's output is in the log: "[RANK] x".
    bad_logs = [jid for jid, j in jobs.items()
                if any(f"[{r}] x" not in logs[jid].splitlines() for r in range(j["world_size"]))]

    api_spans: dict[str, list] = defaultdict(list)
    for jid, j in jobs.items():
        s, e = _ts(j["started_at"]), _ts(j["ended_at"])
        if s is not None and e is not None:
            for node in j["nodes"]:
                api_spans[node].append((s, e, jid))
    booking: dict[str, list] = defaultdict(list)
    rank_spans: dict[str, list] = defaultdict(list)
    last_exit: dict[tuple[str, str], float] = {}
    for job_id, rank, node, started, ended in rank_rows:
        if job_id not in jobs:
            continue
        if ended is not None:
            last_exit[(job_id, node)] = max(ended, last_exit.get((job_id, node), 0.0))
        if started is not None and ended is not None:
            rank_spans[node].append((started, ended, f"{job_id}/{rank}"))
    for (job_id, node), ended in last_exit.items():
        if placed.get(job_id) is not None:
            booking[node].append((placed[job_id], ended, job_id))

    order = sorted(jobs.values(), key=lambda j: (_ts(j["created_at"]), j["id"]))
    starts = [_ts(j["started_at"]) for j in order]
    inversions = sum(1 for i in range(len(starts)) for k in range(i + 1, len(starts))
                     if starts[i] is not None and starts[k] is not None and starts[k] < starts[i])
    waits = [_ts(j["started_at"]) - _ts(j["created_at"]) for j in order if j["started_at"]]
    turnaround = [_ts(j["ended_at"]) - _ts(j["created_at"]) for j in order if j["ended_at"]]
    runs = [_ts(j["ended_at"]) - _ts(j["started_at"]) for j in order if j["ended_at"] and j["started_at"]]
    per_node = {n: len(v) for n, v in sorted(api_spans.items())}
    by_width = {}
    for width in sorted({len(j["nodes"]) for j in order}):
        w = [_ts(j["started_at"]) - _ts(j["created_at"]) for j in order if j["started_at"] and len(j["nodes"]) == width]
        by_width[f"{width}_node"] = {"jobs": len(w), "p50": _pct(w, 50), "max": _pct(w, 100)}
    total = t_end - t0
    ranks_total = sum(j["world_size"] for j in jobs.values())
    busy = {n: round(sum(e - s for s, e, _ in v) / total, 2) for n, v in sorted(booking.items())}
    api_overlaps, booking_overlaps, rank_overlaps = _overlaps(api_spans), _overlaps(booking), _overlaps(rank_spans)
    # A job-level overlap on a node is no double booking when the first job's ranks on that node
    # had all exited before the second job was placed there: a multi-node job releases each
    # node as its ranks there exit, and ends as a whole only when its last rank anywhere does.
    for o in api_overlaps:
        freed = last_exit.get((o["first"], o["node"]))
        o["first_job_nodes"] = len(jobs[o["first"]]["nodes"])
        o["node_freed_before_second_placed"] = freed is not None and freed <= (placed.get(o["second"]) or 0)
    api_unexplained = [o for o in api_overlaps if not o["node_freed_before_second_placed"]]
    rank_overlaps = [o for o in rank_overlaps if o["first"].split("/")[0] != o["second"].split("/")[0]]
    out = {
        "jobs": args.jobs, "agents": args.agents, "command": COMMAND, "nodes_per_job": "1 and 2 alternately",
        "by_status": dict(by_status), "missing": len(missing), "jobs_without_every_ranks_output": len(bad_logs),
        "total_s": round(total, 2), "jobs_per_s": round(len(jobs) / total, 2), "ranks_per_s": round(ranks_total / total, 2),
        "wait_s": {"p50": _pct(waits, 50), "max": _pct(waits, 100)},
        "turnaround_s": {"p50": _pct(turnaround, 50), "p99": _pct(turnaround, 99), "max": _pct(turnaround, 100)},
        "run_s": {"p50": _pct(runs, 50), "max": _pct(runs, 100)},
        "jobs_per_node": per_node, "node_booked_share": busy,
        "double_booked": {"api_started_ended": len(api_overlaps),
                          "api_started_ended_node_not_yet_freed": len(api_unexplained),
                          "db_placed_to_last_exit": len(booking_overlaps),
                          "db_rank_intervals": len(rank_overlaps),
                          "samples": (api_overlaps + booking_overlaps + rank_overlaps)[:5]},
        "order": {"pairs_started_out_of_submission_order": inversions,
                  "pairs": len(starts) * (len(starts) - 1) // 2,
                  "wait_s_by_width": by_width,
                  "widths_of_the_last_10_to_start": [len(j["nodes"]) for j in
                                                     sorted(order, key=lambda j: _ts(j["started_at"]) or 0)[-10:]]},
        "coordinator": {"cpu_s": round((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), 2),
                        "rss_mb_max": round(rss_max, 1)},
        "loadavg_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
    }
    out["targets"] = {
        "all_succeeded": by_status.get("succeeded", 0) == args.jobs and not missing and not bad_logs,
        "no_node_double_booked": not (api_unexplained or booking_overlaps or rank_overlaps),
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--agents", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600.0, help="give up waiting for the jobs after this long, s")
    args = ap.parse_args()
    if not (1 <= args.jobs <= 1000 and 2 <= args.agents <= 8 and 10 <= args.timeout <= 3600):
        raise SystemExit("bounds: jobs 1-1000, agents 2-8, timeout 10-3600 s")
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
