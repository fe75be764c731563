"""The Thunderbolt graph (coordinator.topology) over recorded clusters: links and speeds,
component kinds, ring order, addresses, the JACCL matrix, problems, JSON and DOT output.

Each file in tests/support/fixtures/clusters/ is a list of node objects as GET /nodes returns them,
plus each node's reported `interfaces` (not part of NodeOut; the registry keeps them with the
facts), so link addresses can be checked too.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from agent.facts import collect
from agent.system import RecordedSystem
from coordinator import problems as P
from coordinator import topology as T
from shared.schemas import NetInterface, NodeOut, ThunderboltInfo

CLUSTERS = Path(__file__).resolve().parents[1] / "support" / "fixtures" / "clusters"
FACTS = Path(__file__).resolve().parents[1] / "support" / "fixtures" / "facts"


def load(name: str) -> tuple[list[NodeOut], dict[str, list[NetInterface]]]:
    raw = json.loads((CLUSTERS / f"{name}.json").read_text())
    nodes = [NodeOut.model_validate({k: v for k, v in d.items() if k != "interfaces"}) for d in raw]
    interfaces = {d["id"]: [NetInterface.model_validate(i) for i in d.get("interfaces", [])] for d in raw}
    return nodes, interfaces


def topo_of(name: str) -> tuple[T.Topology, list[NodeOut]]:
    nodes, interfaces = load(name)
    return T.build(nodes, interfaces), nodes


def ids(topo: T.Topology, *names: str) -> list[str]:
    by_name = {n.name: i for i, n in topo.nodes.items()}
    return [by_name[n] for n in names]


def names(topo: T.Topology, node_ids) -> list[str]:
    return [topo.name(i) for i in node_ids]


def link_table(topo: T.Topology) -> set[tuple]:
    return {(topo.name(ln.a), ln.a_port, ln.a_interface, topo.name(ln.b), ln.b_port, ln.b_interface,
             ln.speed_gbps, ln.one_sided) for ln in topo.links}


def kinds(problems) -> set[tuple[str, str | None]]:
    return {(p.kind, p.node) for p in problems}


def cabled_in_order(topo: T.Topology, order: list[str], closed: bool) -> bool:
    adj = topo.adjacency()
    pairs = list(zip(order, order[1:])) + ([(order[-1], order[0])] if closed else [])
    return all(b in adj[a] for a, b in pairs)


# --------------------------------------------------------------------------- the five fixtures


def test_chain_of_the_seeds_five_macs():
    topo, nodes = topo_of("chain5")
    assert link_table(topo) == {
        ("Mac mini 1", 1, "en2", "Main MacBook", 1, "en1", 40.0, False),
        ("Mac mini 1", 2, "en3", "Mac Studio", 1, "en2", 80.0, False),
        ("Mac mini 2", 1, "en2", "Mac Studio", 2, "en3", 80.0, False),
        ("Mac mini 2", 2, "en3", "Mac mini 3", 1, "en2", 40.0, False),
    }
    [comp] = topo.components
    assert comp.kind == "chain"
    assert names(topo, comp.nodes) == ["Mac mini 3", "Mac mini 2", "Mac Studio", "Mac mini 1", "Main MacBook"]
    assert topo.rings == [] and topo.strays == [] and topo.notes == []
    order = T.ring_order(topo, list(topo.nodes))
    assert order == list(comp.nodes)  # the Hamiltonian path is the chain itself
    assert cabled_in_order(topo, order, closed=False)
    # Bridged everywhere: the address is the bridge's, shared by every Thunderbolt port of the Mac.
    addr = T.link_addresses(topo, *ids(topo, "Mac Studio", "Mac mini 2"))
    assert (addr.a.port, addr.a.interface, addr.a.via, addr.a.ips, addr.a.shared) == (
        2, "en3", "bridge0", ("169.254.9.130",), True)
    assert (addr.b.port, addr.b.interface, addr.b.ips, addr.b.shared) == (1, "en2", ("169.254.201.77",), True)
    assert T.link_addresses(topo, *ids(topo, "Main MacBook", "Mac Studio")) is None  # not cabled
    check = T.jaccl_check(topo, list(topo.nodes))
    assert check.matrix is None and "RDMA" in check.reason and "needs macOS 26.2" in check.reason
    # 3.12.7 beside 3.12.8 is no problem (same minor); Open MPI everywhere; every node cabled.
    assert P.combine(topo, nodes, backend="mpi") == []


def test_ring_of_four_without_the_bridge():
    topo, nodes = topo_of("ring4")
    assert link_table(topo) == {
        ("studio-1", 1, "en2", "studio-3", 1, "en2", 40.0, False),
        ("studio-1", 2, "en3", "studio-4", 2, "en3", 40.0, False),
        ("studio-2", 1, "en2", "studio-3", 2, "en3", 40.0, False),
        ("studio-2", 2, "en3", "studio-4", 1, "en2", 20.0, False),
    }
    [comp] = topo.components
    assert comp.kind == "ring"
    assert names(topo, comp.nodes) == ["studio-1", "studio-3", "studio-2", "studio-4"]
    assert [names(topo, r) for r in topo.rings] == [["studio-1", "studio-3", "studio-2", "studio-4"]]
    order = T.ring_order(topo, list(topo.nodes))
    assert names(topo, order) == ["studio-1", "studio-3", "studio-2", "studio-4"]
    assert cabled_in_order(topo, order, closed=True)
    # Three of the four: no cycle, but a cabled path.
    part = T.ring_order(topo, ids(topo, "studio-3", "studio-2", "studio-1"))
    assert names(topo, part) == ["studio-1", "studio-3", "studio-2"]
    # One network per cable: each end has its own address; link-local IPv6 (no scope) is dropped.
    addr = T.link_addresses(topo, *ids(topo, "studio-1", "studio-3"))
    assert (addr.a.interface, addr.a.via, addr.a.ips, addr.a.shared) == ("en2", "en2", ("192.168.1.1",), False)
    assert (addr.b.interface, addr.b.ips, addr.b.shared) == ("en2", ("192.168.1.2",), False)
    back = T.link_addresses(topo, *ids(topo, "studio-3", "studio-1"))
    assert (back.a.ips, back.b.ips) == (("192.168.1.2",), ("192.168.1.1",))
    assert T.jaccl_matrix(topo, order) is None
    got = P.combine(topo, nodes, backend="ring")
    assert kinds(got) == {("slow_link", "studio-2"), ("mlx_version", None)}
    slow = next(p for p in got if p.kind == "slow_link")
    assert "20 Gb/s" in slow.message and "studio-4" in slow.message
    assert "Thunderbolt 4/5 cable, not USB-C" in slow.fix
    skew = next(p for p in got if p.kind == "mlx_version")
    assert "0.31.1 on studio-4" in skew.message and skew.fix == "pip install mlx==0.32.4 in every agent's Python"


def test_rdma_mesh_of_three():
    topo, nodes = topo_of("mesh3-rdma")
    assert link_table(topo) == {
        ("kims-mbp", 1, "en1", "studio-ultra", 1, "en2", 80.0, False),
        ("kims-mbp", 2, "en2", "mini-m4pro", 1, "en2", 80.0, False),
        ("mini-m4pro", 2, "en3", "studio-ultra", 2, "en3", 80.0, False),
    }
    [comp] = topo.components
    assert comp.kind == "mesh"  # a triangle is a ring too: it is listed among the rings
    assert names(topo, comp.nodes) == ["kims-mbp", "mini-m4pro", "studio-ultra"]
    assert [names(topo, r) for r in topo.rings] == [["kims-mbp", "mini-m4pro", "studio-ultra"]]
    order = T.ring_order(topo, list(topo.nodes))
    assert cabled_in_order(topo, order, closed=True)
    kim, ultra, mini = ids(topo, "kims-mbp", "studio-ultra", "mini-m4pro")
    assert T.jaccl_matrix(topo, [kim, ultra, mini]) == [
        [None, "rdma_en1", "rdma_en2"],
        ["rdma_en2", None, "rdma_en3"],
        ["rdma_en2", "rdma_en3", None],
    ]
    # Rank order is the caller's: rows and columns follow it.
    assert T.jaccl_matrix(topo, [mini, kim]) == [[None, "rdma_en2"], ["rdma_en2", None]]
    assert T.jaccl_matrix(topo, [kim, ultra, mini], ring=True) == T.jaccl_matrix(topo, [kim, ultra, mini])
    addr = T.link_addresses(topo, kim, mini)
    assert (addr.a.interface, addr.a.ips, addr.b.interface, addr.b.ips) == (
        "en2", ("192.168.202.1",), "en2", ("192.168.202.2",))
    assert P.combine(topo, nodes, backend="jaccl") == []
    assert P.combine(topo, nodes, backend="mpi") == []


def test_broken_cable_and_friends():
    topo, nodes = topo_of("broken-cable")
    assert link_table(topo) == {
        ("mini-a", 1, "en2", "mini-b", 1, "en2", 40.0, False),
        ("mini-b", 2, "en3", "mini-c", None, None, 40.0, True),
    }
    strays = [(topo.name(s.node), s.port, s.interface, s.peer_name) for s in topo.strays]
    assert strays == [("mini-a", 2, "en3", "Mac Studio")]
    assert [(c.kind, names(topo, c.nodes)) for c in topo.components] == [
        ("single", ["air"]), ("chain", ["mini-a", "mini-b"]), ("single", ["mini-c"]), ("single", ["studio-x"])]
    # The one-sided cable is not trusted for rank order or addresses.
    a, b, c = ids(topo, "mini-a", "mini-b", "mini-c")
    assert T.link_addresses(topo, b, c) is None
    order = T.ring_order(topo, [c, b, a])
    assert order[:2] == [a, b] and order[2] == c
    chip = T.Problem("mini-a", "declared chip 'M2 Max' but the node reports 'Apple M2 Pro'",
                     "correct chip in cluster.yaml", "declared_mismatch")
    got = P.combine(topo, nodes, backend="mpi", extra=[chip])
    assert kinds(got) == {
        ("one_sided", "mini-c"), ("unknown_peer", "mini-a"), ("never_reported", "studio-x"), ("no_link", "air"),
        ("python_version", None), ("mpich", "mini-c"), ("declared_mismatch", "mini-a"),
    }
    assert len(got) == 7 and all(p.fix for p in got)
    one_sided = next(p for p in got if p.kind == "one_sided")
    assert "mini-b sees on Thunderbolt 2 (en3)" in one_sided.message
    py = next(p for p in got if p.kind == "python_version")
    assert "3.11 on mini-c" in py.message and "Python 3.12" in py.fix
    # MPICH matters only for the mpi backend.
    assert "mpich" not in {p.kind for p in P.combine(topo, nodes, backend="ring")}


def test_bridge_loop_of_three():
    topo, nodes = topo_of("bridge-loop")
    assert link_table(topo) == {
        ("lab-mini-1", 1, "en2", "lab-mini-2", 1, "en2", 80.0, False),
        ("lab-mini-1", 2, "en3", "lab-mini-3", 2, "en3", 80.0, False),
        ("lab-mini-2", 2, "en3", "lab-mini-3", 1, "en2", 80.0, False),
    }
    assert [c.kind for c in topo.components] == ["mesh"]
    assert T.ring_order(topo, list(topo.nodes)) == ids(topo, "lab-mini-1", "lab-mini-2", "lab-mini-3")
    got = P.combine(topo, nodes, backend="ring")
    assert kinds(got) == {("bridge_loop", None)}
    [loop] = got
    assert "lab-mini-1, lab-mini-2, lab-mini-3" in loop.message and "broadcast storm" in loop.message
    assert loop.fix.startswith("remove one cable or take the ports out of bridge0 on one Mac")
    assert "en2, en3" in loop.fix
    assert T.to_json(topo)["warnings"] == [loop.as_dict()]
    # Taking one Mac's ports out of the bridge ends the loop.
    fixed = [n if n.name != "lab-mini-2" else n.model_copy(update={"thunderbolt": n.thunderbolt.model_copy(
        update={"bridge": n.thunderbolt.bridge.model_copy(update={"members": []})})}) for n in nodes]
    assert P.combine(T.build(fixed), fixed, backend="ring") == []


@pytest.mark.parametrize("name", ["chain5", "ring4", "mesh3-rdma", "broken-cable", "bridge-loop"])
def test_build_does_not_depend_on_input_order(name):
    nodes, interfaces = load(name)
    want = T.to_json(T.build(nodes, interfaces))
    for seed in range(3):
        shuffled = nodes[:]
        random.Random(seed).shuffle(shuffled)
        assert T.to_json(T.build(shuffled, interfaces)) == want


# --------------------------------------------------------------------------- JACCL reasons


def with_rdma(nodes):
    """The same cabling on Macs ready for RDMA: macOS 26.2, rdma_ctl enabled, every link at 80 Gb/s
    with its port's device listed, the Thunderbolt Bridge off."""
    out = []
    for n in nodes:
        tb = n.thunderbolt
        ports = [p.model_copy(update={"speed_gbps": 80.0 if p.status == "connected" else None,
                                      "max_speed_gbps": None if p.status == "connected" else 120.0,
                                      "rdma_device": f"rdma_{p.interface}"}) for p in tb.ports]
        tb = tb.model_copy(update={"rdma_enabled": True, "ports": ports, "bridge": None,
                                   "rdma_devices": [p.rdma_device for p in ports]})
        out.append(n.model_copy(update={"thunderbolt": tb, "device_type": "mac", "os_version": "macOS 26.2 (25C56)"}))
    return out


