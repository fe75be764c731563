"""RDMA over Thunderbolt (MLX's jaccl and jaccl-ring backends): what stands in its way on each
node and each cable (`Blocker`s, each with its fix), and which nodes it can use together: the
pairs joined by a usable cable, a full mesh for jaccl, a cycle for jaccl-ring.

A node needs to be an Apple Silicon Mac on macOS 26.2 or later, with RDMA enabled (`rdma_ctl`,
set from recoveryOS), Thunderbolt 5 ports, and `ibv_devices` listing their RDMA devices.
`rdma_ctl` says enabled on Thunderbolt 4 Macs too, where RDMA never works, so Thunderbolt 5 is
read from the ports: a link at 80 Gb/s, or an empty port offering "Up to 120 Gb/s" (macOS prints
a port's capability only while it is empty). A cable needs both ends to see it, a link at 80 Gb/s
(a Thunderbolt 4 cable or port at either end gives 40), the RDMA device of each end's port, and
neither port in a Thunderbolt Bridge that is up.

Pure functions over a built `Topology`: deterministic (by name), and the searches are bounded by
the ring search's step budget, so they give the same answer every time even when it runs out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from coordinator.topology import rings
from coordinator.topology.components import reach
from coordinator.topology.graph import Link, PortFacts, Topology
from shared.backends import MIN_MACOS, RDMA, RDMA_ENABLE_FIX, macos_version

RDMA_GBPS = 80.0   # a Thunderbolt 5 link; Thunderbolt 4 links at 40
NODE_CODES = ("not_mac", "old_macos", "rdma_off", "tb4_only", "no_devices")
CABLE_CODES = ("one_sided", "not_cabled", "speed_unknown", "tb4_link", "bridge_on", "device_missing")
_MACOS = f"macOS {MIN_MACOS[0]}.{MIN_MACOS[1]}"
# What the missing cable of a pair means, per backend (jaccl_check adds it to "not cabled").
NEEDS = {"jaccl": "jaccl needs every pair of nodes cabled directly (a full mesh)",
         "jaccl-ring": "jaccl-ring needs each rank cabled to the next in rank order (use ring_order)"}


@dataclass(frozen=True)
class Blocker:
    """One thing that keeps RDMA off a node or a cable. `node` is a node's name: the node, or
    the end of the cable to act on. `cable` names the cable by both ends and ports
    ("studio-1 Thunderbolt 3 (en4) <-> studio-4 Thunderbolt 1 (en2)"), or the two nodes when no
    cable joins them; None for a node's own blocker."""

    code: str
    node: str | None
    cable: str | None
    message: str
    fix: str

    def as_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- nodes and cables


def node_blockers(topo: Topology, node_id: str) -> list[Blocker]:
    """Why `node_id` cannot take part in RDMA, most basic first; [] when it can. What follows
    from an earlier blocker is not repeated (old macOS has no `rdma_ctl`, so it is not also
    "RDMA off"; a Thunderbolt 4 Mac lists no RDMA device, so that is not said again)."""
    n = topo.nodes[node_id]
    name = n.name
    if n.device_type != "mac":
        what = f"its device type is {n.device_type}" if n.device_type else "it has reported no facts yet"
        return [Blocker("not_mac", name, None,
                        f"{name} is not an Apple Silicon Mac ({what}): RDMA over Thunderbolt runs only between Macs",
                        "leave it out of jaccl and jaccl-ring jobs: ring runs on any node, nccl on NVIDIA GPUs")]
    out = []
    version = macos_version(n.os_version)
    if version is None or version < MIN_MACOS:
        said = f"runs {n.os_version}" if n.os_version else "has not reported its macOS version"
        out.append(Blocker("old_macos", name, None, f"{name} {said}: RDMA over Thunderbolt needs {_MACOS} or later",
                           f"update {name} to {_MACOS} or later (System Settings > General > Software Update), "
                           "then enable RDMA"))
    elif n.rdma_enabled is not True:
        word = "disabled" if n.rdma_enabled is False else "unknown"
        out.append(Blocker("rdma_off", name, None,
                           f"RDMA over Thunderbolt is not enabled on {name} (rdma_ctl status: {word})",
                           f"on {name}: {RDMA_ENABLE_FIX}"))
    if not any(is_tb5(p) for p in n.ports.values()):
        out.append(Blocker("tb4_only", name, None,
                           f"{name} shows no Thunderbolt 5 port (none linked at {RDMA_GBPS:g} Gb/s or offering "
                           "'Up to 120 Gb/s'): rdma_ctl may say enabled, but RDMA never works over Thunderbolt 4",
                           "use Macs with Thunderbolt 5 ports (M4 Pro, M4 Max, M3 Ultra or later), cabled with "
                           "Thunderbolt 5 cables directly between Thunderbolt 5 ports"))
    if not out and n.rdma_devices is None:
        out.append(Blocker("no_devices", name, None,
                           f"{name} has not reported its RDMA devices (ibv_devices was not run or failed)",
                           f"see {name}'s problems in `jupiter check` for why ibv_devices fails; an agent older "
                           "than this coordinator does not run it: reinstall it (jupiter agent install)"))
    elif not out and not n.rdma_devices:
        out.append(Blocker("no_devices", name, None, f"ibv_devices on {name} lists no RDMA device",
                           f"reboot {name} once RDMA is enabled and its Thunderbolt 5 ports are cabled, then "
                           "restart its agent, which reads ibv_devices when it starts"))
    return out


