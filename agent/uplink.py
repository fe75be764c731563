"""The agent's four calls to the coordinator (register, heartbeat, orders, report), as JSON over
one kept-alive HTTP/1.1 connection, on the standard library (the CA fetch of enrolment is
shared.tlspin.fetch_pinned_ca, standard library too).

Everyone else uses shared/client.py, on httpx. The agent runs for months on every node, and httpx
with its imports (http.cookiejar, idna, httpcore, h11) keeps ~7 MB resident, a fifth of what an
idle agent may use (docs/benchmarks.md, "Idle agent"). The answers are those of shared.client:
an answer >= 400 raises `ApiError` (status, the coordinator's `detail`, a 429's Retry-After);
a connection that cannot be made or breaks raises an OSError (ConnectionError, TimeoutError,
ssl.SSLError), on which the agent backs off.
"""

from __future__ import annotations

import http.client
import ssl
import time
from typing import TypeVar
from urllib.parse import urlsplit

import shared
from shared.apierror import ApiError, from_answer  # noqa: F401 (ApiError: the agent imports it from here)
from shared.schemas.nodes import (
    HeartbeatRequest,
    HeartbeatResponse,
    RegisterRequest,
    RegisterResponse,
)
from shared.schemas.ranks import OrdersRequest, RankReport, RankReportAck
from shared.tlspin import open_socket

KEEP_IDLE_S = 60.0  # below the coordinator's 75 s, so it never closes a connection we are about to reuse
USER_AGENT = f"jupiter-agent/{shared.__version__}"

M = TypeVar("M")


class BrokenAnswer(ConnectionError):
    """The connection gave something that is not an HTTP answer (cut short, garbled)."""


class _HTTPConnection(http.client.HTTPConnection):
    """http.client's connection, plain or over TLS with `context`, opened by
    shared.tlspin.open_socket: it hands the host name over as bytes, so the agent never loads
    the idna codec (0.3 MB) for a name that needs no encoding."""

    def __init__(self, host: str, port: int | None, *, timeout: float, context: ssl.SSLContext | None):
        self.default_port = 443 if context is not None else 80  # read by the base (port None, Host)
        super().__init__(host, port, timeout=timeout)
        self.tls = context

    def connect(self) -> None:
        self.sock = open_socket(self.host, self.port, timeout=self.timeout, context=self.tls)


