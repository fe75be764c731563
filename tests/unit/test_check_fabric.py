"""The fabric checks (coordinator/checks/fabric.py) and their printing (shared/check_fabric.py),
in-process over the recorded clusters: problems only for the backend cluster.yaml names, each
blocker with its fix, and the answer of GET /topology?format=jaccl."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from coordinator import problems as P
from coordinator import topology as T
from coordinator.checks import backends
from coordinator.checks import fabric as F
from shared.backends import CUDA_FIX, RDMA_ENABLE_FIX
from shared.check import BLOCKING_KINDS
from shared.check_fabric import relevant, render_fabric
from shared.cluster_config import ClusterConfig
from shared.schemas import NetInterface, NodeOut

CLUSTERS = Path(__file__).resolve().parents[1] / "support" / "fixtures" / "clusters"


def load(name: str) -> tuple[list[NodeOut], dict[str, list[NetInterface]]]:
    raw = json.loads((CLUSTERS / f"{name}.json").read_text())
    nodes = [NodeOut.model_validate({k: v for k, v in d.items() if k != "interfaces"}) for d in raw]
    return nodes, {d["id"]: [NetInterface.model_validate(i) for i in d.get("interfaces", [])] for d in raw}


def change(nodes: list[NodeOut], name: str, *, tb: dict | None = None, ports: dict | None = None,
           **node) -> list[NodeOut]:
    """`nodes` with `name`'s node, Thunderbolt facts and every port updated."""
    out = []
    for n in nodes:
        if n.name == name:
            t = n.thunderbolt
            if ports is not None:
                t = t.model_copy(update={"ports": [p.model_copy(update=ports) for p in t.ports]})
            n = n.model_copy(update={**node, "thunderbolt": t.model_copy(update=tb or {})})
        out.append(n)
    return out


def tb4_lie(nodes, name):
    """rdma_ctl says enabled on a Thunderbolt 4 Mac: 40 Gb/s ports, ibv_devices lists nothing."""
    nodes = change(nodes, name, tb={"rdma_enabled": True, "rdma_devices": []},
                   ports={"rdma_device": None, "max_speed_gbps": None})
    return [n.model_copy(update={"thunderbolt": n.thunderbolt.model_copy(update={"ports": [
        p.model_copy(update={"speed_gbps": 40.0 if p.status == "connected" else None,
                             "max_speed_gbps": None if p.status == "connected" else 40.0})
        for p in n.thunderbolt.ports]})}) if n.name == name else n for n in nodes]


def survey(nodes, interfaces, backend):
    topo = T.build(nodes, interfaces)
    return topo, P.combine(topo, nodes, backend=backend)


def kinds(problems):
    return {(p.kind, p.node) for p in problems}


# --------------------------------------------------------------------------- problems


def test_a_healthy_mesh_has_no_fabric_problem_for_any_backend():
    nodes, ifs = load("mesh4-tb5")
    for backend in ("auto", "ring", "jaccl", "jaccl-ring", "nccl"):
        assert survey(nodes, ifs, backend)[1] == [], backend


def test_a_tb4_cable_is_a_problem_only_when_cluster_yaml_names_jaccl():
    nodes, ifs = load("mesh4-one-tb4")
    for backend in ("auto", "ring", "mpi"):
        assert not [p for p in survey(nodes, ifs, backend)[1] if p.kind.startswith("jaccl")], backend
    _, found = survey(nodes, ifs, "jaccl")
    assert kinds(found) == {("jaccl_link", "studio-1")}
    (p,) = found
    assert "studio-1 Thunderbolt 3 (en4) <-> studio-4 Thunderbolt 1 (en2) runs at 40 Gb/s" in p.message
    assert "Thunderbolt 5 cable" in p.fix and p.kind in BLOCKING_KINDS


