"""Stopping a process group the way a control plane should: TERM the whole group, wait a grace,
then KILL whatever is left (signalling only the leader leaves its children running)."""

from __future__ import annotations

import os
import signal
import time


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def terminate_group(pgid: int, grace_s: float, kill_wait_s: float = 2.0) -> None:
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, kill_wait_s)):
        try:
            os.killpg(pgid, sig)
            if sig == signal.SIGTERM:  # a stopped process (SIGSTOP, Ctrl-Z) acts on TERM only once continued
                os.killpg(pgid, signal.SIGCONT)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not group_alive(pgid):
                return
            time.sleep(0.05)