def is_tb5(port: PortFacts) -> bool:
    """A port that shows Thunderbolt 5: linked at 80 Gb/s or more, or offering it while empty."""
    return (port.speed_gbps or 0) >= RDMA_GBPS or (port.max_speed_gbps or 0) >= RDMA_GBPS


def link_blockers(topo: Topology, link: Link) -> list[Blocker]:
    """Why RDMA cannot use this cable, whatever its ends' own blockers; [] when it can."""
    a, b = topo.name(link.a), topo.name(link.b)
    cable = cable_name(topo, link)
    if link.one_sided:
        return [Blocker("one_sided", b, cable,
                        f"only one end sees the cable between {a} and {b}: {b} does not see the cable {a} sees on "
                        f"{_port(link.a_port, link.a_interface)}",
                        f"re-seat the cable at {b}'s end; if it was just plugged in, wait for {b}'s agent to "
                        "report its facts again")]
    out = []
    if link.speed_gbps is None:
        out.append(Blocker("speed_unknown", a, cable,
                           f"the cable {cable} reports no link speed, so it cannot be told from a Thunderbolt 4 link",
                           "wait for both agents to report their facts again (`jupiter check` shows them); "
                           "if the speed stays unknown, re-seat the cable"))
    elif link.speed_gbps < RDMA_GBPS:
        out.append(Blocker("tb4_link", a, cable,
                           f"the cable {cable} runs at {link.speed_gbps:g} Gb/s: RDMA needs a Thunderbolt 5 link "
                           f"({RDMA_GBPS:g} Gb/s)",
                           "use a Thunderbolt 5 cable, directly between two Thunderbolt 5 ports (no hub or dock)"))
    for end in (link.a, link.b):
        node = topo.nodes[end]
        port, iface = link.at(end)
        where = f"{node.name}'s {_port(port, iface)} (its cable to {b if end == link.a else a})"
        if node.bridge_up and node.bridged(iface):
            out.append(Blocker("bridge_on", node.name, cable,
                               f"{where} is in the Thunderbolt Bridge, which is up: RDMA needs the bridge off on "
                               "the cables it uses",
                               f"on {node.name}: System Settings > Network > Thunderbolt Bridge, remove {iface} "
                               "(or turn the bridge off), as `mlx.distributed_config --auto-setup` does"))
        if rdma_device(topo, link, end) is None:
            said = ("has reported no RDMA devices" if node.rdma_devices is None
                    else "lists no RDMA device in ibv_devices")
            out.append(Blocker("device_missing", node.name, cable, f"{node.name} {said} for {where}",
                               f"RDMA devices are renamed at reboot: run `ibv_devices` on {node.name} and restart "
                               "its agent, which reads them when it starts; a port with no device is not "
                               "Thunderbolt 5 or has RDMA off"))
    return out


