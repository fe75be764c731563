"""Small pieces every platform's fact collection shares.

Everything here reads through a `System`, so the same code runs on the real machine and on a
folder of recorded outputs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from agent.system import System
from shared.schemas.nodes import GPUInfo, NetInterface, ThunderboltInfo
from shared.text import plain

# Wire limits from shared/schemas/nodes.py. Text from the OS is untrusted in length: a garbled command
# can print a 10 kB "model name", and one over-long string would make the whole NodeFacts invalid.
SHORT = 256
PROBLEM_LEN = 1000
MAX_PROBLEMS = 64
MAX_INTERFACES = 256
MAX_IPS = 64


@dataclass
class PlatformFacts:
    """What an OS-specific collector found; `agent.facts.collect` turns it into NodeFacts.

    None means "this platform's own tools did not say": the caller then falls back to psutil.
    """

    machine_id: str | None = None
    os_version: str = ""
    device_type: str = "cpu"
    chip: str = ""
    memory_total_bytes: int | None = None
    cpu_cores: int | None = None
    thunderbolt: ThunderboltInfo = field(default_factory=ThunderboltInfo)
    gpus: list[GPUInfo] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def clip(text: str | None, limit: int = SHORT) -> str:
    """`text` as plain text (no control characters or escape sequences, which the coordinator
    refuses: a hostname or a tool's output could hold them), stripped and cut to `limit`
    characters ("" for None)."""
    return plain(text or "").strip()[:limit]


def gib(num_bytes: int | float | None) -> float:
    """Bytes as GiB with one decimal: what Activity Monitor and `free -g` people call "GB"."""
    if not num_bytes or num_bytes < 0:
        return 0.0
    return round(num_bytes / 2**30, 1)


def output_of(system: System, argv: list[str], timeout: float = 10.0) -> str | None:
    """stdout of a command that ran and exited 0; None when it is missing, timed out or failed."""
    result = system.run(argv, timeout=timeout)
    if result is None or result.returncode != 0:
        return None
    return result.stdout


def net_interfaces(system: System) -> list[NetInterface]:
    """psutil's view of the network interfaces, cut to the wire limits."""
    out = []
    for reading in system.interfaces()[:MAX_INTERFACES]:
        speed = reading.speed_mbps if reading.speed_mbps and reading.speed_mbps > 0 else None
        out.append(NetInterface(name=clip(reading.name), up=bool(reading.up), speed_mbps=speed,
                                ips=[clip(ip) for ip in reading.ips[:MAX_IPS]]))
    return out


def hostname(system: System, problems: list[str]) -> str:
    """The node's hostname, from `hostname` (present on macOS and Linux) or the kernel's file."""
    text = output_of(system, ["hostname"])
    if not text or not text.strip():
        text = system.read_text("/proc/sys/kernel/hostname")
    name = clip((text or "").strip().split("\n", 1)[0])
    if not name:
        problems.append("could not read this node's hostname (`hostname` gave nothing)")
        return "localhost"
    return name


def derived_machine_id(host: str) -> str:
    """A stable stand-in identity when the OS offers none: the same hostname gives the same id.

    Weaker than a hardware UUID (renaming the host makes a "new" machine), so callers also
    report a problem when they fall back to it.
    """
    return "host-" + hashlib.sha256(host.encode()).hexdigest()[:32]


def finish_problems(problems: list[str]) -> list[str]:
    """Problems deduplicated in order and cut to the wire limits."""
    seen: list[str] = []
    for p in problems:
        p = clip(p, PROBLEM_LEN)
        if p and p not in seen:
            seen.append(p)
    return seen[:MAX_PROBLEMS]