def test_jaccl_needs_a_mesh_and_jaccl_ring_a_cabled_ring():
    nodes, interfaces = load("ring4")
    topo = T.build(with_rdma(nodes), interfaces)
    s1, s2, s3, s4 = ids(topo, "studio-1", "studio-2", "studio-3", "studio-4")
    mesh = T.jaccl_check(topo, [s1, s3, s2, s4])
    assert mesh.matrix is None and "jaccl needs every pair of nodes cabled directly" in mesh.reason
    ring = T.jaccl_check(topo, [s1, s3, s2, s4], ring=True)
    assert ring.reason is None
    assert ring.matrix == [
        [None, "rdma_en2", None, "rdma_en3"],
        ["rdma_en2", None, "rdma_en3", None],
        [None, "rdma_en2", None, "rdma_en3"],
        ["rdma_en3", None, "rdma_en2", None],
    ]
    wrong = T.jaccl_check(topo, [s1, s2, s3, s4], ring=True)
    assert wrong.matrix is None and "studio-1 and studio-2" in wrong.reason and "use ring_order" in wrong.reason


def test_jaccl_refuses_without_rdma_or_with_a_one_sided_cable():
    topo, _ = topo_of("mesh3-rdma")
    assert T.jaccl_check(topo, list(topo.nodes)[:1]).reason == "JACCL needs at least 2 nodes"
    assert "unknown node" in T.jaccl_check(topo, ["n-nope", list(topo.nodes)[0]]).reason
    nodes, interfaces = load("broken-cable")
    topo = T.build(with_rdma(nodes), interfaces)
    b, c = ids(topo, "mini-b", "mini-c")
    assert "only one end sees the cable between mini-b and mini-c" in T.jaccl_check(topo, [b, c]).reason


