"""Run every benchmark in bench/, one after the other, and record the results.

    .venv/bin/python bench/run_all.py [--quick] [--only NAME]... [--skip NAME]... [--list]
                                      [--out DIR] [--docs PATH | --no-docs]

(`make bench` runs it with the full settings; `make bench BENCH_ARGS=--quick` with short ones.)

Each benchmark runs as its own process with the command documented in docs/benchmarks.md (or,
with `--quick`, short settings that check it works end to end in about a minute each; their
figures are not comparable with the documented ones). The runner prints a line as each one
starts, every minute while it runs, and when it ends with its key figures. Every bench prints
one JSON object as its last output; the runner keeps each one's stdout, stderr and JSON, and all
of them together in `results.json`, under `--out` (default: a new folder in the temp dir).

A bench may also give `goals` in its JSON: each a value against a target (`{"name", "value",
"op": ">=" or "<", "target", "unit"}`); the runner prints one line per goal, "value (target op
target): pass" or "FAIL", as the bench ends, and lists them under the table in the docs block.

Then it writes a dated block with the commands and the key figures into docs/benchmarks.md,
between the markers `<!-- make bench: latest -->` and `<!-- end make bench: latest -->`. The
block is replaced on every run (appended at the end of the file the first time); nothing outside
the markers is ever changed, so the hand-written analysis stays as it is. Move the markers (both)
to place the block elsewhere.

Exits non-zero when a bench failed (non-zero exit, no JSON, or over its time limit).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "benchmarks.md"
BEGIN = "<!-- make bench: latest -->"
END = "<!-- end make bench: latest -->"
TICK_S = 60.0  # a "still running" line this often


# --------------------------------------------------------------------------- key figures


def _get(d: Any, *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        v = f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return f"{v}{unit}"


def _registry(r: dict) -> str:
    return (f"heartbeat / authenticated trivial endpoint {_fmt(r.get('heartbeat_vs_auth_noop'), 'x')} "
            f"({_fmt(r.get('heartbeat_req_per_s'))} / {_fmt(r.get('auth_noop_req_per_s'))} req/s; server CPU per "
            f"request {_fmt(_get(r, 'server_cpu_ms_per_req', 'heartbeat'))} / "
            f"{_fmt(_get(r, 'server_cpu_ms_per_req', 'auth_noop'), ' ms')}), / unauthenticated "
            f"{_fmt(r.get('heartbeat_vs_noop'), 'x')} ({_fmt(r.get('noop_req_per_s'))} req/s), "
            f"{r.get('transport', '?')}; heartbeat p50 / p99 {_fmt(r.get('heartbeat_p50_ms'))} / "
            f"{_fmt(r.get('heartbeat_p99_ms'), ' ms')}; GET /nodes ({_fmt(r.get('nodes'))} nodes) median "
            f"{_fmt(r.get('get_nodes_median_ms'), ' ms')}, while heartbeats stream in "
            f"{_fmt(r.get('get_nodes_under_heartbeats_median_ms'), ' ms')}")


def _agent(r: dict) -> str:
    out = (f"agent RSS max {_fmt(r.get('agent_rss_mb_max'), ' MB')}, CPU "
           f"{_fmt(r.get('agent_cpu_percent_of_one_core'), ' %')} of a core, "
           f"{_fmt(r.get('agent_connections_seen'))} connections ({r.get('transport', '?')}); "
           f"idle Python {_fmt(r.get('idle_python_rss_mb'), ' MB')}")
    plain = r.get("plain_http_beside_it")
    if isinstance(plain, dict):
        out += (f"; plain HTTP beside it {_fmt(plain.get('agent_rss_mb_max'), ' MB')}, "
                f"{_fmt(plain.get('agent_cpu_percent_of_one_core'), ' %')}")
    return out


def _job_overhead(r: dict) -> str:
    out = (f"Jupiter median {_fmt(r.get('jupiter_median_s'), ' s')}, bare {_fmt(r.get('bare_median_s'), ' s')} "
           f"(target {_fmt(r.get('target_s'), ' s')})")
    net = r.get("net_of_mlx_backoff")
    if isinstance(net, dict):
        out += (f"; net of MLX's connect sleeps {_fmt(net.get('jupiter_median_s'), ' s')} / "
                f"{_fmt(net.get('bare_median_s'), ' s')}")
    return out


def _job_trivial(r: dict) -> str:
    return (f"Jupiter median {_fmt(r.get('jupiter_median_s'), ' s')}, bare {_fmt(r.get('bare_median_s'), ' s')}, "
            f"difference {_fmt(r.get('overhead_median_s'), ' s')}; phases (median s after POST) "
            + ", ".join(f"{k} {_fmt(v)}" for k, v in (r.get("jupiter_phases_median_s_since_post") or {}).items()))


def _trainer(r: dict) -> str:
    parts = []
    for w, label in ((1, "1_rank"), (2, "2_ranks")):
        j = _get(r, "kinds", f"jupiter_{w}", "step_s_median")
        p = _get(r, "kinds", f"plain_{w}", "step_s_median")
        ratio = _get(r, "step_time_ratios", label, "all", "jupiter/plain")
        paired = _get(r, "step_time_ratios", label, "all", "paired_per_rep", "jupiter/plain")
        by_hand = _get(r, "step_time_ratios", label, "all", "paired_per_rep", "jupiter/hand")
        parts.append(f"{w} rank{'s' if w > 1 else ''}: step {_fmt(j, ' s')} (plain {_fmt(p, ' s')}, "
                     f"Jupiter / plain {_fmt(ratio, 'x')}, paired {_fmt(paired, 'x')}; "
                     f"Jupiter / by hand, paired {_fmt(by_hand, 'x')})")
    parts.append(f"scaling efficiency {_fmt(_get(r, 'scaling_efficiency', 'jupiter', 'all'))}")
    return "; ".join(parts)


def _shares(r: dict) -> str:
    return (f"rank 1 at {_fmt(r.get('rank1_speed'), 'x')} speed: auto shares "
            f"{_fmt(_get(r, 'tokens_per_s', 'auto'))} tokens/s, equal {_fmt(_get(r, 'tokens_per_s', 'equal'))} "
            f"({_fmt(r.get('ratio_auto_over_equal'), 'x')}; steady {_fmt(r.get('steady_ratio_auto_over_equal'), 'x')})")


def _load_heartbeats(r: dict) -> str:
    lat = r.get("latency_ms") or {}
    return (f"{_fmt(r.get('agents'))} agents: {_fmt(r.get('heartbeats_ok'))} / {_fmt(r.get('heartbeats_expected'))} "
            f"answered, {_fmt(r.get('heartbeats_lost'))} lost; latency p50 / p99 {_fmt(lat.get('p50'))} / "
            f"{_fmt(lat.get('p99'), ' ms')}; coordinator {_fmt(_get(r, 'coordinator', 'cpu_ms_per_heartbeat'), ' ms')} "
            f"CPU per beat")


def _load_jobs(r: dict) -> str:
    return (f"{_fmt(_get(r, 'by_status', 'succeeded', default=0))} / {_fmt(r.get('jobs'))} succeeded in "
            f"{_fmt(r.get('total_s'), ' s')} ({_fmt(r.get('jobs_per_s'))} jobs/s); wait p50 / max "
            f"{_fmt(_get(r, 'wait_s', 'p50'))} / {_fmt(_get(r, 'wait_s', 'max'), ' s')}; double-booked "
            f"{_fmt(_get(r, 'double_booked', 'db_placed_to_last_exit'))}")


def _mlx_lm(r: dict) -> str:
    return (f"tokens/s median through Jupiter {_fmt(_get(r, 'tokens_per_s', 'jupiter', 'median'))}, by hand "
            f"{_fmt(_get(r, 'tokens_per_s', 'by_hand', 'median'))} (step about "
            f"{_fmt(_get(r, 'approx_step_ms', 'by_hand'), ' ms')}); by hand / Jupiter "
            f"{_fmt(r.get('ratio_by_hand_over_jupiter'), 'x')}, per repetition "
            f"{_fmt(_get(r, 'ratio_per_rep', 'min'))} to {_fmt(_get(r, 'ratio_per_rep', 'max'), 'x')}; quiet runs "
            f"only ({_fmt(_get(r, 'quiet_runs', 'jupiter'))} + {_fmt(_get(r, 'quiet_runs', 'by_hand'))}) "
            f"{_fmt(_get(r, 'quiet_runs', 'ratio_by_hand_over_jupiter'), 'x')}")


def _workdir(r: dict) -> str:
    mb = r["archive_bytes"] / 1e6 if isinstance(r.get("archive_bytes"), (int, float)) else None
    return (f"{_fmt(mb, ' MB')} archive to 2 agents: start {_fmt(_get(r, 'start_s', 'workdir', 'median'), ' s')} "
            f"with it, {_fmt(_get(r, 'start_s', 'bare_job', 'median'), ' s')} without "
            f"({_fmt(r.get('workdir_mb_per_s'), ' MB/s')}); plain copy {_fmt(_get(r, 'plain_copy_s', 'median'), ' s')} "
            f"({_fmt(r.get('plain_mb_per_s'), ' MB/s')}); ratio {_fmt(r.get('ratio_workdir_over_plain'), 'x')}; "
            f"the same 2 copies from the coordinator {_fmt(_get(r, 'coordinator_copy_s', 'median'), ' s')}")


def _workdir_start(r: dict) -> str:
    return (f"POST to succeeded median with a cached workdir {_fmt(_get(r, 'seconds', 'workdir', 'median'), ' s')}, "
            f"without {_fmt(_get(r, 'seconds', 'bare', 'median'), ' s')}, difference "
            f"{_fmt(r.get('difference_median_s'), ' s')}")


def _targets(r: dict) -> str:
    """'met' / 'not met: NAME, ...' from a bench's `targets` (nested dicts of booleans)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, d: Any) -> None:
        if isinstance(d, dict):
            for k, v in d.items():
                walk(f"{prefix}{k} ", v)
        else:
            flat[prefix.strip()] = d

    for key in ("targets", "target_met", "target_jupiter_over_plain_le_1.05"):
        if key in r:
            walk("" if key == "targets" else f"{key} ", r[key])
    if not flat:
        return "-"
    missed = [k for k, v in flat.items() if v is False]
    unknown = [k for k, v in flat.items() if v is None]
    if missed:
        return "not met: " + ", ".join(missed)
    return "met" + (f" (no figure for {', '.join(unknown)})" if unknown else "")


