"""Pressure facts: what slows or stops a node while it trains. Heat (the OS's thermal state and,
on Intel Macs, the CPU speed limit), memory pressure, swap, the sleep timer and the power source.

`read_pressure` reads them once; `PressureReader` is what the heartbeat uses: on macOS every
reading spawns a process, so an idle agent reads heat, memory and swap at most every 15 s and the
sleep timer and power source (which a person changes, not the load) at most every 60 s.

Everything goes through an `agent.system.System`, so tests run these functions over outputs
recorded on real machines. Nothing here raises: a missing tool or file, or output nobody
foresaw, leaves that field None.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from agent.system import System
from shared.schemas.nodes import Pressure

# macOS. notifyutil answers the kernel's thermal pressure level (the one NSProcessInfo.thermalState
# is made from) without root, on Apple silicon too, where `pmset -g therm` records nothing at all.
THERMAL_LEVEL_ARGV = ["notifyutil", "-g", "com.apple.system.thermalpressurelevel"]
THERM_ARGV = ["pmset", "-g", "therm"]
# One sysctl process for both values: "kern.memorystatus_vm_pressure_level: 1" and
# "vm.swapusage: total = 2048.00M  used = 1234.50M  free = 813.50M  (encrypted)".
SYSCTL_ARGV = ["sysctl", "kern.memorystatus_vm_pressure_level", "vm.swapusage"]
PMSET_ARGV = ["pmset", "-g"]
BATT_ARGV = ["pmset", "-g", "batt"]

FAST_EVERY_S = 15.0   # heat, memory, swap
SLOW_EVERY_S = 60.0   # sleep timer, power source

# com.apple.system.thermalpressurelevel: Nominal, Moderate, Heavy, Trapping, Sleeping; named as
# NSProcessInfo.thermalState names the same levels.
_PRESSURE_LEVELS = {0: "nominal", 1: "fair", 2: "serious", 3: "critical", 4: "critical"}
# kern.memorystatus_vm_pressure_level (the kernel never reports 3).
_MEMORY_LEVELS = {1: "normal", 2: "warning", 4: "critical"}
_ORDER = ("nominal", "fair", "serious", "critical")


def read_pressure(system: System, *, keep_awake: bool | None = None) -> Pressure:
    """Every pressure fact, read now. `keep_awake` is the agent's own state (KeepAwake.state)."""
    kind = system.platform()
    return _build(_guarded(lambda: read_fast(system, kind)), _guarded(lambda: read_slow(system, kind)), keep_awake)


class PressureReader:
    """`read_pressure` for the heartbeat, each part re-read only when its interval has passed."""

    def __init__(self, system: System, *, fast_every_s: float = FAST_EVERY_S, slow_every_s: float = SLOW_EVERY_S,
                 clock: Callable[[], float] = time.monotonic):
        self.system = system
        self.fast_every_s, self.slow_every_s = fast_every_s, slow_every_s
        self.clock = clock
        self._fast: tuple[float, dict] | None = None
        self._slow: tuple[float, dict] | None = None

    def read(self, keep_awake: bool | None = None) -> Pressure:
        now = self.clock()
        kind = self.system.platform()
        if self._fast is None or now - self._fast[0] >= self.fast_every_s:
            self._fast = (now, _guarded(lambda: read_fast(self.system, kind)))
        if self._slow is None or now - self._slow[0] >= self.slow_every_s:
            self._slow = (now, _guarded(lambda: read_slow(self.system, kind)))
        # keep_awake is this process's own state, never cached: a rank that just started shows at once.
        return _build(self._fast[1], self._slow[1], keep_awake)


def read_fast(system: System, kind: str) -> dict:
    """thermal, cpu_speed_limit_pct, memory, swap_used_gb, swap_total_gb (any may be None)."""
    if kind == "Darwin":
        therm_level, speed = parse_therm(_output(system, THERM_ARGV))
        thermal = _worst(parse_thermal_level(_output(system, THERMAL_LEVEL_ARGV)), therm_level)
        # sysctl prints the names it knows even when another is unknown (and then exits 1).
        memory, used, total = parse_sysctl(_output(system, SYSCTL_ARGV, any_code=True))
        return dict(thermal=thermal, cpu_speed_limit_pct=speed, memory=memory, swap_used_gb=used, swap_total_gb=total)
    if kind == "Linux":
        used, total = parse_meminfo_swap(system.read_text("/proc/meminfo"))
        return dict(thermal=linux_thermal(system), cpu_speed_limit_pct=None,
                    memory=parse_psi_memory(system.read_text("/proc/pressure/memory")),
                    swap_used_gb=used, swap_total_gb=total)
    return {}


