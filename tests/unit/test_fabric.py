"""RDMA over Thunderbolt (coordinator/topology/fabric.py, jaccl.py) over recorded clusters: the
MLX_IBV_DEVICES matrix from each port's real device name, which nodes jaccl and jaccl-ring can
use, and each blocker, from a node of the four-Studio mesh changed the way the Mac would be.

tests/support/fixtures/clusters/mesh4-tb5.json: four M3 Ultra Mac Studios, all six pairs cabled at
80 Gb/s; ring4-tb5.json: the same Macs cabled 1-2-3-4-1 only; mesh4-one-tb4.json: the mesh with
the studio-1 <-> studio-4 cable at 40 Gb/s (its README says more).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from coordinator import topology as T
from coordinator.topology import fabric as F
from coordinator.topology import rings
from shared.backends import RDMA_ENABLE_FIX
from shared.schemas import NetInterface, NodeOut, ThunderboltBridge

CLUSTERS = Path(__file__).resolve().parents[1] / "support" / "fixtures" / "clusters"


def load(name: str) -> tuple[list[NodeOut], dict[str, list[NetInterface]]]:
    raw = json.loads((CLUSTERS / f"{name}.json").read_text())
    nodes = [NodeOut.model_validate({k: v for k, v in d.items() if k != "interfaces"}) for d in raw]
    return nodes, {d["id"]: [NetInterface.model_validate(i) for i in d["interfaces"]] for d in raw}


def topo_of(name: str) -> T.Topology:
    return T.build(*load(name))


def ids(topo: T.Topology, *names: str) -> list[str]:
    by_name = {n.name: i for i, n in topo.nodes.items()}
    return [by_name[n] for n in names]


def names(topo: T.Topology, node_ids) -> list[str] | None:
    return None if node_ids is None else [topo.name(i) for i in node_ids]


STUDIOS = ("studio-1", "studio-2", "studio-3", "studio-4")


# --------------------------------------------------------------------------- the three clusters


def test_full_mesh_gives_every_rank_its_real_device_toward_every_other():
    topo = topo_of("mesh4-tb5")
    order = ids(topo, *STUDIOS)
    check = T.jaccl_check(topo, order)
    # Row i, column j: the device of the port on studio-(i+1) whose cable goes to studio-(j+1)
    # (the fixture cables studio-1 port 1 (en2) to studio-3, port 2 (en3) to studio-2, ...).
    assert check.matrix == [
        [None, "rdma_en3", "rdma_en2", "rdma_en4"],
        ["rdma_en3", None, "rdma_en4", "rdma_en2"],
        ["rdma_en4", "rdma_en2", None, "rdma_en3"],
        ["rdma_en2", "rdma_en4", "rdma_en3", None],
    ]
    assert (check.reason, check.blockers) == (None, ())
    # Another rank order permutes rows and columns alike.
    back = T.jaccl_check(topo, order[::-1]).matrix
    assert back == [row[::-1] for row in check.matrix[::-1]]
    assert names(topo, F.mesh_order(topo, order, 4)) == list(STUDIOS)
    assert names(topo, F.ring_order_rdma(topo, order, 4)) == list(STUDIOS)
    assert len(F.rdma_pairs(topo, order)) == 6
    assert all(F.node_blockers(topo, i) == [] for i in order)
    assert all(F.link_blockers(topo, ln) == [] for ln in topo.links)
    assert F.explain(topo, order, "jaccl", 4) == "" and F.explain(topo, order, "jaccl", 3) == ""
    fabric = F.fabric_json(topo)
    assert all(n["rdma_ready"] and n["thunderbolt5_ports"] == [1, 2, 3, 4, 5, 6] for n in fabric["nodes"])
    assert all(c["rdma_ready"] and c["a_device"] and c["b_device"] for c in fabric["cables"])


def test_ring_cabling_has_no_jaccl_but_a_jaccl_ring_of_neighbours():
    topo = topo_of("ring4-tb5")
    s1, s2, s3, s4 = everyone = ids(topo, *STUDIOS)
    mesh = T.jaccl_check(topo, everyone)
    assert mesh.matrix is None
    assert "no Thunderbolt cable joins studio-1 and studio-3" in mesh.reason
    assert "jaccl needs every pair of nodes cabled directly" in mesh.reason
    assert {b.code for b in mesh.blockers} == {"not_cabled"}
    assert {b.cable for b in mesh.blockers} == {"studio-1 <-> studio-3", "studio-2 <-> studio-4"}
    assert F.mesh_order(topo, everyone, 4) is None and F.mesh_order(topo, everyone, 3) is None
    assert names(topo, F.mesh_order(topo, everyone, 2)) == ["studio-1", "studio-2"]
    why = F.explain(topo, everyone, "jaccl", 4)
    assert why.startswith("jaccl needs 4 Macs all cabled to each other") and "studio-2 and studio-4" in why

    order = F.ring_order_rdma(topo, everyone, 4)
    assert order == [s1, s2, s3, s4]
    ring = T.jaccl_check(topo, order, ring=True)
    assert ring.reason is None
    assert ring.matrix == [
        [None, "rdma_en2", None, "rdma_en3"],
        ["rdma_en3", None, "rdma_en2", None],
        [None, "rdma_en3", None, "rdma_en2"],
        ["rdma_en2", None, "rdma_en3", None],
    ]
    # Starting elsewhere walks the same cycle; three of the four close no cycle.
    assert F.ring_order_rdma(topo, everyone, 4, first=s3) == [s3, s2, s1, s4]
    assert F.ring_order_rdma(topo, everyone, 3) is None
    assert "no 3 of these 4 form one" in F.explain(topo, everyone, "jaccl-ring", 3)
    wrong = T.jaccl_check(topo, [s1, s3, s2, s4], ring=True)
    assert wrong.matrix is None and "studio-1 and studio-3" in wrong.reason


def test_one_thunderbolt_4_cable_keeps_the_mesh_to_three():
    topo = topo_of("mesh4-one-tb4")
    s1, s2, s3, s4 = everyone = ids(topo, *STUDIOS)
    assert F.mesh_order(topo, everyone, 4) is None
    three = F.mesh_order(topo, everyone, 3)
    assert three == [s1, s2, s3] and not {s1, s4} <= set(three)
    assert F.mesh_order(topo, everyone, 3, first=s4) == [s4, s2, s3]
    assert frozenset((s1, s4)) not in F.rdma_pairs(topo, everyone) and len(F.rdma_pairs(topo, everyone)) == 5

    why = F.explain(topo, everyone, "jaccl", 4)
    assert why.index("studio-1") < why.index("studio-4") < why.index("40 Gb/s")
    assert "the cable studio-1 Thunderbolt 3 (en4) <-> studio-4 Thunderbolt 1 (en2) runs at 40 Gb/s" in why
    note = F.explain(topo, everyone, "jaccl", 3)
    assert note.startswith("studio-4 is left out: the cable studio-1") and "40 Gb/s" in note

    check = T.jaccl_check(topo, everyone)
    [slow] = check.blockers
    assert (slow.code, slow.node) == ("tb4_link", "studio-1")
    assert slow.fix == "use a Thunderbolt 5 cable, directly between two Thunderbolt 5 ports (no hub or dock)"
    assert check.reason == slow.message
    # jaccl-ring goes round the slow cable: studio-1 and studio-4 are not neighbours.
    ring = F.ring_order_rdma(topo, everyone, 4)
    assert ring == [s1, s2, s4, s3]
    assert T.jaccl_check(topo, ring, ring=True).reason is None
    assert F.explain(topo, everyone, "jaccl-ring", 4) == ""
    cable = next(c for c in F.fabric_json(topo)["cables"] if {c["a"], c["b"]} == {"studio-1", "studio-4"})
    assert cable["speed_gbps"] == 40.0 and not cable["rdma_ready"]
    assert [b["code"] for b in cable["blockers"]] == ["tb4_link"]


def test_mesh3_keeps_its_matrix_from_the_reported_devices():
    topo = topo_of("mesh3-rdma")
    kim, ultra, mini = ids(topo, "kims-mbp", "studio-ultra", "mini-m4pro")
    assert T.jaccl_matrix(topo, [kim, ultra, mini]) == [
        [None, "rdma_en1", "rdma_en2"], ["rdma_en2", None, "rdma_en3"], ["rdma_en2", "rdma_en3", None]]
    assert names(topo, F.mesh_order(topo, [ultra, mini, kim], 3)) == ["kims-mbp", "mini-m4pro", "studio-ultra"]


# --------------------------------------------------------------------------- each blocker from a changed Mac


def changed(name: str, *, node: dict | None = None, tb: dict | None = None, port=None) -> T.Topology:
    """mesh4-tb5 with studio `name` changed: NodeOut fields, Thunderbolt fields, and `port(p)`
    giving each of its ports' changed fields."""
    nodes, interfaces = load("mesh4-tb5")
    out = []
    for n in nodes:
        if n.name == name:
            t = n.thunderbolt
            ports = [p.model_copy(update=port(p)) for p in t.ports] if port else t.ports
            t = t.model_copy(update={"ports": ports, **(tb or {})})
            n = n.model_copy(update={"thunderbolt": t, **(node or {})})
        out.append(n)
    return T.build(out, interfaces)


