"""Facts on Linux: /proc, /etc, /sys/bus/thunderbolt and nvidia-smi, all through the `System`."""

from __future__ import annotations

import re

from agent.facts.common import PlatformFacts, clip
from agent.system import System
from shared.schemas.nodes import GPUInfo, ThunderboltInfo, ThunderboltPort

TB_DEVICES = "/sys/bus/thunderbolt/devices"
NVIDIA_SMI_ARGV = ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]
MACHINE_ID_FILES = ["/etc/machine-id", "/var/lib/dbus/machine-id"]


# --------------------------------------------------------------------------- parsers


def parse_os_release(text: str | None) -> str:
    """PRETTY_NAME from /etc/os-release ("Ubuntu 24.04.1 LTS"), else NAME VERSION."""
    fields = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"').strip("'")
    return fields.get("PRETTY_NAME") or " ".join(
        v for v in (fields.get("NAME"), fields.get("VERSION")) if v)


def parse_cpu_model(text: str | None) -> str:
    """The CPU's name from /proc/cpuinfo: x86 says "model name"; many Arm boards say "Model"."""
    wanted = ("model name", "Model", "Hardware", "cpu model")
    found: dict[str, str] = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key in wanted and value.strip() and key not in found:
            found[key] = value.strip()
    return clip(next((found[k] for k in wanted if k in found), ""))


def parse_nvidia_smi(text: str | None) -> list[GPUInfo]:
    """`nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits`: "NAME, MiB"."""
    gpus = []
    for line in (text or "").splitlines():
        name, sep, mib = line.rpartition(",")
        if not sep or not name.strip():
            continue
        try:
            memory = round(float(mib.strip()) / 1024, 1)
        except ValueError:
            memory = None  # "[N/A]" on some boards
        gpus.append(GPUInfo(name=clip(name), memory_gb=memory))
    return gpus[:64]


def gpu_chip(gpus: list[GPUInfo]) -> str:
    """What an NVIDIA node computes with, as people name it: "2 x NVIDIA RTX A6000"."""
    names = [g.name for g in gpus]
    if len(set(names)) == 1:
        return names[0] if len(names) == 1 else f"{len(names)} x {names[0]}"
    return clip(" + ".join(names))


_SPEED_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*Gb/s")


def link_speed(rx_speed: str | None, rx_lanes: str | None) -> float | None:
    """rx_speed is per lane ("20.0 Gb/s"); the link is that times rx_lanes (1 or 2)."""
    m = _SPEED_RE.match(rx_speed or "")
    if not m:
        return None
    try:
        lanes = int((rx_lanes or "1").strip())
    except ValueError:
        lanes = 1
    return float(m.group(1)) * max(lanes, 1)


# --------------------------------------------------------------------------- /sys/bus/thunderbolt

# Device names: "domain0"; "0-0" the host router of domain 0; "0-1" whatever hangs off its
# adapter 1 (a device or, for another host, an XDomain); "0-301" one hop further; "0-1.1" a
# service of XDomain 0-1; "0-0:1.1" a retimer. The kernel's DEVTYPE tells devices from hosts.
_ROUTER_RE = re.compile(r"^(\d+)-([0-9a-f]+)$")


def _devtype(system: System, name: str) -> str:
    for line in (system.read_text(f"{TB_DEVICES}/{name}/uevent") or "").splitlines():
        if line.startswith("DEVTYPE="):
            return line.split("=", 1)[1].strip()
    return ""


def _attr(system: System, name: str, attr: str) -> str | None:
    text = system.read_text(f"{TB_DEVICES}/{name}/{attr}")
    return text.strip() if text and text.strip() else None


def thunderbolt_sysfs(system: System) -> ThunderboltInfo:
    """Domains, ports and peers from /sys/bus/thunderbolt/devices.

    Port numbers are the host router's adapter numbers (what Linux shows), not the labels on
    the case. UUIDs are upper-cased to match what macOS prints for the same domains.
    """
    names = system.listdir(TB_DEVICES)
    domains: list[str] = []
    ports: dict[int, ThunderboltPort] = {}
    for name in names:
        m = _ROUTER_RE.match(name)
        if not m:
            continue
        route = int(m.group(2), 16)
        if route == 0:  # this host's router: its UUID is this domain's
            if uuid := _attr(system, name, "unique_id"):
                domains.append(clip(uuid.upper()))
            for entry in system.listdir(f"{TB_DEVICES}/{name}"):
                if pm := re.fullmatch(r"usb4_port(\d+)", entry):
                    number = int(pm.group(1))
                    if 0 <= number <= 64:
                        ports.setdefault(number, ThunderboltPort(port=number, status="disconnected"))
            continue
        # A route over 0xff is a second hop (behind a dock or another device), not a port of ours.
        if route > 64:
            continue
        is_host = _devtype(system, name) == "thunderbolt_xdomain"
        uuid = _attr(system, name, "unique_id") if is_host else None
        ports[route] = ThunderboltPort(
            port=route,
            status="connected",
            speed_gbps=link_speed(_attr(system, name, "rx_speed"), _attr(system, name, "rx_lanes")),
            peer_uuid=clip(uuid.upper()) if uuid else None,
            peer_name=(clip(_attr(system, name, "device_name")) or None) if is_host else None,
        )
    return ThunderboltInfo(ports=[ports[k] for k in sorted(ports)][:64], domain_uuids=domains[:64])


# --------------------------------------------------------------------------- collection


def machine_id(system: System) -> str | None:
    for path in MACHINE_ID_FILES:
        if value := clip(system.read_text(path), 128):
            return value
    return None


def collect_linux(system: System) -> PlatformFacts:
    facts = PlatformFacts()
    facts.machine_id = machine_id(system)
    facts.chip = parse_cpu_model(system.read_text("/proc/cpuinfo"))

    distro = parse_os_release(system.read_text("/etc/os-release")) or "Linux"
    kernel = clip(system.read_text("/proc/sys/kernel/osrelease"))
    facts.os_version = clip(f"{distro}, kernel {kernel}" if kernel else distro)

    facts.gpus = nvidia_gpus(system, facts.problems)
    if facts.gpus:
        facts.device_type = "nvidia"
        # On an NVIDIA node the GPU is what trains; the CPU model says little.
        facts.chip = gpu_chip(facts.gpus)
    facts.thunderbolt = thunderbolt_sysfs(system)
    return facts


def nvidia_gpus(system: System, problems: list[str]) -> list[GPUInfo]:
    result = system.run(NVIDIA_SMI_ARGV, timeout=15.0)
    if result is None:
        return []  # no nvidia-smi: not an NVIDIA node
    if result.returncode != 0:
        why = next((line for line in (result.stdout + "\n" + result.stderr).splitlines() if line.strip()), "")
        problems.append(f"nvidia-smi failed (exit {result.returncode}): {clip(why, 300)}".rstrip(": "))
        return []
    gpus = parse_nvidia_smi(result.stdout)
    if not gpus:
        problems.append("nvidia-smi listed no GPUs")
    return gpus
