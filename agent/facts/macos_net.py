"""Facts on macOS from its network tools: which interface each Thunderbolt port is
(`networksetup -listallhardwareports`), and each interface's state, addresses and bridge members
(`ifconfig`), from which the Thunderbolt Bridge is read. Parsers over text: none raises on
missing, empty or garbled output."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agent.facts.common import clip
from shared.schemas.nodes import ThunderboltBridge


# --------------------------------------------------------------------------- networksetup


_TB_PORT_RE = re.compile(r"^Thunderbolt (\d+)$")


def parse_hardware_ports(text: str | None) -> dict[str, str]:
    """`networksetup -listallhardwareports` as {"Thunderbolt 1": "en2", "Wi-Fi": "en1", ...}."""
    ports: dict[str, str] = {}
    current: str | None = None
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "Hardware Port":
            current = value
        elif key == "Device" and current and value:
            ports[current] = value
            current = None
    return ports


def thunderbolt_interfaces(hardware_ports: dict[str, str]) -> dict[int, str]:
    """Receptacle id -> interface: "Thunderbolt N" is the network port of receptacle N.

    Only exact "Thunderbolt N" names count: "Thunderbolt Bridge" is the bridge and
    "Thunderbolt Ethernet Slot 1" is an Ethernet adapter, not a receptacle.
    """
    out = {}
    for port, device in hardware_ports.items():
        if m := _TB_PORT_RE.match(port):
            out[int(m.group(1))] = device
    return out


# --------------------------------------------------------------------------- ifconfig


@dataclass
class Ifconfig:
    """One interface's block of `ifconfig` output."""

    name: str
    flags: list[str] = field(default_factory=list)
    status: str | None = None  # "active" | "inactive" | None when not printed
    inet: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)

    @property
    def up(self) -> bool:
        # UP is the admin state; "status: inactive" means no member has a link.
        return "UP" in self.flags and self.status != "inactive"


_IF_HEADER_RE = re.compile(r"^([A-Za-z0-9_.-]+): flags=[0-9a-fA-F]+<([^>]*)>")


def parse_ifconfig(text: str | None) -> dict[str, Ifconfig]:
    blocks: dict[str, Ifconfig] = {}
    current: Ifconfig | None = None
    for line in (text or "").splitlines():
        if m := _IF_HEADER_RE.match(line):
            current = blocks.setdefault(m.group(1), Ifconfig(m.group(1)))
            current.flags = [f for f in m.group(2).split(",") if f]
            continue
        if current is None or not line[:1].isspace():
            continue
        words = line.split()
        if len(words) >= 2 and words[0] == "inet":
            current.inet.append(words[1])
        elif len(words) >= 2 and words[0] == "member:":
            current.members.append(words[1])
        elif len(words) >= 2 and words[0] == "status:":
            current.status = words[1]
    return blocks


def bridge_name(hardware_ports: dict[str, str], ifconfig: dict[str, Ifconfig]) -> str | None:
    """The Thunderbolt Bridge's interface: networksetup names it; bridge0 is macOS's default."""
    if name := hardware_ports.get("Thunderbolt Bridge"):
        return name
    return "bridge0" if "bridge0" in ifconfig else None


def bridge_facts(name: str | None, ifconfig: dict[str, Ifconfig]) -> ThunderboltBridge | None:
    if name is None:
        return None
    block = ifconfig.get(name)
    if block is None:
        return ThunderboltBridge(interface=clip(name), up=False)
    # IPv4 only: the fe80:: address needs a scope and cannot go in a hostfile.
    return ThunderboltBridge(interface=clip(name), ips=[clip(ip) for ip in block.inet[:32]],
                             up=block.up, members=[clip(m) for m in block.members[:32]])