def tb4(p):
    """What a Thunderbolt 4 port reports: 40 Gb/s linked, 'Up to 40 Gb/s' empty, no RDMA device."""
    linked = p.status == "connected"
    return {"speed_gbps": 40.0 if linked else None, "max_speed_gbps": None if linked else 40.0, "rdma_device": None}


NODE_CASES = {
    # rdma_ctl says enabled on Thunderbolt 4 hardware, and ibv_devices lists nothing.
    "tb4_only": ({"chip": "Apple M4"}, {"rdma_enabled": True, "rdma_devices": []}, tb4,
                 ["no Thunderbolt 5 port", "never works over Thunderbolt 4"], "Thunderbolt 5 cables"),
    "rdma_off": (None, {"rdma_enabled": False}, None, ["not enabled on studio-2", "disabled"], RDMA_ENABLE_FIX),
    "old_macos": ({"os_version": "macOS 15.5 (24F74)"}, {"rdma_enabled": None, "rdma_devices": None},
                  lambda p: {"rdma_device": None}, ["studio-2 runs macOS 15.5", "needs macOS 26.2"], "macOS 26.2"),
    "no_devices": (None, {"rdma_devices": []}, lambda p: {"rdma_device": None},
                   ["ibv_devices on studio-2 lists no RDMA device"], "restart its agent"),
    "not_mac": ({"device_type": "cpu", "chip": "Intel(R) Core(TM) i7-8700B CPU @ 3.20GHz"}, None, None,
                ["studio-2 is not an Apple Silicon Mac", "device type is cpu"], "ring runs on any node"),
}


