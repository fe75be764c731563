"""A straggler, for real: a two-rank ring job on two agents in which rank 1 shares its CPU core with
busy loops. Each rank times the same fixed piece of CPU work per step and reports it; the
coordinator names rank 1, on its node, as the straggler in GET /jobs/{id} (and `jupiter job`)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from coordinator.stragglers import NO_PRESSURE
from tests.support.harness import REPO, AgentProcess, CoordinatorProcess, wait_for

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                                reason="needs CPU pinning (Linux) and two cores")

# Each rank pins itself to a core of its own; rank 1 starts two busy loops pinned to its core, so
# it gets about a third of it. The work unit is the same for both: only the time it takes differs.
RANK = textwrap.dedent("""
    import json, os, subprocess, sys, time
    rank = int(os.environ["MLX_RANK"])
    cores = sorted(os.sched_getaffinity(0))
    core = cores[rank % len(cores)]
    os.sched_setaffinity(0, {core})
    hogs = []
    if rank == 1:
        loop = "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])})\\nwhile True: pass"
        hogs = [subprocess.Popen([sys.executable, "-c", loop, str(core)]) for _ in range(2)]
    try:
        for step in range(1, 1000):
            start = time.perf_counter()
            total = 0
            for i in range(1_500_000):  # about 0.1 s alone on a core: many time slices, so a fair share
                total += i * i
            took = time.perf_counter() - start
            print("JUPITER_PROGRESS " + json.dumps({"step": step, "step_time_s": round(took, 4), "share": 0.5}),
                  flush=True)
    finally:
        for hog in hogs:
            hog.kill()
""")


def test_a_rank_sharing_its_core_with_busy_loops_is_named_a_straggler(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    coord = CoordinatorProcess(tmp_path / "leader", heartbeat_interval=1.0, down_after=10.0).start()
    agents = [AgentProcess(coord, f"a{i}", tmp_path / "agents" / f"a{i}").start() for i in (1, 2)]
    try:
        with coord.client() as c:
            wait_for(lambda: sorted(n.name for n in c.nodes() if n.status == "ready") == ["a1", "a2"], timeout=60,
                     what="agents ready")
            job = c.submit({"name": "straggler", "nodes": 2, "node_names": ["a1", "a2"], "backend": "ring",
                            "command": ["python", str(script)]})
            seen = wait_for(lambda: (j := c.job(job.id)).stragglers and j.status == "running" and j, timeout=90,
                            every=0.5, what="a straggler named")
            [slow] = seen.stragglers
            assert (slow.rank, slow.node) == (1, "a2"), seen.stragglers
            assert slow.slower_pct > 30, seen.stragglers   # about 67 % with a third of a core
            assert slow.cause, seen.stragglers            # this Linux node reports no thermal or memory state
            assert slow.cause == NO_PRESSURE or any(w in slow.cause for w in ("thermal", "memory", "swapping"))
            speed = {r.rank: r for r in seen.rank_progress}
            assert speed[0].node == "a1" and speed[1].node == "a2"
            assert speed[0].share == speed[1].share == 0.5
            # The job's own progress is rank 0's, never rank 1's slower step.
            assert seen.progress["step_time_s"] == speed[0].step_time_s
            env = dict(os.environ, JUPITER_URL=coord.url, JUPITER_TOKEN=coord.admin_token, COLUMNS="200")
            out = subprocess.run([sys.executable, "-m", "shared.cli", "job", job.id], cwd=REPO, env=env,
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert "straggler: rank 1 on a2" in out.stdout and "% slower" in out.stdout, out.stdout
            c.cancel(job.id)
            wait_for(lambda: c.job(job.id).status == "cancelled", timeout=30, what="cancelled")
            ended = c.job(job.id)
            assert [(s.rank, s.cause) for s in ended.stragglers] == [(1, None)]  # the verdict stays
    finally:
        for a in agents:
            a.stop()
        coord.stop()