def goals(r: dict | None) -> list[tuple[str, bool | None]]:
    """Each goal in a bench's JSON as ('NAME: VALUE (target OP TARGET)', met); met is decided
    here, from value, op and target, whatever the bench thought (None: unreadable)."""
    out: list[tuple[str, bool | None]] = []
    for g in (r or {}).get("goals") or []:
        try:
            value, target, op, unit = float(g["value"]), float(g["target"]), g["op"], g.get("unit", "")
            met = {">=": value >= target, ">": value > target, "<=": value <= target, "<": value < target}[op]
        except (KeyError, TypeError, ValueError, AttributeError):
            out.append((f"{g.get('name', '?') if isinstance(g, dict) else g}: (cannot read this goal)", None))
            continue
        out.append((f"{g.get('name', '?')}: {_fmt(value, unit)} (target {op} {_fmt(target, unit)})", met))
    return out


def _verdict(met: bool | None) -> str:
    return {True: "pass", False: "FAIL", None: "unknown"}[met]


# --------------------------------------------------------------------------- the benches


@dataclass(frozen=True)
class Bench:
    name: str
    script: str                 # path under the repo
    args: tuple[str, ...]       # the documented command's arguments
    quick_args: tuple[str, ...]
    timeout_s: float
    quick_timeout_s: float
    summary: Callable[[dict], str]
    what: str

    def argv(self, python: str, quick: bool) -> list[str]:
        return [python, self.script, *(self.quick_args if quick else self.args)]

    def shown(self, quick: bool) -> str:
        """The command as docs/benchmarks.md writes it."""
        return " ".join([".venv/bin/python", self.script, *(self.quick_args if quick else self.args)])


