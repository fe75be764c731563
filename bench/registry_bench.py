"""Registry throughput: heartbeats/s and GET /nodes latency with 1,000 registered nodes, each
measured beside a trivial endpoint on the same server in the same run (ratios, not absolutes,
because this machine is shared and noisy).

    .venv/bin/python bench/registry_bench.py [--nodes 1000] [--seconds 5] [--concurrency 8]

Targets (issue 2): heartbeats >= 0.5x the trivial endpoint's rate; GET /nodes median < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness import free_port, sample_facts, wait_for  # noqa: E402

SERVER = """
import sys
from fastapi import FastAPI
from coordinator.app import create_app
from coordinator.settings import Settings
from pathlib import Path
import uvicorn
home, port = Path(sys.argv[1]), int(sys.argv[2])
app = create_app(Settings(home=home, port=port, config_path=None, heartbeat_interval_s=5, down_after_s=3600))
@app.get("/noop")
def noop():  # the baseline: a trivial sync endpoint, no auth, no database
    return {"ok": True}
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
"""


async def rate(client: httpx.AsyncClient, make_request, seconds: float, concurrency: int) -> tuple[float, list[float]]:
    stop = time.perf_counter() + seconds
    lat: list[float] = []
    errors = 0

    async def worker(i: int):
        nonlocal errors
        n = 0
        while time.perf_counter() < stop:
            t = time.perf_counter()
            r = await make_request(client, i, n)
            lat.append(time.perf_counter() - t)
            if r.status_code >= 400:
                errors += 1
            n += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{errors} requests failed")
    return len(lat) / elapsed, lat


async def main_async(args) -> dict:
    home = Path(tempfile.mkdtemp(prefix="jupiter-bench-"))
    port = free_port()
    env = dict(os.environ, JUPITER_HOME=str(home), JUPITER_TOKEN="bench-admin", JUPITER_JOIN_TOKEN="bench-join")
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(home), str(port)], cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(url + "/healthz").status_code == 200, timeout=30)
        nodes = []
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": "Bearer bench-join"}) as c:
            for i in range(args.nodes):
                r = await c.post("/nodes/register", json={"name": f"node-{i:04d}", "host": f"10-0-{i // 250}-{i % 250}.local",
                                                          "facts": sample_facts(f"machine-{i}")})
                r.raise_for_status()
                nodes.append(r.json())
        limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as c:
            async def noop(cl, i, n):
                return await cl.get("/noop")

            async def beat(cl, i, n):
                node = nodes[(i * 7919 + n) % len(nodes)]
                return await cl.put(f"/nodes/{node['node_id']}/heartbeat", json={"memory_available_gb": 10.0 + n % 7},
                                    headers={"Authorization": f"Bearer {node['node_token']}"})

            async def list_nodes(cl, i, n):
                return await cl.get("/nodes", headers={"Authorization": "Bearer bench-admin"})

            await rate(c, noop, 1.0, args.concurrency)  # warm-up
            noop_rate, noop_lat = await rate(c, noop, args.seconds, args.concurrency)
            beat_rate, beat_lat = await rate(c, beat, args.seconds, args.concurrency)
            # Latency of a single client listing nodes (what a person or the dashboard does).
            _, list_lat = await rate(c, list_nodes, args.seconds, 1)
            _, noop1_lat = await rate(c, noop, args.seconds, 1)
            body = (await c.get("/nodes", headers={"Authorization": "Bearer bench-admin"})).json()
            assert len(body) == args.nodes
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    ms = lambda xs, q: round(statistics.quantiles(xs, n=100)[q - 1] * 1000, 2)  # noqa: E731
    return {
        "nodes": args.nodes, "concurrency": args.concurrency, "seconds": args.seconds,
        "noop_req_per_s": round(noop_rate), "heartbeat_req_per_s": round(beat_rate),
        "heartbeat_vs_noop": round(beat_rate / noop_rate, 2),
        "heartbeat_p50_ms": ms(beat_lat, 50), "heartbeat_p99_ms": ms(beat_lat, 99),
        "get_nodes_median_ms": round(statistics.median(list_lat) * 1000, 2), "get_nodes_p99_ms": ms(list_lat, 99),
        "noop_single_client_median_ms": round(statistics.median(noop1_lat) * 1000, 2),
        "targets": {"heartbeat_vs_noop >= 0.5": beat_rate / noop_rate >= 0.5,
                    "get_nodes_median_ms < 50": statistics.median(list_lat) * 1000 < 50},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