def rdma_device(topo: Topology, link: Link, node_id: str) -> str | None:
    """The RDMA device (`ibv_devices` name) of the port at `node_id`'s end of `link`, if listed."""
    port, _ = link.at(node_id)
    facts = topo.nodes[node_id].ports.get(port) if port is not None else None
    return facts.rdma_device if facts else None


def cable_name(topo: Topology, link: Link) -> str:
    far = _port(link.b_port, link.b_interface) if link.b_port is not None else "(port not seen)"
    return f"{topo.name(link.a)} {_port(link.a_port, link.a_interface)} <-> {topo.name(link.b)} {far}"


def pair_link(topo: Topology, a: str, b: str, need: str = "") -> tuple[Link | None, list[Blocker]]:
    """The cable RDMA would use between nodes a and b (the lowest port at a among those with no
    blocker) and [], or None and what blocks every cable between them (`need`, the backend's
    wording from NEEDS, is added when no cable joins them at all)."""
    links = topo.links_between(a, b)
    blockers: list[Blocker] = []
    for ln in links:
        found = link_blockers(topo, ln)
        if not found:
            return ln, []
        blockers += found
    if links:
        return None, blockers
    one_sided = [ln for ln in topo.links if ln.one_sided and {ln.a, ln.b} == {a, b}]
    if one_sided:
        return None, link_blockers(topo, one_sided[0])
    na, nb = topo.name(a), topo.name(b)
    return None, [Blocker("not_cabled", na, f"{na} <-> {nb}",
                          f"no Thunderbolt cable joins {na} and {nb}" + (f": {need}" if need else ""),
                          f"cable {na} and {nb} directly with a Thunderbolt 5 cable, or leave one of them out")]


# --------------------------------------------------------------------------- which nodes RDMA can use


def rdma_pairs(topo: Topology, ids: Sequence[str]) -> set[frozenset[str]]:
    """The pairs of `ids` RDMA can join: neither node has a blocker and at least one cable
    between them has none."""
    ok = {i for i in ids if i in topo.nodes and not node_blockers(topo, i)}
    # One pass over the cables rather than pair_link per pair: this runs on every placement.
    return {frozenset((ln.a, ln.b)) for ln in topo.links
            if not ln.one_sided and ln.a != ln.b and ln.a in ok and ln.b in ok and not link_blockers(topo, ln)}


def mesh_order(topo: Topology, ids: Sequence[str], n: int, first: str | None = None,
               budget: list[int] | None = None) -> list[str] | None:
    """`n` of `ids` every two of which RDMA can join (what jaccl needs), `first` first when given,
    the others by name; of all such sets, the first by name. None when there is none, or the
    search ran out of budget (`explain` says why). `budget`: steps left, shared between calls."""
    if n < 2:
        return None
    adj = _rdma_adjacency(topo, ids)
    cands = sorted(adj, key=topo.key)
    if first is not None:
        if first not in adj:
            return None
        cands = [first] + [c for c in cands if c in adj[first]]
    return _clique(adj, cands, [first] if first is not None else [], 1 if first is not None else 0,
                   n, budget if budget is not None else [rings.SEARCH_BUDGET])


def ring_order_rdma(topo: Topology, ids: Sequence[str], n: int, first: str | None = None,
                    budget: list[int] | None = None) -> list[str] | None:
    """`n` of `ids` in a cycle whose neighbours RDMA can join (what jaccl-ring needs; two nodes
    need one cable), in cycle order: from `first` when given, else from the first by name, on to
    the nearer by name of its two neighbours. The first cycle a search by name finds; None when
    there is none or the search ran out of budget (`budget`, as for `mesh_order`)."""
    if n < 2:
        return None
    adj = _rdma_adjacency(topo, ids)
    if first is not None and first not in adj:
        return None
    budget = budget if budget is not None else [rings.SEARCH_BUDGET]
    for start in [first] if first is not None else sorted(adj, key=topo.key):
        # Without `first`, a cycle is found from its first node by name only: skip the rest.
        allowed = set(adj) if first is not None else {c for c in adj if topo.key(c) >= topo.key(start)}
        path = _cycle(topo, adj, [start], allowed, n, budget)
        if path is not None:
            if n > 2 and topo.key(path[-1]) < topo.key(path[1]):
                path = [path[0], *reversed(path[1:])]
            return path
        if budget[0] <= 0:
            break
    return None


