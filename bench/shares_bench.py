"""Shares of the global batch: 2 ranks of the built-in trainer, rank 1 slowed to about half speed,
with equal shares against `auto` (in proportion to each rank's measured speed).

    .venv/bin/python bench/shares_bench.py [--steps 40] [--reps 1] [--slow 0.5] [--preset tiny]

Each run is `python -m agent.training --domain sample --preset tiny --steps N --shares MODE
--checkpoint-every 0 --no-eval-every-epoch --log-every 1` as 2 ranks by MLX ring on this machine
(a hostfile of two free loopback ports), without Jupiter, with JUPITER_TRAIN_SLOWDOWN=1:0.5 in
both ranks' environment: rank 1 busy-spins after its forward and backward for as long again as
they took, as a Mac of half the speed would (a test and benchmark aid of the trainer, not a user
setting). Equal shares give each rank 8 of the 16 sequences, so rank 0 waits for rank 1 every
step; `auto` starts equal and moves sequences to rank 0 once it has measured both.

Figures, from rank 0's output: the whole run's tokens/s (the trainer's own figure on its final
line: every step, the steps before `auto` moves anything included), and the steady tokens/s (the
median of the per-step figures over the second half of the run). Repetitions alternate the order
of the two modes. The goal: auto's whole-run tokens/s above equal's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shared.progress import parse  # noqa: E402
from tests.support.harness import free_ports  # noqa: E402

RUN_TIMEOUT_S = 300.0
SHARES_RE = re.compile(r"shares: (rank 0 \d+/\d+, rank 1 \d+/\d+) \(measured")



def run_once(mode: str, args: argparse.Namespace, folder: Path) -> dict:
    folder.mkdir(parents=True)
    hostfile = folder / "hostfile.json"
    hostfile.write_text(json.dumps([[f"127.0.0.1:{p}"] for p in free_ports(2)]))
    argv = [sys.executable, "-m", "agent.training", "--domain", "sample", "--preset", args.preset,
            "--steps", str(args.steps), "--shares", mode, "--checkpoint-every", "0", "--no-eval-every-epoch",
            "--log-every", "1", "--checkpoint-dir", str(folder / "ck")]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JUPITER_", "MLX_"))}
    procs = []
    t0 = time.monotonic()
    for rank in range(2):
        env = dict(base, PYTHONUNBUFFERED="1", MLX_RANK=str(rank), MLX_HOSTFILE=str(hostfile),
                   JUPITER_TRAIN_SLOWDOWN=f"1:{args.slow}")
        with open(folder / f"rank{rank}.out", "w") as out, open(folder / f"rank{rank}.err", "w") as err:
            procs.append(subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                          start_new_session=True))
    try:
        codes = [p.wait(timeout=RUN_TIMEOUT_S) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    wall = time.monotonic() - t0
    text = (folder / "rank0.out").read_text()
    if codes != [0, 0]:
        raise RuntimeError(f"{mode}: exit codes {codes}: {(folder / 'rank0.err').read_text()[-2000:]}"
                           f"{(folder / 'rank1.err').read_text()[-2000:]}")
    records = [r for r in (parse(line) for line in text.splitlines()) if r is not None]
    final = next(r for r in records if "final_loss" in r)
    steps = [r for r in records if "final_loss" not in r and r.get("tokens_per_s")]
    second_half = [r["tokens_per_s"] for r in steps if r["step"] > args.steps // 2]
    return {"mode": mode, "tokens_per_s": final["tokens_per_s"], "steady_tokens_per_s": statistics.median(second_half),
            "wall_s": round(wall, 2), "final_loss": final["final_loss"], "shares_seen": SHARES_RE.findall(text)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--slow", type=float, default=0.5, help="rank 1's speed (0.5 = half)")
    ap.add_argument("--preset", default="tiny")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="jupiter-shares-bench-"))
    runs: dict[str, list[dict]] = {"equal": [], "auto": []}
    for rep in range(args.reps):
        for mode in (("equal", "auto") if rep % 2 == 0 else ("auto", "equal")):
            r = run_once(mode, args, root / f"{rep}-{mode}")
            runs[mode].append(r)
            print(f"rep {rep + 1} {mode}: {r['tokens_per_s']:,.0f} tokens/s (steady {r['steady_tokens_per_s']:,.0f}), "
                  f"{r['wall_s']} s; shares {r['shares_seen'] or 'unchanged'}", file=sys.stderr, flush=True)
    med = {m: statistics.median(r["tokens_per_s"] for r in rs) for m, rs in runs.items()}
    steady = {m: statistics.median(r["steady_tokens_per_s"] for r in rs) for m, rs in runs.items()}
    ratio = round(med["auto"] / med["equal"], 3)
    result = {
        "preset": args.preset, "steps": args.steps, "reps": args.reps, "rank1_speed": args.slow,
        "tokens_per_s": {m: round(v, 1) for m, v in med.items()},
        "steady_tokens_per_s": {m: round(v, 1) for m, v in steady.items()},
        "ratio_auto_over_equal": ratio,
        "steady_ratio_auto_over_equal": round(steady["auto"] / steady["equal"], 3),
        "runs": runs, "output": str(root),
        "goals": [{"name": f"auto / equal shares, tokens/s with rank 1 at {args.slow}x speed", "value": ratio,
                   "op": ">", "target": 1.0, "unit": "x"}],
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