@pytest.mark.parametrize("mutate, words, fix", [
    (lambda ns: tb4_lie(ns, "studio-2"), "studio-2 shows no Thunderbolt 5 port", "Thunderbolt 5 ports"),
    (lambda ns: change(ns, "studio-2", os_version="macOS 15.5 (24F74)",
                       tb={"rdma_enabled": None, "rdma_devices": None}, ports={"rdma_device": None}),
     "studio-2 runs macOS 15.5 (24F74): RDMA over Thunderbolt needs macOS 26.2", "update studio-2 to macOS 26.2"),
    (lambda ns: change(ns, "studio-2", tb={"rdma_enabled": False}),
     "RDMA over Thunderbolt is not enabled on studio-2 (rdma_ctl status: disabled)", RDMA_ENABLE_FIX),
    (lambda ns: change(ns, "studio-2", tb={"rdma_devices": []}, ports={"rdma_device": None}),
     "ibv_devices on studio-2 lists no RDMA device", "reboot studio-2"),
])
def test_each_node_blocker_is_a_blocking_problem_with_its_fix(mutate, words, fix):
    nodes, ifs = load("mesh4-tb5")
    _, found = survey(mutate(nodes), ifs, "jaccl-ring")
    rdma = [p for p in found if p.kind == "jaccl_rdma"]
    assert [p.node for p in rdma] == ["studio-2"] and words in rdma[0].message and fix in rdma[0].fix
    # Its cables say nothing more: the node's own blocker is what to fix.
    assert not [p for p in found if p.kind == "jaccl_link"]
    assert all(p.kind in BLOCKING_KINDS for p in rdma)


def test_a_missing_device_on_one_port_is_a_cable_problem():
    nodes, ifs = load("mesh4-tb5")
    s1 = next(n for n in nodes if n.name == "studio-1")
    ports = [p.model_copy(update={"rdma_device": None}) if p.interface == "en2" else p for p in s1.thunderbolt.ports]
    nodes = change(nodes, "studio-1", tb={"ports": ports, "rdma_devices": ["rdma_en3", "rdma_en4"]})
    _, found = survey(nodes, ifs, "jaccl")
    assert kinds(found) == {("jaccl_link", "studio-1")}
    assert "studio-1 lists no RDMA device in ibv_devices for studio-1's Thunderbolt 1 (en2)" in found[0].message
    assert "ibv_devices" in found[0].fix


def test_an_up_bridge_is_a_problem_and_a_down_one_is_neither_that_nor_a_loop():
    nodes, ifs = load("mesh4-tb5")
    def bridge(n, up):
        b = n.thunderbolt.bridge.model_copy(update={"up": up, "members": ["en2", "en3", "en4"]})
        return n.model_copy(update={"thunderbolt": n.thunderbolt.model_copy(update={"bridge": b})})

    up = [bridge(n, True) for n in nodes]
    _, found = survey(up, ifs, "jaccl")
    assert kinds(found) == {("bridge_loop", None)} | {("jaccl_bridge", f"studio-{i}") for i in (1, 2, 3, 4)}
    s1 = next(p for p in found if p.node == "studio-1")
    assert "Thunderbolt ports en2, en3, en4 of studio-1 are in the Thunderbolt Bridge" in s1.message
    assert "remove en2, en3, en4" in s1.fix
    # After `mlx.distributed_config --auto-setup`: bridge0 down, its members still listed.
    down = [bridge(n, False) for n in nodes]
    assert survey(down, ifs, "jaccl")[1] == []
    assert survey(down, ifs, "ring")[1] == []


def nvidia(name: str, mlx_device: str) -> NodeOut:
    nodes, _ = load("mesh4-tb5")
    return NodeOut.model_validate({
        **nodes[0].model_dump(mode="json"), "id": "n-" + name.encode().hex().ljust(10, "0")[:10], "name": name,
        "host": f"{name}.lan", "device_type": "nvidia", "chip": "Intel Xeon", "mlx_device": mlx_device,
        "os_version": "Ubuntu 24.04", "gpus": [{"name": "NVIDIA L4", "memory_gb": 24}],
        "thunderbolt": {"ports": [], "domain_uuids": [], "bridge": None}})


