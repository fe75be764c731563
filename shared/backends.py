"""MLX's backends as Jupiter runs them: their names, which ones the agents start themselves, the
order of preference when a job names none, and the variables and files each rank of an
agent-started RDMA or NCCL job gets (the same as `mlx.launch` gives it: tests/system/
test_mlx_launch_env.py compares the two)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

JOB_BACKENDS = ("ring", "mpi", "jaccl", "jaccl-ring", "nccl")
AGENT_STARTED = frozenset({"ring", "jaccl", "jaccl-ring", "nccl"})  # no mpirun, no SSH
RDMA = frozenset({"jaccl", "jaccl-ring"})
# Rank 0 serves a rendezvous every other rank dials (MLX_JACCL_COORDINATOR, NCCL_HOST_IP:NCCL_PORT).
RENDEZVOUS = RDMA | {"nccl"}
# Where neither the job nor cluster.yaml names a backend: the first of these the nodes support.
# JACCL (RDMA over Thunderbolt 5) has about a tenth of ring's latency; its ring variant needs only
# neighbours cabled; NCCL is the only one that uses NVIDIA GPUs; ring works on any TCP network.
FASTEST_FIRST = ("jaccl", "jaccl-ring", "nccl", "ring")

MIN_MACOS = (26, 2)  # the first macOS with RDMA over Thunderbolt
RDMA_ENABLE_FIX = ("enable RDMA once from recoveryOS: hold the power button, Options > Utilities > "
                   "Terminal, run `rdma_ctl enable`, then reboot")
# Both mlx-cpu and mlx-cuda-12 ship mlx/lib/libmlx.so: removing one after the other was installed
# leaves MLX without its library, so both go first.
CUDA_FIX = ("install MLX's CUDA build in the agent's Python: `pip uninstall -y mlx-cpu mlx-cuda-12 && "
            "pip install 'mlx[cuda12]'` ('mlx[cuda13]' for CUDA 13; `make venv-cuda` in a checkout), "
            "then restart the agent")

# The variables Jupiter gives a rank for its backend (besides MLX_RANK / MLX_HOSTFILE for ring).
BACKEND_VARS = frozenset({"MLX_JACCL_COORDINATOR", "MLX_JACCL_RING", "MLX_IBV_DEVICES", "NCCL_HOST_IP",
                          "NCCL_PORT", "MLX_WORLD_SIZE", "CUDA_VISIBLE_DEVICES"})
# Names MLX's JACCL reads before the MLX_* ones (MLX 0.32 and later): a job may not set them, or
# its env would override what Jupiter gives the ranks.
JACCL_ALIASES = frozenset({"JACCL_RANK", "JACCL_IBV_DEVICES", "JACCL_COORDINATOR", "JACCL_RING"})
# Of those, the ones that name a file the agent writes (the value on the wire is the file's text).
FILE_VARS = frozenset({"MLX_IBV_DEVICES"})

_MACOS = re.compile(r"^macOS (\d+)(?:\.(\d+))?")


def macos_version(os_version: str | None) -> tuple[int, int] | None:
    """(major, minor) of a node's `os_version` ("macOS 26.2 (25C56)"), None when not macOS."""
    m = _MACOS.match(os_version or "")
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


def backend_vars(backend: str, *, world_size: int, local_rank: int, coordinator: str | None,
                 devices: Sequence[Sequence[str | None]] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """(variables, files) for one rank: `files` maps a variable to the text of the file it names.

    `coordinator` is "host:port": rank 0's address and a port free there (JACCL's rendezvous, or
    NCCL's). `devices` is the RDMA device matrix (row i, column j: the device on node i that is
    cabled to node j; null on the diagonal), the same for every rank. As `mlx.launch` writes the
    matrix with `echo`, the file is its JSON and one newline."""
    if backend in RDMA:
        if not coordinator or devices is None:
            raise ValueError(f"{backend}: a coordinator address and a device matrix are needed")
        env = {"MLX_JACCL_COORDINATOR": coordinator}
        if backend == "jaccl-ring":
            env["MLX_JACCL_RING"] = "1"
        return env, {"MLX_IBV_DEVICES": json.dumps([list(row) for row in devices]) + "\n"}
    if backend == "nccl":
        if not coordinator or ":" not in coordinator:
            raise ValueError("nccl: a coordinator address host:port is needed")
        host, port = coordinator.rsplit(":", 1)
        return {"NCCL_HOST_IP": host, "NCCL_PORT": port, "MLX_WORLD_SIZE": str(world_size),
                "CUDA_VISIBLE_DEVICES": str(local_rank)}, {}
    return {}, {}
