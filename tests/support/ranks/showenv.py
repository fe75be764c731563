"""A rank for tests/system/test_mlx_launch_env.py: prints the MLX_*, NCCL_* and CUDA_* variables it
was started with, and the text of the files that the variables named with --files point to, as one
line `RANKENV {...}`, then exits.

    python showenv.py [--files MLX_IBV_DEVICES,MLX_HOSTFILE]

It imports nothing of MLX and never initialises a distributed group: no JACCL, no NCCL, no
connection to any address. Reading its environment is all it does.
"""

import json
import os
import sys

PREFIXES = ("MLX_", "NCCL_", "CUDA_")

names = sys.argv[2].split(",") if len(sys.argv) > 2 and sys.argv[1] == "--files" else []
env = {k: v for k, v in os.environ.items() if k.startswith(PREFIXES)}
files = {}
for name in names:
    if name in env:
        with open(env[name], "rb") as f:  # the bytes, kept exact through JSON
            files[name] = f.read().decode("utf-8", "surrogateescape")
# One write of one short line: mlx.launch relays each rank's output in chunks, so it stays whole.
sys.stdout.write("RANKENV " + json.dumps({"env": env, "files": files, "cwd": os.getcwd()}, sort_keys=True) + "\n")
sys.stdout.flush()
