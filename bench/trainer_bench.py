"""Trainer throughput: the built-in trainer as a Jupiter job on 1 and 2 ranks, beside the same
trainer command started by hand and beside a plain MLX training loop of the same model, in one run.

    .venv/bin/python bench/trainer_bench.py [--steps 30] [--reps 4] [--skip 1] [--quiet-below 0.05] [--detail]

One coordinator (heartbeat 5 s) and two agents on this machine. Each repetition runs six kinds of
run, all training the `tiny` preset on the `sample` domain (global batch 16 x 128 tokens, AdamW
with warmup and cosine decay, clip 1.0, float32): `--steps` steps on 1 rank and twice as many on
2 ranks, whose steps take about half as long, so that every run is timed for about as long:

- jupiter_1 / jupiter_2: `{"domain": "sample", "preset": "tiny", "steps": N, "nodes": 1|2,
  "backend": "ring"}` submitted to the coordinator, polled until `succeeded`; the step time is
  read back from rank 0's progress lines in the job log.
- hand_1 / hand_2: the very argv of the Jupiter job (`python -m agent.training ...`, `python` being
  this interpreter, as the agent does) started with subprocess in a fresh folder, without Jupiter;
  2 ranks by MLX ring from a hostfile of two free loopback ports (MLX_RANK, MLX_HOSTFILE).
- plain_1 / plain_2: this file run as `--plain-rank`: a minimal loop that builds the same model
  (`agent.training.model.GPT`, the preset), the same optimizer and batch, and times every step
  itself (`mlx.nn.average_gradients` for 2 ranks, same ring set-up as hand_2). By default it
  compiles the whole step (forward, backward, all-reduce, clip, AdamW) the way MLX's examples do;
  `--plain-compile grad` compiles only the loss and its gradient, as the trainer does.

An untimed 2-rank Jupiter run goes first (it warms the machine and gives the hand runs the job's
argv). Then, in each repetition, the 1-rank kinds go first and the 2-rank kinds after them; odd
repetitions run the six in reverse order, so every kind meets the same drift of a shared machine.

Step time: the trainer times each optimizer step itself (`train_step`: batch, forward, backward,
all-reduce, clip, update, eval of the results), and each progress line gives tokens/s over the
steps since the line before (its window). Lines come at the first step, then at most one every 2 s
(agent/training/reporting.py), and at the last step, so a window's mean step time is
2048 x its steps / tokens_per_s. The plain loop times every step over the same region with
`time.perf_counter`. The steps up to the first window boundary at or after `--skip` (compilation)
are left out: with the default `--skip 1` that is step 1 alone, which the trainer always reports on
its own line, so trainer and plain loop are measured over exactly the same steps (2..N). A run's
step time is the MEAN over the rest (so rare slow steps count), and global tokens/s = 2048 / that.
A kind's figure is the median over the repetitions ("all"), and also: over the quiet runs only
("quiet": the CPU time other processes used during the run, i.e. the machine's busy time minus
everything this bench started, was under `--quiet-below` of the cores) and the fastest repetition
("best"). Scaling efficiency = tokens/s(2 ranks) / (2 x tokens/s(1)).

Ratios between kinds come two ways: the ratio of the two kinds' medians, and "paired": the ratio
of the two runs within each repetition, then the median of those. The machine is shared and its
speed drifts by a few percent over minutes; the two runs of one repetition are seconds apart and
meet the same drift, so the paired figure is the one the target is judged by (`goals`).

Also reported: wall time of each run (POST to `succeeded`, or spawn to exit); the CPU seconds that
the coordinator and the two agents themselves used during each kind of run (not their children;
the bench polls `GET /jobs/{id}` once a second during Jupiter runs), and what they used beyond a
hand run's background, per step; for hand runs, the wall time between rank 0's progress lines as
they arrive, which also covers what the trainer does per step outside its own timer.

Target (issue 13): Jupiter's step time at most 1.01 x the plain loop's, paired, on 1 and on 2
ranks (`goals` in the JSON: bench/run_all.py prints each as pass or FAIL). Exits non-zero only when a
run failed (a job not `succeeded`, a process exiting non-zero, missing progress), not on a missed
target.
"""

