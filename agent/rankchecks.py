"""Why a rank cannot start on this node, checked as its order arrives (so the job fails at once
with the reason, not after MLX's own timeouts): a port someone else holds or an address that is
not here, an nccl rank's GPU outside those the agent was given, and a jaccl rank's RDMA device
that this Mac no longer has."""

from __future__ import annotations

import errno
import json
import os
import socket
from collections.abc import Mapping

from agent.facts.rdma import read_ibv_devices
from agent.system import System
from shared.backends import RDMA, RENDEZVOUS
from shared.schemas.ranks import RankAssignment


def port_problem(a: RankAssignment) -> str | None:
    """Why this rank could not listen where it must, or None: a ring rank on each address of its
    line of the hostfile; rank 0 of jaccl, jaccl-ring and nccl on the coordinator address (JACCL's
    or NCCL's rendezvous, which rank 0 serves). MLX binds with SO_REUSEPORT, so a port someone
    else holds would silently pair our rank with theirs; a plain bind (without it) refuses instead,
    and so does an address that is not on this node."""
    if a.backend == "ring":
        entries = a.hostfile[a.rank] if a.hostfile and a.rank < len(a.hostfile) else []
    else:
        coordinator = coordinator_of(a.mlx_env) if a.backend in RENDEZVOUS and a.rank == 0 else None
        entries = [coordinator] if coordinator else []
    return next((p for p in map(_bind_problem, entries) if p), None)


def coordinator_of(mlx_env: Mapping[str, str]) -> str | None:
    """The "host:port" rank 0 serves for the other ranks, from a jaccl* or nccl `mlx_env`."""
    if "NCCL_HOST_IP" in mlx_env and "NCCL_PORT" in mlx_env:
        return f"{mlx_env['NCCL_HOST_IP']}:{mlx_env['NCCL_PORT']}"
    return mlx_env.get("MLX_JACCL_COORDINATOR")


def _bind_problem(entry: str) -> str | None:
    host, _, port = entry.rpartition(":")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As MLX does: a closed connection's TIME_WAIT must not count as "in use".
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, int(port)))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return f"cannot start: port {port} on {host} is already in use by another program"
        if exc.errno == errno.EADDRNOTAVAIL:
            return f"cannot start: address {host} is not on this node (check its --host / network_interface)"
        return f"cannot start: cannot listen on {entry}: {exc.strerror or exc}"
    except ValueError:  # not a port number: the coordinator sent something MLX could not use either
        return f"cannot start: {entry!r} is not host:port"
    return None


def visible_gpu(assigned: str, agent_value: str | None) -> str | None:
    """The CUDA_VISIBLE_DEVICES of an nccl rank, None when this node has no such GPU. `assigned` is
    the coordinator's: the rank's local index, as `mlx.launch --hosts h -n k` gives it. Deviation
    from mlx.launch: when the agent itself runs with CUDA_VISIBLE_DEVICES set ("2,3": the GPUs this
    node gives Jupiter), local rank i gets the i-th of those, never a GPU outside them."""
    if agent_value is None:
        return assigned
    given = [g.strip() for g in agent_value.split(",") if g.strip()]
    return given[int(assigned)] if assigned.isdigit() and int(assigned) < len(given) else None


def gpu_problem(a: RankAssignment, environ: Mapping[str, str] | None = None) -> str | None:
    """Why an nccl rank cannot get its GPU here (see visible_gpu), or None."""
    assigned = a.mlx_env.get("CUDA_VISIBLE_DEVICES")
    mine = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    if assigned is None or visible_gpu(assigned, mine) is not None:
        return None
    return (f"cannot start: it needs GPU {assigned} of the agent's CUDA_VISIBLE_DEVICES={mine!r}, "
            f"which does not list that many (fewer GPUs given to Jupiter than ranks on this node)")


def named_devices(a: RankAssignment) -> list[str]:
    """The RDMA devices a jaccl or jaccl-ring rank opens: the names in its row of MLX_IBV_DEVICES
    (row i is rank i's Mac, one rank per Mac; null on the diagonal and where there is no cable)."""
    text = a.mlx_files.get("MLX_IBV_DEVICES") if a.backend in RDMA else None
    try:
        matrix = json.loads(text) if text else None
    except ValueError:  # not JSON: MLX will say so itself
        return []
    row = matrix[a.rank] if isinstance(matrix, list) and a.rank < len(matrix) else None
    return list(dict.fromkeys(d for d in row if isinstance(d, str))) if isinstance(row, list) else []


def devices_now(system: System) -> list[str] | None:
    """The RDMA devices this Mac lists now, read as fact collection reads them (`ibv_devices`);
    None when that cannot be told: not macOS, no ibv_devices (before macOS 26.2), or it failed."""
    if system.platform() != "Darwin":
        return None
    return read_ibv_devices(system, [])


def device_problem(a: RankAssignment, devices_now: list[str] | None) -> str | None:
    """Why a jaccl or jaccl-ring rank cannot open its RDMA devices here, or None. The coordinator
    named them from this Mac's facts at placement, and macOS renames them at every reboot: a Mac
    rebooted since would hand MLX a name it no longer has, and MLX fails obscurely. `devices_now`
    None (cannot tell) passes: MLX reports what it finds."""
    if devices_now is None:
        return None
    gone = [d for d in named_devices(a) if d not in devices_now]
    if not gone:
        return None
    what = f"RDMA device {gone[0]} is" if len(gone) == 1 else f"RDMA devices {', '.join(gone)} are"
    has = f"it has {', '.join(devices_now)}" if devices_now else "ibv_devices lists none: is RDMA still enabled?"
    return (f"cannot start: {what} not on this Mac now ({has}): device names change at every reboot; "
            f"the job must be placed again (resubmit it, or let it restart)")


def rdma_problem(a: RankAssignment, system: System) -> str | None:
    """device_problem over what this Mac lists now; ibv_devices runs only for a rank that names
    devices (a jaccl or jaccl-ring rank), once per rank as its order arrives."""
    return device_problem(a, devices_now(system)) if named_devices(a) else None
