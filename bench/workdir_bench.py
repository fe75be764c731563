"""A 100 MB workdir reaching two agents, beside a plain loopback copy of the same archive, in one run.

    .venv/bin/python bench/workdir_bench.py [--mb 100] [--reps 5] [--detail]

A folder of `--mb` MB of random (incompressible) data in 4 files plus a small script is packed once
with shared.workdir.pack (what `jupiter submit --workdir` does) and uploaded once to a real
coordinator (shared.client `has_file`, `upload_file`). Two real agents run on this machine, each
with a work dir of its own, so each fetches the archive for itself. Every repetition runs four
kinds, in an order that rotates from one repetition to the next:

- workdir: a 2-rank `ring` job with `"workdir": sha256` whose command prints `time.time()` as it
  starts. Both agents' archive caches are emptied before it (and the coordinator's count of
  `GET /files/{sha256}` on /metrics must go up by 2: both agents fetched), so its start includes
  each agent fetching the archive, checking its SHA-256 and unpacking it.
- bare job: the same job without a workdir.
- plain copy: the same archive fetched twice at once over loopback from `python -m http.server` by
  two `curl -s -o FILE` (written to disk), timed until both are done.
- coordinator copy (to see where the time goes): the same two `curl`s at once, fetching the archive
  from the coordinator's `GET /files/{sha256}` (admin token) instead: the coordinator's serving
  alone, without the agents' hashing and unpacking.

A job's start time is from just before `POST /jobs` to the later of the two ranks' printed times.
The workdir's cost is the workdir job's start minus the bare job's (medians; both also include the
scheduling, the orders long-poll and Python's start). Throughput, for both: the bytes that reached
the two agents (2 x the archive) over that time; the goal is the workdir's throughput over the
plain copy's, >= 0.5. Each repetition's own ratio is reported too, and each agent's "unpacked" log
line, in seconds after the POST. SHA-256 of the archive and `shared.workdir.unpack` of it are also
timed once alone, in this process on the idle machine (`parts_alone`).

Exits non-zero only when a run failed (a job not `succeeded`, a copy not whole, an agent that did
not fetch), not on a missed target. bench/workdir_start_bench.py imports the helpers here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from job_overhead_bench import others_running  # noqa: E402
from shared import workdir  # noqa: E402
from tests.support.harness import AgentProcess, CoordinatorProcess, free_port, wait_for  # noqa: E402

TARGET = 0.5               # the workdir's MB/s over the plain copy's, at least
RUN_TIMEOUT_S = 300.0
SETTLE_S = 1.0             # quiet time before each timed run
MARK = "BENCH_STARTED"
# Prints when it starts and whether the workdir's script is in its folder (it is, with a workdir).
STAMP_COMMAND = ["python", "-c", f"import os, time; print('{MARK}', repr(time.time()), os.path.exists('run.py'))"]
STAMP_LINE = re.compile(rf"^\[(\d+)\] {MARK} ([\d.]+) (True|False)$", re.M)
UNPACKED_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*unpacked workdir archive \w+ \(\d+ files\) "
                           r"for rank (\d+) of (j-[0-9a-f]+)", re.M)
RUN_PY = "import json\nprint(json.load(open('config.json'))['name'])\n"


class RunFailed(Exception):
    pass


# ---------------------------------------------------------------------------- helpers (both benches)


def make_project(root: Path, random_mb: int, config_kb: int = 2) -> Path:
    """A script, a small config and `random_mb` MB of random bytes in up to 4 files."""
    root.mkdir(parents=True)
    (root / "run.py").write_text(RUN_PY)
    # random hex, so the config is `config_kb` KB in the archive too, not a few bytes of gzip
    (root / "config.json").write_text(json.dumps({"name": "bench", "pad": os.urandom(config_kb * 512).hex()}))
    if random_mb:
        (root / "data").mkdir()
        parts = min(4, random_mb)
        for i in range(parts):
            with open(root / "data" / f"blob-{i}.bin", "wb") as f:
                for _ in range(random_mb // parts + (i < random_mb % parts)):
                    f.write(os.urandom(1 << 20))
    return root


def upload(coord: CoordinatorProcess, archive: Path, sha: str) -> float:
    """Upload the archive unless the coordinator has it; the seconds it took."""
    t0 = time.perf_counter()
    with coord.client() as c:
        if not c.has_file(sha):
            c.upload_file(sha, archive)
        if not c.has_file(sha):
            raise RunFailed(f"the coordinator does not hold {sha} after the upload")
    return time.perf_counter() - t0


def run_job(coord: CoordinatorProcess, spec: dict) -> dict:
    """Submit, follow GET /jobs/{id}/events until `end`; the seconds from before the POST, its
    wall-clock start, and the job's log. RunFailed unless it succeeded."""
    with coord.client() as c:
        wall0, t0 = time.time(), time.perf_counter()
        job = c.submit(spec)
        done = threading.Event()

        def follow():
            try:
                for event, _ in c.events(job.id):
                    if event == "end":
                        break
            finally:
                done.set()

        threading.Thread(target=follow, daemon=True).start()
        if not done.wait(RUN_TIMEOUT_S):
            c.cancel(job.id)
            raise RunFailed(f"job {job.id} not done in {RUN_TIMEOUT_S:g} s")
        seconds = time.perf_counter() - t0
        detail = c.job(job.id)
        if detail.status != "succeeded":
            raise RunFailed(f"job {job.id} {detail.status}: {detail.error}\n{c.logs(job.id)[0][-2000:]}")
    return {"job_id": job.id, "seconds": seconds, "wall0": wall0}