from __future__ import annotations

import argparse
import json
import os
import random
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

DOMAIN, PRESET = "sample", "tiny"
RUN_TIMEOUT_S = 600.0
SETTLE_S = 1.0          # quiet time before each timed run
PLAIN_MARK = "PLAIN_RESULT "
TARGET = 1.01           # Jupiter's step time at most this times the plain loop's


class RunFailed(Exception):
    pass


# ---------------------------------------------------------------------------- the plain loop


def plain_rank(args: argparse.Namespace) -> int:
    """One rank of a plain data-parallel MLX loop (1 rank without MLX_RANK/MLX_HOSTFILE)."""
    from functools import partial

    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim

    from agent.training.data import load_tokens
    from agent.training.model import GPT, loss_fn
    from shared.presets import get_preset
    from shared.domains import load_domain

    group = mx.distributed.init()
    rank, world = group.rank(), group.size()
    p = get_preset(args.preset)
    batch, seq, steps = p.batch_size, p.seq_len, args.steps
    per_rank = batch // world

    tokens = load_tokens(load_domain(args.domain), seq).train   # same stream, same training split
    n_windows = (int(tokens.size) - 1) // seq
    order = list(range(n_windows))
    random.Random(0).shuffle(order)                             # the same order on every rank
    offsets = mx.arange(seq + 1, dtype=mx.int32)[None, :]

    def get_batch(i: int):
        ids = order[i * batch + rank * per_rank:i * batch + (rank + 1) * per_rank]
        w = tokens[mx.array(ids, dtype=mx.int32)[:, None] * seq + offsets].astype(mx.int32)
        return w[:, :-1], w[:, 1:]

    mx.random.seed(0)                                           # identical initial weights everywhere
    model = GPT(p)
    warmup = min(max(1, min(200, steps // 20)), max(0, steps - 1))   # the trainer's defaults
    schedule = optim.cosine_decay(p.lr, max(1, steps - warmup), p.lr * 0.1)
    if warmup:
        schedule = optim.join_schedules([optim.linear_schedule(p.lr / warmup, p.lr, warmup), schedule], [warmup])
    opt = optim.AdamW(learning_rate=schedule, betas=[0.9, 0.95], eps=1e-8, weight_decay=0.01,
                      bias_correction=True)  # as agent/training/setup.py builds it
    opt.init(model.trainable_parameters())

    if args.plain_compile == "step":
        loss_and_grad = nn.value_and_grad(model, loss_fn)
        state = [model.state, opt.state]

        @partial(mx.compile, inputs=state, outputs=state)
        def step(x, y):
            loss, grads = loss_and_grad(model, x, y)
            if world > 1:
                grads = nn.average_gradients(grads, group=group)
            grads, _ = optim.clip_grad_norm(grads, 1.0)
            opt.update(model, grads)
            return loss

        def run_step(x, y):
            loss = step(x, y)
            mx.eval(state, loss)
            return loss
    else:  # "grad": only the loss and its gradient compiled, as agent.training does
        def local_loss(params, x, y):
            model.update(params)
            return loss_fn(model, x, y)

        value_and_grad = mx.compile(mx.value_and_grad(local_loss))
        params = model.trainable_parameters()

        def run_step(x, y):
            nonlocal params
            loss, grads = value_and_grad(params, x, y)
            if world > 1:
                grads = nn.average_gradients(grads, group=group)
            grads, _ = optim.clip_grad_norm(grads, 1.0)
            params = opt.apply_gradients(grads, params)
            mx.eval(params, opt.state, loss)
            return loss

    if world > 1:
        mx.eval(mx.distributed.all_sum(mx.ones(1), group=group))  # start the clock together
    step_s, losses = [], []
    for i in range(steps):
        t0 = time.perf_counter()
        x, y = get_batch(i % (n_windows // batch))
        loss = run_step(x, y)
        step_s.append(time.perf_counter() - t0)
        losses.append(loss.item())   # already evaluated: no extra work
    print(PLAIN_MARK + json.dumps({"rank": rank, "world": world, "compile": args.plain_compile, "step_s": step_s,
                                   "first_loss": losses[0], "final_loss": losses[-1]}), flush=True)
    return 0


# ---------------------------------------------------------------------------- helpers


def r4(x):
    return None if x is None else round(x, 4)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio(a, b):
    return None if a is None or not b else a / b


def free_ports(n: int) -> list[int]:
    from tests.support.harness import free_port

    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def bare_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPITER_", "MLX_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


Window = tuple[int, int, float]  # (first step, last step, mean seconds per step over them)


def windows_from_progress(records: list[dict], tokens_per_step: int) -> list[Window]:
    """The trainer's progress lines as windows: each line's tokens_per_s covers the steps since the
    previous line. The final line (with `status`) repeats the whole run's figure and is left out,
    and so is a checkpoint's line (no tokens_per_s)."""
    out: list[Window] = []
    prev = 0
    for rec in records:
        if "status" in rec or rec.get("step") is None or not rec.get("tokens_per_s"):
            continue
        step = rec["step"]
        if step <= prev:
            continue
        out.append((prev + 1, step, tokens_per_step / rec["tokens_per_s"]))
        prev = step
    return out


def timed_from(windows: list[Window], skip: int) -> int:
    """The first step measured: the one after the first window boundary at or after `skip`."""
    return 1 + min((last for _, last, _ in windows if last >= skip), default=0) if skip > 0 else 1


def step_summary(windows: list[Window], skip: int, steps: int, tokens_per_step: int) -> dict:
    if not windows or windows[0][0] != 1 or windows[-1][1] != steps:
        covered = sum(last - first + 1 for first, last, _ in windows)
        raise RunFailed(f"step times for {covered} of {steps} steps")
    start = timed_from(windows, skip)
    kept = [w for w in windows if w[0] >= start]
    n = sum(last - first + 1 for first, last, _ in kept)
    if not n:
        raise RunFailed(f"no window after step {skip} in {steps} steps")
    mean = sum((last - first + 1) * s for first, last, s in kept) / n
    first = windows[0]
    return {"step_s": mean, "tokens_per_s": tokens_per_step / mean, "window_max_s": max(s for _, _, s in kept),
            "first_step_s": first[2] if first[1] == 1 else None, "steps_timed": n, "timed_from_step": start,
            "lines": len(windows),
            "windows": [(a, b, round(s, 4)) for a, b, s in windows]}


def progress_records(lines: list[str]) -> list[dict]:
    from shared.progress import parse

    return [rec for line in lines if (rec := parse(line)) is not None]


class CpuWatch:
    """CPU seconds (user + system, children excluded) of Jupiter's own processes."""

    def __init__(self, procs: dict[str, int]):
        import psutil

        self.procs = {name: psutil.Process(pid) for name, pid in procs.items()}

    def sample(self) -> dict[str, float]:
        out = {}
        for name, p in self.procs.items():
            t = p.cpu_times()
            out[name] = t.user + t.system
        return out

    def ours(self) -> float:
        """CPU seconds of everything this bench started: itself, the children it has reaped (hand
        and plain ranks), Jupiter's processes and the children they have reaped (Jupiter's ranks)."""
        import resource

        total = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            u = resource.getrusage(who)
            total += u.ru_utime + u.ru_stime
        for p in self.procs.values():
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        return total


def others_running(ours: set[int]) -> list[str]:
    """Other Jupiter processes, test runs or trainers on this machine: they take CPU from ours."""
    import psutil

    found = []
    me = os.getpid()
    mine = {me} | {c.pid for c in psutil.Process(me).children(recursive=True)} | ours
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
        except Exception:
            continue
        if p.info["pid"] not in mine and any(s in cmd for s in ("shared.cli", "pytest", "agent.training", "mlx")):
            found.append(f"{p.info['pid']}: {cmd[:80]}")
    return found


def machine_busy() -> float:
    """CPU seconds all processes on this machine have used so far (every core)."""
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


# ---------------------------------------------------------------------------- runs


def jupiter_spec(world: int, steps: int) -> dict:
    return {"domain": DOMAIN, "preset": PRESET, "steps": steps, "nodes": world, "backend": "ring"}


def run_jupiter(coord, world: int, steps: int, skip: int, tps: int) -> dict:
    with coord.client() as c:
        t0 = time.perf_counter()
        job = c.submit(jupiter_spec(world, steps))
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            d = c.job(job.id)
            if d.status in ("succeeded", "failed", "cancelled"):
                break
            if time.monotonic() > deadline:
                c.cancel(job.id)
                raise RunFailed(f"job {job.id} not done in {RUN_TIMEOUT_S:g} s")
            time.sleep(1.0)  # a slow poll: the bench's own requests cost the coordinator CPU too
        wall = time.perf_counter() - t0
        text = ""
        late_deadline = time.monotonic() + 10
        while True:  # the last lines can reach the coordinator just after `succeeded`
            text = ""
            offset = 0
            while True:
                chunk, nxt = c.logs(job.id, offset)
                if not chunk or nxt == offset:
                    break
                text += chunk
                offset = nxt
            if "[0] [train] done" in text or d.status != "succeeded" or time.monotonic() > late_deadline:
                break
            time.sleep(0.2)
        if d.status != "succeeded":
            raise RunFailed(f"job {job.id} {d.status}: {d.error}\n{text[-3000:]}")
    rank0 = [line[4:] for line in text.splitlines() if line.startswith("[0] ")]
    records = progress_records(rank0)
    final = next((r for r in reversed(records) if "status" in r), {})
    out = step_summary(windows_from_progress(records, tps), skip, steps, tps)
    out.update(job_id=job.id, wall_s=wall, command=d.command, nodes=d.nodes, final_loss=final.get("final_loss"),
               trainer_tokens_per_s=final.get("tokens_per_s"), trainer_elapsed_s=final.get("elapsed_s"),
               job_progress_tokens_per_s=d.progress.get("tokens_per_s"))
    return out


def spawn_ranks(argv: list[str], world: int, folder: Path) -> tuple[list[subprocess.Popen], list[list], float]:
    """Start `world` ranks of argv (ring hostfile for 2+), read their output with arrival times,
    wait for them; returns (procs, [[(t, line), ...] per rank], wall seconds)."""
    folder.mkdir(parents=True, exist_ok=True)
    extra: list[dict] = [{} for _ in range(world)]
    if world > 1:
        hostfile = folder / "hostfile.json"
        hostfile.write_text(json.dumps([[f"127.0.0.1:{p}"] for p in free_ports(world)]))
        extra = [{"MLX_RANK": str(r), "MLX_HOSTFILE": str(hostfile)} for r in range(world)]
    outputs: list[list] = [[] for _ in range(world)]
    procs: list[subprocess.Popen] = []
    readers: list[threading.Thread] = []

    def pump(p: subprocess.Popen, sink: list) -> None:
        for raw in iter(p.stdout.readline, b""):
            sink.append((time.perf_counter(), raw.decode("utf-8", "replace").rstrip("\r\n")))

    t0 = time.perf_counter()
    try:
        for r in range(world):
            p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=bare_env(extra[r]), cwd=folder, start_new_session=True, bufsize=0)
            procs.append(p)
            th = threading.Thread(target=pump, args=(p, outputs[r]), daemon=True)
            th.start()
            readers.append(th)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        for p in procs:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        wall = time.perf_counter() - t0
        for th in readers:
            th.join(10)
    except subprocess.TimeoutExpired:
        raise RunFailed(f"{argv[1:4]} not done in {RUN_TIMEOUT_S:g} s") from None
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    for r, p in enumerate(procs):
        if p.returncode != 0:
            tail = "\n".join(line for _, line in outputs[r][-30:])
            raise RunFailed(f"rank {r} of {' '.join(argv[1:4])} exited {p.returncode}:\n{tail}")
    return procs, outputs, wall


def run_hand(command: list[str], world: int, steps: int, skip: int, tps: int, folder: Path) -> dict:
    argv = [sys.executable if command[0] in ("python", "python3") else command[0], *command[1:]]
    _, outputs, wall = spawn_ranks(argv, world, folder)
    timed = [(t, rec) for t, line in outputs[0] for rec in progress_records([line])]
    records = [rec for _, rec in timed]
    final = next((r for r in reversed(records) if "status" in r), {})
    windows = windows_from_progress(records, tps)
    out = step_summary(windows, skip, steps, tps)
    # Wall time between progress lines as they arrived, from the first measured window's start to
    # the last line before the final one (which comes after the final eval): everything the loop
    # does per step, inside its timer or not, beside its timer over the same steps.
    arrived = {rec["step"]: t for t, rec in timed if "status" not in rec and rec.get("tokens_per_s")}
    a = out["timed_from_step"] - 1
    inner = [w for w in windows if w[0] > a and w[1] < steps]
    if a in arrived and inner:
        b = inner[-1][1]
        n = b - a
        out["line_to_line_s"] = (arrived[b] - arrived[a]) / n
        out["timer_same_steps_s"] = sum((last - first + 1) * s for first, last, s in inner) / n
    out.update(wall_s=wall, final_loss=final.get("final_loss"), trainer_tokens_per_s=final.get("tokens_per_s"),
               trainer_elapsed_s=final.get("elapsed_s"))
    return out


def run_plain(world: int, steps: int, skip: int, tps: int, folder: Path, compile_mode: str) -> dict:
    argv = [sys.executable, str(Path(__file__).resolve()), "--plain-rank", "--steps", str(steps),
            "--plain-compile", compile_mode]
    _, outputs, wall = spawn_ranks(argv, world, folder)
    found = [json.loads(line[len(PLAIN_MARK):]) for _, line in outputs[0] if line.startswith(PLAIN_MARK)]
    if not found:
        raise RunFailed("plain rank 0 printed no result:\n" + "\n".join(line for _, line in outputs[0][-30:]))
    res = found[0]
    out = step_summary([(i + 1, i + 1, s) for i, s in enumerate(res["step_s"])], skip, steps, tps)
    out.pop("windows")
    out.update(wall_s=wall, final_loss=res["final_loss"], compile=res["compile"],
               every_step_s=[round(s, 4) for s in res["step_s"]])
    return out


# ---------------------------------------------------------------------------- main


def is_quiet(r: dict, q: float) -> bool:
    """Other processes used less than `q` of the machine's cores during the run. (Even with one
    rank on two cores a share of 0.3 slowed the rank by a quarter: the idle core does not shield it.)"""
    return r["others_cpu_share"] < q


KINDS = ("jupiter_1", "hand_1", "plain_1", "jupiter_2", "hand_2", "plain_2")


def summarise(runs: dict[str, list[dict]], cpu: dict[str, list[dict]], args) -> dict:
    kinds = {}
    for kind in KINDS:
        rs = runs[kind]
        k = {
            "step_s": [r4(r["step_s"]) for r in rs],
            "step_s_median": r4(median([r["step_s"] for r in rs])),
            "tokens_per_s_median": round(median([r["tokens_per_s"] for r in rs]) or 0, 1),
            "step_s_best": r4(min((r["step_s"] for r in rs), default=None)),
            "step_s_quiet_median": r4(median([r["step_s"] for r in rs if is_quiet(r, args.quiet_below)])),
            "quiet_runs": sum(1 for r in rs if is_quiet(r, args.quiet_below)),
            "slowest_window_s": r4(max((r["window_max_s"] for r in rs), default=None)),
            "steps_timed": [r["steps_timed"] for r in rs],
            "first_step_s_median": r4(median([r["first_step_s"] for r in rs])),
            "wall_s_median": round(median([r["wall_s"] for r in rs]) or 0, 2),
            "final_loss_median": r4(median([r.get("final_loss") for r in rs])),
            "machine_busy_share": [r4(r["machine_busy_share"]) for r in rs],
            "others_cpu_share": [r4(r["others_cpu_share"]) for r in rs],
        }
        if not kind.startswith("plain"):
            k["progress_lines"] = [r["lines"] for r in rs]
            k["trainer_tokens_per_s_all_steps_median"] = round(
                median([r.get("trainer_tokens_per_s") for r in rs]) or 0, 1)
        if kind.startswith("hand"):
            k["line_to_line_s_median"] = r4(median([r.get("line_to_line_s") for r in rs]))
            k["timer_same_steps_s_median"] = r4(median([r.get("timer_same_steps_s") for r in rs]))
        if cpu.get(kind):
            k["jupiter_procs_cpu_s_per_run"] = {name: r4(median([c[name] for c in cpu[kind]]))
                                                for name in cpu[kind][0]}
            k["jupiter_procs_cpu_share_of_run"] = r4(median([sum(c.values()) / r["wall_s"]
                                                             for c, r in zip(cpu[kind], rs, strict=False)]))
        kinds[kind] = k

    q = args.quiet_below

    def pick(kind, measure):
        rs = runs[kind]
        if measure == "quiet":
            rs = [r for r in rs if is_quiet(r, q)]
        if not rs:
            return None
        return (min if measure == "best" else median)([r["step_s"] for r in rs])

    def paired(a, b, quiet=False):  # median over repetitions of the ratio within one repetition
        pairs = [(x, y) for x, y in zip(runs[a], runs[b], strict=False)
                 if not quiet or (is_quiet(x, q) and is_quiet(y, q))]
        return r4(median([x["step_s"] / y["step_s"] for x, y in pairs]))

    # Step time of a kind, three ways:
    # "all": the figure, the median over repetitions of each run's mean step;
    # "quiet": the same over the runs in which other processes used less than `--quiet-below` of
    #   the machine (none, when every run was disturbed);
    # "best": the fastest repetition's mean step (as timeit takes the minimum): other load comes
    #   and goes over many steps and only ever adds, while Jupiter's own work (a report for every
    #   progress line) is in every run, so it stays in this figure.
    measures = ("all", "quiet", "best")
    ratios, target = {}, {}
    for w in (1, 2):
        j, h, p = f"jupiter_{w}", f"hand_{w}", f"plain_{w}"
        label = f"{w}_rank{'s' if w > 1 else ''}"
        ratios[label] = {m: {"jupiter/plain": r4(ratio(pick(j, m), pick(p, m))),
                             "jupiter/hand": r4(ratio(pick(j, m), pick(h, m))),
                             "hand/plain": r4(ratio(pick(h, m), pick(p, m)))} for m in measures}
        for m in ("all", "quiet"):
            ratios[label][m]["paired_per_rep"] = {"jupiter/plain": paired(j, p, m == "quiet"),
                                                  "jupiter/hand": paired(j, h, m == "quiet"),
                                                  "hand/plain": paired(h, p, m == "quiet")}
        ratios[label]["all"]["paired_each_rep"] = {
            "jupiter/plain": [r4(x["step_s"] / y["step_s"]) for x, y in zip(runs[j], runs[p], strict=False)]}
        target[label] = {}
        for m in ("all", "quiet"):
            jp = ratios[label][m]["paired_per_rep"]["jupiter/plain"]
            target[label][f"{m}_runs_paired"] = None if jp is None else jp <= TARGET
    scaling = {name: {m: r4(ratio(pick(f"{name}_1", m), 2 * (pick(f"{name}_2", m) or 0))) for m in measures}
               for name in ("jupiter", "hand", "plain")}
    # CPU that the coordinator and agents used during a Jupiter run beyond what they use while a
    # hand run of the same size trains (heartbeats, the bench's 1 Hz job poll), per step
    extra = {}
    for w in (1, 2):
        jc = median([sum(c.values()) for c in cpu[f"jupiter_{w}"]])
        hc = median([sum(c.values()) for c in cpu[f"hand_{w}"]])
        extra[f"{w}_rank{'s' if w > 1 else ''}"] = (
            None if jc is None or hc is None else round((jc - hc) / steps_on(w, args) * 1000, 1))
    goals = [{"name": f"trainer on {w} rank{'s' if w > 1 else ''}: Jupiter / plain MLX loop, step time, paired",
              "value": ratios[label]["all"]["paired_per_rep"]["jupiter/plain"], "op": "<=", "target": TARGET,
              "unit": "x"} for w, label in ((1, "1_rank"), (2, "2_ranks"))]
    return {"kinds": kinds, "scaling_efficiency": scaling, "step_time_ratios": ratios,
            f"target_jupiter_over_plain_le_{TARGET}": target, "jupiter_extra_cpu_ms_per_step": extra,
            "goals": [g for g in goals if g["value"] is not None]}


def steps_on(world: int, args: argparse.Namespace) -> int:
    """Steps per run on `world` ranks: `--steps` on 1, twice as many on 2 (half as long each)."""
    return args.steps * world


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30,
                    help="optimizer steps per run on 1 rank; 2-rank runs take twice as many (default 30)")
    ap.add_argument("--reps", type=int, default=4, help="repetitions of the six kinds (default 4)")
    ap.add_argument("--skip", type=int, default=1,
                    help="steps left out of the step time (compilation), up to the first progress line at or "
                         "after this step (default 1: step 1, which has a line of its own)")
    ap.add_argument("--plain-compile", choices=("step", "grad"), default="step",
                    help="plain loop: compile the whole step (default) or only loss+gradient, as the trainer")
    ap.add_argument("--quiet-below", type=float, default=0.05,
                    help="a run is quiet when other processes used less than this share of the cores (0.05)")
    ap.add_argument("--detail", action="store_true", help="also print every run")
    ap.add_argument("--plain-rank", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--domain", default=DOMAIN, help=argparse.SUPPRESS)
    ap.add_argument("--preset", default=PRESET, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plain_rank:
        return plain_rank(args)
    if args.steps <= args.skip + 2:
        ap.error("--steps must exceed --skip by at least 3")

    from shared.presets import get_preset
    from tests.support.harness import AgentProcess, CoordinatorProcess, wait_for

    p = get_preset(PRESET)
    tps = p.batch_size * p.seq_len  # global tokens per optimizer step (sync every 1)
    tmp = Path(tempfile.mkdtemp(prefix="jupiter-trainer-bench-"))
    coord = CoordinatorProcess(tmp / "leader", heartbeat_interval=5.0, down_after=60.0)
    agents: list = []
    runs: dict[str, list[dict]] = {k: [] for k in KINDS}
    cpu: dict[str, list[dict]] = {k: [] for k in KINDS}
    failures: list[str] = []
    interference: dict[str, list[str]] = {}
    commands: dict[int, list[str]] = {}  # the trainer's argv by world size, from the Jupiter runs
    result: dict = {}
    t_bench = time.perf_counter()
    load0 = os.getloadavg()
    try:
        coord.start()
        agents = [AgentProcess(coord, f"a{i}", tmp / "agents" / f"a{i}").start() for i in (1, 2)]
        with coord.client() as c:
            wait_for(lambda: sorted(n.name for n in c.nodes() if n.status == "ready") == ["a1", "a2"],
                     timeout=60, what="two agents ready")
        watch = CpuWatch({"coordinator": coord.proc.pid, "agent_a1": agents[0].proc.pid,
                          "agent_a2": agents[1].proc.pid})
        ours = {coord.proc.pid} | {a.proc.pid for a in agents}
        # One untimed 2-rank Jupiter run first: it gives the hand runs the job's argv, and warms
        # what the very first run of a fresh machine pays for (files read from disk, the first
        # ring connection), which used to land on the Jupiter runs of the first repetition only.
        try:
            commands[2] = run_jupiter(coord, 2, steps_on(2, args), args.skip, tps)["command"]
        except (RunFailed, AssertionError) as exc:
            failures.append(f"warm-up: {exc}")
        for i in range(args.reps):
            order = KINDS if i % 2 == 0 else tuple(reversed(KINDS))
            for kind in order:
                name, world = kind.rsplit("_", 1)
                world = int(world)
                steps = steps_on(world, args)
                with coord.client() as c:
                    wait_for(lambda: all(n.status == "ready" for n in c.nodes()), timeout=60, what="nodes idle")
                time.sleep(SETTLE_S)
                seen = others_running(ours)
                if seen:  # how many, and a few of them
                    interference[f"rep {i} {kind}"] = {"count": len(seen), "e.g.": seen[:3]}
                before, busy0, ours0, t0 = watch.sample(), machine_busy(), watch.ours(), time.perf_counter()
                try:
                    if name == "jupiter":
                        r = run_jupiter(coord, world, steps, args.skip, tps)
                        if world not in commands:
                            commands[world] = r["command"]
                        elif r["command"] != commands[world]:
                            raise RunFailed(f"job {r['job_id']} ran {r['command']}, not {commands[world]}")
                    elif name == "hand":
                        if world not in commands:
                            raise RunFailed(f"no {world}-rank Jupiter job has run yet: no command to run by hand")
                        r = run_hand(commands[world], world, steps, args.skip, tps, tmp / "hand" / f"{i}-{world}")
                    else:
                        r = run_plain(world, steps, args.skip, tps, tmp / "plain" / f"{i}-{world}",
                                      args.plain_compile)
                except (RunFailed, AssertionError) as exc:
                    failures.append(f"rep {i} {kind}: {exc}")
                    continue
                after = watch.sample()
                # share of the machine's cores busy during the run, and of them, what was not ours
                core_s = (time.perf_counter() - t0) * os.cpu_count()
                busy = machine_busy() - busy0
                r["machine_busy_share"] = busy / core_s
                r["others_cpu_share"] = max(0.0, busy - (watch.ours() - ours0)) / core_s
                r["rep"], r["world"] = i, world
                runs[kind].append(r)
                cpu[kind].append({k: after[k] - before[k] for k in after})
        result = {
            "preset": PRESET, "domain": DOMAIN, "steps": {"1_rank": steps_on(1, args), "2_ranks": steps_on(2, args)},
            "reps": args.reps,
            "steps_left_out": args.skip, "tokens_per_step": tps, "plain_compile": args.plain_compile,
            "trainer_command": commands.get(2),
            **summarise(runs, cpu, args),
            "load_average_at_start": [round(x, 2) for x in load0],
            "bench_seconds": round(time.perf_counter() - t_bench, 1),
            "other_processes": interference,
            "failures": failures,
        }
        if args.detail:
            result["runs"] = {k: [{key: (r4(v) if isinstance(v, float) else v) for key, v in r.items()
                                   if key != "command"} for r in rs] for k, rs in runs.items()}
    except Exception as exc:
        failures.append(f"setup: {exc!r}")
        result = {"failures": failures}
    finally:
        for a in agents:
            a.stop()
        coord.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 1 if failures or any(len(runs[k]) != args.reps for k in KINDS) else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