def test_jaccl_problems_for_the_backend():
    topo, nodes = topo_of("bridge-loop")
    got = P.combine(topo, nodes, backend="jaccl")
    assert kinds(got) == {("bridge_loop", None)} | {(k, f"lab-mini-{i}") for k in ("jaccl_rdma", "jaccl_bridge")
                                                     for i in (1, 2, 3)}


# --------------------------------------------------------------------------- shapes from edge lists


def mac(name: str, peers: dict[int, tuple[str, int]], *, speed=40.0, bridged=False) -> NodeOut:
    """A Mac whose Thunderbolt port N (interface en{N+1}) is cabled to port M of `peer`, with one
    domain UUID per port named after the node and port, so cables can be spelled as edge lists."""
    ports = [{"port": p, "status": "connected", "speed_gbps": speed, "interface": f"en{p + 1}",
              "peer_uuid": f"{peer}-bus{pp}", "peer_name": peer} for p, (peer, pp) in sorted(peers.items())]
    count = max(6, *peers) if peers else 6
    tb = {"ports": ports, "domain_uuids": [f"{name}-bus{p}" for p in range(1, count + 1)],
          "bridge": {"interface": "bridge0", "ips": [], "up": True,
                     "members": [f"en{p + 1}" for p in range(1, count + 1)] if bridged else []}}
    return NodeOut(id=f"n-{name}", name=name, host=f"{name}.local", status="ready", role="trainer", device_type="mac",
                   chip="Apple M4 Pro", memory_gb=64, memory_available_gb=32, cpu_cores=14, os_version="macOS 15.1",
                   python_version="3.12.8", mlx_version="0.32.4", mlx_device="gpu", mpi={"implementation": "openmpi"},
                   thunderbolt=ThunderboltInfo.model_validate(tb), declared=None, problems=[], last_heartbeat=None,
                   registered_at=None, agent_version="0.1.0")


