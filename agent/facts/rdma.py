"""RDMA over Thunderbolt on macOS: what `rdma_ctl status` and `ibv_devices` print, and what the two
mean beside the ports' speeds.

`rdma_ctl` (macOS 26.2+) says whether RDMA was enabled from recoveryOS; it says "enabled" on
Thunderbolt 4 Macs too, where RDMA never works. `ibv_devices` lists the devices MLX's JACCL opens,
one per Thunderbolt 5 port, named after the port's interface (`rdma_en2`); the names can change
at every reboot, so they are read at every full collection. Like every parser here, none of
these raises on garbled output.
"""

from __future__ import annotations

import re
from typing import Any

from agent.facts.common import clip
from agent.system import System
from shared.schemas.nodes import ThunderboltPort

RDMA_ARGV = ["rdma_ctl", "status"]
IBV_DEVICES_ARGV = ["ibv_devices"]

TB5_GBPS = 80.0  # a Thunderbolt 5 link runs at 80 Gb/s (120 one way); Thunderbolt 4 at 40 at most
MAX_DEVICES = 64
REBOOT_FIX = ("reboot once more after `rdma_ctl enable`, then re-run `ibv_devices`; the agent re-reads "
              "it when it restarts")
TB4_FIX = ("JACCL needs Macs with Thunderbolt 5 ports, cabled directly with Thunderbolt 5 cables; "
           "use the ring backend between these Macs")

_DEVICE_RE = re.compile(r"^rdma_[A-Za-z0-9_.-]{1,60}$")
# "Up to 120 Gb/s"; Intel Macs print "Up to 40 Gb/s x2" (two lanes, each port still 40 at most).
_MAX_SPEED_RE = re.compile(r"^\s*Up to (\d+(?:\.\d+)?)\s*Gb/s(?:\s+x\d+)?\s*$")


def parse_rdma_status(text: str | None) -> bool | None:
    """`rdma_ctl status` prints "enabled" or "disabled"; anything else is unknown."""
    word = (text or "").strip().lower()
    return {"enabled": True, "disabled": False}.get(word)


def parse_ibv_devices(text: str | None) -> list[str] | None:
    """The device names `ibv_devices` lists; [] for its header alone, None when it did not answer.

    Its output is two header lines ("device / node GUID" and dashes), then one device per line
    with its GUID. Only first-column words shaped like MLX's device names count, as
    `mlx.distributed_config` keeps only names starting with "rdma_".
    """
    if text is None:
        return None
    devices: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if words and _DEVICE_RE.match(words[0]) and words[0] not in devices:
            devices.append(words[0])
    return devices[:MAX_DEVICES]


def parse_max_speed(text: Any) -> float | None:
    """What an empty port can do ("Up to 120 Gb/s" -> 120.0); None for a negotiated speed or
    anything else (macOS prints the capability only while nothing is plugged in)."""
    m = _MAX_SPEED_RE.match(text) if isinstance(text, str) else None
    return float(m.group(1)) if m else None


def attach_devices(ports: list[ThunderboltPort], devices: list[str] | None) -> list[ThunderboltPort]:
    """Each port with its RDMA device: "rdma_" + its interface, when `ibv_devices` lists that name."""
    listed = set(devices or [])
    out = []
    for p in ports:
        name = f"rdma_{p.interface}" if p.interface else None
        out.append(p.model_copy(update={"rdma_device": name if name in listed else None}))
    return out


def read_ibv_devices(system: System, problems: list[str]) -> list[str] | None:
    result = system.run(IBV_DEVICES_ARGV)
    if result is None:
        return None  # no ibv_devices on this macOS
    if result.returncode != 0:
        said = clip((result.stderr or result.stdout or "").strip().split("\n", 1)[0], 200)
        problems.append(f"ibv_devices failed (exit {result.returncode})" + (f": {said}" if said else "")
                        + ": this Mac's RDMA devices are unknown, so JACCL cannot use it")
        return None
    return parse_ibv_devices(result.stdout)


def collect_rdma(system: System, ports: list[ThunderboltPort],
                 problems: list[str]) -> tuple[bool | None, list[str] | None, list[ThunderboltPort]]:
    """(rdma_ctl's word, ibv_devices' list, the ports with their devices), plus problems.

    ibv_devices runs only where rdma_ctl answered: before macOS 26.2 neither exists.
    """
    status = system.run(RDMA_ARGV)
    enabled = parse_rdma_status(status.stdout) if status is not None and status.returncode == 0 else None
    devices = read_ibv_devices(system, problems) if enabled is not None else None
    ports = attach_devices(ports, devices)
    problems += rdma_problems(enabled, devices, ports)
    return enabled, devices, ports


def rdma_problems(enabled: bool | None, devices: list[str] | None, ports: list[ThunderboltPort]) -> list[str]:
    """What contradicts "RDMA enabled": Thunderbolt 4 ports, no device, a cabled port without one.

    Disabled RDMA is no problem here: ring needs none, and `jupiter check` says what JACCL needs.
    """
    if enabled is not True:
        return []
    speeds = [s for p in ports for s in (p.max_speed_gbps, p.speed_gbps) if s is not None]
    # Listed devices mean RDMA hardware: all ports at 40 then is Thunderbolt 4 cables, not ports.
    if speeds and max(speeds) < TB5_GBPS and not devices:
        listed = "lists no RDMA device" if devices == [] else "was not read"
        return [(f"rdma_ctl says RDMA is enabled, but this Mac's Thunderbolt ports are Thunderbolt 4 "
                 f"({max(speeds):g} Gb/s at most) and ibv_devices {listed}: RDMA will not work on "
                 f"Thunderbolt 4 (fix: {TB4_FIX})")]
    if devices == []:
        return [(f"rdma_ctl says RDMA is enabled but ibv_devices lists no RDMA device: JACCL cannot use "
                 f"this Mac (fix: {REBOOT_FIX})")]
    if not devices:
        return []
    out = []
    for p in ports:
        if p.status == "connected" and p.interface and p.rdma_device is None and (p.speed_gbps or 0) >= TB5_GBPS:
            out.append(f"Thunderbolt {p.port} ({p.interface}) is linked at {p.speed_gbps:g} Gb/s but "
                       f"ibv_devices lists no rdma_{p.interface} (it lists {', '.join(devices)}): RDMA "
                       f"over that cable will not work (fix: {REBOOT_FIX})")
    return out
