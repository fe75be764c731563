"""The addresses at both ends of a cable: what a hostfile or a rank may dial to reach a
neighbour over Thunderbolt, from each node's bridge and per-interface addresses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from coordinator.topology.graph import Link, Topology


@dataclass(frozen=True)
class Endpoint:
    node: str
    port: int | None
    interface: str | None     # the Thunderbolt port's interface (en2)
    via: str | None           # the interface that holds the address: bridge0 when bridged, else en2
    ips: tuple[str, ...]      # empty when not known
    shared: bool              # True: a bridge address, the same for every bridged port of the node


@dataclass(frozen=True)
class LinkAddresses:
    a: Endpoint
    b: Endpoint


def link_addresses(topology: Topology, a: str, b: str) -> LinkAddresses | None:
    """The addresses at both ends of the cable a<->b (the first by port at a), or None when no
    cable both ends see joins them. A bridged port has no address of its own: the bridge's
    address stands for every member, so it says "reach this Mac over Thunderbolt", not "over
    this cable" (`shared`)."""
    links = topology.links_between(a, b)
    if not links:
        return None
    ln = links[0]
    return LinkAddresses(_endpoint(topology, a, ln), _endpoint(topology, b, ln))


def _endpoint(topology: Topology, node_id: str, ln: Link) -> Endpoint:
    node = topology.nodes[node_id]
    port, iface = ln.at(node_id)
    if node.bridged(iface):
        ips = node.bridge_ips if node.bridge_up else ()
        return Endpoint(node_id, port, iface, node.bridge_interface, tuple(ips), True)
    ips = _usable(node.interface_ips.get(iface or "", ()))
    return Endpoint(node_id, port, iface, iface, ips, False)


def _usable(ips: Iterable[str]) -> tuple[str, ...]:
    """IPv4 first; IPv6 link-local (fe80::) dropped, since it needs a scope no hostfile carries."""
    v4, v6 = [], []
    for ip in ips:
        try:
            addr = ipaddress.ip_address(ip.split("%")[0])
        except ValueError:
            continue
        if addr.version == 4:
            v4.append(ip)
        elif not addr.is_link_local:
            v6.append(ip)
    return tuple(v4 + v6)
