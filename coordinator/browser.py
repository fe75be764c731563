"""What a browser on the same machine or network must not be able to do with the coordinator.

Two ASGI middlewares:

- `HostAllowlist`: answer only requests whose Host header names this coordinator. A web page on
  another origin can point its own DNS name at 127.0.0.1 or a LAN address (DNS rebinding) and
  then talk to the API as a same-origin page; its requests still carry its own name in Host.
- `SecurityHeaders`: no framing, no MIME sniffing, no referrer on every answer, and a
  Content-Security-Policy on the API docs pages (Swagger UI, ReDoc), which share the dashboard's
  origin and so its localStorage, where the admin token lives.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
import re
import time
from collections.abc import Callable, Iterable

from fastapi.responses import JSONResponse

from shared.text import plain

log = logging.getLogger("jupiter.coordinator")

# --------------------------------------------------------------------------- Host allowlist

ANY_HOST = "*"


def host_of(header: str) -> str:
    """The name in a Host header value, lower case, without port, brackets or trailing dot;
    IP literals in their canonical form ("[0:0::1]:8470" -> "::1")."""
    value = header.strip().lower()
    if value.startswith("["):  # IPv6 literal, maybe with a port: [::1]:8470
        name = value[1:value.find("]")] if "]" in value else value[1:]
    elif value.count(":") == 1:  # name:port or a.b.c.d:port
        name = value.partition(":")[0]
    else:  # a bare name, or a malformed unbracketed IPv6 (compared as it is)
        name = value
    name = name.rstrip(".")
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


class HostAllowlist:
    """Refuse (400) requests whose Host header is not one of the names the coordinator serves.

    `names` returns the allowed names; it is called again (at most every `refresh_s`) when a Host
    is not among them, so an address that appears after start-up (a Thunderbolt bridge coming up
    under a wildcard bind) is served without a restart. `*` among the names allows any Host.

    A request with no Host header at all (HTTP/1.0) passes: browsers always send one, so its
    absence is no rebinding attack, and HTTP/1.0 health probes send none.
    """

    def __init__(self, app, names: Callable[[], Iterable[str]], refresh_s: float = 2.0):
        self.app, self._names, self.refresh_s = app, names, refresh_s
        self._allowed: frozenset[str] = self._load()
        self._loaded_at = time.monotonic()
        self._logged: set[str] = set()

    def _load(self) -> frozenset[str]:
        return frozenset(host_of(n) if n != ANY_HOST else n for n in self._names())

    def _log_once(self, name: str) -> None:
        """One warning per unknown name (at most 32), naming what is served: the operator's clue."""
        if name in self._logged or len(self._logged) >= 32:
            return
        self._logged.add(name)
        log.warning("refused a request for host %r (Host header); serving %s; add names with --allowed-host",
                    name, ", ".join(sorted(self._allowed)))

    def allows(self, name: str) -> bool:
        if ANY_HOST in self._allowed or name in self._allowed:
            return True
        if time.monotonic() - self._loaded_at >= self.refresh_s:
            self._allowed, self._loaded_at = self._load(), time.monotonic()
            return ANY_HOST in self._allowed or name in self._allowed
        return False

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        raw = next((v for k, v in scope.get("headers", []) if k == b"host"), None)
        if raw is None:
            return await self.app(scope, receive, send)
        header = raw.decode("latin-1")
        name = host_of(header)
        if self.allows(name):
            return await self.app(scope, receive, send)
        shown = plain(name)[:100]
        self._log_once(shown)
        # The names served are not listed: a page that got here by DNS rebinding could read them.
        detail = (f"this coordinator does not answer to the host {shown!r} (the request's Host header). "
                  f"If that is a name for it, start it with --allowed-host {shown}")
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        body = JSONResponse({"detail": detail}).body
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------- headers for browsers

# Every answer: never in a frame, never sniffed into another type, no Referer to elsewhere.
COMMON_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
# Answers that are not pages (JSON, text, the docs' own static files): nothing may run or load.
DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# Swagger UI and ReDoc pages: their scripts come from this coordinator; the one inline script of
# Swagger UI (its start-up call) is allowed by its hash, computed from the page as served.
# Styles need 'unsafe-inline': ReDoc (styled-components) and Swagger UI add <style> elements and
# style attributes at run time, which no hash can name; styles run no code.
DOCS_CSP = ("default-src 'none'; script-src 'self'{hashes}; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_INLINE_SCRIPT_RE = re.compile(rb"<script(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script\s*>", re.S | re.I)


def inline_script_hashes(html: bytes) -> list[str]:
    """CSP source expressions ('sha256-...') for each inline <script> in `html`."""
    return [f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'"
            for body in _INLINE_SCRIPT_RE.findall(html)]


class SecurityHeaders:
    """Add COMMON_HEADERS to every HTTP answer, and a Content-Security-Policy where the route set
    none: DOCS_CSP on `docs_paths`, DEFAULT_CSP elsewhere. Headers a route set itself are kept."""

    def __init__(self, app, docs_paths: Iterable[str] = ("/docs", "/redoc", "/docs/oauth2-redirect")):
        self.app, self.docs_paths = app, frozenset(docs_paths)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope.get("path") in self.docs_paths:
            return await self._docs_page(scope, receive, send)

        async def with_headers(msg):
            if msg["type"] == "http.response.start":
                msg["headers"] = _merged(msg.get("headers", []), DEFAULT_CSP)
            await send(msg)

        return await self.app(scope, receive, with_headers)

    async def _docs_page(self, scope, receive, send):
        """Hold the (small, generated) page until its body is complete, to hash its inline scripts."""
        start: dict | None = None
        chunks: list[bytes] = []

        async def hold(msg):
            nonlocal start
            if msg["type"] == "http.response.start":
                start = msg
                return
            if msg["type"] != "http.response.body":
                return await send(msg)
            chunks.append(msg.get("body", b""))
            if msg.get("more_body"):
                return
            body = b"".join(chunks)
            hashes = "".join(" " + h for h in inline_script_hashes(body))
            start["headers"] = _merged(start.get("headers", []), DOCS_CSP.format(hashes=hashes))
            await send(start)
            await send({"type": "http.response.body", "body": body})

        return await self.app(scope, receive, hold)


def _merged(headers, csp: str) -> list:
    have = {bytes(k).lower() for k, _ in headers}
    out = list(headers)
    for k, v in COMMON_HEADERS.items():
        if k.encode() not in have:
            out.append((k.encode(), v.encode()))
    if b"content-security-policy" not in have:
        out.append((b"content-security-policy", csp.encode()))
    return out
