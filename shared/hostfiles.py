"""Hostfiles for the launchers Jupiter drives, rendered from a list of placed ranks (docs/hostfiles.md).

Pure functions: no I/O, no name resolution. Every host and address goes through
`shared.schemas.validate_host`, so nothing a shell or a hostfile reader could misread gets in.

Formats (each ends with one newline):

- ``openmpi``: ``HOST slots=N`` per host, in rank order.
- ``mpich``: ``HOST:N`` per host, in rank order.
- ``mlx``: the JSON ``mlx.launch --hostfile`` reads,
  ``{"backend": "ring", "envs": [], "hosts": [{"ssh": HOST, "ips": [IP, ...]}, ...]}``, one host
  entry per rank (mlx.launch numbers ranks by position, so a host with two ranks appears twice).
- ``ring``: what ``MLX_HOSTFILE`` holds for MLX's ring backend, ``[["IP:PORT"], ...]``, one list per
  rank in rank order.

What MLX's ring backend accepts (checked against mlx 0.32.4 on Linux, and the upstream source of
``parse_address`` in mlx/distributed/utils.cpp):

- Each entry is split at the *first* ``:``; the left part goes to ``getaddrinfo``. So IPv6 cannot be
  written at all: ``fe80::1:5000`` splits into ``fe80`` / ``:1:5000`` and ``[fe80::1]:5000`` into
  ``[fe80`` / ``...``; both fail with "Can't parse address". `ring` therefore refuses IPv6 addresses
  instead of writing a file MLX would reject. DNS names do work (``localhost:5000`` resolves).
- A one-rank ring file (``[["127.0.0.1:5000"]]``) makes ``mx.distributed.init(backend="ring")``
  hang forever (rank 0 waits for a connection from itself), ``[]`` crashes the process with SIGFPE,
  and an empty file is a JSON parse error. A single rank must be started without ``MLX_HOSTFILE``,
  so `ring` refuses a world of one.
- The ring backend sets ``SO_REUSEPORT``, so two ranks given the same ``IP:PORT`` both "listen" and
  the job may even appear to work; `ring` refuses duplicated endpoints.

About the ``mlx`` format: it carries no ports. ``mlx.launch`` assigns them itself, starting at
``--starting-port`` (default 32323) and adding one per rank and IP, in rank order. Use
`starting_port` to get the ``--starting-port`` value that reproduces the slots' ports exactly.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shared.schemas import validate_host

FORMATS = ("openmpi", "mpich", "mlx", "ring")
MLX_BACKENDS = ("ring", "mpi", "jaccl", "jaccl-ring", "nccl")
_RDMA_DEVICE = re.compile(r"^rdma_[A-Za-z0-9_.-]{1,60}$")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Slot:
    """One placed rank. `host` is the node's name/address for ssh and mpirun; `address` is the IP
    (or name) the rank listens on for rank traffic, e.g. a Thunderbolt bridge address."""

    host: str
    address: str
    port: int
    rank: int

    def __post_init__(self) -> None:
        _host(self.host)
        _host(self.address, what="address")
        _port(self.port)
        if not _is_int(self.rank) or self.rank < 0:
            raise ValueError(f"invalid rank {self.rank!r}: must be an integer >= 0")


# --------------------------------------------------------------------------- checks


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _host(value: object, what: str = "host") -> str:
    if not isinstance(value, str):
        raise ValueError(f"invalid {what} {value!r}: must be a string")
    return validate_host(value, what)


def _port(value: object) -> int:
    if not _is_int(value) or not 1 <= value <= 65535:
        raise ValueError(f"invalid port {value!r}: must be an integer in 1..65535")
    return value


def _is_ipv6(value: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(value), ipaddress.IPv6Address)
    except ValueError:
        return ":" in value  # e.g. "fe80::1%en0": a scoped literal is still IPv6


def _host_counts(hosts: Iterable[tuple[str, int]], fmt: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    seen: set[str] = set()
    for item in hosts:
        try:
            host, n = item
        except (TypeError, ValueError):
            raise ValueError(f"{fmt}: expected (host, slots) pairs, got {item!r}") from None
        _host(host)
        if not _is_int(n) or n < 1:
            raise ValueError(f"{fmt}: invalid slot count {n!r} for host {host!r}: must be an integer >= 1")
        if host in seen:
            # mpirun merges repeated lines, so ranks would no longer follow the file's order.
            raise ValueError(f"{fmt}: host {host!r} appears twice; give each host once with its slot count")
        seen.add(host)
        out.append((host, n))
    if not out:
        raise ValueError(f"{fmt}: no hosts")
    return out


def _ordered(slots: Iterable[Slot]) -> list[Slot]:
    """Slots sorted by rank; ranks must be exactly 0..n-1."""
    slots = list(slots)
    for s in slots:
        if not isinstance(s, Slot):
            raise ValueError(f"expected Slot, got {s!r}")
    if not slots:
        raise ValueError("no ranks placed")
    slots.sort(key=lambda s: s.rank)
    ranks = [s.rank for s in slots]
    if ranks != list(range(len(slots))):
        raise ValueError(f"ranks must be 0..{len(slots) - 1}, each once; got {sorted(ranks)}")
    return slots


# --------------------------------------------------------------------------- formats


def openmpi(hosts: Sequence[tuple[str, int]]) -> str:
    """Open MPI hostfile: ``HOST slots=N`` per host, in the given (rank) order."""
    return "".join(f"{h} slots={n}\n" for h, n in _host_counts(hosts, "openmpi"))


def mpich(hosts: Sequence[tuple[str, int]]) -> str:
    """MPICH (Hydra) hostfile: ``HOST:N`` per host. IPv6 literals are refused: ``::1:2`` is ambiguous."""
    pairs = _host_counts(hosts, "mpich")
    for h, _ in pairs:
        if ":" in h:
            raise ValueError(f"mpich: host {h!r} contains ':', which the HOST:N format cannot carry")
    return "".join(f"{h}:{n}\n" for h, n in pairs)


def mlx(hosts: Sequence[tuple[str, Sequence[str]]], backend: str = "ring", envs: Sequence[str] = (),
        rdma: Sequence[Sequence[str | None]] | None = None) -> str:
    """The JSON ``mlx.launch --hostfile`` reads; one entry per rank, in rank order.

    `envs` are ``KEY=VALUE`` strings that mlx.launch exports on every rank (it would silently drop a
    key that is not alphanumeric/underscore; here that is an error). `rdma` is the jaccl device
    matrix: row i becomes entry i's ``"rdma"`` (null on the diagonal)."""
    if backend not in MLX_BACKENDS:
        raise ValueError(f"mlx: unknown backend {backend!r}: use one of {', '.join(MLX_BACKENDS)}")
    env_list: list[str] = []
    if isinstance(envs, str):
        raise ValueError("mlx: envs must be a list of KEY=VALUE strings, not one string")
    for e in envs:
        if not isinstance(e, str) or "=" not in e:
            raise ValueError(f"mlx: invalid env {e!r}: expected KEY=VALUE")
        key, value = e.split("=", 1)
        if not _ENV_KEY_RE.match(key):
            raise ValueError(f"mlx: invalid env name {key!r}")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError(f"mlx: env {key} has a control character in its value")
        env_list.append(e)
    entries = []
    for item in hosts:
        try:
            host, ips = item
        except (TypeError, ValueError):
            raise ValueError(f"mlx: expected (host, [ips]) pairs, got {item!r}") from None
        _host(host)
        if isinstance(ips, str) or not isinstance(ips, Sequence):
            raise ValueError(f"mlx: ips for host {host!r} must be a list of addresses")
        ips = [_host(ip, what="address") for ip in ips]
        if backend in ("ring", "jaccl", "jaccl-ring", "nccl") and not ips:
            raise ValueError(f"mlx: host {host!r} has no IP; the {backend} backend needs one")
        if backend == "ring":
            for ip in ips:
                if _is_ipv6(ip):
                    raise ValueError(f"mlx: the ring backend cannot use the IPv6 address {ip!r}")
        entries.append({"ssh": host, "ips": ips})
    if not entries:
        raise ValueError("mlx: no hosts")
    if rdma is not None:
        if len(rdma) != len(entries) or any(len(row) != len(entries) for row in rdma):
            raise ValueError(f"mlx: the rdma matrix must be {len(entries)} x {len(entries)}, one row per host")
        for i, (entry, row) in enumerate(zip(entries, rdma, strict=True)):
            for j, dev in enumerate(row):
                if i == j and dev is not None:
                    raise ValueError(f"mlx: rdma[{i}][{i}] must be null (a host has no device to itself)")
                if dev is not None and not _RDMA_DEVICE.match(dev):
                    raise ValueError(f"mlx: rdma[{i}][{j}] {dev!r} is not an RDMA device name (rdma_en2)")
            entry["rdma"] = list(row)  # null off the diagonal: no cable (jaccl-ring's non-neighbours)
    return json.dumps({"backend": backend, "envs": env_list, "hosts": entries}) + "\n"