def largest(topo: Topology, ids: Sequence[str], backend: str) -> list[str] | None:
    """The most of `ids` RDMA can use together: for jaccl a full mesh (as `mesh_order` gives it),
    for jaccl-ring a cycle (as `ring_order_rdma` does; two nodes need one cable). Sizes are tried
    from the most the usable cables allow down to 2, all on one search budget (no more steps than
    one search); None when there is none or the budget ran out first."""
    adj = _rdma_adjacency(topo, ids)
    if backend == "jaccl":
        # n nodes all joined to each other have n - 1 neighbours each.
        degrees = sorted((len(v) for v in adj.values()), reverse=True)
        top, search = max((k + 1 for k, d in enumerate(degrees) if d >= k), default=0), mesh_order
    else:
        top, search = max(_cycle_room(adj), 2 if adj else 0), ring_order_rdma
    budget = [rings.SEARCH_BUDGET]
    for n in range(top, 1, -1):
        found = search(topo, ids, n, budget=budget)
        if found is not None or budget[0] <= 0:
            return found
    return None


def _cycle_room(adj: dict[str, set[str]]) -> int:
    """The most nodes a cycle of 3 or more could take: the largest connected piece left once the
    nodes with fewer than two neighbours are taken away, again and again (a chain leaves none)."""
    core = {k: set(v) for k, v in adj.items()}
    weak = [k for k, v in core.items() if len(v) < 2]
    while weak:
        k = weak.pop()
        for m in core.pop(k, ()):
            core[m].discard(k)
            if len(core[m]) < 2:
                weak.append(m)
    most, seen = 0, set()
    for k in core:
        if k not in seen:
            piece = reach(core, k)
            seen |= piece
            most = max(most, len(piece))
    return most


def _rdma_adjacency(topo: Topology, ids: Sequence[str]) -> dict[str, set[str]]:
    adj: dict[str, set[str]] = {}
    for pair in rdma_pairs(topo, ids):
        a, b = tuple(pair)
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    return adj


def _clique(adj, cands, chosen, start, n, budget) -> list[str] | None:
    """Grow `chosen` with candidates from index `start` on, each joined to all chosen so far."""
    budget[0] -= 1
    if len(chosen) == n:
        return list(chosen)
    if budget[0] <= 0:
        return None
    for k in range(start, len(cands)):
        if len(chosen) + len(cands) - k < n:
            break
        c = cands[k]
        if all(c in adj[x] for x in chosen):
            chosen.append(c)
            found = _clique(adj, cands, chosen, k + 1, n, budget)
            if found is not None:
                return found
            chosen.pop()
    return None


def _cycle(topo, adj, path, allowed, n, budget) -> list[str] | None:
    """Depth-first growth of `path` to `n` nodes within `allowed`, closing back to its start."""
    budget[0] -= 1
    if len(path) == n:
        return list(path) if path[0] in adj[path[-1]] else None
    if budget[0] <= 0:
        return None
    for nxt in sorted((adj[path[-1]] & allowed) - set(path), key=topo.key):
        path.append(nxt)
        found = _cycle(topo, adj, path, allowed, n, budget)
        if found is not None:
            return found
        path.pop()
    return None


# --------------------------------------------------------------------------- words and JSON


