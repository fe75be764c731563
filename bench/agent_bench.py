"""Agent footprint at a 5 s heartbeat: steady-state RSS and CPU (own + reaped children, i.e. the
MLX and MPI probes), beside a bare idle Python started the same way as a baseline.

    .venv/bin/python bench/agent_bench.py [--seconds 60] [--interval 5]

Targets (issue 3): RSS under 60 MB, CPU under 1 % of one core.
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

from tests.harness import AgentProcess, CoordinatorProcess, wait_for  # noqa: E402


def cpu_seconds(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--interval", type=float, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="jupiter-agent-bench-"))
    coord = CoordinatorProcess(tmp / "leader", heartbeat_interval=args.interval, down_after=60).start()
    agent = AgentProcess(coord, "bench", tmp / "agents" / "bench").start()
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(10**6)"])
    try:
        with coord.client() as c:
            wait_for(lambda: any(n.status == "ready" for n in c.nodes()), timeout=60)
        time.sleep(args.interval)  # past registration: steady state from here
        p = psutil.Process(agent.proc.pid)
        c0, t0 = cpu_seconds(p), time.monotonic()
        rss = []
        while time.monotonic() - t0 < args.seconds:
            rss.append(p.memory_info().rss)
            time.sleep(1)
        cpu = (cpu_seconds(p) - c0) / (time.monotonic() - t0)
        with coord.client() as c:
            [n] = c.nodes()
        result = {
            "seconds": args.seconds, "heartbeat_interval_s": args.interval,
            "agent_rss_mb_max": round(max(rss) / 2**20, 1),
            "agent_rss_mb_median": round(sorted(rss)[len(rss) // 2] / 2**20, 1),
            "idle_python_rss_mb": round(psutil.Process(idle.pid).memory_info().rss / 2**20, 1),
            "agent_cpu_percent_of_one_core": round(cpu * 100, 3),
            "node_status_at_end": n.status,
            "targets": {"rss < 60 MB": max(rss) < 60 * 2**20, "cpu < 1 %": cpu < 0.01},
        }
    finally:
        idle.kill()
        agent.stop()
        coord.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