BENCHES: tuple[Bench, ...] = (
    Bench("registry", "bench/registry_bench.py", ("--nodes", "1000", "--seconds", "5", "--concurrency", "8"),
          ("--nodes", "200", "--seconds", "1", "--rounds", "1"), 900, 180, _registry,
          "heartbeats and GET /nodes beside a trivial endpoint, over HTTPS"),
    Bench("agent", "bench/agent_bench.py", ("--seconds", "65", "--interval", "5", "--compare"),
          ("--seconds", "10", "--interval", "2"), 600, 180, _agent,
          "one agent's memory, CPU and connections at a 5 s heartbeat"),
    Bench("job_overhead", "bench/job_overhead_bench.py", (), ("--reps", "1"), 1200, 300, _job_overhead,
          "a 2-rank ring job through Jupiter against the same ranks started by hand"),
    Bench("job_trivial", "bench/job_overhead_bench.py", ("--job", "trivial", "--reps", "20"),
          ("--job", "trivial", "--reps", "3"), 600, 180, _job_trivial,
          "a 1-node `python -c pass` job through Jupiter against the same command by hand"),
    Bench("trainer", "bench/trainer_bench.py", (), ("--steps", "8", "--reps", "1"), 2400, 600, _trainer,
          "the built-in trainer as a job against by hand and a plain MLX loop, 1 and 2 ranks"),
    Bench("shares", "bench/shares_bench.py", (), ("--steps", "20"), 600, 180, _shares,
          "2 trainer ranks, rank 1 slowed to half speed: equal shares of the batch against auto"),
    Bench("mlx_lm", "bench/mlx_lm_bench.py", (), ("--reps", "1", "--iters", "30", "--report", "5"), 1200, 300,
          _mlx_lm, "mlx-lm LoRA on 2 ranks through Jupiter against the same ranks started by hand"),
    Bench("workdir", "bench/workdir_bench.py", (), ("--mb", "20", "--reps", "1"), 900, 180, _workdir,
          "a 100 MB workdir fetched and unpacked by 2 agents against a plain loopback copy"),
    Bench("workdir_start", "bench/workdir_start_bench.py", (), ("--reps", "3"), 600, 180, _workdir_start,
          "a trivial job with a small cached workdir against the same job without one"),
    Bench("load_heartbeats", "bench/load_heartbeats.py", (), ("--agents", "50", "--seconds", "5", "--procs", "1"),
          900, 180, _load_heartbeats, "500 simulated agents heartbeating every second for 60 s"),
    Bench("load_heartbeats_orders", "bench/load_heartbeats.py", ("--orders",),
          ("--agents", "50", "--seconds", "5", "--procs", "1", "--orders"), 900, 180, _load_heartbeats,
          "the same, each agent also holding the orders long-poll open"),
    Bench("load_jobs", "bench/load_jobs.py", (), ("--jobs", "10", "--agents", "2", "--timeout", "120"),
          1200, 300, _load_jobs, "100 small jobs submitted at once onto 3 agents"),
)


