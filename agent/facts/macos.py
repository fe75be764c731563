"""Facts on macOS: parsers for what the system tools print, and the collection that runs them.

Sources: `sysctl`, one `system_profiler
SPHardwareDataType SPThunderboltDataType -json` call, `networksetup -listallhardwareports`,
`ifconfig`, `sw_vers`, and (agent/facts/rdma.py) `rdma_ctl status` and `ibv_devices` where
macOS has them. Every parser takes text and returns plain values; none raises on missing keys,
empty or garbled output.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from agent.facts import rdma
from agent.facts.macos_net import (Ifconfig, bridge_facts, bridge_name, parse_hardware_ports, parse_ifconfig,
                                   thunderbolt_interfaces)
from agent.facts.common import PlatformFacts, clip, output_of
from agent.system import System
from shared.schemas.nodes import ThunderboltInfo, ThunderboltPort

# One process for every sysctl value. Without -n, sysctl prints "name: value" lines, so a name
# this Mac lacks (perflevel* on Intel) just goes missing instead of shifting the other values.
# hw.perflevel0.physicalcpu (performance cores) is read for when the wire schema carries it.
# sysctl.proc_translated is 1 when this process is an x86_64 one under Rosetta.
SYSCTL_ARGV = ["sysctl", "machdep.cpu.brand_string", "hw.memsize", "hw.physicalcpu",
               "hw.perflevel0.physicalcpu", "hw.optional.arm64", "sysctl.proc_translated"]
PROFILER_ARGV = ["system_profiler", "SPHardwareDataType", "SPThunderboltDataType", "-json"]
HARDWARE_PORTS_ARGV = ["networksetup", "-listallhardwareports"]
IFCONFIG_ARGV = ["ifconfig"]
SW_VERS_ARGV = ["sw_vers"]
IOREG_ARGV = ["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"]

parse_rdma_status = rdma.parse_rdma_status  # kept here too: callers find every macOS parser in this module

# system_profiler walks every bus; 5-10 s is normal on a Mac with many devices.
PROFILER_TIMEOUT = 60.0
MAX_PORTS = 64


# --------------------------------------------------------------------------- small parsers


def parse_sysctl(text: str | None) -> dict[str, str]:
    """`sysctl a b c` output ("a: value" per line) as {name: value}."""
    values: dict[str, str] = {}
    for line in (text or "").splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() and value.strip():
            values[name.strip()] = value.strip()
    return values


def parse_int(text: str | None) -> int | None:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None


def parse_sw_vers(text: str | None) -> str:
    """`sw_vers` as "macOS 15.1 (24B83)"; "" when it says nothing useful."""
    fields = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    version = fields.get("ProductVersion")
    if not version:
        return ""
    # ProductVersionExtra is the Rapid Security Response letter, e.g. "(a)".
    parts = [fields.get("ProductName") or "macOS", version, fields.get("ProductVersionExtra", "")]
    text_out = " ".join(p for p in parts if p)
    if build := fields.get("BuildVersion"):
        text_out += f" ({build})"
    return clip(text_out)


_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(GB|TB|MB)\s*$", re.IGNORECASE)


def parse_physical_memory(text: str | None) -> int | None:
    """SPHardwareDataType's "24 GB" as bytes (binary units, as macOS means them)."""
    m = _MEMORY_RE.match(str(text or ""))
    if not m:
        return None
    scale = {"MB": 2**20, "GB": 2**30, "TB": 2**40}[m.group(2).upper()]
    return int(float(m.group(1)) * scale)


_SPEED_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*Gb/s\s*$")


def parse_link_speed(text: Any) -> float | None:
    """A negotiated link speed ("40 Gb/s" -> 40.0).

    "Up to 120 Gb/s" is what the port could do, not a link, so it gives None, as does anything
    else that is not a bare "N Gb/s".
    """
    m = _SPEED_RE.match(text) if isinstance(text, str) else None
    return float(m.group(1)) if m else None


def known(value: Any) -> str:
    """A tool's value as plain text, "" when it says it does not know ("Unknown"): system_profiler
    prints that for the processor of some Intel Macs and of a process under Rosetta."""
    text = clip(str(value or ""))
    return "" if text.lower() == "unknown" else text


_IOREG_UUID_RE = re.compile(r'"IOPlatformUUID"\s*=\s*"([0-9A-Fa-f-]{8,64})"')


def parse_ioreg_uuid(text: str | None) -> str | None:
    m = _IOREG_UUID_RE.search(text or "")
    return m.group(1) if m else None


# --------------------------------------------------------------------------- system_profiler


@dataclass
class Hardware:
    chip: str = ""
    memory_bytes: int | None = None
    machine_id: str | None = None
    machine_name: str = ""  # "Mac mini": not on the wire yet
    machine_model: str = ""  # "Mac16,10": not on the wire yet