def cluster(edges: list[tuple[str, str]], **kw) -> list[NodeOut]:
    """Macs cabled along `edges` (each cable on the next free port at both ends)."""
    peers: dict[str, dict[int, tuple[str, int]]] = {}
    for a, b in edges:
        pa, pb = len(peers.setdefault(a, {})) + 1, len(peers.setdefault(b, {})) + 1
        peers[a][pa], peers[b][pb] = (b, pb), (a, pa)
    return [mac(n, p, **kw) for n, p in peers.items()]


def test_star_other_and_pieces():
    star = T.build(cluster([("hub", "a"), ("hub", "b"), ("hub", "c"), ("hub", "d")]))
    [comp] = star.components
    assert comp.kind == "star" and names(star, comp.nodes) == ["hub", "a", "b", "c", "d"]
    # No path covers a star: the longest piece first, then the rest by name.
    assert names(star, T.ring_order(star, list(star.nodes))) == ["a", "hub", "b", "c", "d"]

    chord = T.build(cluster([("a", "b"), ("b", "c"), ("c", "d"), ("d", "a"), ("a", "c")]))
    [comp] = chord.components
    assert comp.kind == "other" and cabled_in_order(chord, list(comp.nodes), closed=True)
    assert [names(chord, r) for r in chord.rings] == [["a", "b", "c", "d"]]

    two = T.build(cluster([("a", "b"), ("c", "d"), ("d", "e")]))
    assert [(c.kind, names(two, c.nodes)) for c in two.components] == [
        ("chain", ["a", "b"]), ("chain", ["c", "d", "e"])]
    assert names(two, T.ring_order(two, list(two.nodes) + ["n-unknown"])) == ["c", "d", "e", "a", "b", "n-unknown"]