# --------------------------------------------------------------------------- running one


@dataclass
class Outcome:
    bench: Bench
    command: str
    seconds: float
    exit_code: int | None       # None: killed at the time limit
    result: dict | None         # the bench's JSON
    stderr_tail: str = ""
    problem: str | None = None  # why it counts as failed
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def figures(self) -> str:
        if self.result is None:
            return "-"
        try:
            return self.bench.summary(self.result)
        except Exception as exc:  # a bench's JSON changed shape: say so, keep the run
            return f"(cannot summarise: {exc!r})"


def last_json_object(text: str) -> dict | None:
    """The last top-level JSON object in a bench's stdout: the whole text, or the longest tail
    starting at a line that begins with `{` (benches print `json.dumps(..., indent=2)` last)."""
    text = text.strip()
    if not text:
        return None
    try:
        obj = json.loads(text)
        return obj if isinstance(obj, dict) else None
    except ValueError:
        pass
    starts = [i for i in range(len(text)) if text[i] == "{" and (i == 0 or text[i - 1] == "\n")]
    for i in starts:
        try:
            obj = json.loads(text[i:])
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def _stop(proc: subprocess.Popen) -> None:
    """Ctrl-C to the bench's process group (its `finally` blocks stop its coordinators and
    agents), then KILL whatever is left after a grace."""
    for sig, grace in ((signal.SIGINT, 20.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_one(bench: Bench, *, quick: bool, out: Path, python: str, cwd: Path = REPO,
            say: Callable[[str], None] = print, tick_s: float = TICK_S) -> Outcome:
    out.mkdir(parents=True, exist_ok=True)
    stdout_path, stderr_path = out / f"{bench.name}.stdout", out / f"{bench.name}.stderr"
    limit = bench.quick_timeout_s if quick else bench.timeout_s
    t0 = time.monotonic()
    with open(stdout_path, "wb") as so, open(stderr_path, "wb") as se:
        proc = subprocess.Popen(bench.argv(python, quick), cwd=cwd, stdout=so, stderr=se, stdin=subprocess.DEVNULL,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
        code: int | None = None
        try:
            while True:
                try:
                    code = proc.wait(timeout=tick_s)
                    break
                except subprocess.TimeoutExpired:
                    elapsed = time.monotonic() - t0
                    if elapsed > limit:
                        say(f"      over its limit of {limit:.0f} s: stopping it")
                        _stop(proc)
                        break
                    say(f"      still running, {elapsed:.0f} s")
        except BaseException:
            _stop(proc)
            raise
    seconds = time.monotonic() - t0
    stdout = stdout_path.read_text(errors="replace")
    stderr = stderr_path.read_text(errors="replace")
    result = last_json_object(stdout)
    if result is not None:
        (out / f"{bench.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    problem = None
    if code is None:
        problem = f"stopped at its time limit ({limit:.0f} s)"
    elif code != 0:
        problem = f"exit code {code}"
    elif result is None:
        problem = "printed no JSON result"
    elif result.get("failures"):
        problem = f"{len(result['failures'])} failure(s): {result['failures'][0]}"
    tail = "\n".join(stderr.strip().splitlines()[-15:])
    return Outcome(bench, bench.shown(quick), seconds, code, result, tail, problem)


# --------------------------------------------------------------------------- the docs block


def _git_commit(cwd: Path) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + (" with local changes" if dirty else "")


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def render_block(outcomes: list[Outcome], *, quick: bool, started: datetime, machine: dict[str, str],
                 not_run: list[str] = ()) -> str:
    """The Markdown between (and including) the markers."""
    mode = "`--quick` (short settings: a check that every bench works, not figures to compare)" if quick \
        else "full (the documented commands)"
    lines = [
        BEGIN,
        "<!-- Written by bench/run_all.py (make bench) and replaced on every run: edit outside the markers. -->",
        "",
        "## Latest `make bench` run",
        "",
        f"{started.strftime('%Y-%m-%d %H:%M')} UTC, {mode}. "
        + ", ".join(f"{k} {v}" for k, v in machine.items()) + ".",
        "",
        "| bench | command | time | outcome | key figures | targets |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        outcome = "ok" if o.ok else f"**failed**: {o.problem}"
        lines.append(f"| {o.bench.name} | `{_cell(o.command)}` | {o.seconds:.0f} s | {_cell(outcome)} | "
                     f"{_cell(o.figures())} | {_cell(_targets(o.result) if o.result else '-')} |")
    lines.append("")
    measured = [(o.bench.name, text, met) for o in outcomes for text, met in goals(o.result)]
    if measured:
        lines += ["Targets, each measured against its baseline in the same run:", ""]
        lines += [f"- {name}: {_cell(text)}: **{_verdict(met)}**" for name, text, met in measured]
        lines.append("")
    if not_run:
        lines += [f"Not run this time: {', '.join(not_run)}.", ""]
    lines += ["Each bench's whole JSON is in `results.json` in the run's output folder (`--out`).", END]
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """`text` with the marked block replaced by `block`, or `block` appended when there is none.
    Refuses (ValueError) markers it cannot pair, rather than guess and delete someone's text."""
    begins, ends = text.count(BEGIN), text.count(END)
    if begins == 0 and ends == 0:
        return text.rstrip("\n") + "\n\n" + block + "\n"
    if begins != 1 or ends != 1:
        raise ValueError(f"expected one {BEGIN!r} and one {END!r}, found {begins} and {ends}; fix the file by hand")
    start, stop = text.index(BEGIN), text.index(END)
    if stop < start:
        raise ValueError(f"{END!r} comes before {BEGIN!r}; fix the file by hand")
    return text[:start] + block + text[stop + len(END):]


def update_docs(path: Path, block: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    new = replace_block(text, block)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(new)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- main


def machine_facts() -> dict[str, str]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
            "load average at start": f"{load[0]:.2f}", "Python": platform.python_version(),
            "commit": _git_commit(REPO)}


def run_all(benches: list[Bench], *, quick: bool, out: Path, python: str, docs: Path | None,
            cwd: Path = REPO, say: Callable[[str], None] = print, machine: dict[str, str] | None = None,
            tick_s: float = TICK_S, not_run: list[str] = ()) -> list[Outcome]:
    started = datetime.now(timezone.utc)
    machine = machine if machine is not None else machine_facts()
    outcomes: list[Outcome] = []
    for i, bench in enumerate(benches, 1):
        say(f"[{i}/{len(benches)}] {bench.name}: {bench.shown(quick)}")
        o = run_one(bench, quick=quick, out=out, python=python, cwd=cwd, say=say, tick_s=tick_s)
        outcomes.append(o)
        if o.ok:
            say(f"      done in {o.seconds:.0f} s: {o.figures()}")
            for text, met in goals(o.result):
                say(f"      {text}: {_verdict(met)}")
        else:
            say(f"      FAILED in {o.seconds:.0f} s: {o.problem}")
            if o.stderr_tail:
                say("      " + o.stderr_tail.replace("\n", "\n      "))
    summary = {"started": started.isoformat(timespec="seconds"), "quick": quick, "machine": machine,
               "benches": {o.bench.name: {"command": o.command, "seconds": round(o.seconds, 1), "exit_code": o.exit_code,
                                          "ok": o.ok, "problem": o.problem, "result": o.result} for o in outcomes}}
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    if docs is not None:
        update_docs(docs, render_block(outcomes, quick=quick, started=started, machine=machine, not_run=not_run))
    return outcomes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [b.name for b in BENCHES]
    ap.add_argument("--quick", action="store_true", help="short settings: checks every bench works (minutes, not an hour)")
    ap.add_argument("--only", action="append", choices=names, metavar="NAME", help=f"run only these ({', '.join(names)})")
    ap.add_argument("--skip", action="append", choices=names, metavar="NAME", default=[], help="leave these out")
    ap.add_argument("--list", action="store_true", help="list the benches and their commands, run nothing")
    ap.add_argument("--out", type=Path, help="folder for every bench's output and results.json (default: a new temp folder)")
    ap.add_argument("--docs", type=Path, default=DOCS, help="the Markdown file to write the results block into")
    ap.add_argument("--no-docs", action="store_true", help="write no results block")
    args = ap.parse_args(argv)
    chosen = [b for b in BENCHES if (not args.only or b.name in args.only) and b.name not in args.skip]
    if args.list:
        for b in BENCHES:
            print(f"{b.name:24} {b.what}\n{'':24} full:  {b.shown(False)}\n{'':24} quick: {b.shown(True)}")
        return 0
    if not chosen:
        ap.error("nothing to run")
    out = args.out or Path(tempfile.mkdtemp(prefix="jupiter-bench-run-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"{len(chosen)} bench(es), {'quick' if args.quick else 'full'} settings; output in {out}", flush=True)
    outcomes = run_all(chosen, quick=args.quick, out=out, python=sys.executable,
                       docs=None if args.no_docs else args.docs, say=lambda s: print(s, flush=True),
                       not_run=[b.name for b in BENCHES if b not in chosen])
    failed = [o.bench.name for o in outcomes if not o.ok]
    print(f"results: {out / 'results.json'}" + ("" if args.no_docs else f"; block written into {args.docs}"))
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