def ring(slots: Iterable[Slot]) -> list[list[str]]:
    """Per rank, in rank order, its ``["IP:PORT"]`` list for ``MLX_HOSTFILE`` (see module notes)."""
    ordered = _ordered(slots)
    if len(ordered) < 2:
        raise ValueError("ring: a world of one rank hangs MLX's ring backend; start it without MLX_HOSTFILE")
    seen: dict[tuple[str, int], int] = {}
    out = []
    for s in ordered:
        if _is_ipv6(s.address):
            raise ValueError(
                f"ring: rank {s.rank}: MLX's ring backend cannot parse IPv6 address {s.address!r} "
                "(it splits IP:PORT at the first colon); use an IPv4 address")
        key = (s.address, s.port)
        if key in seen:
            raise ValueError(f"ring: ranks {seen[key]} and {s.rank} both use {s.address}:{s.port}")
        seen[key] = s.rank
        out.append([f"{s.address}:{s.port}"])
    return out


def ring_json(slots: Iterable[Slot]) -> str:
    """The ``MLX_HOSTFILE`` text for the ring backend, e.g. ``[["10.0.0.1:5000"], ["10.0.0.2:5001"]]``."""
    return json.dumps(ring(slots)) + "\n"


def group_hosts(slots: Iterable[Slot]) -> list[tuple[str, int]]:
    """Merge consecutive ranks on one host into ``(host, count)``, in rank order.

    mpirun's default by-slot mapping fills each host's slots before moving on, so rank order
    matches only if every host's ranks are contiguous; anything else is refused."""
    out: list[tuple[str, int]] = []
    done: set[str] = set()
    for s in _ordered(slots):
        if out and out[-1][0] == s.host:
            out[-1] = (s.host, out[-1][1] + 1)
            continue
        if s.host in done:
            raise ValueError(
                f"ranks on host {s.host!r} are not contiguous (rank {s.rank} follows another host); "
                "mpirun's by-slot mapping would not match rank order")
        if out:
            done.add(out[-1][0])
        out.append((s.host, 1))
    return out