def test_bigger_mesh_orders_fast_and_matrix_is_full():
    names_ = [f"m{i:02d}" for i in range(8)]
    nodes = with_rdma(cluster([(a, b) for i, a in enumerate(names_) for b in names_[i + 1:]]))
    topo = T.build(nodes)
    assert [c.kind for c in topo.components] == ["mesh"]
    order = T.ring_order(topo, list(topo.nodes))
    assert cabled_in_order(topo, order, closed=True)
    matrix = T.jaccl_matrix(topo, order)
    assert all((matrix[i][j] is None) == (i == j) for i in range(8) for j in range(8))


def test_no_hamiltonian_path_within_budget_still_orders_everything(monkeypatch):
    monkeypatch.setattr(T, "SEARCH_BUDGET", 50)
    edges = [(f"r{i}", f"r{(i + 1) % 12}") for i in range(12)] + [("r0", "x"), ("r6", "y")]
    topo = T.build(cluster(edges))
    order = T.ring_order(topo, list(topo.nodes))
    assert sorted(order) == sorted(topo.nodes) and len(order) == 14


def test_parallel_cables_are_paired_in_port_order_with_a_note():
    topo = T.build(cluster([("a", "b"), ("a", "b")]))
    assert link_table(topo) == {("a", 1, "en2", "b", 1, "en2", 40.0, False),
                                ("a", 2, "en3", "b", 2, "en3", 40.0, False)}
    assert topo.notes == ["a and b share 2 cables: which port meets which is paired in port order "
                          "(the facts cannot tell)"]
    assert [c.kind for c in topo.components] == ["chain"]
    # Two bridged cables between two Macs are a loop too.
    looped = T.build(cluster([("a", "b"), ("a", "b")], bridged=True))
    assert {p.kind for p in looped.warnings} == {"bridge_loop"}


