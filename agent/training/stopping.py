"""A clean stop: SIGTERM/SIGINT only set a flag, and the run checks it between steps (and between
eval chunks), so a stop never lands in the middle of an optimizer step."""

from __future__ import annotations

import signal
import threading
from typing import Any


class Terminated(Exception):
    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum


class Stopper:
    """SIGTERM/SIGINT set a flag that the loop checks between steps (no I/O in the handler)."""

    def __init__(self, enabled: bool):
        self.signum: int | None = None
        self._old: dict[int, Any] = {}
        # signal handlers can only be installed from the main thread (an in-process caller may not be)
        self.enabled = enabled and threading.current_thread() is threading.main_thread()

    def _handler(self, signum, frame) -> None:
        self.signum = signum

    def __enter__(self) -> Stopper:
        if self.enabled:
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    def check(self) -> None:
        if self.signum is not None:
            raise Terminated(self.signum)