def test_nccl_needs_cuda_in_mlx_on_every_nvidia_node():
    nodes = [nvidia("gpu-1", "gpu"), nvidia("gpu-2", "cpu")]
    found = [p for p in survey(nodes, {}, "nccl")[1] if p.kind == "nccl_cuda"]
    assert kinds(found) == {("nccl_cuda", "gpu-2")} and found[0].fix == CUDA_FIX
    assert "nccl_cuda" in BLOCKING_KINDS
    for backend in ("auto", "ring", "jaccl"):
        assert not [p for p in survey(nodes, {}, backend)[1] if p.kind.startswith(("nccl", "jaccl"))], backend


def test_jaccl_is_no_longer_refused_as_unsupported():
    nodes, _ = load("mesh4-tb5")
    assert backends.transport("jaccl", nodes) == [] and "jaccl_unsupported" not in BLOCKING_KINDS


# --------------------------------------------------------------------------- GET /topology?format=jaccl


def report(name, names=None, backend="auto", mutate=None):
    nodes, ifs = load(name)
    nodes = mutate(nodes) if mutate else nodes
    return F.report(nodes, T.build(nodes, ifs), ClusterConfig(backend=backend), ifs, names)


def test_the_answer_names_usable_backends_and_the_pick():
    got = report("mesh4-one-tb4")
    entry = got["backends"][0]
    assert entry["label"] == "all live nodes" and entry["nodes"] == got["nodes"] and len(entry["nodes"]) == 4
    assert "40 Gb/s" in entry["usable"]["jaccl"] and entry["usable"]["jaccl-ring"] is None
    assert entry["usable"]["ring"] is None and "NVIDIA" in entry["usable"]["nccl"]
    assert entry["pick"] == "jaccl-ring" and "jaccl:" in entry["why"] and "40 Gb/s" in entry["why"]
    assert got["jaccl"]["devices"] is None and got["jaccl_ring"]["devices"] is not None
    cable = next(c for c in got["fabric"]["cables"] if c["speed_gbps"] == 40.0)
    assert [b["code"] for b in cable["blockers"]] == ["tb4_link"] and not cable["rdma_ready"]
    # cluster.yaml's backend is the pick; the fastest the nodes support is said beside it.
    entry = report("mesh4-one-tb4", backend="ring")["backends"][0]
    assert (entry["pick"], entry["why"], entry["fastest"]) == ("ring", "cluster.yaml's backend", "jaccl-ring")


def test_nodes_give_the_rank_order_of_the_matrices():
    whole = report("mesh4-tb5")
    order = ["studio-3", "studio-1", "studio-4"]
    got = report("mesh4-tb5", order)
    assert got["nodes"] == order and got["backends"][0]["nodes"] == order
    at = {name: k for k, name in enumerate(whole["nodes"])}
    full = whole["jaccl"]["devices"]
    assert got["jaccl"]["devices"] == [[full[at[a]][at[b]] for b in order] for a in order]
    assert got["backends"][0]["pick"] == "jaccl"
    # jaccl-ring follows the order asked for: on ring4-tb5, 1-3 is no cable.
    ring = report("ring4-tb5", ["studio-1", "studio-3", "studio-2", "studio-4"])
    assert ring["jaccl_ring"]["devices"] is None and "studio-1 and studio-3" in ring["jaccl_ring"]["reason"]
    assert ring["backends"][0]["usable"]["jaccl-ring"] is not None
    ok = report("ring4-tb5", ["studio-2", "studio-3", "studio-4", "studio-1"])
    assert ok["jaccl_ring"]["devices"] is not None and ok["backends"][0]["pick"] == "jaccl-ring"


def test_node_names_are_checked():
    known = ["studio-1", "studio-2"]
    assert F.parse_names(None, known) is None
    assert F.parse_names(" studio-2 , studio-1", known) == ["studio-2", "studio-1"]
    for text, words in (("studio-1,nope", "unknown node(s) nope"), ("studio-1,studio-1", "more than once"),
                        (",", "give node names"), (",".join(f"n{i}" for i in range(257)), "at most 256")):
        with pytest.raises(F.UnknownNodes, match="^nodes: ") as exc:
            F.parse_names(text, known)
        assert words in str(exc.value)


