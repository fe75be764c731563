"""A rank for the tests: all-sums a known array with MLX and prints what it got.

    python allsum.py [--backend ring|mpi|any] [--sleep S] [--fail-rank R --code C] [--progress N]
"""

import argparse
import os
import sys
import time

import mlx.core as mx

ap = argparse.ArgumentParser()
ap.add_argument("--backend", default="any")
ap.add_argument("--sleep", type=float, default=0)
ap.add_argument("--fail-rank", type=int, default=-1)
ap.add_argument("--code", type=int, default=3)
ap.add_argument("--progress", type=int, default=0)
args = ap.parse_args()

group = mx.distributed.init(backend=args.backend, strict=True)
rank, size = group.rank(), group.size()
x = mx.distributed.all_sum(mx.arange(4, dtype=mx.float32) * (rank + 1), group=group)
mx.eval(x)
print(f"rank {rank} of {size} job {os.environ.get('JUPITER_JOB_ID')} jrank {os.environ.get('JUPITER_RANK')} "
      f"sum {[int(v) for v in x.tolist()]}", flush=True)
for step in range(1, args.progress + 1):
    from shared.progress import report

    report(step=step, total_steps=args.progress, epoch=1, loss=10.0 / step)
    time.sleep(0.02)
if rank == args.fail_rank:
    print(f"rank {rank} failing on purpose with {args.code}", flush=True)
    sys.exit(args.code)
time.sleep(args.sleep)