def job_log(coord: CoordinatorProcess, job_id: str) -> str:
    with coord.client() as c:
        return c.logs(job_id)[0]


def wait_idle(coord: CoordinatorProcess) -> None:
    with coord.client() as c:
        wait_for(lambda: all(n.status == "ready" for n in c.nodes()), timeout=30, what="nodes idle")


def cache_files(work: Path) -> list[Path]:
    """The archives in an agent's cache (agent/workdir.py keeps them in <work dir>/cache/files)."""
    folder = work / "cache" / "files"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def file_gets(coord: CoordinatorProcess) -> int:
    """GET /files/{sha256} requests the coordinator has answered, from its /metrics."""
    with coord.http() as h:
        text = h.get("/metrics", headers={"Authorization": f"Bearer {coord.admin_token}"}).text
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith("jupiter_http_requests_total{") and 'method="GET"' in line
               and 'route="/files/{sha256}"' in line)


def r3(x):
    return None if x is None else round(x, 3) + 0.0  # + 0.0: no "-0.0"


def spread(xs: list[float]) -> dict:
    return {"median": r3(statistics.median(xs)), "min": r3(min(xs)), "max": r3(max(xs))} if xs else {}


# ---------------------------------------------------------------------------- the three kinds


def run_stamped(coord: CoordinatorProcess, sha: str | None) -> dict:
    spec = {"name": "workdir-bench", "command": STAMP_COMMAND, "nodes": 2, "backend": "ring"}
    if sha:
        spec["workdir"] = sha
    run = run_job(coord, spec)
    deadline = time.monotonic() + 5  # a rank's exit can reach the coordinator before its last lines
    while len(stamps := STAMP_LINE.findall(job_log(coord, run["job_id"]))) < 2:
        if time.monotonic() > deadline:
            raise RunFailed(f"job {run['job_id']}: {len(stamps)} of 2 ranks printed their start")
        time.sleep(0.05)
    if any((found == "True") != bool(sha) for _, _, found in stamps):
        raise RunFailed(f"job {run['job_id']}: run.py {'missing from' if sha else 'found in'} a rank's folder")
    run["start_s"] = max(float(t) for _, t, _ in stamps) - run["wall0"]
    return run