def read_slow(system: System, kind: str) -> dict:
    """sleep_after_min and on_battery (either may be None)."""
    if kind == "Darwin":
        return dict(sleep_after_min=parse_pmset_sleep(_output(system, PMSET_ARGV)),
                    on_battery=parse_batt(_output(system, BATT_ARGV)))
    if kind == "Linux":
        # No one sleep timer to read on Linux (logind, the desktop, or nothing decide): left None.
        return dict(on_battery=linux_on_battery(system))
    return {}


# --------------------------------------------------------------------------- macOS parsers


def parse_thermal_level(text: str | None) -> str | None:
    """`notifyutil -g com.apple.system.thermalpressurelevel` ("com.apple...level 2") -> a thermal state."""
    if not text or not text.split():
        return None
    last = text.split()[-1]
    return _PRESSURE_LEVELS.get(int(last)) if last.isdigit() else None


def parse_therm(text: str | None) -> tuple[str | None, int | None]:
    """`pmset -g therm` -> (thermal state from its Thermal Warning Level, CPU_Speed_Limit).

    "Note: No thermal warning level has been recorded" says nothing either way (Apple silicon
    always prints it), so it gives None, not nominal. CPU_Speed_Limit appears on Intel Macs only.
    """
    if not text:
        return None, None
    thermal = None
    m = re.search(r"Thermal Warning Level\s*=\s*(\d+)", text)
    if m:
        thermal = _warning_level(int(m.group(1)))
    speed = None
    m = re.search(r"CPU_Speed_Limit\s*=\s*(\d+)", text)
    if m:
        speed = min(int(m.group(1)), 100)
    return thermal, speed


def _warning_level(level: int) -> str | None:
    # IOPM.h: 0 normal, 5 danger ("may cause system slowdown"), 10 critical ("imminent shutdown"),
    # 100 warning and 110 trap (the platform's own levels), 255 unknown. Other values are
    # platform-defined steps we cannot rank: some elevation, so "fair".
    if level == 255:
        return None
    return {0: "nominal", 5: "serious", 100: "serious", 10: "critical", 110: "critical"}.get(level, "fair")


def parse_sysctl(text: str | None) -> tuple[str | None, float | None, float | None]:
    """`sysctl kern.memorystatus_vm_pressure_level vm.swapusage` -> (memory, swap used GB, swap total GB)."""
    memory = used = total = None
    for line in (text or "").splitlines():
        name, _, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if name == "kern.memorystatus_vm_pressure_level" and value.isdigit():
            memory = _MEMORY_LEVELS.get(int(value))
        elif name == "vm.swapusage":
            total, used = _size_gb(value, "total"), _size_gb(value, "used")
    return memory, used, total


_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _size_gb(text: str, key: str) -> float | None:
    m = re.search(rf"\b{key}\s*=\s*([\d.]+)([KMGT])", text)
    if not m:
        return None
    try:
        return _gb(float(m.group(1)) * _UNITS[m.group(2)])
    except ValueError:
        return None


def parse_pmset_sleep(text: str | None) -> int | None:
    """`pmset -g` -> the system sleep timer in minutes, 0 when the Mac never sleeps by itself.

    The line is " sleep   10 (sleep prevented by powerd, caffeinate)": the timer is still 10, the
    assertions named after it are whoever holds one now. "Sleep On Power Button" and displaysleep
    are other settings. "SleepDisabled 1" (pmset disablesleep) overrides the timer.
    """
    if not text:
        return None
    if re.search(r"^\s*SleepDisabled\s+1\b", text, re.M):
        return 0
    m = re.search(r"^\s*sleep\s+(\d+)", text, re.M)
    return int(m.group(1)) if m else None


def parse_batt(text: str | None) -> bool | None:
    """`pmset -g batt` -> whether the Mac runs on battery ("Now drawing from 'Battery Power'").
    A UPS counts as battery: the mains are gone, and macOS treats it so for sleep."""
    m = re.search(r"Now drawing from '([^']+)'", text or "")
    if not m:
        return None
    return m.group(1) != "AC Power"


# --------------------------------------------------------------------------- Linux


def parse_psi_memory(text: str | None) -> str | None:
    """/proc/pressure/memory -> normal, warning or critical, from the last 10 s.

    `some` is the share of time at least one task waited for memory (reclaim, swap-in); `full`
    the share when every runnable task did, which is throughput lost outright. A training rank
    that waits 10 % of the time is already slowed enough to hold its whole job back: `some`
    >= 10 is a warning; `full` >= 10 means the node is thrashing: critical.
    """
    values: dict[str, float] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if not parts or parts[0] not in ("some", "full"):
            continue
        for part in parts[1:]:
            key, _, value = part.partition("=")
            if key == "avg10":
                try:
                    values[parts[0]] = float(value)
                except ValueError:
                    pass
    if "some" not in values:
        return None
    if values.get("full", 0.0) >= 10:
        return "critical"
    return "warning" if values["some"] >= 10 else "normal"