@pytest.mark.parametrize("code", sorted(NODE_CASES))
def test_each_node_blocker(code):
    node, tb, port, words, fix = NODE_CASES[code]
    topo = changed("studio-2", node=node, tb=tb, port=port)
    s1, s2, s3, s4 = everyone = ids(topo, *STUDIOS)
    [blocker] = F.node_blockers(topo, s2)
    assert (blocker.code, blocker.node, blocker.cable) == (code, "studio-2", None)
    assert all(w in blocker.message for w in words), blocker.message
    assert fix in blocker.fix
    assert all(F.node_blockers(topo, i) == [] for i in (s1, s3, s4))
    check = T.jaccl_check(topo, everyone)
    assert check.matrix is None and check.reason == blocker.message and blocker in check.blockers
    # The other three still make a mesh (and a ring); studio-2 is left out, and why is said.
    assert F.mesh_order(topo, everyone, 3) == [s1, s3, s4] and F.mesh_order(topo, everyone, 4) is None
    assert F.ring_order_rdma(topo, everyone, 3) is not None
    assert F.explain(topo, everyone, "jaccl", 3) == f"studio-2 is left out: {blocker.message}"
    why = F.explain(topo, everyone, "jaccl-ring", 4)
    assert why == f"jaccl-ring needs 4 Macs ready for RDMA and only 3 of these 4 are: {blocker.message}"


def test_old_macos_is_not_also_rdma_off_and_an_unknown_version_blocks():
    topo = changed("studio-3", node={"os_version": ""}, tb={"rdma_enabled": None})
    [blocker] = F.node_blockers(topo, ids(topo, "studio-3")[0])
    assert blocker.code == "old_macos" and "has not reported its macOS version" in blocker.message
    topo = changed("studio-3", tb={"rdma_devices": None})
    [blocker] = F.node_blockers(topo, ids(topo, "studio-3")[0])
    assert blocker.code == "no_devices" and "has not reported its RDMA devices" in blocker.message