def run_plain(url: str, folder: Path, size: int, headers: Path | None = None) -> dict:
    """Two `curl -s -o` of the archive at once; the seconds until both are done. `headers`: a file
    of request headers (the coordinator's token, kept off the command line)."""
    folder.mkdir(parents=True)
    dests = [folder / f"copy-{i}" for i in (1, 2)]
    extra = ["-H", f"@{headers}"] if headers else []
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["curl", "-s", "-f", *extra, "-o", str(d), url], stdin=subprocess.DEVNULL)
             for d in dests]
    codes = [p.wait(timeout=RUN_TIMEOUT_S) for p in procs]
    seconds = time.perf_counter() - t0
    sizes = [d.stat().st_size if d.exists() else -1 for d in dests]
    shutil.rmtree(folder, ignore_errors=True)
    if codes != [0, 0] or sizes != [size, size]:
        raise RunFailed(f"plain copy: curl exited {codes}, wrote {sizes} bytes of {size}")
    return {"seconds": seconds}


def serve(folder: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_for(lambda: httpx.head(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200, timeout=20,
             what="http.server")
    return proc, port


def unpacked_times(logs: list[str], runs: list[dict]) -> dict[str, list[float]]:
    """job id -> seconds after its POST at which each agent logged the archive unpacked."""
    wall0 = {r["job_id"]: r["wall0"] for r in runs}
    out: dict[str, list[float]] = {}
    for text in logs:
        for ts, _, job_id in UNPACKED_LINE.findall(text):
            if job_id in wall0:
                t = datetime.strptime(ts, "%Y-%m-%d %H:%M:%S,%f").timestamp() - wall0[job_id]
                out.setdefault(job_id, []).append(round(t, 3))
    return out


def parts_alone(archive: Path, scratch: Path) -> dict:
    """SHA-256 and unpack of the archive timed alone in this process (the page cache warm)."""
    t0 = time.perf_counter()
    workdir.sha256_file(archive)
    t1 = time.perf_counter()
    scratch.mkdir(parents=True)
    workdir.unpack(archive, scratch)
    t2 = time.perf_counter()
    shutil.rmtree(scratch, ignore_errors=True)
    return {"sha256_s": r3(t1 - t0), "unpack_s": r3(t2 - t1)}


# ---------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=100, help="MB of random data in the workdir")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--detail", action="store_true", help="also print every run")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="jupiter-workdir-bench-"))
    coord = CoordinatorProcess(tmp / "leader", heartbeat_interval=5.0, down_after=60.0)
    works = [tmp / "work" / f"a{i}" for i in (1, 2)]
    agents: list[AgentProcess] = []
    server = None
    runs: dict[str, list[dict]] = {"workdir": [], "bare_job": [], "plain": [], "coordinator_copy": []}
    failures: list[str] = []
    interference: dict[str, list[str]] = {}
    result: dict = {}
    try:
        make_project(tmp / "project", args.mb)
        served = tmp / "served"
        served.mkdir()
        archive = served / "workdir.tar.gz"
        t0 = time.perf_counter()
        packed = workdir.pack(tmp / "project", archive)
        pack_s = time.perf_counter() - t0
        shutil.rmtree(tmp / "project")
        size = packed.archive_bytes
        coord.start()
        agents = [AgentProcess(coord, f"a{i}", tmp / "agents" / f"a{i}", extra_args=["--work-dir", str(w)]).start()
                  for i, w in zip((1, 2), works, strict=True)]
        with coord.client() as c:
            wait_for(lambda: sorted(n.name for n in c.nodes() if n.status == "ready") == ["a1", "a2"],
                     timeout=60, what="two agents ready")
        upload_s = upload(coord, archive, packed.sha256)
        server, port = serve(served)
        url = f"http://127.0.0.1:{port}/{archive.name}"
        headers = tmp / "headers.txt"
        headers.write_text(f"Authorization: Bearer {coord.admin_token}\n")
        alone = parts_alone(archive, tmp / "alone")
        ours = {os.getpid(), coord.proc.pid, server.pid} | {a.proc.pid for a in agents}

        def one(kind: str, label: str) -> dict:
            wait_idle(coord)
            if kind == "workdir":  # every agent must fetch it again: empty the caches (and old rank folders)
                for w in works:
                    for f in cache_files(w):
                        f.unlink()
                    shutil.rmtree(w / "jobs", ignore_errors=True)
            time.sleep(SETTLE_S)
            seen = others_running(ours)
            if seen:
                interference[label] = seen
            if kind == "plain":
                return run_plain(url, tmp / "plain" / label.replace(" ", "-"), size)
            if kind == "coordinator_copy":
                return run_plain(f"{coord.url}/files/{packed.sha256}", tmp / "plain" / label.replace(" ", "-"), size,
                                 headers)
            gets = file_gets(coord)
            run = run_stamped(coord, packed.sha256 if kind == "workdir" else None)
            fetched = file_gets(coord) - gets
            if fetched != (2 if kind == "workdir" else 0):
                raise RunFailed(f"{label}: the agents fetched the archive {fetched} times")
            return run

        for kind in runs:  # warm-up, untimed: imports, page cache, the first SQLite writes
            one(kind, f"warm-up {kind}")
        kinds = list(runs)
        for i in range(args.reps):
            for kind in kinds[i % len(kinds):] + kinds[:i % len(kinds)]:
                try:
                    runs[kind].append(dict(one(kind, f"rep {i} {kind}"), rep=i))
                except RunFailed as exc:
                    failures.append(f"rep {i} {kind}: {exc}")
        mb2 = 2 * size / 1e6
        starts = {k: [r["start_s"] for r in runs[k]] for k in ("workdir", "bare_job")}
        plain = [r["seconds"] for r in runs["plain"]]
        cost = statistics.median(starts["workdir"]) - statistics.median(starts["bare_job"]) \
            if starts["workdir"] and starts["bare_job"] else None
        plain_s = statistics.median(plain) if plain else None
        ratio = plain_s / cost if cost and plain_s else None
        by_rep = {k: {r["rep"]: r.get("start_s", r["seconds"]) for r in v} for k, v in runs.items()}
        rep_ratios = [by_rep["plain"][i] / (by_rep["workdir"][i] - by_rep["bare_job"][i]) for i in range(args.reps)
                      if all(i in by_rep[k] for k in runs) and by_rep["workdir"][i] > by_rep["bare_job"][i]]
        unpacked = unpacked_times([a.log() for a in agents], runs["workdir"])
        served = [r["seconds"] for r in runs["coordinator_copy"]]
        result = {
            "mb_random": args.mb, "archive_bytes": size, "sha256": packed.sha256, "reps": args.reps,
            "pack_s": r3(pack_s), "upload_s": r3(upload_s),
            "start_s": {k: {"runs": [r3(x) for x in v], **spread(v)} for k, v in starts.items()},
            "plain_copy_s": {"runs": [r3(x) for x in plain], **spread(plain)},
            "workdir_cost_s": r3(cost),
            "workdir_mb_per_s": r3(mb2 / cost) if cost and cost > 0 else None,
            "plain_mb_per_s": r3(mb2 / plain_s) if plain_s else None,
            "ratio_workdir_over_plain": r3(ratio),
            "ratio_per_rep": {"values": [r3(x) for x in rep_ratios], **spread(rep_ratios)},
            "agents_unpacked_s_after_post": [unpacked.get(r["job_id"]) for r in runs["workdir"]],
            "parts_alone": alone,
            "coordinator_copy_s": {"runs": [r3(x) for x in served], **spread(served)},
            "targets": {f"workdir MB/s >= {TARGET} x plain copy MB/s": None if ratio is None else ratio >= TARGET},
            "goals": [] if ratio is None else [
                {"name": f"{size / 1e6:.0f} MB workdir to 2 agents: its MB/s / a plain loopback copy's (2 at once)",
                 "value": r3(ratio), "op": ">=", "target": TARGET, "unit": "x"}],
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "other_jupiter_or_pytest_processes": interference,
            "failures": failures,
        }
        if args.detail:
            result["runs"] = runs
    except Exception as exc:
        failures.append(f"setup: {exc!r}")
        result = {"failures": failures}
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait()
        for a in agents:
            a.stop()
        coord.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
