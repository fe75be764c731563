"""`jupiter check` as a user runs it: against a live coordinator with agents, against a broken
fixture cluster, and with no coordinator at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.harness import REPO, register_recorded, wait_for

FIXTURES = Path(__file__).resolve().parents[1] / "support" / "fixtures" / "clusters"


def jupiter_check(coord_url, token, config, *extra):
    env = dict(os.environ, JUPITER_URL=coord_url)
    if token:
        env["JUPITER_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "shared.cli", "check", "--config", str(config), *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def ring_config(tmp_path):
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text("backend: ring\ncheckpoint_on_failure: false\nauto_restart_failed_nodes: false\nnodes: []\n")
    return cfg


def test_check_against_a_live_cluster_prints_the_tables_and_exits_0(coordinator, agents, tmp_path):
    agents(coordinator, "c1")
    agents(coordinator, "c2")
    with coordinator.client() as c:
        wait_for(lambda: sum(n.status == "ready" for n in c.nodes()) == 2, timeout=60)
    out = jupiter_check(coordinator.url, coordinator.admin_token, ring_config(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in out.stdout and "Cluster at" in out.stdout
    for word in ("c1", "c2", "ready", "openmpi", "memory:", "domain sample: ok"):
        assert word in out.stdout, word
    as_json = json.loads(jupiter_check(coordinator.url, coordinator.admin_token, ring_config(tmp_path), "--json").stdout)
    assert as_json["reachable"] and as_json["exit_code"] == 0
    assert sorted(n["name"] for n in as_json["nodes"]) == ["c1", "c2"]


def _register_fixture(coord, name):
    return _register_nodes(coord, json.loads((FIXTURES / f"{name}.json").read_text()))


def _register_nodes(coord, nodes):
    """Register each node of a cluster fixture (GET /nodes's shape) as its agent would."""
    register_recorded(coord, nodes)
    return nodes


def test_check_exits_nonzero_on_a_bridge_loop_and_names_the_fix(start_coordinator, tmp_path):
    coord = start_coordinator(config=ring_config(tmp_path), down_after=600)
    _register_fixture(coord, "bridge-loop")
    out = jupiter_check(coord.url, coord.admin_token, ring_config(tmp_path))
    assert out.returncode == 1, out.stdout
    assert "bridge" in out.stdout.lower() and "fix:" in out.stdout
    report = json.loads(jupiter_check(coord.url, coord.admin_token, ring_config(tmp_path), "--json").stdout)
    loop = [p for p in report["problems"] if p["kind"] == "bridge_loop"]
    assert loop and loop[0]["blocking"]
    topo = httpx.get(coord.url + "/topology", headers={"Authorization": f"Bearer {coord.admin_token}"}).json()
    assert any(c["kind"] in ("ring", "mesh") for c in topo["components"])
    dot = httpx.get(coord.url + "/topology?format=dot", headers={"Authorization": f"Bearer {coord.admin_token}"})
    assert dot.text.startswith('graph "jupiter"') and "--" in dot.text


def test_check_without_a_coordinator_still_validates_the_config(tmp_path):
    out = jupiter_check("http://127.0.0.1:9", None, ring_config(tmp_path))
    assert out.returncode == 0
    assert "unreachable" in out.stdout and "only static checks" in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes:\n  - {host: a.local, name: A, device_type: tpu, role: trainer}\n")
    out = jupiter_check("http://127.0.0.1:9", None, bad)
    assert out.returncode == 1 and "field device_type" in out.stdout


def test_check_links_measures_each_neighbour_pair(coordinator, agents, tmp_path):
    agents(coordinator, "c1")
    agents(coordinator, "c2")
    with coordinator.client() as c:
        wait_for(lambda: sum(n.status == "ready" for n in c.nodes()) == 2, timeout=60)
    out = jupiter_check(coordinator.url, coordinator.admin_token, ring_config(tmp_path), "--links", "--json")
    report = json.loads(out.stdout)
    assert out.returncode == 0, out.stdout[-2000:]
    pairs = {(r["from"], r["to"]) for r in report["links"]}
    assert pairs == {("c1", "c2"), ("c2", "c1")}
    for r in report["links"]:
        assert r["gbps"] > 0 and r["latency_us"] > 0 and r["negotiated_gbps"] is None
    table = jupiter_check(coordinator.url, coordinator.admin_token, ring_config(tmp_path), "--links")
    assert "Links measured" in table.stdout and "no Thunderbolt link" in table.stdout


def test_link_probe_lines_parse_and_flag_ethernet_speed_on_a_thunderbolt_cable():
    from shared.linkprobe import parse
    from shared.check import CheckReport, _negotiated

    rec = parse('[0] JUPITER_LINK {"rank": 0, "to": 1, "latency_us": 80.0, "gbps": 0.94, "bytes": 1}')
    assert rec["gbps"] == 0.94 and parse("[0] JUPITER_LINK {broken") is None and parse("hello") is None
    report = CheckReport(config_path="x", topology={"links": [{"a": "m1", "b": "m2", "speed_gbps": 40.0},
                                                              {"a": "m2", "b": "m3", "speed_gbps": 40.0}]})
    assert _negotiated(report.topology, "m2", "m1") == 40.0

    # The verdict itself: run_links over a probe job's log, with a stand-in for the coordinator.
    from types import SimpleNamespace

    from shared.check import run_links

    measured = [(0, 1, 0.94),   # m1 -> m2: a 40 Gb/s cable carrying Ethernet speed
                (1, 2, 30.0),   # m2 -> m3: a healthy Thunderbolt link
                (1, 0, 5.0),    # m2 -> m1: slow, but not Ethernet slow
                (2, 0, 0.94)]   # m3 -> m1: no Thunderbolt link, so Ethernet speed is expected
    log = "\n".join(f"[{rank}] JUPITER_LINK " + json.dumps({"rank": rank, "to": to, "latency_us": 80.0, "gbps": gbps,
                                                             "bytes": 1}) for rank, to, gbps in measured)

    class Coordinator:
        def submit(self, spec):
            return SimpleNamespace(id="j-0000000001")

        def job(self, job_id):
            return SimpleNamespace(status="succeeded", error=None, nodes=["m1", "m2", "m3"])

        def logs(self, job_id):
            return log, len(log)

    report.nodes = [SimpleNamespace(name=n, status="ready") for n in ("m1", "m2", "m3")]
    verdicts = {(r["from"], r["to"]): (r["negotiated_gbps"], r["verdict"]) for r in
                run_links(Coordinator(), report, mpi=False)}
    assert verdicts == {
        ("m1", "m2"): (40.0, "at Ethernet speed: traffic is not using the Thunderbolt link"),
        ("m2", "m3"): (40.0, "ok"),
        ("m2", "m1"): (40.0, "only 12% of the negotiated 40 Gb/s"),
        ("m3", "m1"): (None, "ok"),
    }, verdicts


def test_topology_serves_the_jaccl_device_matrix_for_an_rdma_mesh(start_coordinator, tmp_path):
    coord = start_coordinator(config=ring_config(tmp_path), down_after=600)
    nodes = _register_fixture(coord, "mesh3-rdma")
    h = {"Authorization": f"Bearer {coord.admin_token}"}
    got = httpx.get(coord.url + "/topology?format=jaccl", headers=h).json()
    matrix = got["jaccl"]["devices"]
    assert got["jaccl"]["reason"] is None and len(matrix) == len(nodes) == 3
    assert all(matrix[i][i] is None for i in range(3))
    assert all(matrix[i][j].startswith("rdma_en") for i in range(3) for j in range(3) if i != j)
    assert sorted(got["nodes"]) == sorted(n["name"] for n in nodes)


def test_no_jaccl_matrix_without_rdma(start_coordinator, tmp_path):
    coord = start_coordinator(config=ring_config(tmp_path), down_after=600)
    _register_fixture(coord, "chain5")
    got = httpx.get(coord.url + "/topology?format=jaccl", headers={"Authorization": f"Bearer {coord.admin_token}"}).json()
    assert got["jaccl"]["devices"] is None and "RDMA" in got["jaccl"]["reason"]


# --------------------------------------------------------------------------- the fabric section


def backend_config(tmp_path, backend):
    cfg = tmp_path / f"cluster-{backend}.yaml"
    cfg.write_text(f"backend: {backend}\ncheckpoint_on_failure: false\nauto_restart_failed_nodes: false\nnodes: []\n")
    return cfg


def _fixture_nodes(name):
    return json.loads((FIXTURES / f"{name}.json").read_text())


def _tb4_lie(nodes, name):
    """rdma_ctl says enabled on a Thunderbolt 4 Mac: 40 Gb/s ports, ibv_devices lists nothing."""
    for n in nodes:
        if n["name"] == name:
            n["thunderbolt"]["rdma_devices"] = []
            for p in n["thunderbolt"]["ports"]:
                connected = p["status"] == "connected"
                p.update(rdma_device=None, speed_gbps=40.0 if connected else None,
                         max_speed_gbps=None if connected else 40.0)
    return nodes


def _old_macos(nodes, name):
    """macOS 15: no rdma_ctl, no ibv_devices."""
    for n in nodes:
        if n["name"] == name:
            n["os_version"] = "macOS 15.5 (24F74)"
            n["thunderbolt"].update(rdma_enabled=None, rdma_devices=None)
            for p in n["thunderbolt"]["ports"]:
                p["rdma_device"] = None
    return nodes


FABRICS = {
    # name: (the cluster, cluster.yaml's backend, exit code, what jupiter check prints)
    "mesh4-one-tb4 auto": (lambda: _fixture_nodes("mesh4-one-tb4"), "auto", 0, [
        "runs at 40 Gb/s: RDMA needs a Thunderbolt 5 link", "fix: use a Thunderbolt 5 cable",
        "Jupiter would pick jaccl-ring for these 4 nodes: the fastest backend these nodes support"]),
    "mesh4-one-tb4 jaccl": (lambda: _fixture_nodes("mesh4-one-tb4"), "jaccl", 1, [
        "runs at 40 Gb/s: RDMA needs a Thunderbolt 5 link", "fix: use a Thunderbolt 5 cable"]),
    "ring4-tb5 jaccl-ring": (lambda: _fixture_nodes("ring4-tb5"), "jaccl-ring", 0, [
        "RDMA ok", "can use (studio-1, studio-2, studio-3, studio-4): jaccl-ring, ring",
        "no Thunderbolt cable joins studio-1 and studio-3",
        "Jupiter would pick jaccl-ring for these 4 nodes: cluster.yaml's backend"]),
    "tb4 lie jaccl": (lambda: _tb4_lie(_fixture_nodes("mesh4-tb5"), "studio-2"), "jaccl", 1, [
        "studio-2: macOS 26.2 (25C56), rdma_ctl enabled, no Thunderbolt 5 port, no RDMA device",
        "studio-2 shows no Thunderbolt 5 port", "rdma_ctl may say enabled, but RDMA never works over Thunderbolt 4",
        "fix: use Macs with Thunderbolt 5 ports"]),
    "old macos ring": (lambda: _old_macos(_fixture_nodes("mesh4-tb5"), "studio-3"), "ring", 0, [
        "studio-3 runs macOS 15.5 (24F74): RDMA over Thunderbolt needs macOS 26.2 or later",
        "fix: update studio-3 to macOS 26.2 or later", "Jupiter would pick ring for these 4 nodes: cluster.yaml's"]),
}


@pytest.mark.parametrize("case", list(FABRICS))
def test_check_prints_the_fabric_with_each_blocker_and_its_fix(start_coordinator, tmp_path, case):
    make, backend, code, words = FABRICS[case]
    cfg = backend_config(tmp_path, backend)
    coord = start_coordinator(config=cfg, down_after=600)
    _register_nodes(coord, make())
    out = jupiter_check(coord.url, coord.admin_token, cfg)
    assert out.returncode == code, out.stdout[-3000:]
    assert "fabric (backend in cluster.yaml: " + backend + ")" in out.stdout
    flat = " ".join(out.stdout.split())  # rich wraps long lines at the terminal's width
    for w in words:
        assert w in flat, (w, out.stdout[-3000:])
    report = json.loads(jupiter_check(coord.url, coord.admin_token, cfg, "--json").stdout)
    assert report["exit_code"] == code and report["fabric"]["backends"][0]["pick"]
    blocking = {p["kind"] for p in report["problems"] if p["blocking"]}
    if backend in ("jaccl", "jaccl-ring"):
        assert bool(blocking & {"jaccl_rdma", "jaccl_link", "jaccl_bridge"}) == (code == 1), report["problems"]
    else:
        assert not {p["kind"] for p in report["problems"]} & {"jaccl_rdma", "jaccl_link", "jaccl_bridge"}


def test_topology_jaccl_for_given_nodes_follows_their_order(start_coordinator, tmp_path):
    coord = start_coordinator(config=backend_config(tmp_path, "auto"), down_after=600)
    _register_fixture(coord, "mesh4-tb5")
    h = {"Authorization": f"Bearer {coord.admin_token}"}
    whole = httpx.get(coord.url + "/topology", params={"format": "jaccl"}, headers=h).json()
    assert whole["backends"][0]["pick"] == "jaccl" and whole["backends"][0]["usable"]["jaccl"] is None
    assert {n["name"] for n in whole["fabric"]["nodes"]} == {"studio-1", "studio-2", "studio-3", "studio-4"}
    order = ["studio-4", "studio-2", "studio-1"]
    got = httpx.get(coord.url + "/topology", params={"format": "jaccl", "nodes": ",".join(order)}, headers=h).json()
    assert got["nodes"] == order and got["backends"][0]["nodes"] == order
    at = {name: k for k, name in enumerate(whole["nodes"])}
    full = whole["jaccl"]["devices"]
    assert got["jaccl"]["devices"] == [[full[at[a]][at[b]] for b in order] for a in order]
    assert got["jaccl"]["reason"] is None and got["backends"][0]["pick"] == "jaccl"
    for bad, words in (("studio-1,studio-9", "studio-9"), ("studio-1,studio-1", "more than once"),
                       (",".join(f"n{i}" for i in range(300)), "256")):
        r = httpx.get(coord.url + "/topology", params={"format": "jaccl", "nodes": bad}, headers=h)
        assert r.status_code == 422 and "nodes" in r.text and words in r.text, r.text
    r = httpx.get(coord.url + "/topology", params={"nodes": "studio-1"}, headers=h)
    assert r.status_code == 422 and "nodes" in r.text
