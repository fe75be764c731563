"""A trivial job with a small cached workdir beside the same job without one, in one run.

    .venv/bin/python bench/workdir_start_bench.py [--reps 20] [--config-kb 4]

One coordinator (heartbeat 5 s) and one agent on this machine. A workdir of a script and a
`--config-kb` KB config file is packed (shared.workdir.pack) and uploaded once (shared.client
`has_file`, `upload_file`); one untimed job with it puts the archive in the agent's cache, where it
stays (the bench checks it is there before every timed run). Then each repetition runs, alternating
which goes first:

- workdir: `{"command": ["python", "-c", "pass"], "nodes": 1, "workdir": sha256}`: the agent finds
  the archive cached and unpacks it into the rank's own folder before starting it;
- bare: the same job without `workdir`.

Each is timed from just before `POST /jobs` to the client seeing `succeeded` on
`GET /jobs/{id}/events` (as bench/job_overhead_bench.py --job trivial does). Target: the workdir
job's median at most 0.1 s above the bare job's. Exits non-zero only when a run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from job_overhead_bench import others_running  # noqa: E402
from shared import workdir  # noqa: E402
from tests.support.harness import AgentProcess, CoordinatorProcess, wait_for  # noqa: E402
from workdir_bench import RunFailed, cache_files, make_project, r3, run_job, spread, upload, wait_idle  # noqa: E402

TARGET_S = 0.1
SETTLE_S = 0.5
COMMAND = ["python", "-c", "pass"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--config-kb", type=int, default=4, help="size of the workdir's config file")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="jupiter-workdir-start-bench-"))
    coord = CoordinatorProcess(tmp / "leader", heartbeat_interval=5.0, down_after=60.0)
    work = tmp / "work" / "a1"
    agent = None
    runs: dict[str, list[dict]] = {"workdir": [], "bare": []}
    failures: list[str] = []
    interference: dict[str, list[str]] = {}
    result: dict = {}
    try:
        archive = tmp / "workdir.tar.gz"
        packed = workdir.pack(make_project(tmp / "project", 0, args.config_kb), archive)
        coord.start()
        agent = AgentProcess(coord, "a1", tmp / "agents" / "a1", extra_args=["--work-dir", str(work)]).start()
        with coord.client() as c:
            wait_for(lambda: [n.name for n in c.nodes() if n.status == "ready"] == ["a1"], timeout=60,
                     what="the agent ready")
        upload(coord, archive, packed.sha256)
        specs = {"workdir": {"name": "start-bench", "command": COMMAND, "nodes": 1, "workdir": packed.sha256},
                 "bare": {"name": "start-bench", "command": COMMAND, "nodes": 1}}
        ours = {os.getpid(), coord.proc.pid, agent.proc.pid}

        def one(kind: str, label: str, cached: bool = True) -> dict:
            wait_idle(coord)
            if kind == "workdir" and cached and [f.name for f in cache_files(work)] != [packed.sha256]:
                raise RunFailed(f"{label}: the archive is not (alone) in the agent's cache: {cache_files(work)}")
            time.sleep(SETTLE_S)
            seen = others_running(ours)
            if seen:
                interference[label] = seen
            run = run_job(coord, specs[kind])
            if kind == "workdir":  # the workdir really reached the rank's folder
                if not list((work / "jobs" / run["job_id"]).glob("*/rank-0/run.py")):  # <attempt>/rank-0
                    raise RunFailed(f"{label}: no run.py in the rank's folder below {work / 'jobs' / run['job_id']}")
            return run

        one("workdir", "warm-up workdir", cached=False)  # fetches it into the cache; the timed runs find it there
        one("bare", "warm-up bare")
        for i in range(args.reps):
            for kind in (("workdir", "bare") if i % 2 == 0 else ("bare", "workdir")):
                try:
                    runs[kind].append(dict(one(kind, f"rep {i} {kind}"), rep=i))
                except RunFailed as exc:
                    failures.append(f"rep {i} {kind}: {exc}")
        secs = {k: [r["seconds"] for r in v] for k, v in runs.items()}
        diff = statistics.median(secs["workdir"]) - statistics.median(secs["bare"]) \
            if secs["workdir"] and secs["bare"] else None
        by_rep = {k: {r["rep"]: r["seconds"] for r in v} for k, v in runs.items()}
        rep_diffs = [by_rep["workdir"][i] - by_rep["bare"][i] for i in range(args.reps)
                     if i in by_rep["workdir"] and i in by_rep["bare"]]
        result = {
            "reps": args.reps, "archive_bytes": packed.archive_bytes, "files": packed.files,
            "unpacked_bytes": packed.unpacked_bytes,
            "seconds": {k: {"runs": [r3(x) for x in v], **spread(v)} for k, v in secs.items()},
            "difference_median_s": r3(diff),
            "difference_per_rep_s": {"values": [r3(x) for x in rep_diffs], **spread(rep_diffs)},
            "targets": {f"workdir - bare <= {TARGET_S:g} s": None if diff is None else diff <= TARGET_S},
            "goals": [] if diff is None else [
                {"name": "trivial 1-rank job, POST to succeeded: cached small workdir median - no workdir median",
                 "value": r3(diff), "op": "<=", "target": TARGET_S, "unit": " s"}],
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "other_jupiter_or_pytest_processes": interference,
            "failures": failures,
        }
    except Exception as exc:
        failures.append(f"setup: {exc!r}")
        result = {"failures": failures}
    finally:
        if agent is not None:
            agent.stop()
        coord.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