def test_a_linux_node_is_not_a_mac():
    topo = changed("studio-4", node={"device_type": "nvidia", "os_version": "Ubuntu 24.04"})
    [blocker] = F.node_blockers(topo, ids(topo, "studio-4")[0])
    assert blocker.code == "not_mac" and "device type is nvidia" in blocker.message


def cable_codes(topo: T.Topology, a: str, b: str) -> list[tuple[str, str | None]]:
    [ln] = [ln for ln in topo.links if {topo.name(ln.a), topo.name(ln.b)} == {a, b}]
    return [(x.code, x.node) for x in F.link_blockers(topo, ln)]


def test_a_device_missing_after_a_reboot_blocks_that_cable_only():
    # ibv_devices names can change at reboot: studio-2's port 1 (en2, cabled to studio-4) has none.
    topo = changed("studio-2", tb={"rdma_devices": ["rdma_en3", "rdma_en4", "rdma_en5", "rdma_en6", "rdma_en7"]},
                   port=lambda p: {"rdma_device": None} if p.port == 1 else {})
    s1, s2, s3, s4 = everyone = ids(topo, *STUDIOS)
    assert F.node_blockers(topo, s2) == []
    assert cable_codes(topo, "studio-2", "studio-4") == [("device_missing", "studio-2")]
    assert cable_codes(topo, "studio-1", "studio-2") == []
    check = T.jaccl_check(topo, everyone)
    [blocker] = check.blockers
    assert blocker.cable == "studio-2 Thunderbolt 1 (en2) <-> studio-4 Thunderbolt 3 (en4)"
    assert "studio-2 lists no RDMA device in ibv_devices for studio-2's Thunderbolt 1 (en2)" in blocker.message
    assert "renamed at reboot" in blocker.fix and "ibv_devices" in blocker.fix
    assert F.mesh_order(topo, everyone, 4) is None and F.mesh_order(topo, everyone, 3) == [s1, s2, s3]
    assert F.ring_order_rdma(topo, everyone, 4) == [s1, s2, s3, s4]   # 2-4 is not a ring neighbour


def test_thunderbolt_bridge_up_on_the_ports_blocks_their_cables():
    bridge = ThunderboltBridge(interface="bridge0", ips=["169.254.3.3"], up=True, members=["en2", "en3"])
    topo = changed("studio-3", tb={"bridge": bridge})
    s3 = ids(topo, "studio-3")[0]
    assert F.node_blockers(topo, s3) == []
    # Port 1 (en2) goes to studio-2 and port 2 (en3) to studio-4; port 3 (en4) is not bridged.
    assert cable_codes(topo, "studio-2", "studio-3") == [("bridge_on", "studio-3")]
    assert cable_codes(topo, "studio-3", "studio-4") == [("bridge_on", "studio-3")]
    assert cable_codes(topo, "studio-1", "studio-3") == []
    [blocker, _] = T.jaccl_check(topo, list(topo.nodes)).blockers
    assert "studio-3's Thunderbolt 1 (en2) (its cable to studio-2) is in the Thunderbolt Bridge" in blocker.message
    assert blocker.fix.startswith("on studio-3: System Settings > Network > Thunderbolt Bridge, remove en2")
    # A bridge that is down forwards nothing, whatever its members.
    down = changed("studio-3", tb={"bridge": bridge.model_copy(update={"up": False, "ips": []})})
    assert T.jaccl_check(down, list(down.nodes)).reason is None


def test_unknown_speed_and_one_sided_cables():
    # Each end reports the speed and the slower (or the only known) one counts: clear both ends.
    nodes, interfaces = load("mesh4-tb5")
    nodes = [n.model_copy(update={"thunderbolt": n.thunderbolt.model_copy(update={"ports": [
        p.model_copy(update={"speed_gbps": None}) if (n.name, p.port) in {("studio-1", 2), ("studio-2", 2)} else p
        for p in n.thunderbolt.ports]})}) for n in nodes]
    topo = T.build(nodes, interfaces)
    assert cable_codes(topo, "studio-1", "studio-2") == [("speed_unknown", "studio-1")]
    # studio-4 stops seeing its cable to studio-1 (port 1): only studio-1's end is left.
    topo = changed("studio-4", port=lambda p: {"status": "disconnected", "speed_gbps": None, "peer_uuid": None}
                   if p.port == 1 else {})
    s1, s4 = ids(topo, "studio-1", "studio-4")
    assert cable_codes(topo, "studio-1", "studio-4") == [("one_sided", "studio-4")]
    check = T.jaccl_check(topo, [s1, s4])
    assert "only one end sees the cable between studio-1 and studio-4" in check.reason


