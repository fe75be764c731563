"""Serve the ASGI app with uvicorn, bounded: every connection has deadlines and their number a cap.

uvicorn (h11) alone starts no timer before a connection's first request, has no deadline for
request headers or bodies (`timeout_keep_alive` only runs between requests), and accepts
connections until the process runs out of file descriptors. A few hundred clients that send half
a request line and stop (slowloris) then hold the coordinator's descriptors for ever, and at the
descriptor limit every accept fails: /healthz, agents and the dashboard are all locked out.

`BoundedH11Protocol` is uvicorn's h11 protocol with:

- a **head deadline**: a connection must deliver a complete request head (line and headers)
  within `header_timeout_s` of being accepted (TLS handshake included), and a later request on a
  kept-alive connection within `header_timeout_s` of its first byte. An idle kept-alive
  connection is uvicorn's business as before (`timeout_keep_alive`).
- a **body deadline**: while a request body arrives, every `header_timeout_s` must bring at least
  `BODY_MIN_BYTES` (or the end of the body), unless the app itself is not reading yet.
- a **write deadline**: a client that stops reading our response for `write_timeout_s` is cut.
- a **connection cap**: at most `max_connections` connections hold a descriptor. A new connection
  over the cap closes the one that has waited longest without a request in flight (a half-sent
  head, a TLS handshake, an idle keep-alive), else the one whose client has left our answer unread
  longest; if every connection is busy otherwise, the new one is closed at once. Closing is done
  in the protocol, so a refused connection costs one accept and one close, never a request.
- TLS done here, not by asyncio's server: the handshake starts in `connection_made`, so it counts
  against the cap and shares the head deadline (asyncio's own handshake timeout is 60 s).
- a log that never floods: each limit logs at most one line every `LOG_EVERY_S`, saying how many
  times it was hit since the last one. uvicorn's per-request warnings (a malformed request, an
  unsupported upgrade) go through the same throttle.

`run()` also raises the soft RLIMIT_NOFILE to what the cap needs, where the hard limit allows, and
lowers the cap to what the descriptors allow where it does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from asyncio import sslproto
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from coordinator.ratelimit import LogThrottle

log = logging.getLogger("jupiter.coordinator.http")

# A request head (line and headers, at most h11's 16 KiB) takes one round trip from any client on
# a LAN or the internet; 10 s covers a TLS handshake plus the head from a slow or loaded machine
# many times over, and bounds how long a stalled client holds a connection.
HEADER_TIMEOUT_S = 10.0
# Body progress owed per header_timeout_s window while a body arrives: 8 KiB per 10 s is a modem's
# speed; anything slower is a client trickling bytes to hold the connection.
BODY_MIN_BYTES = 8 * 1024
# A client that reads none of our response for this long is gone or hostile (an agent or a browser
# reads as fast as the data comes).
WRITE_TIMEOUT_S = 30.0
# Connections at once: each agent holds one or two (heartbeats, the orders long-poll), each
# dashboard or `jupiter logs -f` one more; 1024 serves a cluster of several hundred Macs.
MAX_CONNECTIONS = 1024
# Descriptors the coordinator needs besides client connections: SQLite (database, WAL and shared
# memory for each pooled connection), job log files being written, mpirun launches and their
# pipes, the listening socket, stdio.
FD_RESERVE = 128
# Accepted sockets asyncio may hold before our protocol sees them: it accepts up to `backlog`
# connections per event loop turn. Also the kernel's listen queue, which costs us no descriptors.
BACKLOG = 128
# The largest request head (line and headers). h11's limit (16 KiB by default) applies only to a
# head still incomplete when data arrives, so a 60 KiB head that came in one read was served and
# the same head split across TCP segments (a loaded machine) was refused and its connection reset:
# the outcome depended on timing. One limit, above any real head (a bearer token is under 200
# bytes) and small enough that the connection cap bounds the memory heads can take (64 MiB).
MAX_HEAD_BYTES = 64 * 1024
# One log line per limit at most this often.
LOG_EVERY_S = 10.0


class _Shared:
    """State every connection of one server shares: the cap, the waiting queue, the log throttle."""

    def __init__(self, *, header_timeout_s: float, max_connections: int, write_timeout_s: float,
                 body_min_bytes: int, ssl_context: ssl.SSLContext | None = None):
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.write_timeout_s = write_timeout_s
        self.body_min_bytes = body_min_bytes
        self.ssl_context = ssl_context
        self.open: set[BoundedH11Protocol] = set()  # connections holding a descriptor
        # Connections with no request in flight, oldest first: the ones to close at the cap.
        self.waiting: OrderedDict[BoundedH11Protocol, None] = OrderedDict()
        # Connections whose client is not reading our answer, oldest first: next in line.
        self.stalled: OrderedDict[BoundedH11Protocol, None] = OrderedDict()
        self.throttle = LogThrottle(log, LOG_EVERY_S)
        self._flush_handle: asyncio.TimerHandle | None = None
        self.counts: dict[str, int] = {}  # limit -> times hit since start (for tests and metrics)

    def note(self, loop: asyncio.AbstractEventLoop, limit: str, message: str) -> None:
        self.counts[limit] = self.counts.get(limit, 0) + 1
        if self.throttle.hit(limit, message) and self._flush_handle is None:
            self._flush_handle = loop.call_later(LOG_EVERY_S, self._flush, loop)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._flush_handle = None
        self.throttle.flush()
        if self.throttle.pending():
            self._flush_handle = loop.call_later(LOG_EVERY_S, self._flush, loop)

    def admit(self, proto: BoundedH11Protocol, loop: asyncio.AbstractEventLoop) -> bool:
        if len(self.open) >= self.max_connections:
            queue = self.waiting or self.stalled
            if not queue:
                self.note(loop, "refuse", f"refused new connections: {self.max_connections} open, "
                                          f"all with a request in flight (the connection cap)")
                return False
            victim, _ = queue.popitem(last=False)
            self.note(loop, "evict", f"closed the longest-waiting idle, half-open or unread connection for a "
                                     f"new one: {self.max_connections} open (the connection cap)")
            victim._abort()
        self.open.add(proto)
        self.waiting[proto] = None
        return True

    def release(self, proto: BoundedH11Protocol) -> None:
        self.open.discard(proto)
        self.waiting.pop(proto, None)
        self.stalled.pop(proto, None)


class _ThrottledLogger:
    """uvicorn's connection logger, with warnings (one per malformed request) through the throttle."""

    def __init__(self, logger: logging.Logger, shared: _Shared, loop: asyncio.AbstractEventLoop):
        self._logger, self._shared, self._loop = logger, shared, loop

    def warning(self, msg: str, *args: Any, **kw: Any) -> None:
        text = msg % args if args else msg
        self._shared.note(self._loop, "uvicorn: " + text[:80], f"uvicorn: {text}")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with deadlines and a connection cap (see the module notes). A server
    uses its own subclass whose `shared` is that server's `_Shared` (`protocol_class`)."""

    shared: _Shared

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.logger = _ThrottledLogger(self.logger, self.shared, self.loop)  # type: ignore[assignment]
        self._timer: asyncio.TimerHandle | None = None  # the head or body deadline
        self._timer_kind: str | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._bytes_in = 0
        self._bytes_at_check = 0
        self._raw: asyncio.Transport | None = None  # the TCP transport (under TLS, until HTTP starts)
        self._http = False   # uvicorn's side has its transport
        self._closed = False  # released: no longer counted

    # ------------------------------------------------------------------ connection life

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if self._raw is None:  # the accepted TCP connection
            self._raw = transport
            if not self.shared.admit(self, self.loop):
                self._closed = True
                transport.abort()
                return
            self._arm("head", self.shared.header_timeout_s)  # from the moment of accepting
            if self.shared.ssl_context is not None:
                self._start_tls(transport)
                return
        # Plain TCP, or TLS once its handshake is done (then `transport` is the TLS transport).
        self._http = True
        super().connection_made(transport)

    def _start_tls(self, raw: asyncio.Transport) -> None:
        waiter = self.loop.create_future()
        # The same wrapping asyncio's server does with ssl=, started here so the handshake is
        # inside the head deadline and the cap. It calls connection_made again when done.
        tls = sslproto.SSLProtocol(self.loop, self, self.shared.ssl_context, waiter, server_side=True,
                                   ssl_handshake_timeout=self.shared.header_timeout_s + 1.0,
                                   ssl_shutdown_timeout=self.shared.header_timeout_s)
        waiter.add_done_callback(self._tls_done)
        raw.set_protocol(tls)
        tls.connection_made(raw)

    def _tls_done(self, waiter: asyncio.Future) -> None:
        failed = waiter.cancelled() or waiter.exception() is not None
        if failed or not self._http:
            # A handshake that did not end in connection_made (failed, or the connection was
            # closed under it) never reaches connection_lost either: let go of the slot here.
            self._release()
            if self._raw is not None and not self._raw.is_closing():
                self._raw.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        if self._http:
            super().connection_lost(exc)

    def _release(self) -> None:
        if not self._closed:
            self._closed = True
            self.shared.release(self)
        self._cancel()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _abort(self) -> None:
        """Close now, whatever state the connection is in (nothing is owed to the client)."""
        self._release()
        if self._http:
            if self.conn.our_state in (h11.IDLE, h11.DONE, h11.MUST_CLOSE):
                try:
                    self.conn.send(h11.ConnectionClosed())
                except h11.LocalProtocolError:
                    pass
            self.transport.abort()
        elif self._raw is not None:
            self._raw.abort()

    # ------------------------------------------------------------------ deadlines

    def _arm(self, kind: str, after: float) -> None:
        self._cancel()
        self._timer_kind = kind
        self._timer = self.loop.call_later(after, self._deadline)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_kind = None, None

    def _deadline(self) -> None:
        kind, self._timer, self._timer_kind = self._timer_kind, None, None
        if self._closed:
            return
        t = self.shared.header_timeout_s
        if kind == "body":
            progressed = self._bytes_in - self._bytes_at_check
            paused = self.flow is not None and self.flow.read_paused  # the app is not reading yet
            if paused or progressed >= self.shared.body_min_bytes:
                self._bytes_at_check = self._bytes_in
                self._arm("body", t)
                return
            self.shared.note(self.loop, "body", f"closed connections whose request body stalled "
                                                f"(under {self.shared.body_min_bytes} bytes in {t:g} s)")
        else:
            self.shared.note(self.loop, "head", f"closed connections that sent no complete request head "
                                                f"within {t:g} s (stalled or slow clients)")
        self._abort()

    def _follow(self, got_data: bool) -> None:
        """Set the deadline for what the connection is doing now."""
        if self._closed or self.transport is None or self.transport.is_closing():
            self._cancel()
            return
        theirs = self.conn.their_state
        if theirs is h11.IDLE:  # no request in flight: waiting for the next head
            if self._timer_kind != "head" and (got_data or self.conn.trailing_data[0]):
                self._arm("head", self.shared.header_timeout_s)  # a head has begun: finish it in time
            if self not in self.shared.waiting:
                self.shared.waiting[self] = None
            return
        self.shared.waiting.pop(self, None)
        if theirs is h11.SEND_BODY:
            if self._timer_kind != "body":
                self._bytes_at_check = self._bytes_in
                self._arm("body", self.shared.header_timeout_s)
        else:
            self._cancel()  # the request is in; the app's answer has no deadline here

    def data_received(self, data: bytes) -> None:
        self._bytes_in += len(data)
        super().data_received(data)
        self._follow(got_data=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow(got_data=False)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None and not self._closed:
            self._write_timer = self.loop.call_later(self.shared.write_timeout_s, self._write_stalled)
            self.shared.stalled[self] = None

    def resume_writing(self) -> None:
        super().resume_writing()
        self.shared.stalled.pop(self, None)
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_stalled(self) -> None:
        self._write_timer = None
        if self._closed:
            return
        self.shared.note(self.loop, "write", f"closed connections that read none of their response for "
                                             f"{self.shared.write_timeout_s:g} s")
        self._abort()


def protocol_class(shared: _Shared) -> type[BoundedH11Protocol]:
    """A protocol class bound to one server's shared state (uvicorn takes a class, not a factory)."""
    return type("BoundedH11Protocol", (BoundedH11Protocol,), {"shared": shared})


# ---------------------------------------------------------------------- descriptors


def raise_fd_limit(want: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards `want` (never above the hard limit, never lowering it);
    the soft limit in force afterwards. macOS starts processes at 256."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return want
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return want if soft == resource.RLIM_INFINITY else soft
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    # macOS refuses more than OPEN_MAX (10240) even under an unlimited hard limit.
    for value in (target, min(target, 10240)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (value, hard))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connection_cap(max_connections: int, backlog: int = BACKLOG) -> int:
    """`max_connections`, lowered to what the descriptor limit leaves after the reserve and the
    accept backlog (after trying to raise that limit)."""
    soft = raise_fd_limit(max_connections + backlog + FD_RESERVE)
    cap = min(max_connections, soft - backlog - FD_RESERVE)
    if cap < max_connections:
        cap = max(cap, 16)
        log.warning("open-file limit %d allows %d connections, not %d (raise `ulimit -n`)",
                    soft, cap, max_connections)
    return cap


# ---------------------------------------------------------------------- running


def make_config(app: Any, *, host: str, port: int, ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
                header_timeout_s: float = HEADER_TIMEOUT_S, max_connections: int = MAX_CONNECTIONS,
                write_timeout_s: float = WRITE_TIMEOUT_S, body_min_bytes: int = BODY_MIN_BYTES,
                timeout_keep_alive: int = 5, log_level: str = "warning", **uvicorn_kwargs: Any
                ) -> tuple[uvicorn.Config, _Shared]:
    """The uvicorn Config that serves `app` bounded, and the state its connections share.
    `uvicorn_kwargs` go to uvicorn.Config as they are (ssl_* options included)."""
    kw: dict[str, Any] = dict(host=host, port=port, log_level=log_level, access_log=False,
                              timeout_keep_alive=timeout_keep_alive, backlog=BACKLOG,
                              # Never take a client's address from X-Forwarded-For: nothing proxies
                              # the coordinator, and limits are kept per client address.
                              proxy_headers=False,
                              # asyncio's own loop: the TLS wrapping here is asyncio's SSLProtocol.
                              loop="asyncio", ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                              h11_max_incomplete_event_size=MAX_HEAD_BYTES)
    kw.update(uvicorn_kwargs)
    shared = _Shared(header_timeout_s=header_timeout_s, max_connections=connection_cap(max_connections, kw["backlog"]),
                     write_timeout_s=write_timeout_s, body_min_bytes=body_min_bytes)
    config = uvicorn.Config(app, http=protocol_class(shared), **kw)
    config.load()
    # TLS is done by the protocol (so the handshake has a deadline and counts against the cap):
    # take the context uvicorn built from the ssl_* options and keep asyncio's server plain.
    shared.ssl_context, config.ssl = config.ssl, None
    return config, shared


def run(app: Any, *, host: str, port: int, ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
        header_timeout_s: float = HEADER_TIMEOUT_S, max_connections: int = MAX_CONNECTIONS,
        timeout_keep_alive: int = 5, log_level: str = "warning", on_exit: Callable[[], None] | None = None,
        **uvicorn_kwargs: Any) -> None:
    """Serve `app` until told to stop (SIGINT/SIGTERM), like uvicorn.run, bounded. `on_exit` runs
    when the stop is asked for, before uvicorn waits for open requests: long-polls answer then,
    instead of holding the exit up for their whole wait."""
    config, _ = make_config(app, host=host, port=port, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                            header_timeout_s=header_timeout_s, max_connections=max_connections,
                            timeout_keep_alive=timeout_keep_alive, log_level=log_level, **uvicorn_kwargs)

    class Server(uvicorn.Server):
        _stop: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            if self._stop is not None:
                loop, stop = self._stop
                loop.call_soon_threadsafe(stop.set)
            if on_exit is not None:
                on_exit()

        async def main_loop(self) -> None:
            """uvicorn's, woken by the stop itself instead of every 0.1 s to look for it: ten
            wake-ups a second were a third of an idle coordinator's CPU, taken from the ranks
            on the leader. on_tick still runs each second (the Date header), as uvicorn's does."""
            stop = asyncio.Event()
            self._stop = (asyncio.get_running_loop(), stop)
            counter = 0
            while not await self.on_tick(counter):
                counter = (counter + 10) % 864000  # on_tick's "once a second" is every 10th count
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await stop.wait()

    Server(config).run()
