"""Trusting the coordinator's certificate by its pin, the way k3s and kubeadm join tokens do.

A join string is `jupiter1:<sha256 of the CA certificate>:<token id>:<secret>`. Before anything
secret leaves the machine, the client downloads the CA certificate from `GET /ca.pem` (an open
route, over a connection it does not yet trust), checks that its SHA-256 is the pin, and from
then on trusts exactly that CA: every later connection, the one carrying the secret included,
verifies the server against it, host name and all. A man in the middle can copy the CA
certificate but not its key, so it can neither pass the pin nor the verification that follows.

This module is used by the agent (enrolment), the CLI away from the leader (`JUPITER_CA_SHA256`
or `JUPITER_CA_FILE`) and the tests; it imports nothing from coordinator/ or agent/.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

PREFIX = "jupiter1"
PIN_RE = re.compile(r"^[0-9a-f]{64}$")
TOKEN_ID_RE = re.compile(r"^(?:[a-z0-9]{6}|cluster)$")
CLUSTER_TOKEN_ID = "cluster"  # the cluster's own join secret (JUPITER_JOIN_TOKEN or join.token)
_PEM_CERT_RE = re.compile(rb"-----BEGIN CERTIFICATE-----\s+.*?-----END CERTIFICATE-----", re.S)


class PinMismatch(Exception):
    """The coordinator's CA is not the one the join string names: someone may be in the middle."""

    def __init__(self, url: str, expected: str, got: str):
        self.expected, self.got = expected, got
        super().__init__(f"the certificate authority at {url} has SHA-256 {got}, but the join string pins "
                         f"{expected}: not sending the secret (a wrong join string, a re-created CA, or "
                         f"someone in the middle)")


@dataclass(frozen=True)
class JoinString:
    secret: str
    token_id: str | None = None   # None: a bare secret (the cluster's, on loopback)
    pin: str | None = None

    def bearer(self) -> str:
        """What goes in `Authorization: Bearer` (never the pin, which is no secret anyway)."""
        return f"{self.token_id}:{self.secret}" if self.token_id else self.secret

    def render(self) -> str:
        return f"{PREFIX}:{self.pin}:{self.token_id}:{self.secret}"


def parse_join(value: str) -> JoinString:
    """A pinned join string, or a bare secret (accepted against a plain-HTTP loopback coordinator)."""
    value = value.strip()
    if not value.startswith(PREFIX + ":"):
        return JoinString(secret=value)
    parts = value.split(":", 3)
    if len(parts) != 4 or not parts[3]:
        raise ValueError("a join string is jupiter1:<ca sha256>:<token id>:<secret>")
    _, pin, token_id, secret = parts
    pin = normalize_pin(pin)
    if not TOKEN_ID_RE.fullmatch(token_id):
        raise ValueError(f"join string: token id {token_id!r} is not a Jupiter token id")
    return JoinString(secret=secret, token_id=token_id, pin=pin)


def normalize_pin(pin: str) -> str:
    """Accept `sha256:AB:CD...`, upper case or colons, as people copy fingerprints around."""
    raw = pin.strip().lower()
    raw = raw.removeprefix("sha256:").replace(":", "")
    if not PIN_RE.fullmatch(raw):
        raise ValueError(f"{pin!r} is not a SHA-256 fingerprint (64 hex digits)")
    return raw


def pem_certificates(pem: bytes) -> list[bytes]:
    return _PEM_CERT_RE.findall(pem)


def fingerprint(pem: bytes) -> str:
    """SHA-256 of the first certificate's DER bytes, as hex: what `openssl x509 -fingerprint
    -sha256` prints, without the colons."""
    certs = pem_certificates(pem)
    if not certs:
        raise ValueError("no PEM certificate found")
    der = ssl.PEM_cert_to_DER_cert(certs[0].decode())
    return hashlib.sha256(der).hexdigest()


def anchor_of(chain_pem: bytes) -> bytes:
    """The certificate a chain ends with: the one clients trust and pin."""
    certs = pem_certificates(chain_pem)
    if not certs:
        raise ValueError("no PEM certificate found")
    return certs[-1] + b"\n"


def context_for(ca_pem: bytes) -> ssl.SSLContext:
    """Trust exactly this CA (not the system's), with host names checked."""
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def fetch_pinned_ca(url: str, pin: str, *, timeout: float = 10.0) -> bytes:
    """Download the CA from `url` without trusting the connection and without sending anything
    but the request line (and Host); return it if its SHA-256 is `pin`, else raise PinMismatch.
    Standard library only: the agent uses it too, and must not load an HTTP library for it.
    A coordinator that cannot be reached or answers other than 200 is an OSError."""
    import http.client

    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    blind = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    blind.check_hostname, blind.verify_mode = False, ssl.CERT_NONE
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.sock = open_socket(host, port, timeout=timeout, context=blind)  # http.client sends on it
        conn.request("GET", "/ca.pem")
        resp = conn.getresponse()
        pem = resp.read(MAX_CA_BYTES + 1)
    except http.client.HTTPException as exc:  # garbled or cut short: not an HTTP answer
        raise ConnectionError(f"GET {url}/ca.pem: {exc!r}") from None
    finally:
        conn.close()
    if resp.status != 200 or len(pem) > MAX_CA_BYTES:  # not a Jupiter coordinator, or one too old to serve it
        raise ConnectionError(f"GET {url}/ca.pem answered {resp.status}" + (" (too large)" if resp.status == 200 else ""))
    got = fingerprint(pem)
    if got != normalize_pin(pin):
        raise PinMismatch(url, normalize_pin(pin), got)
    return anchor_of(pem)


MAX_CA_BYTES = 64 * 1024  # a CA certificate is about 1 KB; a chain a few


def ascii_name(host: str) -> str | bytes:
    """`host` as bytes when it is ASCII (an address, or any name a URL of ours holds), for the
    socket and ssl modules. Given a str they encode it with the idna codec, whose first use
    loads unicodedata and stringprep: 0.3 MB kept for the life of an agent that runs for months,
    for a name that needs no encoding."""
    return host.encode("ascii") if host.isascii() else host


def open_socket(host: str, port: int, *, timeout: float | None, context: ssl.SSLContext | None) -> socket.socket:
    """A TCP connection to host:port, over TLS when given a context (the server checked against
    it, host name included, as http.client's HTTPSConnection does), without Nagle's delay."""
    name = ascii_name(host)
    sock = socket.create_connection((name, port), timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return context.wrap_socket(sock, server_hostname=name) if context is not None else sock
    except BaseException:
        sock.close()
        raise


def is_loopback(host: str) -> bool:
    """A host name or address that never leaves this machine."""
    if host.lower() in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    return is_loopback(urlsplit(url).hostname or "")


def is_https(url: str) -> bool:
    return urlsplit(url).scheme.lower() == "https"