def test_the_nvidia_nodes_and_their_pick():
    nodes = [nvidia("gpu-1", "gpu"), nvidia("gpu-2", "gpu")]
    got = F.report(nodes, T.build(nodes, {}), ClusterConfig(), {})
    assert [g["name"] for g in got["nvidia"]] == ["gpu-1", "gpu-2"] and all(g["nccl_ready"] for g in got["nvidia"])
    entry = got["backends"][0]
    assert entry["pick"] == "nccl" and entry["usable"]["nccl"] is None and entry["usable"]["jaccl"]
    nodes = [nvidia("gpu-1", "gpu"), nvidia("gpu-2", "cpu")]
    got = F.report(nodes, T.build(nodes, {}), ClusterConfig(), {})
    assert got["backends"][0]["pick"] == "ring" and "CUDA" in got["backends"][0]["usable"]["nccl"]
    assert got["nvidia"][1]["blockers"][0]["fix"] == CUDA_FIX


def by_label(answer: dict) -> dict[str, dict]:
    return {e["label"]: e for e in answer["backends"]}


def test_the_notable_subsets_of_the_live_nodes_each_say_their_backends():
    got = by_label(report("mesh4-one-tb4"))
    assert list(got) == ["all live nodes", "largest RDMA mesh"]   # the ring is all four: no entry of its own
    whole, mesh = got["all live nodes"], got["largest RDMA mesh"]
    assert "studio-1 Thunderbolt 3 (en4) <-> studio-4 Thunderbolt 1 (en2) runs at 40 Gb/s" in whole["usable"]["jaccl"]
    assert mesh["nodes"] == ["studio-1", "studio-2", "studio-3"]
    assert mesh["usable"]["jaccl"] is None and (mesh["pick"], mesh["fastest"]) == ("jaccl", "jaccl")
    # A healthy mesh is its own largest mesh and ring: one entry.
    assert list(by_label(report("mesh4-tb5"))) == ["all live nodes"]
    # Given nodes: just those.
    asked = report("mesh4-one-tb4", ["studio-1", "studio-4"])["backends"]
    assert [e["label"] for e in asked] == ["the nodes asked for"] and "40 Gb/s" in asked[0]["usable"]["jaccl"]


def test_a_mac_and_nvidia_cluster_names_its_mesh_ring_and_cuda_nodes():
    nodes, ifs = load("mesh4-one-tb4")
    nodes += [nvidia("gpu-1", "gpu"), nvidia("gpu-2", "cpu"), nvidia("gpu-3", "gpu")]
    got = by_label(F.report(nodes, T.build(nodes, ifs), ClusterConfig(), ifs))
    assert list(got) == ["all live nodes", "largest RDMA mesh", "largest RDMA ring", "NVIDIA nodes with CUDA"]
    assert len(got["all live nodes"]["nodes"]) == 7 and got["all live nodes"]["pick"] == "ring"
    assert "gpu-2: MLX there has no CUDA" in got["all live nodes"]["usable"]["nccl"]
    assert got["largest RDMA mesh"]["pick"] == "jaccl" and len(got["largest RDMA mesh"]["nodes"]) == 3
    ring = got["largest RDMA ring"]
    assert sorted(ring["nodes"]) == ["studio-1", "studio-2", "studio-3", "studio-4"]
    assert ring["pick"] == "jaccl-ring" and ring["usable"]["jaccl-ring"] is None and ring["usable"]["jaccl"]
    cuda = got["NVIDIA nodes with CUDA"]
    assert cuda["nodes"] == ["gpu-1", "gpu-3"] and cuda["usable"]["nccl"] is None and cuda["pick"] == "nccl"
    # A down node and one not yet approved are in none of them.
    nodes = [n.model_copy(update={"status": "down"}) if n.name == "gpu-3" else
             n.model_copy(update={"admitted": False}) if n.name == "studio-4" else n for n in nodes]
    got = by_label(F.report(nodes, T.build(nodes, ifs), ClusterConfig(), ifs))
    assert all("gpu-3" not in e["nodes"] and "studio-4" not in e["nodes"] for e in got.values())
    assert got["NVIDIA nodes with CUDA"]["nodes"] == ["gpu-1"] and "largest RDMA ring" not in got