# --------------------------------------------------------------------------- edges


def test_explain_edges_and_other_backends():
    topo = topo_of("mesh4-tb5")
    everyone = ids(topo, *STUDIOS)
    assert F.explain(topo, everyone, "ring", 4) == "" and F.explain(topo, everyone, "nccl", 4) == ""
    assert F.explain(topo, everyone[:1], "jaccl", 1) == "JACCL needs at least 2 nodes"
    assert F.explain(topo, everyone[:2], "jaccl", 3) == "jaccl needs 3 nodes and only 2 can be used"
    assert "unknown node" in F.explain(topo, ["n-nope", *everyone], "jaccl", 2)
    assert F.mesh_order(topo, everyone, 1) is None and F.ring_order_rdma(topo, everyone, 5) is None
    assert F.mesh_order(topo, everyone, 2, first="n-nope") is None


def test_choices_do_not_depend_on_input_order():
    nodes, interfaces = load("mesh4-one-tb4")
    want = None
    for seed in range(4):
        shuffled = nodes[:]
        random.Random(seed).shuffle(shuffled)
        topo = T.build(shuffled, interfaces)
        given = list(topo.nodes)
        random.Random(seed).shuffle(given)
        got = (names(topo, F.mesh_order(topo, given, 3)), names(topo, F.ring_order_rdma(topo, given, 4)),
               F.explain(topo, given, "jaccl", 4), F.fabric_json(topo))
        assert want is None or got == want
        want = got


def test_searches_stop_at_the_budget(monkeypatch):
    topo = topo_of("mesh4-tb5")
    monkeypatch.setattr(rings, "SEARCH_BUDGET", 2)
    assert F.mesh_order(topo, list(topo.nodes), 4) is None
    assert F.ring_order_rdma(topo, list(topo.nodes), 4) is None


# --------------------------------------------------------------------------- the largest mesh and ring


def test_the_largest_mesh_and_ring_each_cluster_allows():
    topo = topo_of("mesh4-one-tb4")
    s1, s2, s3, s4 = everyone = ids(topo, *STUDIOS)
    # Without the 40 Gb/s studio-1 <-> studio-4 cable: a triangle for jaccl, all four around it for jaccl-ring.
    assert F.largest(topo, everyone, "jaccl") == [s1, s2, s3]
    assert F.largest(topo, everyone, "jaccl-ring") == F.ring_order_rdma(topo, everyone, 4) == [s1, s2, s4, s3]
    topo = topo_of("ring4-tb5")
    everyone = ids(topo, *STUDIOS)
    assert names(topo, F.largest(topo, everyone, "jaccl")) == ["studio-1", "studio-2"]
    assert names(topo, F.largest(topo, everyone, "jaccl-ring")) == list(STUDIOS)
    assert names(topo, F.largest(topo, everyone[1:], "jaccl-ring")) == ["studio-2", "studio-3"]  # a chain: one cable
    topo = topo_of("mesh4-tb5")
    assert len(F.largest(topo, list(topo.nodes), "jaccl")) == 4
    # No Mac ready for RDMA: nothing at all.
    topo = topo_of("ring4")
    assert F.largest(topo, list(topo.nodes), "jaccl") is None
    assert F.largest(topo, list(topo.nodes), "jaccl-ring") is None


def test_the_largest_search_shares_one_budget_across_sizes(monkeypatch):
    topo = topo_of("mesh4-one-tb4")
    everyone = list(topo.nodes)
    monkeypatch.setattr(rings, "SEARCH_BUDGET", 3)
    # Each size alone would find two nodes; tried from four down, the one budget runs out first.
    assert F.mesh_order(topo, everyone, 2) is not None
    assert F.largest(topo, everyone, "jaccl") is None
