"""Agent footprint at a 5 s heartbeat: steady-state RSS and CPU (own + reaped children, i.e. the
MLX and MPI probes), beside a bare idle Python started the same way as a baseline.

    .venv/bin/python bench/agent_bench.py [--seconds 60] [--interval 5] [--no-tls] [--compare]

The agent talks HTTPS to a coordinator started with `--tls`, enrolled with the pinned join string
(`--no-tls`: plain HTTP on loopback, as before). `--compare` also starts a plain-HTTP coordinator
and agent and measures both over the same seconds, so a busy machine weighs on both alike.

Targets: an idle agent (registered, heartbeating, no ranks) over HTTPS under 35 MB RSS and under
0.2 % of one core (`targets` and `goals` in the JSON; bench/run_all.py prints each goal as pass or
FAIL). The earlier ones (issue 3: 60 MB, 1 %; over HTTPS not worse than 54 MB, 0.46 %) are below
these.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.harness import AgentProcess, CoordinatorProcess, wait_for  # noqa: E402

RSS_TARGET_MB = 35.0
CPU_TARGET_PERCENT = 0.2


def cpu_seconds(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def agent_connections(p: psutil.Process, port: int) -> set[int]:
    """Local ports of the agent's TCP connections to the coordinator right now."""
    try:
        return {c.laddr.port for c in p.net_connections(kind="tcp") if c.raddr and c.raddr.port == port}
    except psutil.Error:
        return set()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--interval", type=float, default=5)
    ap.add_argument("--tls", action=argparse.BooleanOptionalAction, default=True,
                    help="the agent talks HTTPS to a coordinator started with --tls (default); --no-tls: plain HTTP")
    ap.add_argument("--compare", action="store_true",
                    help="also run a plain-HTTP coordinator and agent beside it, measured over the same seconds")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="jupiter-agent-bench-"))
    kinds = ["https" if args.tls else "http"] + (["http"] if args.compare and args.tls else [])
    coords, agents = {}, {}
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(10**6)"])
    try:
        for k in kinds:
            coords[k] = CoordinatorProcess(tmp / k / "leader", heartbeat_interval=args.interval, down_after=60,
                                           tls=(k == "https")).start()
            agents[k] = AgentProcess(coords[k], "bench", tmp / k / "agents" / "bench").start()
        for k in kinds:
            with coords[k].client() as c:
                wait_for(lambda: any(n.status == "ready" for n in c.nodes()), timeout=60)
        time.sleep(args.interval)  # past registration: steady state from here
        procs = {k: psutil.Process(agents[k].proc.pid) for k in kinds}
        cprocs = {k: psutil.Process(coords[k].proc.pid) for k in kinds}
        c0 = {k: cpu_seconds(procs[k]) for k in kinds}
        cc0 = {k: cpu_seconds(cprocs[k]) for k in kinds}
        t0 = time.monotonic()
        rss = {k: [] for k in kinds}
        conns = {k: set() for k in kinds}
        while time.monotonic() - t0 < args.seconds:
            for k in kinds:
                rss[k].append(procs[k].memory_info().rss)
                conns[k] |= agent_connections(procs[k], coords[k].port)
            time.sleep(1)
        wall = time.monotonic() - t0
        cpu = {k: (cpu_seconds(procs[k]) - c0[k]) / wall for k in kinds}
        coord_cpu = {k: (cpu_seconds(cprocs[k]) - cc0[k]) / wall for k in kinds}
        status = {}
        for k in kinds:
            with coords[k].client() as c:
                [n] = c.nodes()
            status[k] = n.status
        runs = {k: {
            "agent_rss_mb_max": round(max(rss[k]) / 2**20, 1),
            "agent_rss_mb_median": round(sorted(rss[k])[len(rss[k]) // 2] / 2**20, 1),
            "agent_cpu_percent_of_one_core": round(cpu[k] * 100, 3),
            # sampled once a second: a connection opened and closed between samples is not counted
            "agent_connections_seen": len(conns[k]),
            "coordinator_cpu_percent_of_one_core": round(coord_cpu[k] * 100, 3),
            "node_status_at_end": status[k],
        } for k in kinds}
        main_kind = kinds[0]
        result = {
            "seconds": args.seconds, "heartbeat_interval_s": args.interval, "transport": main_kind,
            **runs[main_kind],
            "idle_python_rss_mb": round(psutil.Process(idle.pid).memory_info().rss / 2**20, 1),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "targets": {"rss < 35 MB": max(rss[main_kind]) < RSS_TARGET_MB * 2**20,
                        "cpu < 0.2 %": cpu[main_kind] * 100 < CPU_TARGET_PERCENT},
            "goals": [
                {"name": f"idle agent RSS, max ({main_kind})", "value": round(max(rss[main_kind]) / 2**20, 1),
                 "op": "<", "target": RSS_TARGET_MB, "unit": " MB"},
                {"name": f"idle agent CPU ({main_kind})", "value": round(cpu[main_kind] * 100, 3),
                 "op": "<", "target": CPU_TARGET_PERCENT, "unit": " % of a core"},
            ],
        }
        if len(kinds) > 1:
            result["plain_http_beside_it"] = runs["http"]
    finally:
        idle.kill()
        for k in kinds:
            if k in agents:
                agents[k].stop()
            if k in coords:
                coords[k].stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