def explain(topo: Topology, ids: Sequence[str], backend: str, n: int) -> str:
    """In one sentence, for `backend` on `n` of `ids`: when no choice of nodes works, what stands
    in the way (the nodes not ready for RDMA, else the cables, each naming the node or both ends
    and why); when one does, why each node it leaves out was left out ("" when none had a reason
    to be). "" for a backend without RDMA."""
    if backend not in RDMA:
        return ""
    ids = sorted(set(ids), key=topo.key)
    unknown = [i for i in ids if i not in topo.nodes]
    if unknown:
        return f"unknown node(s): {', '.join(unknown)}"
    if n < 2:
        return "JACCL needs at least 2 nodes"
    if n > len(ids):
        return f"{backend} needs {n} nodes and only {len(ids)} can be used"
    blocked = {i: b for i in ids if (b := node_blockers(topo, i))}
    order = (mesh_order if backend == "jaccl" else ring_order_rdma)(topo, ids, n)
    if order is not None:
        why = [(i, _left_out(topo, i, order, blocked)) for i in ids if i not in order]
        return "; ".join(f"{topo.name(i)} is left out: {w}" for i, w in why if w)
    ok = [i for i in ids if i not in blocked]
    if len(ok) < n:
        return (f"{backend} needs {n} Macs ready for RDMA and only {len(ok)} of these {len(ids)} are: "
                + describe([b[0] for b in blocked.values()]))
    if backend == "jaccl":
        usable = rdma_pairs(topo, ok)
        found = [pair_link(topo, a, b)[1] for k, a in enumerate(ok) for b in ok[k + 1:]
                 if frozenset((a, b)) not in usable]
        head = f"jaccl needs {n} Macs all cabled to each other over usable Thunderbolt 5 cables, and " + (
            "these are not" if n == len(ok) else f"no {n} of these {len(ok)} are")
    else:
        found = [link_blockers(topo, ln) for ln in topo.links if ln.a in ok and ln.b in ok]
        head = f"jaccl-ring needs {n} Macs in a cycle over usable Thunderbolt 5 cables, and " + (
            "these form none" if n == len(ok) else f"no {n} of these {len(ok)} form one")
    firsts = [bl[0] for bl in found if bl]
    return head + (": " + describe(firsts) if firsts else "")


def _left_out(topo: Topology, node_id: str, order: list[str], blocked: dict[str, list[Blocker]]) -> str:
    """Why `node_id` is not in `order`: its own blocker, else the first blocked cable (or missing
    one) toward a chosen node; "" when nothing kept it out (it was simply not needed)."""
    if node_id in blocked:
        return blocked[node_id][0].message
    for other in order:
        link, why = pair_link(topo, other, node_id)
        if link is None and why and why[0].code != "not_cabled":
            return why[0].message
    return ""


def describe(blockers: Sequence[Blocker], most: int = 3) -> str:
    """The first `most` messages, and how many more there are."""
    seen = list(dict.fromkeys(b.message for b in blockers))
    more = f"; and {len(seen) - most} more" if len(seen) > most else ""
    return "; ".join(seen[:most]) + more


def fabric_json(topo: Topology) -> dict:
    """Every node with what keeps it from RDMA, and every cable with its devices and blockers."""
    nodes = []
    for i in sorted(topo.nodes, key=topo.key):
        n, found = topo.nodes[i], node_blockers(topo, i)
        nodes.append({
            "id": i, "name": n.name, "os_version": n.os_version, "rdma_enabled": n.rdma_enabled,
            "rdma_devices": list(n.rdma_devices) if n.rdma_devices is not None else None,
            "thunderbolt5_ports": [p for p, f in sorted(n.ports.items()) if is_tb5(f)],
            "bridge": {"interface": n.bridge_interface, "up": n.bridge_up, "members": list(n.bridge_members)},
            "rdma_ready": not found, "blockers": [b.as_dict() for b in found]})
    cables = []
    for ln in topo.links:
        found = link_blockers(topo, ln)
        cables.append({
            "cable": cable_name(topo, ln),
            "a": topo.name(ln.a), "a_id": ln.a, "a_port": ln.a_port, "a_interface": ln.a_interface,
            "a_device": rdma_device(topo, ln, ln.a),
            "b": topo.name(ln.b), "b_id": ln.b, "b_port": ln.b_port, "b_interface": ln.b_interface,
            "b_device": rdma_device(topo, ln, ln.b),
            "speed_gbps": ln.speed_gbps, "one_sided": ln.one_sided,
            "rdma_ready": not found, "blockers": [b.as_dict() for b in found]})
    return {"nodes": nodes, "cables": cables}


def _port(port: int | None, interface: str | None) -> str:
    return f"Thunderbolt {port}" + (f" ({interface})" if interface else "")
