"""Heartbeat load: N simulated agents heartbeating every interval against one real coordinator.

    .venv/bin/python bench/load_heartbeats.py [--agents 500] [--interval 1] [--seconds 60]
        [--procs 2] [--down-after 3] [--warmup 2] [--orders]

One coordinator process (`jupiter coordinator`, uvicorn, SQLite WAL) on 127.0.0.1; the agents are
asyncio coroutines with httpx spread over `--procs` load-generator processes, one keep-alive
connection each, their first beats spread evenly over one interval, each then beating on its own
fixed schedule (start + phase + k * interval) with the body a real agent sends every beat
(instance, available memory, Thunderbolt link state, ranks). With `--orders` each agent also
holds the orders long-poll open (`POST /nodes/{id}/orders`, wait_s 20) as the real agent does.

Each agent first sends `--warmup` beats (default 2) that are reported apart, under `warmup`:
its first contact opens a new connection and, for nodes registered early in the (serial, several
seconds long) registration, brings a node the coordinator has meanwhile marked `down` back. The
measured beats are those of agents already running, which is what the target is about.

A beat is lost when it fails (error, non-200) or completes later than one interval after the
moment it was due. Latency is measured from the moment the request was sent; `client_lag` is how
late the load generator itself sent it, which shows when the generator, not the coordinator, is
the bottleneck (it shares the 2 cores with the coordinator). Coordinator CPU (share of one core)
and RSS come from psutil on its pid, sampled every second; at the end, GET /nodes must show no
node `down` and the database no `down` event.

Targets: no beat lost; p99 latency under 100 ms. Prints one JSON object; stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import secrets
import shutil
import ssl
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.harness import CoordinatorProcess, sample_facts, registration  # noqa: E402

THUNDERBOLT = sample_facts()["thunderbolt"]


# ----------------------------------------------------------------------------- load generator process


def _worker(nodes: list[tuple[int, str, str]], total: int, url: str, start_at: float, interval: float, beats: int,
            warmup: int, orders: bool, minimal: bool, out) -> None:
    """Runs in its own process: one coroutine per agent; sends its records back through `out`."""
    records: list[tuple] = []  # (agent, beat, lag_s, latency_s, status_or_error)
    hard_stop = start_at + (beats + 5) * interval  # a generator that falls behind stops anyway
    cpu0 = time.process_time()

    async def agent(index: int, node_id: str, token: str, client: httpx.AsyncClient) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        instance = secrets.token_hex(8)
        phase = index / total * interval
        for k in range(-warmup, beats):  # k < 0: warm-up beats, reported apart
            due = start_at + phase + k * interval
            if time.monotonic() > hard_stop:
                return  # beats never sent count as lost
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            body = {"memory_available_gb": 10.0 + (index + k) % 7} if minimal else \
                {"instance": instance, "memory_available_gb": 10.0 + (index + k) % 7, "thunderbolt": THUNDERBOLT,
                 "ranks": []}
            sent = time.monotonic()
            try:
                r = await client.put(f"/nodes/{node_id}/heartbeat", json=body, headers=headers)
                status = r.status_code
            except Exception as exc:  # noqa: BLE001 - every failure is a lost beat, named in the output
                status = type(exc).__name__
            records.append((index, k, sent - due, time.monotonic() - sent, status))

    async def long_poll(index: int, node_id: str, token: str, client: httpx.AsyncClient, stop_at: float) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        # Agents start at different moments: spread the polls' starts over the re-check period
        # (the coordinator looks at a waiting poll's orders every 5 s), not all at once.
        await asyncio.sleep(max(0.0, start_at + index / total * 5.0 - time.monotonic()))
        while time.monotonic() < stop_at:
            try:
                await client.post(f"/nodes/{node_id}/orders", json={"ranks": [], "wait_s": 20}, headers=headers,
                                  timeout=30)
            except Exception:  # noqa: BLE001
                await asyncio.sleep(1)

    async def run() -> None:
        # One client (one keep-alive connection) per agent, as each real agent has its own. A
        # single shared pool of hundreds of connections costs httpcore O(connections) per request
        # (~6 ms of CPU each at 250 connections), which would measure the pool, not the coordinator.
        # One TLS context for all: building one per client costs ~15 ms (unused over http).
        tls = ssl.create_default_context()
        one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        clients = [httpx.AsyncClient(base_url=url, limits=one, timeout=10, verify=tls) for _ in nodes]
        pollers = [httpx.AsyncClient(base_url=url, limits=one, timeout=30, verify=tls) for _ in nodes] if orders else []
        try:
            stop_at = start_at + beats * interval
            polls = [asyncio.create_task(long_poll(i, nid, tok, pc, stop_at))
                     for (i, nid, tok), pc in zip(nodes, pollers)]
            await asyncio.gather(*(agent(i, nid, tok, c) for (i, nid, tok), c in zip(nodes, clients)))
            for task in polls:
                task.cancel()
            await asyncio.gather(*polls, return_exceptions=True)
        finally:
            for c in clients + pollers:
                await c.aclose()

    asyncio.run(run())
    out.send({"records": records, "cpu_s": time.process_time() - cpu0})
    out.close()


# ----------------------------------------------------------------------------- the run


def _schedstat(pid: int, main_only: bool = False) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) over all threads of `pid` (or its
    main thread: the event loop), from /proc/PID/task/*/schedstat; (0, 0) where there is none."""
    run = wait = 0
    tasks = [Path(f"/proc/{pid}/task/{pid}")] if main_only else Path(f"/proc/{pid}/task").glob("*")
    for task in tasks:
        try:
            r, w, _ = (task / "schedstat").read_text().split()
        except (OSError, ValueError):
            continue
        run, wait = run + int(r), wait + int(w)
    return run / 1e9, wait / 1e9


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000, 2)


