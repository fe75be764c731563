"""A 2-rank job that wedges the way real ones do: both ranks join the ring and say so, then
rank 1 blocks for ever without a word (its process sleeping) while rank 0 waits for it in an
all_sum that never returns. With --tick S, both ranks instead print a line every S seconds."""

import argparse
import time

import mlx.core as mx

parser = argparse.ArgumentParser()
parser.add_argument("--tick", type=float, default=0.0)
args = parser.parse_args()
group = mx.distributed.init(strict=True, backend="any")
print(f"rank {group.rank()} of {group.size()} ready", flush=True)
while args.tick:
    print(f"rank {group.rank()} tick", flush=True)
    time.sleep(args.tick)
if group.rank() == 1:
    time.sleep(10**6)
mx.eval(mx.distributed.all_sum(mx.ones(4), group=group))
