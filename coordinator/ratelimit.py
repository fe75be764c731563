"""Rate limits and a log that never floods.

`Buckets` is a token bucket per key (a client address): `capacity` events at once, then `per_minute`
more every minute. It is thread-safe, keeps a bounded number of keys, and takes its clock as an
argument so tests can drive time by hand.

`LogThrottle` turns "this limit was hit" into at most one log line per limit every `interval_s`,
saying how many times it was hit since the last line.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections import OrderedDict
from typing import Callable

# Keys beyond this many are forgotten, the one untouched longest first (a bucket left alone fills
# up again, and a full bucket is the same as none). 65,536 buckets are a few MiB; an attacker with
# more addresses than that still gets no more than `capacity` tries on each one it cycles through.
MAX_KEYS = 65536


class Buckets:
    def __init__(self, capacity: float, per_minute: float, *, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = MAX_KEYS):
        if capacity < 1 or per_minute <= 0:
            raise ValueError("capacity must be >= 1 and per_minute > 0")
        self.capacity = float(capacity)
        self.rate = per_minute / 60.0  # tokens per second
        self.clock = clock
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + max(0.0, now - at) * self.rate)

    def _wait(self, level: float) -> float:
        return 0.0 if level >= 1.0 else (1.0 - level) / self.rate

    def wait(self, key: str) -> float:
        """Seconds until `key` may act again; 0 if it may now. Takes nothing."""
        with self._lock:
            return self._wait(self._level(key, self.clock()))

    def take(self, key: str) -> float:
        """Take one token for `key` if there is one and return 0; else take nothing and return the
        seconds until there will be one."""
        with self._lock:
            now = self.clock()
            level = self._level(key, now)
            if level < 1.0:
                return self._wait(level)
            self._store(key, level - 1.0, now)
            return 0.0

    def charge(self, key: str) -> float:
        """Take one token for `key` whether or not there is one (never below zero); the seconds
        `key` must now wait, 0 if none."""
        with self._lock:
            now = self.clock()
            level = max(0.0, self._level(key, now) - 1.0)
            self._store(key, level, now)
            return self._wait(level)

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)  # the key left alone longest: most likely full again

    def __len__(self) -> int:
        return len(self._buckets)


def client_key(host: str | None) -> str:
    """The key a client address is limited under: the address itself, or its /64 for IPv6 (one
    machine is commonly given a whole /64, so per-address limits there would be no limit)."""
    if not host:
        return "unknown"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def retry_after(seconds: float) -> str:
    """A Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


class LogThrottle:
    """At most one line per limit every `interval_s`: the first hit logs at once, later hits are
    counted and reported by the next line (on the next hit after the interval, or by `flush`)."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0, *,
                 clock: Callable[[], float] = time.monotonic):
        self.logger, self.interval_s, self.clock = logger, interval_s, clock
        self._lock = threading.Lock()
        self._state: dict[str, list] = {}  # limit -> [last line at, hits since, message]

    def hit(self, limit: str, message: str) -> bool:
        """Count one hit of `limit`; log now if its last line is old enough. True if a line is
        still owed (hits counted but not yet reported), so a caller with a timer can `flush` later."""
        with self._lock:
            now = self.clock()
            st = self._state.setdefault(limit, [None, 0, message])
            st[1] += 1
            st[2] = message
            if st[0] is None or now - st[0] >= self.interval_s:
                self._emit(limit, st, now)
                return False
            return True

    def flush(self) -> None:
        """Report every limit with hits not yet logged whose interval has passed."""
        with self._lock:
            now = self.clock()
            for limit, st in self._state.items():
                if st[1] and (st[0] is None or now - st[0] >= self.interval_s):
                    self._emit(limit, st, now)

    def pending(self) -> int:
        with self._lock:
            return sum(st[1] for st in self._state.values())

    def _emit(self, limit: str, st: list, now: float) -> None:
        since = "so far" if st[0] is None else f"in the last {now - st[0]:.0f} s"
        self.logger.warning("%s (%d %s; at most one line about this every %.0f s)",
                            st[2], st[1], since, self.interval_s)
        st[0], st[1] = now, 0


# --------------------------------------------------------------------------- the API's limits

# Wrong tokens one client address may present: 20 at once (a misconfigured agent retrying, a person
# pasting the wrong token a few times), then one every 6 s. Tokens are 256-bit random, so this is
# not what keeps them secret; it keeps a guesser from costing CPU, database lookups and log lines.
AUTH_FAILURES_BURST = 20
AUTH_FAILURES_PER_MINUTE = 10
# Registrations per client address: an agent registers at start, after a coordinator restart and
# when its token is refused, a few times an hour; a machine may run a few agents. 20 at once, then
# one a second, is far above that and far below what a leaked join token could otherwise do
# (each registration is a write and a scan of the node table).
REGISTRATIONS_BURST_PER_CLIENT = 20
REGISTRATIONS_PER_MINUTE_PER_CLIENT = 60
# Registrations from everyone together: a whole cluster of a few hundred Macs re-registering at
# once after a coordinator restart must get through, then ten a second.
REGISTRATIONS_BURST_TOTAL = 500
REGISTRATIONS_PER_MINUTE_TOTAL = 600


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiLimits:
    """The per-client limits the API applies. Loopback clients are the leader itself (its own
    agent, `make run`, the CLI, tests and benchmarks registering hundreds of simulated nodes or
    probing with wrong tokens by the hundred): the limits do not apply to them unless
    `limit_loopback`. A process on the leader is already on the machine that holds the tokens;
    the limits are for clients on the network."""

    def __init__(self, *, register_burst: int = REGISTRATIONS_BURST_PER_CLIENT,
                 register_per_minute: float = REGISTRATIONS_PER_MINUTE_PER_CLIENT,
                 register_burst_total: int = REGISTRATIONS_BURST_TOTAL,
                 register_per_minute_total: float = REGISTRATIONS_PER_MINUTE_TOTAL,
                 auth_failures_burst: int = AUTH_FAILURES_BURST,
                 auth_failures_per_minute: float = AUTH_FAILURES_PER_MINUTE,
                 limit_loopback: bool = False, clock: Callable[[], float] = time.monotonic,
                 logger: logging.Logger | None = None):
        self.registrations = Buckets(register_burst, register_per_minute, clock=clock)
        self.registrations_total = Buckets(register_burst_total, register_per_minute_total, clock=clock)
        self.auth_failures = Buckets(auth_failures_burst, auth_failures_per_minute, clock=clock)
        self.limit_loopback = limit_loopback
        self.log = LogThrottle(logger or logging.getLogger("jupiter.coordinator.limits"), clock=clock)

    def _exempt(self, host: str | None) -> bool:
        return _is_loopback(host) and not self.limit_loopback

    def auth_wait(self, host: str | None) -> float:
        """Seconds this client must wait before presenting a token again (0: go ahead)."""
        if self._exempt(host):
            return 0.0
        return self.auth_failures.wait(client_key(host))

    def auth_failed(self, host: str | None) -> None:
        if self._exempt(host):
            return
        if self.auth_failures.charge(client_key(host)) > 0:
            self.log.hit("auth", "too many wrong tokens from one client address; answering 429")

    def register_wait(self, host: str | None) -> float:
        """Take a registration for this client; 0 if allowed, else the seconds to wait."""
        if self._exempt(host):
            return 0.0
        wait = self.registrations.take(client_key(host))
        if wait:
            self.log.hit("register", "too many registrations from one client address; answering 429")
            return wait
        wait = self.registrations_total.take("*")
        if wait:
            self.log.hit("register-total", "too many registrations from all clients together; answering 429")
        return wait