def parse_meminfo_swap(text: str | None) -> tuple[float | None, float | None]:
    """/proc/meminfo -> (swap used GB, swap total GB)."""
    kb: dict[str, int] = {}
    for line in (text or "").splitlines():
        name, _, rest = line.partition(":")
        if name in ("SwapTotal", "SwapFree") and rest.split() and rest.split()[0].isdigit():
            kb[name] = int(rest.split()[0])
    if "SwapTotal" not in kb:
        return None, None
    total = kb["SwapTotal"] * 1024
    free = kb.get("SwapFree")
    return (None if free is None else _gb(max(total - free * 1024, 0))), _gb(total)


THERMAL_DIR = "/sys/class/thermal"
# A trip point reached: fans spin up (active), the kernel slows the chip (passive), userspace is
# told to act (hot), the machine shuts down (critical). As macOS names the same steps.
_TRIP_STATE = {"active": "fair", "passive": "serious", "hot": "critical", "critical": "critical"}


def linux_thermal(system: System) -> str | None:
    """The worst state any thermal zone is in: the highest trip point its temperature has reached,
    nominal when it has reached none. None when no zone has a temperature and a trip point to
    judge it by (virtual machines, most servers without ACPI thermal zones)."""
    worst = None
    for zone in system.listdir(THERMAL_DIR):
        if not zone.startswith("thermal_zone"):
            continue
        path = f"{THERMAL_DIR}/{zone}"
        temp = _int(system.read_text(f"{path}/temp"))
        if temp is None:
            continue
        state, judged = "nominal", False
        for name in system.listdir(path):
            m = re.fullmatch(r"trip_point_(\d+)_type", name)
            if not m:
                continue
            kind = (system.read_text(f"{path}/{name}") or "").strip()
            trip = _int(system.read_text(f"{path}/trip_point_{m.group(1)}_temp"))
            # 0 or less is an unset trip (x86_pkg_temp's two user trips start at 0).
            if kind not in _TRIP_STATE or trip is None or trip <= 0:
                continue
            judged = True
            if temp >= trip:
                state = _worst(state, _TRIP_STATE[kind])
        if judged:
            worst = _worst(worst, state)
    return worst


POWER_DIR = "/sys/class/power_supply"


def linux_on_battery(system: System) -> bool | None:
    """True when a battery discharges and no mains supply is online; None with no supplies listed
    (most desktops and servers: nothing to say)."""
    mains_online = battery = discharging = False
    for name in system.listdir(POWER_DIR):
        path = f"{POWER_DIR}/{name}"
        kind = (system.read_text(f"{path}/type") or "").strip()
        if kind == "Mains":
            mains_online = mains_online or (system.read_text(f"{path}/online") or "").strip() == "1"
        elif kind == "Battery":
            battery = True
            discharging = discharging or (system.read_text(f"{path}/status") or "").strip() == "Discharging"
    if mains_online:
        return False
    if battery:
        return discharging
    return None


# --------------------------------------------------------------------------- helpers


def _output(system: System, argv: list[str], *, any_code: bool = False) -> str | None:
    result = system.run(argv, timeout=5.0)
    if result is None or (result.returncode != 0 and not any_code):
        return None
    return result.stdout


def _worst(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a or b
    return max(a, b, key=_ORDER.index)


def _int(text: str | None) -> int | None:
    text = (text or "").strip()
    try:
        return int(text)
    except ValueError:
        return None


def _gb(num_bytes: float) -> float:
    # Two decimals: swap moves in tens of MB, and "0.0 GB used" would hide the first 50 MB.
    return round(max(num_bytes, 0) / 2**30, 2)


def _guarded(read: Callable[[], dict]) -> dict:
    """read(), or nothing known: a heartbeat has no room for problems, and the parsers above are
    written not to raise; this is the backstop for output nobody foresaw."""
    try:
        return read()
    except Exception:
        return {}


def _build(fast: dict, slow: dict, keep_awake: bool | None) -> Pressure:
    try:
        return Pressure(**fast, **slow, keep_awake=keep_awake)
    except ValueError:  # a value past the wire's bounds (a garbled tool): say nothing rather than fail the beat
        return Pressure(keep_awake=keep_awake)
