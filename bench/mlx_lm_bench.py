"""mlx-lm LoRA on 2 ranks through Jupiter beside the same two ranks started by hand, in one run.

    .venv/bin/python bench/mlx_lm_bench.py [--reps 5] [--iters 100] [--report 10] [--quiet-below 0.05] [--detail]

A tiny llama (tests/support/tinylm.py's `build` with a bigger CONFIG: hidden 128, 4 layers, so one
step takes tens of milliseconds on this CPU; nothing is downloaded) and 256 training sentences are
written once. Both kinds of run train it with the very same command:

    python -m mlx_lm lora --model M --train --data D --iters N --batch-size 4 --num-layers 4
        --steps-per-report R --steps-per-eval 100000 --val-batches 1 --adapter-path adapters

- jupiter: `{"command": ..., "nodes": 2, "backend": "ring"}` submitted to a real coordinator with
  two real agents on this machine, followed on `GET /jobs/{id}/events` until it ends; rank 0's
  lines are read back from `GET /jobs/{id}/logs`.
- by hand: two processes of the same argv (`python` being this interpreter, as the agent does),
  each in a fresh folder of its own, stdout piped, with MLX_RANK=0/1 and MLX_HOSTFILE naming a ring
  hostfile of two free loopback ports. Their environment is built the way the agent builds a rank's
  (`shared.rankenv.rank_env`: the same allowlist, NO_COLOR=1, PYTHONUNBUFFERED=1, the job's env),
  so only the launcher differs.

Step time is mlx-lm's own: each report row gives tokens/s over the steps since the row before
(read with shared.progress_formats, the reader Jupiter uses). A run's figure is the median over its
reports without the first (compilation and warm-up); tokens per step are the same in both kinds of
run, so tokens/s by hand / tokens/s through Jupiter is Jupiter's step time as a multiple of by hand.

After one untimed run of each kind, every repetition runs one of each, alternating which goes
first, so both meet the same drift of a shared machine. Reported: every run's median, each kind's
median and spread (min, max), the ratio of the kinds' medians (the goal) and each repetition's own
ratio. Also: each run's `others_cpu_share`, the share of the cores that processes this bench did not
start used during it (other test runs on a shared machine), and the same ratio over the quiet runs
only (share under `--quiet-below`, 0.05). Target: ratio <= 1.02 over all runs. Exits non-zero only
when a run failed, not on a missed target.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from job_overhead_bench import others_running  # noqa: E402
from shared.progress_formats import read_mlx_lm  # noqa: E402
from shared.text import shown  # noqa: E402
from trainer_bench import CpuWatch, machine_busy  # noqa: E402
from shared.rankenv import rank_env  # noqa: E402
from tests.support.harness import AgentProcess, CoordinatorProcess, free_port, wait_for  # noqa: E402
from tests.support.tinylm import build  # noqa: E402

MODEL = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
         "num_attention_heads": 4, "num_key_value_heads": 2}
TRAIN_SENTENCES = 256
TARGET = 1.02                      # by-hand tokens/s over Jupiter's, at most
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # both kinds: never ask a model hub
RUN_TIMEOUT_S = 600.0
SETTLE_S = 1.0                     # quiet time before each timed run
TOKENS_COL = re.compile(r"([\d.]+)k\s*$")  # the table's last column: tokens trained so far, in thousands


class RunFailed(Exception):
    pass


def command(model: Path, data: Path, iters: int, report: int) -> list[str]:
    return ["python", "-m", "mlx_lm", "lora", "--model", str(model), "--train", "--data", str(data),
            "--iters", str(iters), "--batch-size", "4", "--num-layers", str(MODEL["num_hidden_layers"]),
            "--steps-per-report", str(report), "--steps-per-eval", "100000", "--val-batches", "1",
            "--adapter-path", "adapters"]


def reports(lines: list[str]) -> list[dict]:
    """mlx-lm's training reports in rank 0's lines: [{"step", "tokens_per_s", "tokens_k"}]."""
    out = []
    for line in lines:
        rec = read_mlx_lm(line)
        if rec and rec.get("tokens_per_s") is not None:
            m = TOKENS_COL.search(shown(line))
            out.append({"step": rec["step"], "tokens_per_s": rec["tokens_per_s"],
                        "tokens_k": float(m.group(1)) if m else None})
    return out


def summarise_run(kind: str, seconds: float, rows: list[dict], expected: int) -> dict:
    if len(rows) != expected:
        raise RunFailed(f"{kind}: {len(rows)} report rows, expected {expected}")
    kept = [r["tokens_per_s"] for r in rows[1:]]  # the first report holds the compilation
    return {"seconds": seconds, "tokens_per_s": kept, "median_tokens_per_s": statistics.median(kept),
            "tokens_k_at_end": rows[-1]["tokens_k"], "last_step": rows[-1]["step"]}


# ---------------------------------------------------------------------------- jupiter


def run_jupiter(coord: CoordinatorProcess, argv: list[str], expected: int) -> dict:
    with coord.client() as c:
        t0 = time.perf_counter()
        job = c.submit({"name": "mlx-lm-bench", "command": argv, "nodes": 2, "backend": "ring", "env": OFFLINE})
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
        # A rank's exit can reach the coordinator before the report with its last lines.
        deadline = time.monotonic() + 5
        while True:
            text = log_text(c, job.id)
            rows = reports([ln[4:] for ln in text.splitlines() if ln.startswith("[0] ")])
            if len(rows) >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    if detail.status != "succeeded":
        raise RunFailed(f"job {job.id} {detail.status}: {detail.error}\n{text[-3000:]}")
    out = summarise_run(f"job {job.id}", seconds, rows, expected)
    out["job_id"] = job.id
    return out


def log_text(c, job_id: str) -> str:
    parts, offset = [], 0
    while True:
        text, nxt = c.logs(job_id, offset)
        parts.append(text)
        if nxt <= offset or not text:
            return "".join(parts)
        offset = nxt


# ---------------------------------------------------------------------------- by hand


def run_by_hand(argv: list[str], folder: Path, python: str, expected: int) -> dict:
    ports: set[int] = set()
    while len(ports) < 2:
        ports.add(free_port())
    folder.mkdir(parents=True)
    hostfile = folder / "hostfile.json"
    hostfile.write_text(json.dumps([[f"127.0.0.1:{p}"] for p in sorted(ports)]))
    argv = [python, *argv[1:]]
    procs: list[subprocess.Popen] = []
    outs: list[list[str]] = [[], []]
    readers = []
    t0 = time.perf_counter()
    try:
        for rank in range(2):
            cwd = folder / f"rank-{rank}"
            cwd.mkdir()
            # What the agent gives a rank, less Jupiter's own JUPITER_* names, which mlx-lm never reads.
            env = rank_env(os.environ, OFFLINE, None, {"MLX_RANK": str(rank), "MLX_HOSTFILE": str(hostfile),
                                                      "PWD": str(cwd)})
            p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env, cwd=cwd, start_new_session=True, bufsize=0)
            procs.append(p)
            # Read as the agent does: line by line as it comes, so a full pipe never slows a rank.
            th = threading.Thread(target=lambda p=p, out=outs[rank]: out.extend(
                raw.decode("utf-8", "replace").rstrip("\r\n") for raw in iter(p.stdout.readline, b"")), daemon=True)
            th.start()
            readers.append(th)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        for p in procs:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        seconds = time.perf_counter() - t0
        for th in readers:
            th.join(10)
    except subprocess.TimeoutExpired:
        raise RunFailed(f"by-hand ranks not done in {RUN_TIMEOUT_S:g} s") from None
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    for rank, p in enumerate(procs):
        if p.returncode != 0:
            raise RunFailed(f"by-hand rank {rank} exited {p.returncode}:\n" + "\n".join(outs[rank][-40:]))
    return summarise_run("by hand", seconds, reports(outs[0]), expected)


# ---------------------------------------------------------------------------- main


def self_cpu() -> float:
    """CPU seconds of this process (its threads read the by-hand ranks' output and follow a job's events)."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def spread(xs: list[float]) -> dict:
    return {"median": r4(statistics.median(xs)), "min": r4(min(xs)), "max": r4(max(xs))} if xs else {}