class Connection:
    """One HTTP/1.1 connection to the coordinator, opened when needed and kept between requests.
    Not thread-safe: the agent keeps one per thread."""

    def __init__(self, url: str, token: str | None, *, context: ssl.SSLContext | None, timeout: float = 10.0):
        parts = urlsplit(url)
        self.https = parts.scheme.lower() == "https"
        self.host, self.port = parts.hostname or "", parts.port
        self.prefix = parts.path.rstrip("/")
        self.context = context
        self.timeout = timeout
        self.headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self._conn: http.client.HTTPConnection | None = None
        self._idle_since = 0.0

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _open(self, timeout: float) -> http.client.HTTPConnection:
        if self.https and self.context is None:
            # The system's trust, as http.client sets it up (the agent itself always gives a context)
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout)
        return _HTTPConnection(self.host, self.port, timeout=timeout, context=self.context if self.https else None)

    def request(self, method: str, path: str, body: bytes | None = None, *, timeout: float | None = None
                ) -> tuple[int, bytes]:
        """(status, body) of an answer under 400; ApiError for >= 400, OSError when the connection
        fails. A kept connection that the coordinator closed meanwhile is retried once on a new one."""
        timeout = self.timeout if timeout is None else timeout
        if self._conn is not None and time.monotonic() - self._idle_since > KEEP_IDLE_S:
            self.close()
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        reused = self._conn is not None
        try:
            resp, data = self._exchange(method, path, body, headers, timeout)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            if not reused:
                raise
            # Closed while it sat idle, before our request reached the server: say it again.
            resp, data = self._exchange(method, path, body, headers, timeout)
        if resp.status >= 400:
            raise from_answer(resp.status, data, resp.getheader("retry-after"))
        return resp.status, data

    def _exchange(self, method: str, path: str, body: bytes | None, headers: dict[str, str], timeout: float
                  ) -> tuple[http.client.HTTPResponse, bytes]:
        """One request and its whole answer on the kept connection (opened if there is none); the
        connection is dropped after any failure and whenever the server says it will close it."""
        if self._conn is None:
            self._conn = self._open(timeout)
        conn = self._conn
        try:
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            conn.request(method, self.prefix + path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (http.client.RemoteDisconnected, OSError):
            self.close()
            raise
        except http.client.HTTPException as exc:
            self.close()
            raise BrokenAnswer(f"{type(exc).__name__}: {exc}") from None
        except BaseException:
            self.close()
            raise
        if resp.will_close:
            self.close()
        else:
            self._idle_since = time.monotonic()
        return resp, data

    def _json(self, method: str, path: str, req, model: type[M], **dump) -> M:
        timeout = dump.pop("timeout", None)
        _, data = self.request(method, path, req.model_dump_json(**dump).encode(), timeout=timeout)
        return model.model_validate_json(data)

    # ------------------------------------------------------------------ the calls

    def register(self, req: RegisterRequest) -> RegisterResponse:
        return self._json("POST", "/nodes/register", req, RegisterResponse)

    def heartbeat(self, node_id: str, req: HeartbeatRequest) -> HeartbeatResponse:
        return self._json("PUT", f"/nodes/{node_id}/heartbeat", req, HeartbeatResponse, exclude_none=True)

    def orders(self, node_id: str, req: OrdersRequest) -> HeartbeatResponse:
        return self._json("POST", f"/nodes/{node_id}/orders", req, HeartbeatResponse, timeout=req.wait_s + 15)

    def report(self, node_id: str, req: RankReport) -> RankReportAck:
        return self._json("POST", f"/nodes/{node_id}/report", req, RankReportAck)

    def download(self, path: str, dest_file, max_bytes: int, *, timeout: float | None = None) -> int:
        """Stream the answer to GET `path` into `dest_file` (binary, writable), never holding it whole;
        the number of bytes. ApiError for an answer >= 400, ValueError for one over `max_bytes`,
        OSError when the connection fails or the answer is cut short. On a connection of its own."""
        timeout = self.timeout if timeout is None else timeout
        self.close()
        conn = self._open(timeout)
        try:
            conn.request("GET", self.prefix + path, headers=dict(self.headers, Accept="*/*"))
            resp = conn.getresponse()
            if resp.status >= 400:
                data = resp.read(65536)
                raise from_answer(resp.status, data, resp.getheader("retry-after"))
            if resp.length is not None and resp.length > max_bytes:
                raise ValueError(f"the answer is {resp.length} bytes, over {max_bytes}")
            got = 0
            while block := resp.read(1 << 20):
                got += len(block)
                if got > max_bytes:
                    raise ValueError(f"the answer is over {max_bytes} bytes")
                dest_file.write(block)
            if resp.length:  # http.client ends quietly when the connection closes early
                raise BrokenAnswer(f"the answer was cut short after {got} bytes")
            return got
        except http.client.HTTPException as exc:  # IncompleteRead and the like: cut short or garbled
            raise BrokenAnswer(f"{type(exc).__name__}: {exc}") from None
        finally:
            conn.close()

    def upload(self, path: str, file, size: int, *, timeout: float | None = None) -> bytes:
        """PUT the next `size` bytes of `file` (binary, readable) to `path` as they are read, never
        holding them whole; the answer's body. ApiError for an answer >= 400, OSError when the
        connection fails or the file holds fewer bytes than `size`. On a connection of its own."""
        timeout = self.timeout if timeout is None else timeout
        self.close()
        conn = self._open(timeout)
        conn.blocksize = 1 << 16  # http.client reads a file body in blocks of this
        headers = dict(self.headers, **{"Content-Type": "application/octet-stream", "Content-Length": str(size)})
        try:
            try:
                conn.request("PUT", self.prefix + path, body=_Exactly(file, size), headers=headers)
            except (BrokenPipeError, ConnectionResetError):
                pass  # a refusal (403, 413) may come before the whole body is taken: read it below
            resp = conn.getresponse()
            data = resp.read()
        except http.client.HTTPException as exc:
            raise BrokenAnswer(f"{type(exc).__name__}: {exc}") from None
        finally:
            conn.close()
        if resp.status >= 400:
            raise from_answer(resp.status, data, resp.getheader("retry-after"))
        return data


class _Exactly:
    """`size` bytes of a file for http.client to send: a file that grew since its size was taken
    sends no more than the Content-Length says, one that shrank fails the upload."""

    def __init__(self, file, size: int):
        self.file, self.left = file, size

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        data = self.file.read(self.left if n is None or n < 0 else min(n, self.left))
        if not data:
            raise OSError(f"the file ended {self.left} bytes short of the size it had")
        self.left -= len(data)
        return data