# --------------------------------------------------------------------------- printing


def printed(answer: dict) -> str:
    out = io.StringIO()
    render_fabric(answer, Console(file=out, width=200, color_system=None))
    return out.getvalue()


def test_the_section_prints_each_blocker_with_its_fix_and_the_pick():
    text = printed(report("mesh4-one-tb4"))
    # studio-1's port 3 links at 40 Gb/s: not a Thunderbolt 5 link.
    assert "studio-1: macOS 26.2 (25C56), rdma_ctl enabled, Thunderbolt 5 port(s) 1, 2, 4, 5, 6, RDMA devices" in text
    assert "RDMA ok" in text and "runs at 40 Gb/s" in text and "fix: use a Thunderbolt 5 cable" in text
    assert "Jupiter would pick jaccl-ring for these 4 nodes: the fastest backend these nodes support" in text
    lie = printed(report("mesh4-tb5", mutate=lambda ns: tb4_lie(ns, "studio-2")))
    assert "studio-2: macOS 26.2 (25C56), rdma_ctl enabled, no Thunderbolt 5 port, no RDMA device" in lie
    assert "studio-2 shows no Thunderbolt 5 port" in lie and "fix: use Macs with Thunderbolt 5 ports" in lie
    assert "not for RDMA (studio-2: see above)" in lie and "lists no RDMA device" not in lie
    lie = printed(report("mesh4-tb5", backend="jaccl", mutate=lambda ns: tb4_lie(ns, "studio-2")))
    assert "Jupiter would pick jaccl for these 4 nodes: cluster.yaml's backend; but jaccl cannot run" in lie
    assert "with backend auto in cluster.yaml it would pick ring" in lie
    gpus = [nvidia("gpu-1", "cpu")]
    text = printed(F.report(gpus, T.build(gpus, {}), ClusterConfig(backend="nccl"), {}))
    assert "gpu-1: NVIDIA, 1 GPU(s)" in text and "no nccl" in text and "x MLX on gpu-1 has no CUDA" in text


def test_the_section_prints_each_set_of_nodes_under_its_label_once():
    nodes, ifs = load("mesh4-one-tb4")
    nodes += [nvidia("gpu-1", "gpu")]
    text = printed(F.report(nodes, T.build(nodes, ifs), ClusterConfig(), ifs))
    for head in ("all live nodes: backends these 5 nodes can use (",
                 "largest RDMA mesh: backends these 3 nodes can use (studio-1, studio-2, studio-3): jaccl, jaccl-ring,",
                 "largest RDMA ring: backends these 4 nodes can use (",
                 "NVIDIA nodes with CUDA: backends this node can use (gpu-1): nccl, ring"):
        assert text.count(head) == 1, (head, text)
    assert "Jupiter would pick jaccl for these 3 nodes" in text and "Jupiter would pick nccl for this node" in text
    # The same reason is said once, for all the backends it keeps off.
    assert text.count("nccl: none of these nodes is an NVIDIA node") == 1
    assert "   jaccl, jaccl-ring: JACCL needs at least 2 nodes" in text
    # An answer without labels (an older coordinator) still prints.
    old = report("mesh4-tb5")
    old["backends"] = [{k: v for k, v in e.items() if k != "label"} for e in old["backends"]]
    assert "\n backends these 4 nodes can use (" in printed(old)


def test_the_section_is_shown_for_macs_with_thunderbolt_facts_or_nvidia_nodes():
    nodes, _ = load("mesh4-tb5")
    assert relevant(nodes) and relevant([nvidia("gpu-1", "gpu")])
    linux = NodeOut.model_validate({**nodes[0].model_dump(mode="json"), "device_type": "cpu",
                                    "thunderbolt": {"ports": [], "domain_uuids": []}})
    assert not relevant([linux])