def parse_profiler(text: str | None) -> tuple[dict[str, Any], list[str]]:
    """The JSON of one system_profiler call; ({}, [problem]) when it is empty or unreadable."""
    if not text or not text.strip():
        return {}, ["system_profiler printed nothing: no chip, memory or Thunderbolt facts from it"]
    try:
        data = json.loads(text)
    except ValueError as e:
        return {}, [f"system_profiler printed unreadable JSON ({e}): no chip, memory or "
                    "Thunderbolt facts from it"]
    if not isinstance(data, dict):
        return {}, ["system_profiler printed JSON of an unexpected shape"]
    return data, []


def _items(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def parse_hardware(data: dict[str, Any]) -> Hardware:
    items = _items(data, "SPHardwareDataType")
    if not items:
        return Hardware()
    hw = items[0]
    return Hardware(
        # Apple Silicon says chip_type; Intel Macs say cpu_type ("8-Core Intel Core i9").
        chip=known(hw.get("chip_type")) or known(hw.get("cpu_type")),
        memory_bytes=parse_physical_memory(hw.get("physical_memory")),
        machine_id=clip(str(hw.get("platform_UUID") or ""), 128) or None,
        machine_name=clip(str(hw.get("machine_name") or "")),
        machine_model=clip(str(hw.get("machine_model") or "")),
    )


def _receptacles(bus: dict[str, Any]) -> list[dict[str, Any]]:
    """The bus's receptacle tags: one on Apple Silicon ("receptacle_1_tag"), two on Intel."""
    keys = sorted(k for k in bus if re.fullmatch(r"receptacle_\d+_tag", k))
    return [bus[k] for k in keys if isinstance(bus[k], dict)]


def _first_host(items: Any) -> dict[str, Any] | None:
    """The first device with its own domain UUID (another host), looking through docks/hubs.

    Docks, displays and drives have no domain_uuid_key: they are walked through, never taken.
    """
    if not isinstance(items, list):
        return None
    for item in items:
        if not isinstance(item, dict):
            continue
        if item.get("domain_uuid_key"):
            return item
        if found := _first_host(item.get("_items")):
            return found
    return None


_STATUS = {"receptacle_connected": "connected", "receptacle_no_devices_connected": "disconnected"}


def parse_bus(bus: dict[str, Any], interfaces: dict[int, str]) -> tuple[list[ThunderboltPort], list[str]]:
    """One SPThunderboltDataType bus as its port(s)."""
    ports, problems = [], []
    receptacles = _receptacles(bus)
    host = _first_host(bus.get("_items"))
    connected = [r for r in receptacles if r.get("receptacle_status_key") == "receptacle_connected"]
    for tag in receptacles:
        port_id = parse_int(tag.get("receptacle_id_key"))
        if port_id is None or not 0 <= port_id <= 64:
            problems.append(f"Thunderbolt bus {clip(str(bus.get('_name', '?')), 64)}: unreadable "
                            f"receptacle id {clip(str(tag.get('receptacle_id_key')), 32)!r}")
            continue
        status = _STATUS.get(str(tag.get("receptacle_status_key")), "unknown")
        if status == "unknown" and bus.get("_items"):
            status = "connected"
        # _items hang off the bus, not a receptacle: with two receptacles (Intel) a host can be
        # placed only when just one of them is connected.
        peer = host if status == "connected" and (len(receptacles) == 1 or connected == [tag]) else None
        ports.append(ThunderboltPort(
            port=port_id,
            status=status,
            speed_gbps=parse_link_speed(tag.get("current_speed_key")) if status == "connected" else None,
            max_speed_gbps=rdma.parse_max_speed(tag.get("current_speed_key")),
            interface=interfaces.get(port_id),
            **_peer_fields(peer),
        ))
    return ports, problems


def _peer_fields(peer: dict[str, Any] | None) -> dict[str, str | None]:
    if peer is None:
        return {"peer_uuid": None, "peer_name": None}
    # _name is the human one ("Mac Studio"); device_name_key is often a model id ("Mac15,14").
    name = clip(str(peer.get("_name") or peer.get("device_name_key") or ""))
    return {"peer_uuid": clip(str(peer["domain_uuid_key"])), "peer_name": name or None}


def parse_thunderbolt(data: dict[str, Any],
                      interfaces: dict[int, str]) -> tuple[list[ThunderboltPort], list[str], list[str]]:
    """(ports sorted by receptacle id, this Mac's domain UUIDs, problems)."""
    ports: dict[int, ThunderboltPort] = {}
    domains: list[str] = []
    problems: list[str] = []
    for bus in _items(data, "SPThunderboltDataType"):
        uuid = clip(str(bus.get("domain_uuid_key") or ""))
        if uuid and uuid not in domains:
            domains.append(uuid)
        bus_ports, bus_problems = parse_bus(bus, interfaces)
        problems += bus_problems
        for port in bus_ports:
            ports.setdefault(port.port, port)
    return [ports[k] for k in sorted(ports)][:MAX_PORTS], domains[:64], problems


# --------------------------------------------------------------------------- collection


def collect_macos(system: System) -> PlatformFacts:
    facts = PlatformFacts()
    problems = facts.problems

    sysctl = parse_sysctl(_stdout(system, SYSCTL_ARGV))
    data, profiler_problems = parse_profiler(output_of(system, PROFILER_ARGV, PROFILER_TIMEOUT))
    problems += profiler_problems
    hardware = parse_hardware(data)

    # sysctl's brand string only when system_profiler does not know the chip (Intel, Rosetta).
    facts.chip = hardware.chip or known(sysctl.get("machdep.cpu.brand_string"))
    facts.memory_total_bytes = parse_int(sysctl.get("hw.memsize")) or hardware.memory_bytes
    facts.cpu_cores = parse_int(sysctl.get("hw.physicalcpu"))
    apple_silicon = sysctl.get("hw.optional.arm64") == "1" or facts.chip.startswith("Apple")
    facts.device_type = "mac" if apple_silicon else "cpu"
    if not facts.chip:
        problems.append("could not read the chip (system_profiler and sysctl gave nothing)")
    if sysctl.get("sysctl.proc_translated") == "1":
        problems.append("the agent runs under Rosetta (x86_64 Python): MLX needs an arm64 Python "
                        "(fix: install Python for arm64 and reinstall the agent)")

    facts.machine_id = hardware.machine_id or parse_ioreg_uuid(output_of(system, IOREG_ARGV))
    facts.os_version = parse_sw_vers(output_of(system, SW_VERS_ARGV))
    if not facts.os_version:
        problems.append("sw_vers gave no macOS version")

    facts.thunderbolt = thunderbolt_full(system, data, problems)
    return facts


def thunderbolt_full(system: System, data: dict[str, Any], problems: list[str]) -> ThunderboltInfo:
    hardware_ports = parse_hardware_ports(output_of(system, HARDWARE_PORTS_ARGV))
    interfaces = thunderbolt_interfaces(hardware_ports)
    ifconfig = _ifconfig(system, problems)

    ports, domains, tb_problems = parse_thunderbolt(data, interfaces)
    problems += tb_problems
    if ports and not interfaces:
        problems.append("networksetup -listallhardwareports named no Thunderbolt ports: "
                        "Thunderbolt links have no interface")
    rdma_enabled, rdma_devices, ports = rdma.collect_rdma(system, ports, problems)
    return ThunderboltInfo(
        bridge=bridge_facts(bridge_name(hardware_ports, ifconfig), ifconfig),
        ports=ports,
        domain_uuids=domains,
        rdma_enabled=rdma_enabled,
        rdma_devices=rdma_devices,
    )


def thunderbolt_cheap(system: System, previous: ThunderboltInfo) -> ThunderboltInfo:
    """Link status from one `ifconfig`: the bridge afresh, the ports as last seen, adjusted.

    system_profiler takes seconds, so the ports come from the last full collection; what changes
    between two is whether each Thunderbolt interface still has a peer. A port whose interface
    went inactive lost its host; one whose interface came up gained one (its speed and peer
    stay unknown until the next full collection).
    """
    ifconfig = parse_ifconfig(output_of(system, IFCONFIG_ARGV))
    if not ifconfig:
        return previous
    name = previous.bridge.interface if previous.bridge else bridge_name({}, ifconfig)
    return previous.model_copy(update={
        "bridge": bridge_facts(name, ifconfig),
        "ports": [refresh_port(p, ifconfig) for p in previous.ports],
    })


def refresh_port(port: ThunderboltPort, ifconfig: dict[str, Ifconfig]) -> ThunderboltPort:
    block = ifconfig.get(port.interface) if port.interface else None
    if block is None or block.status is None:
        return port
    if port.peer_uuid and block.status == "inactive":
        return port.model_copy(update={"status": "disconnected", "speed_gbps": None,
                                       "peer_uuid": None, "peer_name": None})
    if not port.peer_uuid and block.status == "active" and port.status != "connected":
        return port.model_copy(update={"status": "connected", "speed_gbps": None})
    return port


def _stdout(system: System, argv: list[str]) -> str | None:
    """stdout even when the exit code is not 0: sysctl exits 1 for one unknown name among many."""
    result = system.run(argv)
    return result.stdout if result is not None else None


def _ifconfig(system: System, problems: list[str]) -> dict[str, Ifconfig]:
    blocks = parse_ifconfig(output_of(system, IFCONFIG_ARGV))
    if not blocks:
        problems.append("ifconfig gave no interfaces: Thunderbolt Bridge state unknown")
    return blocks