def run(args) -> dict:
    home = Path(tempfile.mkdtemp(prefix="jupiter-load-hb-"))
    coord = CoordinatorProcess(home / "leader", heartbeat_interval=args.interval, down_after=args.down_after)
    load_before = os.getloadavg()
    coord.start()
    try:
        cproc = psutil.Process(coord.proc.pid)
        nodes = []
        with httpx.Client(base_url=coord.url, headers={"Authorization": f"Bearer {coord.join_token}"}, timeout=10) as c:
            for i in range(args.agents):
                r = c.post("/nodes/register", json=registration(
                    f"sim-{i:04d}", f"sim-{i:04d}.local", sample_facts(f"m-sim-{i:04d}", hostname=f"sim-{i:04d}.local")))
                r.raise_for_status()
                nodes.append((i, r.json()["node_id"], r.json()["node_token"]))
        beats = int(args.seconds / args.interval)
        # Workers fork first; then each agent's warm-up beats (its first contact: a new connection,
        # and for nodes registered early a `down` node coming back) before the measured ones.
        start_at = time.monotonic() + 1.5 + args.warmup * args.interval
        start_wall = time.time() + (start_at - time.monotonic())
        ctx = mp.get_context("fork")
        workers, pipes = [], []
        for w in range(args.procs):
            recv, send = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_worker, args=(nodes[w::args.procs], args.agents, coord.url, start_at, args.interval,
                                                  beats, args.warmup, args.orders, args.minimal_body, send), daemon=True)
            p.start()
            workers.append(p)
            pipes.append(recv)
        wprocs = [psutil.Process(p.pid) for p in workers]
        # Sample CPU and memory every second while the agents beat.
        cproc.cpu_percent(None)
        for wp in wprocs:
            wp.cpu_percent(None)
        psutil.cpu_percent(None)
        samples = {"coord_cpu": [], "coord_rss_mb": [], "gen_cpu": [], "machine_cpu": [], "threads": []}
        sched0, main0 = _schedstat(coord.proc.pid), _schedstat(coord.proc.pid, main_only=True)
        sched_at = time.monotonic()
        end = start_at + beats * args.interval + 1.0
        deadline = end + 60.0  # hard stop: nothing here runs past this
        results = [None] * len(pipes)
        while any(r is None for r in results) and time.monotonic() < deadline:
            time.sleep(1.0)
            if start_at <= time.monotonic() <= end:
                samples["coord_cpu"].append(cproc.cpu_percent(None))
                samples["coord_rss_mb"].append(cproc.memory_info().rss / 2 ** 20)
                samples["threads"].append(cproc.num_threads())
                samples["gen_cpu"].append(sum(wp.cpu_percent(None) for wp in wprocs if wp.is_running()))
                samples["machine_cpu"].append(psutil.cpu_percent(None) * psutil.cpu_count())
            for i, pipe in enumerate(pipes):
                if results[i] is None and pipe.poll():
                    results[i] = pipe.recv()
        for p in workers:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
        if any(r is None for r in results):
            raise SystemExit("a load generator did not finish in time")
        load_after = os.getloadavg()
        sched1, main1 = _schedstat(coord.proc.pid), _schedstat(coord.proc.pid, main_only=True)
        sched_wall = time.monotonic() - sched_at
        with httpx.Client(base_url=coord.url, headers={"Authorization": f"Bearer {coord.admin_token}"}, timeout=30) as c:
            listed = c.get("/nodes").json()
        db = sqlite3.connect(f"file:{coord.home / 'coordinator.db'}?mode=ro", uri=True)
        try:
            # Nodes registered first may go down before their first beat (registration takes a few
            # seconds); count only what happened once every agent had had its first beat.
            settled = start_wall if args.warmup else start_wall + args.interval + 0.5
            down_events = db.execute("SELECT COUNT(*) FROM events WHERE kind = 'down' AND at >= ?",
                                     (settled,)).fetchone()[0]
            down_before = db.execute("SELECT COUNT(*) FROM events WHERE kind = 'down' AND at < ?",
                                     (settled,)).fetchone()[0]
        finally:
            db.close()
        coord_log = coord.log_path.read_text(errors="replace")
    finally:
        coord.stop()
        shutil.rmtree(home, ignore_errors=True)

    records = [rec for r in results for rec in r["records"] if rec[1] >= 0]
    warm = [rec for r in results for rec in r["records"] if rec[1] < 0]
    warm_ok = [rec[3] for rec in warm if rec[4] == 200]
    expected = args.agents * beats
    ok = [rec for rec in records if rec[4] == 200]
    errors: dict[str, int] = {}
    for rec in records:
        if rec[4] != 200:
            errors[str(rec[4])] = errors.get(str(rec[4]), 0) + 1
    late = [rec for rec in ok if rec[2] + rec[3] > args.interval]
    lost = (expected - len(records)) + (len(records) - len(ok)) + len(late)
    lat = [rec[3] for rec in ok]
    lag = [rec[2] for rec in records]
    steady = [rec[3] for rec in ok if rec[1] >= max(1, int(5 / args.interval))]  # after the first 5 s
    gen_cpu_s = sum(r["cpu_s"] for r in results)
    statuses: dict[str, int] = {}
    for n in listed:
        statuses[n["status"]] = statuses.get(n["status"], 0) + 1
    p99 = _pct(lat, 99)
    gen_busy = max(samples["gen_cpu"] or [0]) / 100 / args.procs  # 1.0 = every generator process on a full core
    out = {
        "agents": args.agents, "interval_s": args.interval, "seconds": args.seconds, "procs": args.procs,
        "orders_long_poll": args.orders, "minimal_body": args.minimal_body, "down_after_s": args.down_after, "cores": psutil.cpu_count(),
        "heartbeats_expected": expected, "heartbeats_sent": len(records), "heartbeats_ok": len(ok),
        "heartbeats_lost": lost, "lost_errors": errors, "lost_late": len(late),
        "achieved_rate_per_s": round(len(records) / (beats * args.interval), 1),
        "warmup": {"beats_per_agent": args.warmup, "failed": len(warm) - len(warm_ok),
                   "latency_ms": {"p50": _ms(_pct(warm_ok, 50)), "p99": _ms(_pct(warm_ok, 99)),
                                  "max": _ms(max(warm_ok) if warm_ok else None)}},
        "latency_ms": {"p50": _ms(_pct(lat, 50)), "p90": _ms(_pct(lat, 90)), "p99": _ms(p99),
                       "max": _ms(max(lat) if lat else None),
                       "p99_after_first_5s": _ms(_pct(steady, 99)),
                       # each agent's first beats: where a start-up cost (new connections) shows
                       "p99_of_beat_k": {k: _ms(_pct([rec[3] for rec in ok if rec[1] == k], 99)) for k in range(5)},
                       "mean": _ms(statistics.fmean(lat) if lat else None)},
        "client_lag_ms": {"p50": _ms(_pct(lag, 50)), "p99": _ms(_pct(lag, 99)), "max": _ms(max(lag) if lag else None)},
        "coordinator": {
            "cpu_pct_of_one_core_mean": round(statistics.fmean(samples["coord_cpu"]), 1) if samples["coord_cpu"] else None,
            "cpu_pct_of_one_core_max": round(max(samples["coord_cpu"]), 1) if samples["coord_cpu"] else None,
            "rss_mb_start": round(samples["coord_rss_mb"][0], 1) if samples["coord_rss_mb"] else None,
            "rss_mb_max": round(max(samples["coord_rss_mb"]), 1) if samples["coord_rss_mb"] else None,
            "tracebacks_in_log": coord_log.count("Traceback"),
            # Time the coordinator's threads were ready to run but had no core: CPU contention
            # (from the load generator or anything else on the machine), which cpu_pct hides.
            "runqueue_wait_s": round(sched1[1] - sched0[1], 2),
            "event_loop_thread_on_cpu_s": round(main1[0] - main0[0], 2),
            "event_loop_thread_runqueue_wait_s": round(main1[1] - main0[1], 2),
            "threads_max": max(samples["threads"] or [0]),
            "on_cpu_s": round(sched1[0] - sched0[0], 2),
            "wall_s": round(sched_wall, 2),
            # CPU per heartbeat answered, which the machine's other load does not change much.
            "cpu_ms_per_heartbeat": round((sched1[0] - sched0[0]) * 1000 / max(1, len(ok)), 2),
        },
        "load_generator": {
            "cpu_pct_of_one_core_mean": round(statistics.fmean(samples["gen_cpu"]), 1) if samples["gen_cpu"] else None,
            "cpu_s_total": round(gen_cpu_s, 1),
            "saturated": gen_busy > 0.9,
        },
        "machine_cpu_pct_of_all_cores_mean": round(statistics.fmean(samples["machine_cpu"]), 1)
        if samples["machine_cpu"] else None,
        "loadavg_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "nodes_by_status_at_end": statuses, "down_events": down_events,
        "down_events_before_first_beats": down_before,
    }
    out["targets"] = {"none_lost": lost == 0, "p99_under_100ms": p99 is not None and p99 < 0.100,
                      "no_node_down": statuses.get("down", 0) == 0 and down_events == 0}
    # For bench/run_all.py: one "value against target: pass/fail" line each.
    out["goals"] = [
        {"name": f"heartbeats lost of {expected:,}", "value": lost, "op": "<=", "target": 0, "unit": ""},
        {"name": "heartbeat latency p99", "value": _ms(p99), "op": "<",
         "target": 100, "unit": " ms"},
        {"name": "nodes down at the end, down events", "value": statuses.get("down", 0) + down_events, "op": "<=",
         "target": 0, "unit": ""},
    ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=500)
    ap.add_argument("--interval", type=float, default=1.0, help="heartbeat interval, s")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--procs", type=int, default=2, help="load-generator processes")
    ap.add_argument("--down-after", type=float, default=3.0, help="the coordinator's grace before `down`, s")
    ap.add_argument("--warmup", type=int, default=2,
                    help="beats per agent before the measured ones (first contact), reported apart")
    ap.add_argument("--orders", action="store_true", help="also hold the orders long-poll open, as agents do")
    ap.add_argument("--minimal-body", action="store_true",
                    help="heartbeat with available memory only (as bench/registry_bench.py), not an agent's body")
    args = ap.parse_args()
    if not (1 <= args.agents <= 5000 and 0.1 <= args.interval <= 60 and 1 <= args.seconds <= 600 and 1 <= args.procs <= 16
            and 0 <= args.warmup <= 10):
        raise SystemExit("bounds: agents 1-5000, interval 0.1-60 s, seconds 1-600, procs 1-16, warmup 0-10")
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
