"""The one seam between the agent and the operating system it runs on.

Fact collection and service installation ask a `System` for command output, file contents and
psutil readings, and the keep-awake asks it to start a process that lives beside the agent
(`spawn`). `LocalSystem` asks the real machine; `RecordedSystem` answers from a folder of
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


class Spawned(Protocol):
    """A process started by `System.spawn`."""

    pid: int

    def alive(self) -> bool: ...

    def stop(self) -> None:
        """End it (idempotent): its stdin closes, then SIGTERM, then SIGKILL if it lingers."""

    def reason(self) -> str:
        """How it ended ("exited with code 1: Failed to connect to bus"); "" while it runs."""


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

    def spawn(self, argv: list[str]) -> Spawned | None:
        """Start argv (never through a shell) and leave it running; None when it cannot start.

        Its stdin is a pipe only this process holds open, so a child that reads it to the end
        gets EOF the moment this process exits, however it exits (SIGKILL included)."""


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

    def spawn(self, argv: list[str]) -> LocalProcess | None:
        try:
            # Its own session: a Ctrl-C meant for the agent's terminal does not reach it; the
            # agent ends it (stop) or, if the agent dies, its stdin's EOF or its own watch does.
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except (OSError, ValueError):
            return None
        return LocalProcess(proc)


class LocalProcess:
    """A process `LocalSystem.spawn` started."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.pid = proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        proc = self.proc
        if proc.stdin is not None and not proc.stdin.closed:
            try:
                proc.stdin.close()  # EOF first: a child waiting on stdin ends by itself
            except OSError:
                pass
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=3)
        if proc.stderr is not None:
            proc.stderr.close()

    def reason(self) -> str:
        code = self.proc.poll()
        if code is None:
            return ""
        text = ""
        err = self.proc.stderr
        if err is not None and not err.closed:
            try:
                # Non-blocking: a grandchild could still hold the pipe's other end open.
                os.set_blocking(err.fileno(), False)
                lines = (err.read(4096) or b"").decode(errors="replace").strip().splitlines()
                text = lines[0] if lines else ""
            except (OSError, ValueError):
                text = ""
        how = f"exited with code {code}" if code >= 0 else f"was killed by signal {-code}"
        return f"{how}: {text}" if text else how


class RecordedSystem:
    """Answers from a folder recorded on a real machine.

    Layout: `system.json` holds {"platform", "memory": {"total_bytes", "available_bytes"},
    "cpu_count", "interfaces": [...], "commands": {"<argv joined by spaces>": {"file": "x.txt",
    "returncode": 0}}, "files": {"/proc/cpuinfo": "cpuinfo.txt"}, "dirs": {"/sys/...": [...]}}.
    A command or file not listed behaves as missing, like on a machine without it.
    Every call is remembered in `calls`, so tests can assert what would have run; every process
    it was asked to start, in `spawned` (argv) and `processes` (the stand-ins it handed out).
    A program named in "cannot_spawn" fails to start.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.spec = json.loads((self.folder / "system.json").read_text())
        self.calls: list[list[str]] = []
        self.spawned: list[list[str]] = []
        self.processes: list[RecordedProcess] = []

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

    def spawn(self, argv: list[str]) -> RecordedProcess | None:
        self.spawned.append(list(argv))
        if argv and argv[0] in self.spec.get("cannot_spawn", []):
            return None
        proc = RecordedProcess(10000 + len(self.processes))
        self.processes.append(proc)
        return proc


class RecordedProcess:
    """A stand-in process: alive until stopped, or until a test ends it (`end`)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.stops = 0
        self._reason = ""

    def alive(self) -> bool:
        return not self._reason

    def stop(self) -> None:
        self.stops += 1
        self._reason = self._reason or "stopped"

    def end(self, reason: str = "exited with code 1") -> None:
        """As if it died by itself."""
        self._reason = reason

    def reason(self) -> str:
        return self._reason
