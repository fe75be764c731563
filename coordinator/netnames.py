"""The names and addresses the coordinator answers to.

One list serves two purposes: the server certificate's subject alternative names (so an agent can
verify the certificate whichever of them it dials) and the Host header allowlist (so a page on
another origin cannot reach the API through DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import socket

import psutil

from shared.tlspin import is_loopback


def local_hostnames() -> list[str]:
    """This machine's host name, its `.local` (Bonjour) form and localhost."""
    names: list[str] = ["localhost"]
    host = socket.gethostname().strip().rstrip(".")
    if host:
        short = host.split(".", 1)[0]
        names += [host, short, f"{short}.local"]
    return _unique(n.lower() for n in names if n)


def interface_addresses() -> list[str]:
    """Every IPv4/IPv6 address on a local interface (Ethernet, Wi-Fi, the Thunderbolt bridge...),
    loopback included, without IPv6 scope ids."""
    out: list[str] = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            text = a.address.split("%", 1)[0]
            try:
                out.append(str(ipaddress.ip_address(text)))
            except ValueError:
                continue
    return _unique(["127.0.0.1", "::1", *out])


def served_names(bind_host: str, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Names and addresses clients may use to reach a coordinator bound to `bind_host`.

    A loopback bind is reachable only as loopback; a wildcard bind (0.0.0.0, ::) by every local
    name and address; a specific address by itself plus the host names. `extra` adds names the
    operator configured (a DNS alias, a load balancer's name)."""
    loop = ["localhost", "127.0.0.1", "::1"]
    if is_loopback(bind_host):
        names = loop + [bind_host]
    elif bind_host in ("0.0.0.0", "::", ""):
        names = local_hostnames() + interface_addresses()
    else:
        names = local_hostnames() + loop + [bind_host]
    return _unique([*names, *extra])


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _unique(items) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        item = item.strip().lower()
        if item:
            seen.setdefault(item, None)
    return list(seen)