def starting_port(slots: Iterable[Slot]) -> int:
    """The ``mlx.launch --starting-port`` that gives every rank its slot's port (mlx.launch adds one
    per rank); ValueError unless the ports are consecutive in rank order."""
    ordered = _ordered(slots)
    base = ordered[0].port
    for s in ordered:
        if s.port != base + s.rank:
            raise ValueError(
                f"rank {s.rank} has port {s.port}, but mlx.launch would give it {base + s.rank} "
                f"(ports must be consecutive from {base} in rank order)")
    return base


def render(fmt: str, slots: Iterable[Slot], *, backend: str = "ring", envs: Sequence[str] = ()) -> str:
    """Render `slots` in `fmt` ("openmpi" | "mpich" | "mlx" | "ring"). `backend` and `envs` apply
    to the mlx format only (the others have nowhere to put them)."""
    slots = list(slots)
    if fmt == "openmpi":
        return openmpi(group_hosts(slots))
    if fmt == "mpich":
        return mpich(group_hosts(slots))
    if fmt == "mlx":
        return mlx([(s.host, [s.address]) for s in _ordered(slots)], backend=backend, envs=envs)
    if fmt == "ring":
        return ring_json(slots)
    raise ValueError(f"unknown hostfile format {fmt!r}: use one of {', '.join(FORMATS)}")