def test_speed_is_the_slower_end_and_unknown_speed_is_not_slow():
    a, b = cluster([("a", "b")])
    b.thunderbolt.ports[0].speed_gbps = 20.0
    assert T.build([a, b]).links[0].speed_gbps == 20.0
    b.thunderbolt.ports[0].speed_gbps = None   # the far end's cheap refresh saw the link come up
    topo = T.build([a, b])
    assert topo.links[0].speed_gbps == 40.0 and topo.warnings == []
    a.thunderbolt.ports[0].speed_gbps = None
    assert T.build([a, b]).links[0].speed_gbps is None and T.build([a, b]).warnings == []


def test_slow_only_between_apple_silicon_macs():
    a, b = cluster([("a", "b")], speed=20.0)
    assert {p.kind for p in T.build([a, b]).warnings} == {"slow_link"}
    linux = b.model_copy(update={"device_type": "cpu", "chip": "Intel(R) Core(TM) i7-1360P"})
    assert T.build([a, linux]).warnings == []


# --------------------------------------------------------------------------- from real recordings


def node_from_recording(folder: str, name: str) -> NodeOut:
    f = collect(RecordedSystem(FACTS / folder), python="python3")
    return NodeOut(id=f"n-{name}", name=name, host=f.hostname, status="ready", role="trainer",
                   device_type=f.device_type, chip=f.chip, memory_gb=f.memory_gb,
                   memory_available_gb=f.memory_available_gb, cpu_cores=f.cpu_cores, os_version=f.os_version,
                   python_version=f.python_version, mlx_version=f.mlx_version, mlx_device=f.mlx_device, mpi=f.mpi,
                   thunderbolt=f.thunderbolt, declared=None, problems=f.problems, last_heartbeat=None,
                   registered_at=None, agent_version=f.agent_version)


def test_recorded_mac_mini_with_one_peer_registered():
    mini = node_from_recording("mac-mini-m4-two-peers", "mac-mini-1")
    # Its Thunderbolt 1 peer ("Mac mini", F1E2D3C4-...) registers and sees the cable on its port 3.
    peer = mac("mac-mini-2", {3: ("x", 1)})
    peer.thunderbolt.domain_uuids[:] = ["F1E2D3C4-B5A6-4978-8695-A4B3C2D1E0F9"]
    peer.thunderbolt.ports[0].peer_uuid = "9E4C1B7A-3F2D-4A8E-B5C6-0D1E2F3A4B5C"  # mac-mini-1's bus 0
    topo = T.build([mini, peer])
    assert link_table(topo) == {("mac-mini-1", 1, "en2", "mac-mini-2", 3, "en4", 40.0, False)}
    assert [(s.port, s.interface, s.peer_name) for s in topo.strays] == [(2, "en3", "MacBook Pro")]
    addr = T.link_addresses(topo, "n-mac-mini-1", "n-mac-mini-2")
    assert addr.a.ips == ("169.254.37.112",) and addr.a.shared


def test_recorded_tb5_mac_alone_sees_a_stray_studio():
    topo = T.build([node_from_recording("mac-tb5-80g", "kims-mbp")])
    assert topo.links == [] and [c.kind for c in topo.components] == ["single"]
    [stray] = topo.strays
    assert (stray.port, stray.interface, stray.peer_name) == (1, "en1", "Mac Studio")
    assert {p.kind for p in topo.warnings} == {"unknown_peer"}


# --------------------------------------------------------------------------- JSON and DOT


def test_to_json_shape():
    topo, _ = topo_of("broken-cable")
    out = T.to_json(topo)
    json.dumps(out)  # plain JSON
    assert set(out) == {"nodes", "links", "strays", "components", "rings", "warnings", "notes"}
    assert out["links"][1] == {"a": "mini-b", "a_id": topo.links[1].a, "a_port": 2, "a_interface": "en3",
                               "b": "mini-c", "b_id": topo.links[1].b, "b_port": None, "b_interface": None,
                               "speed_gbps": 40.0, "one_sided": True, "slow": False}
    assert {"kind": "chain", "nodes": ["mini-a", "mini-b"], "ids": ids(topo, "mini-a", "mini-b")} in out["components"]
    assert {w["kind"] for w in out["warnings"]} == {"one_sided", "unknown_peer"}
    assert out["nodes"][0]["bridge"] == {"interface": "bridge0", "members": ["en1", "en2"], "ips": [], "up": False}


