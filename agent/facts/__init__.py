"""What a node says about itself (docs/api.md#nodes): `collect` for the full facts, `collect_cheap` for
what every heartbeat carries, `collect_pressure` for heat, memory, swap and sleep (every heartbeat
too, through agent.facts.pressure.PressureReader, which caches them).

Everything is read through an `agent.system.System`, so tests run these exact functions over
outputs recorded on real Macs and Linux boxes. Nothing here raises for what a machine prints:
a missing tool or garbled output becomes an empty fact and a line in `problems`.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from typing import TypeVar

import shared
from agent.facts import runtime
from agent.facts.common import (PlatformFacts, clip, derived_machine_id, finish_problems, gib,
                                hostname, net_interfaces)
from agent.system import LocalSystem, System
from shared.backends import CUDA_FIX
from shared.schemas.nodes import MPIInfo, NodeFacts, Pressure, ThunderboltInfo

__all__ = ["collect", "collect_cheap", "collect_pressure"]

T = TypeVar("T")


def collect(system: System | None = None, *, python: str = sys.executable,
            mlx_timeout: float = 20, kept: runtime.KeptProbes | None = None) -> NodeFacts:
    """Every fact about this node; `python` is the interpreter that will run the ranks. With
    `kept`, the MLX and MPI probes run only when their answer may have changed."""
    system = system or LocalSystem()
    probe_mlx = kept.mlx if kept is not None else runtime.probe_mlx
    probe_mpi = kept.mpi if kept is not None else runtime.probe_mpi
    problems: list[str] = []
    kind = _os_kind(system.platform())

    found = _guarded(problems, "platform facts", lambda: _platform_facts(system, kind), PlatformFacts())
    problems += found.problems
    host = hostname(system, problems)
    machine_id = found.machine_id
    if not machine_id:
        machine_id = derived_machine_id(host)
        problems.append("no hardware id (IOPlatformUUID or /etc/machine-id); machine_id is derived "
                        "from the hostname, so renaming this host makes it a new node")

    memory = system.memory()
    mlx = _guarded(problems, "the MLX check", lambda: probe_mlx(system, python, mlx_timeout), runtime.MLXProbe())
    mpi = _guarded(problems, "the MPI check", lambda: probe_mpi(system, python), runtime.MPIProbe())
    problems += mlx.problems + mpi.problems + _accelerator_problems(found.device_type, mlx, python)
    if kind == "macos" and found.device_type == "cpu" and mlx.mlx_version is None:
        # The MLX problem's fix (pip install mlx) cannot work here: MLX has no Intel Mac build.
        problems.append("this is an Intel Mac: MLX is built only for Apple silicon (and Linux), so this node "
                        "cannot run MLX ranks (fix: none on this Mac; leave it out of training jobs or remove it)")

    return NodeFacts(
        machine_id=machine_id,
        hostname=host,
        os=kind,
        os_version=found.os_version,
        device_type=found.device_type,
        chip=found.chip,
        memory_gb=gib(found.memory_total_bytes or memory.total_bytes),
        memory_available_gb=gib(memory.available_bytes),
        cpu_cores=found.cpu_cores or system.cpu_count(),
        python_version=mlx.python_version or _own_python_version(python),
        python_executable=clip(python),
        mlx_version=mlx.mlx_version,
        mlx_device=mlx.mlx_device,
        mlx_lm_version=mlx.mlx_lm_version,
        mpi=MPIInfo(implementation=mpi.implementation, version=mpi.version),
        thunderbolt=found.thunderbolt,
        interfaces=net_interfaces(system),
        gpus=found.gpus,
        problems=finish_problems(problems),
        agent_version=shared.__version__,
    )


def collect_cheap(system: System | None, previous: NodeFacts) -> tuple[float, ThunderboltInfo]:
    """(available memory in GB, current Thunderbolt link status), cheap enough for every heartbeat.

    macOS re-reads `ifconfig` only (never system_profiler, which takes seconds) and keeps the
    ports of `previous`, adjusted for links that came or went; Linux re-reads sysfs.
    """
    system = system or LocalSystem()
    available = gib(system.memory().available_bytes)
    kind = _os_kind(system.platform())
    try:
        if kind == "macos":
            from agent.facts import macos

            return available, macos.thunderbolt_cheap(system, previous.thunderbolt)
        if kind == "linux":
            from agent.facts import linux

            return available, linux.thunderbolt_sysfs(system)
    except Exception:
        # A heartbeat has no room for problems: keep the last known links; the next full
        # collection runs the same parsers and reports what went wrong.
        pass
    return available, previous.thunderbolt


def collect_pressure(system: System | None = None, *, keep_awake: bool | None = None) -> Pressure:
    """Heat, memory pressure, swap, the sleep timer and the power source, read now. `keep_awake`
    is the agent's own KeepAwake.state. Never raises: what cannot be read is None."""
    from agent.facts import pressure

    return pressure.read_pressure(system or LocalSystem(), keep_awake=keep_awake)


def _os_kind(name: str) -> str:
    return {"Darwin": "macos", "Linux": "linux"}.get(name, "other")


def _platform_facts(system: System, kind: str) -> PlatformFacts:
    # Each OS's parsers load on first use: a running agent keeps only its own OS's in memory.
    if kind == "macos":
        from agent.facts import macos

        return macos.collect_macos(system)
    if kind == "linux":
        from agent.facts import linux

        return linux.collect_linux(system)
    return PlatformFacts(problems=[f"no fact collection for {system.platform() or 'this OS'} yet: "
                                   "only psutil's memory, cores and interfaces are reported"])


def _accelerator_problems(device_type: str, mlx: runtime.MLXProbe, python: str) -> list[str]:
    """MLX that works but misses the node's GPU: training would crawl on the CPU."""
    if mlx.mlx_device != "cpu":
        return []
    if device_type == "mac":
        return [f"MLX from {python} sees no Metal GPU and would train on the CPU (an x86 Python "
                "under Rosetta, or a CPU-only mlx build?)"]
    if device_type == "nvidia":
        # mlx-cpu and MLX's CUDA build ship the same library file: the CPU one goes first.
        return [f"MLX from {python} has no CUDA backend and would train on the CPU (fix: {CUDA_FIX})"]
    return []


def _own_python_version(python: str) -> str:
    # The probe failed; the agent's own version is right only if the ranks use this interpreter.
    return platform.python_version() if python == sys.executable else ""


def _guarded(problems: list[str], what: str, fn: Callable[[], T], default: T) -> T:
    """fn(), or `default` plus a problem if it raised.

    The parsers are written not to raise; this is the backstop that keeps a node registering
    (and the problem visible in `jupiter check`) when some Mac prints what nobody foresaw.
    """
    try:
        return fn()
    except Exception as e:  # reported as a problem, never swallowed silently
        problems.append(f"internal error during {what}: {type(e).__name__}: {e}")
        return default
