"""The one seam between the agent and the operating system it runs on.

Fact collection and service installation ask a `System` for command output, file contents and
psutil readings. `LocalSystem` asks the real machine; `RecordedSystem` answers from a folder of
recorded outputs, so the real parsers run over real macOS output on any machine.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str = ""


@dataclass(frozen=True)
class MemoryReading:
    total_bytes: int
    available_bytes: int


@dataclass(frozen=True)
class InterfaceReading:
    name: str
    up: bool
    speed_mbps: int | None
    ips: list[str] = field(default_factory=list)


class System(Protocol):
    def platform(self) -> str:
        """`platform.system()`: "Darwin", "Linux", ..."""

    def run(self, argv: list[str], timeout: float = 10.0) -> CommandResult | None:
        """Run argv (never through a shell); None when the command is missing or timed out."""

    def read_text(self, path: str) -> str | None: ...

    def listdir(self, path: str) -> list[str]: ...

    def memory(self) -> MemoryReading: ...

    def cpu_count(self) -> int: ...

    def interfaces(self) -> list[InterfaceReading]: ...

    def stamps(self, patterns: list[str]) -> list[tuple[str, int]]:
        """(path, modification time in ns) of every existing path matching these glob patterns:
        a cheap sign that something was installed or removed there."""


class LocalSystem:
    """The machine this process runs on."""

    def platform(self) -> str:
        return platform.system()

    def run(self, argv: list[str], timeout: float = 10.0) -> CommandResult | None:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL, errors="replace")
        except (FileNotFoundError, PermissionError, NotADirectoryError, subprocess.TimeoutExpired, OSError):
            return None
        return CommandResult(proc.returncode, proc.stdout, proc.stderr)

    def read_text(self, path: str) -> str | None:
        try:
            return Path(path).read_text(errors="replace")
        except OSError:
            return None

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except OSError:
            return []

    def memory(self) -> MemoryReading:
        import psutil

        vm = psutil.virtual_memory()
        return MemoryReading(int(vm.total), int(vm.available))

    def cpu_count(self) -> int:
        import psutil

        return psutil.cpu_count(logical=False) or psutil.cpu_count() or os.cpu_count() or 0

    def interfaces(self) -> list[InterfaceReading]:
        import socket

        import psutil

        stats = psutil.net_if_stats()
        out = []
        for name, addrs in sorted(psutil.net_if_addrs().items()):
            st = stats.get(name)
            ips = [a.address.split("%")[0] for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6)]
            out.append(InterfaceReading(name=name, up=bool(st and st.isup),
                                        speed_mbps=(st.speed or None) if st else None, ips=ips))
        return out

    def stamps(self, patterns: list[str]) -> list[tuple[str, int]]:
        out = []
        for pattern in patterns:
            for path in sorted(glob.glob(pattern)):
                try:
                    out.append((path, os.stat(path).st_mtime_ns))
                except OSError:
                    pass
        return out


class RecordedSystem:
    """Answers from a folder recorded on a real machine.

    Layout: `system.json` holds {"platform", "memory": {"total_bytes", "available_bytes"},
    "cpu_count", "interfaces": [...], "commands": {"<argv joined by spaces>": {"file": "x.txt",
    "returncode": 0}}, "files": {"/proc/cpuinfo": "cpuinfo.txt"}, "dirs": {"/sys/...": [...]}}.
    A command or file not listed behaves as missing, like on a machine without it.
    Every call is remembered in `calls`, so tests can assert what would have run.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.spec = json.loads((self.folder / "system.json").read_text())
        self.calls: list[list[str]] = []

    def platform(self) -> str:
        return self.spec.get("platform", "Linux")

    def run(self, argv: list[str], timeout: float = 10.0) -> CommandResult | None:
        self.calls.append(list(argv))
        entry = self.spec.get("commands", {}).get(" ".join(argv))
        if entry is None:
            return None
        stdout = (self.folder / entry["file"]).read_text() if entry.get("file") else entry.get("stdout", "")
        return CommandResult(entry.get("returncode", 0), stdout, entry.get("stderr", ""))

    def read_text(self, path: str) -> str | None:
        name = self.spec.get("files", {}).get(path)
        return None if name is None else (self.folder / name).read_text()

    def listdir(self, path: str) -> list[str]:
        return list(self.spec.get("dirs", {}).get(path, []))

    def memory(self) -> MemoryReading:
        m = self.spec.get("memory", {})
        return MemoryReading(int(m.get("total_bytes", 0)), int(m.get("available_bytes", 0)))

    def cpu_count(self) -> int:
        return int(self.spec.get("cpu_count", 0))

    def interfaces(self) -> list[InterfaceReading]:
        return [InterfaceReading(**i) for i in self.spec.get("interfaces", [])]

    def stamps(self, patterns: list[str]) -> list[tuple[str, int]]:
        return []  # a recorded machine never changes