_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<id>[A-Za-z_][A-Za-z0-9_]*|-?\d+(?:\.\d+)?)'
                    r'|(?P<op>--|->|[{}\[\];,=]))', re.S)


def parse_dot(text: str) -> dict:
    """A minimal DOT reader for what to_dot writes: `graph ID { stmt; ... }` with attribute,
    node and edge statements. Raises AssertionError on anything malformed."""
    toks, pos = [], 0
    while text[pos:].strip():
        m = _TOKEN.match(text, pos)
        assert m, f"bad DOT at {text[pos:pos + 30]!r}"
        toks.append((m.lastgroup, m.group(m.lastgroup)))
        pos = m.end()
    it = iter(toks + [("end", None)])
    tok = next(it)

    def take(kind=None, value=None):
        nonlocal tok
        got = tok
        ok = (kind is None or got[0] == kind) and (value is None or got[1] == value)
        assert ok, f"expected {value or kind}, got {got}"
        tok = next(it, ("end", None))
        return got[1]

    def ident():
        kind, val = tok
        assert kind in ("str", "id"), f"expected an identifier, got {tok}"
        take()
        return json.loads(val.replace("\\n", "\\\\n")) if kind == "str" else val

    def attrs():
        out = {}
        take("op", "[")
        while tok != ("op", "]"):
            k = ident()
            take("op", "=")
            out[k] = ident()
            if tok in (("op", ","), ("op", ";")):
                take()
        take("op", "]")
        return out

    take("id", "graph")
    graph = {"name": ident(), "nodes": {}, "edges": []}
    take("op", "{")
    while tok != ("op", "}"):
        first = ident()
        if first in ("graph", "node", "edge") and tok == ("op", "["):
            attrs()
        elif tok == ("op", "--"):
            take()
            second = ident()
            graph["edges"].append((first, second, attrs() if tok == ("op", "[") else {}))
        else:
            assert tok != ("op", "->"), "-> in an undirected graph"
            graph["nodes"].setdefault(first, {}).update(attrs() if tok == ("op", "[") else {})
        take("op", ";")
    take("op", "}")
    take("end")
    return graph


def test_to_dot_is_valid_and_marks_one_sided_and_slow():
    topo, _ = topo_of("broken-cable")
    dot = parse_dot(T.to_dot(topo))
    a, b, c = ids(topo, "mini-a", "mini-b", "mini-c")
    assert dot["nodes"][a]["label"] == "mini-a\\nApple M2 Pro"
    edges = {(x, y): at for x, y, at in dot["edges"]}
    assert edges[(a, b)]["label"] == "40 Gb/s" and "style" not in edges[(a, b)]
    assert edges[(b, c)]["style"] == "dashed"
    stray = [y for x, y, _ in dot["edges"] if y.startswith("peer:")]
    assert stray and stray[0] in dot["nodes"]

    ring, _ = topo_of("ring4")
    s2, s4 = ids(ring, "studio-2", "studio-4")
    edges = {(x, y): at for x, y, at in parse_dot(T.to_dot(ring))["edges"]}
    assert edges[(s2, s4)]["color"] == "red" and edges[(s2, s4)]["label"] == "20 Gb/s"
    assert sum(1 for at in edges.values() if at.get("color") == "red") == 1


def test_to_dot_quotes_awkward_text():
    node = mac("a", {}).model_copy(update={"chip": 'Weird "chip" \\ name'})
    text = T.to_dot(T.build([node]))
    dot = parse_dot(text)
    assert dot["nodes"]["n-a"]["label"] == 'a\\nWeird "chip" \\ name'
    for name in ("chain5", "ring4", "mesh3-rdma", "bridge-loop"):
        parse_dot(T.to_dot(topo_of(name)[0]))
