"""Keep the node awake while it runs ranks: a Mac that idles into sleep mid-job takes its whole
job down with it (its ranks stop answering, the job fails on a timeout).

`KeepAwake(system).hold()` when the first rank starts, `.release()` when the last one ends; both
idempotent and safe from any thread. The assertion is a process that lives beside the agent:

- macOS: `caffeinate -i -s -w <agent pid>`. -i stops idle sleep, -s system sleep (on AC power
  only: macOS ignores it on battery). Never -d: keeping the display awake has been seen to
  trigger a GPU watchdog panic under MLX, and the display does not matter to training. -w makes
  caffeinate exit when the agent exits, however it exits (SIGKILL too): the kernel tells it.
- Linux: `systemd-inhibit --what=idle:sleep ... --mode=block cat`, where `systemd-inhibit` is on
  PATH and logind answers it. The lock lives as long as its command, and `cat` reads its stdin,
  a pipe only the agent holds open (`System.spawn`): when the agent exits, SIGKILL included,
  the kernel closes that pipe, `cat` reads EOF and exits, and the lock goes with it. Chosen over
  PR_SET_PDEATHSIG, which fires when the *thread* that started the child ends (hold() may be
  called from a rank's short-lived thread), needs a preexec_fn (unsafe in a threaded process),
  and over polling the agent's pid, which is slow and can be fooled by pid reuse.

Elsewhere, or where neither works, `state` is None and hold() does nothing but say why, once.
"""

from __future__ import annotations

import logging
import os
import threading

from agent.system import Spawned, System

log = logging.getLogger("jupiter.agent")

LINUX_PROBE_ARGV = ["systemd-inhibit", "--list"]


def mac_argv(pid: int) -> list[str]:
    return ["caffeinate", "-i", "-s", "-w", str(pid)]


def linux_argv() -> list[str]:
    return ["systemd-inhibit", "--what=idle:sleep", "--who=jupiter", "--why=training ranks", "--mode=block", "cat"]


class KeepAwake:
    def __init__(self, system: System, *, pid: int | None = None):
        self.system = system
        self.pid = os.getpid() if pid is None else pid  # the process whose life bounds the assertion
        self._lock = threading.Lock()
        self._proc: Spawned | None = None
        self._argv: list[str] | None = None
        self._why_not: str | None = None   # set once this node is known to have no keep-awake
        self._checked = False
        self._said: set[str] = set()        # what was already logged, so each thing is said once

    @property
    def held(self) -> bool:
        """Whether the keep-awake is held now."""
        proc = self._proc
        return proc is not None and proc.alive()

    @property
    def state(self) -> bool | None:
        """The `keep_awake` fact: held now, or None where this node cannot hold one."""
        with self._lock:
            if self._command() is None:
                return None
            self._notice_exit()
            return self._proc is not None

    @property
    def why_not(self) -> str | None:
        """Why this node cannot hold a keep-awake (None while it can, or before it was asked)."""
        return self._why_not

    def hold(self) -> bool:
        """Hold the keep-awake (a no-op if held); whether it is held afterwards."""
        with self._lock:
            self._notice_exit()
            if self._proc is not None:
                return True
            argv = self._command()
            if argv is None:
                self._say(f"cannot keep this node awake while ranks run: {self._why_not}")
                return False
            proc = self.system.spawn(argv)
            if proc is None:
                self._argv, self._why_not = None, f"{argv[0]} could not be started"
                self._say(f"cannot keep this node awake while ranks run: {self._why_not}")
                return False
            self._proc = proc
            log.info("keeping this node awake while ranks run (%s, pid %d)", " ".join(argv), proc.pid)
            return True

    def release(self) -> None:
        """Let the node sleep again (a no-op if nothing is held)."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None:
            proc.stop()
            log.info("keep-awake released: the node may sleep again")

    # ------------------------------------------------------------------ inside the lock

    def _command(self) -> list[str] | None:
        """The argv that holds the keep-awake here, found once; None (and `_why_not`) if none."""
        if self._checked:
            return self._argv
        self._checked = True
        kind = self.system.platform()
        if kind == "Darwin":
            self._argv = mac_argv(self.pid)  # caffeinate is part of every macOS since 10.8
        elif kind == "Linux":
            probe = self.system.run(LINUX_PROBE_ARGV, timeout=5.0)
            if probe is None:
                self._why_not = "systemd-inhibit is not installed"
            elif probe.returncode != 0:
                said = (probe.stderr or probe.stdout).strip().splitlines()
                self._why_not = "systemd-inhibit does not work here" + (f" ({said[0][:200]})" if said else "")
            else:
                self._argv = linux_argv()
        else:
            self._why_not = f"no keep-awake on {kind or 'this OS'}"
        return self._argv

    def _notice_exit(self) -> None:
        """A keep-awake that died by itself (someone killed it, logind refused it) is not held:
        say how, once, and let the next hold() start another."""
        proc = self._proc
        if proc is not None and not proc.alive():
            self._proc = None
            self._say(f"the keep-awake process {proc.pid} {proc.reason() or 'ended'}; the node may sleep")

    def _say(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            log.warning(message)
