"""Wake-ups from synchronous code (the job state machine, run in threads) to waiting asyncio
handlers (long-polls, event streams): `notify(key)` is thread-safe, `subscribe(key)` gives an
asyncio.Event that is set on every notification for that key."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict


class Notifier:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subs: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._lock = threading.Lock()
        self.closed = False  # the server is stopping: waiters answer now rather than hold it up

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def subscribe(self, key: str) -> asyncio.Event:
        ev = asyncio.Event()
        with self._lock:
            self._subs[key].add(ev)
        return ev

    def unsubscribe(self, key: str, ev: asyncio.Event) -> None:
        with self._lock:
            self._subs[key].discard(ev)
            if not self._subs[key]:
                del self._subs[key]

    def notify(self, key: str) -> None:
        with self._lock:
            events = list(self._subs.get(key, ()))
        if not events or self._loop is None or self._loop.is_closed():
            return
        for ev in events:
            self._loop.call_soon_threadsafe(ev.set)

    def close(self) -> None:
        """Wake every waiter for good (safe from a signal handler or any thread)."""
        self.closed = True
        with self._lock:
            events = [ev for evs in self._subs.values() for ev in evs]
        if self._loop is not None and not self._loop.is_closed():
            for ev in events:
                self._loop.call_soon_threadsafe(ev.set)