def r4(x):
    return None if x is None else round(x, 4)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5, help="timed runs of each kind (after one warm-up each)")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--report", type=int, default=10, help="--steps-per-report")
    ap.add_argument("--quiet-below", type=float, default=0.05,
                    help="a run is quiet when other processes used less than this share of the cores")
    ap.add_argument("--detail", action="store_true", help="also print every run's reports")
    args = ap.parse_args()
    if args.iters % args.report or args.iters // args.report < 2:
        ap.error("--iters must be a multiple of --report, at least twice it")
    expected = args.iters // args.report
    python = sys.executable  # the agents run `python` ranks under the interpreter they run under: this one
    tmp = Path(tempfile.mkdtemp(prefix="jupiter-mlx-lm-bench-"))
    coord = CoordinatorProcess(tmp / "leader", heartbeat_interval=5.0, down_after=60.0)
    agents: list[AgentProcess] = []
    runs: dict[str, list[dict]] = {"jupiter": [], "by_hand": []}
    failures: list[str] = []
    interference: dict[str, list[str]] = {}
    result: dict = {}
    try:
        model, data = build(tmp / "tinylm", train=TRAIN_SENTENCES, config=MODEL)
        argv = command(model, data, args.iters, args.report)
        coord.start()
        agents = [AgentProcess(coord, f"a{i}", tmp / "agents" / f"a{i}").start() for i in (1, 2)]
        with coord.client() as c:
            wait_for(lambda: sorted(n.name for n in c.nodes() if n.status == "ready") == ["a1", "a2"],
                     timeout=60, what="two agents ready")
        ours = {os.getpid(), coord.proc.pid} | {a.proc.pid for a in agents}
        watch = CpuWatch({"coordinator": coord.proc.pid, **{a.name: a.proc.pid for a in agents}})

        def one(kind: str, label: str) -> dict:
            if kind == "jupiter":
                with coord.client() as c:
                    wait_for(lambda: sorted(n.status for n in c.nodes()) == ["ready", "ready"], timeout=30,
                             what="nodes idle")
            time.sleep(SETTLE_S)
            seen = others_running(ours)
            if seen:
                interference[label] = seen
            busy0, ours0, own0, me0 = machine_busy(), watch.ours(), watch.sample(), self_cpu()
            t0 = time.perf_counter()
            if kind == "jupiter":
                run = run_jupiter(coord, argv, expected)
            else:
                run = run_by_hand(argv, tmp / "hand" / label.replace(" ", "-"), python, expected)
            # the share of the cores that processes not of this run used meanwhile (other test runs)
            core_s = (time.perf_counter() - t0) * (os.cpu_count() or 1)
            run["others_cpu_share"] = max(0.0, machine_busy() - busy0 - (watch.ours() - ours0)) / core_s
            # what Jupiter's own processes (not their ranks) and this bench used meanwhile: on 2 cores
            # busy with 2 ranks, every CPU second of theirs is one the ranks wait for
            own = watch.sample()
            run["cpu_s"] = {**{k: own[k] - own0[k] for k in own}, "bench": self_cpu() - me0,
                            "ranks": watch.ours() - ours0 - sum(own[k] - own0[k] for k in own) - (self_cpu() - me0)}
            return run

        one("jupiter", "warm-up jupiter")  # page cache, MLX's first import, the first SQLite writes
        one("by_hand", "warm-up by_hand")
        for i in range(args.reps):
            for kind in (("jupiter", "by_hand") if i % 2 == 0 else ("by_hand", "jupiter")):
                try:
                    runs[kind].append(dict(one(kind, f"rep {i} {kind}"), rep=i))
                except RunFailed as exc:
                    failures.append(f"rep {i} {kind}: {exc}")
        med = {k: [r["median_tokens_per_s"] for r in v] for k, v in runs.items()}
        quiet = {k: [r["median_tokens_per_s"] for r in v if r["others_cpu_share"] < args.quiet_below]
                 for k, v in runs.items()}
        qratio = statistics.median(quiet["by_hand"]) / statistics.median(quiet["jupiter"]) \
            if quiet["jupiter"] and quiet["by_hand"] else None
        jm = statistics.median(med["jupiter"]) if med["jupiter"] else None
        hm = statistics.median(med["by_hand"]) if med["by_hand"] else None
        ratio = hm / jm if jm and hm else None
        by_rep = {k: {r["rep"]: r["median_tokens_per_s"] for r in v} for k, v in runs.items()}
        pair_ratios = [by_rep["by_hand"][i] / by_rep["jupiter"][i] for i in range(args.reps)
                       if i in by_rep["jupiter"] and i in by_rep["by_hand"]]
        tokens_per_step = None
        if runs["by_hand"] and runs["by_hand"][-1]["tokens_k_at_end"]:
            tokens_per_step = runs["by_hand"][-1]["tokens_k_at_end"] * 1000 / runs["by_hand"][-1]["last_step"]
        result = {
            "reps": args.reps, "iters": args.iters, "steps_per_report": args.report, "model": MODEL,
            "command": argv,
            "tokens_per_s": {k: {"runs": [round(x, 1) for x in v], **spread(v)} for k, v in med.items()},
            "approx_tokens_per_step": r4(tokens_per_step),  # from the table's rounded `tokens` column
            "approx_step_ms": {k: r4(1000 * tokens_per_step / statistics.median(v))
                               for k, v in med.items() if v and tokens_per_step},
            "wall_s": {k: spread([r["seconds"] for r in v]) for k, v in runs.items()},
            "ratio_by_hand_over_jupiter": r4(ratio),
            "ratio_per_rep": {"values": [r4(x) for x in pair_ratios], **spread(pair_ratios)},
            "others_cpu_share": {k: [r4(r["others_cpu_share"]) for r in v] for k, v in runs.items()},
            "cpu_s_per_run_median": {k: {who: r4(statistics.median(r["cpu_s"][who] for r in v))
                                         for who in v[0]["cpu_s"]} for k, v in runs.items() if v},
            "quiet_runs": {"below": args.quiet_below, **{k: len(v) for k, v in quiet.items()},
                           "ratio_by_hand_over_jupiter": r4(qratio),
                           "tokens_per_s_median": {k: r4(statistics.median(v)) if v else None
                                                   for k, v in quiet.items()}},
            "targets": {f"by-hand tokens/s / Jupiter tokens/s <= {TARGET}": None if ratio is None else ratio <= TARGET},
            "goals": [] if ratio is None else [
                {"name": "mlx-lm LoRA, 2 ranks: Jupiter's step time / by hand's (median tokens/s, by hand / Jupiter)",
                 "value": r4(ratio), "op": "<=", "target": TARGET, "unit": "x"}],
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
        for a in agents:
            a.stop()
        coord.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
