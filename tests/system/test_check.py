"""`jupiter check` as a user runs it: against a live coordinator with agents, against a broken
fixture cluster, and with no coordinator at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.harness import REPO, wait_for, registration

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
    nodes = json.loads((FIXTURES / f"{name}.json").read_text())
    for n in nodes:
        facts = {"machine_id": n["id"], "hostname": n["host"], "os": "macos", "os_version": n["os_version"] or "",
                 "device_type": n["device_type"] or "mac", "chip": n["chip"] or "", "memory_gb": n["memory_gb"] or 0,
                 "memory_available_gb": n["memory_available_gb"] or 0, "cpu_cores": n["cpu_cores"] or 0,
                 "python_version": n["python_version"] or "", "mlx_version": n["mlx_version"],
                 "mlx_device": n["mlx_device"], "mpi": n["mpi"], "thunderbolt": n["thunderbolt"],
                 "interfaces": n.get("interfaces", [])}
        r = httpx.post(coord.url + "/nodes/register", headers={"Authorization": f"Bearer {coord.join_token}"},
                       json=registration(n["name"], n["host"], facts))
        assert r.status_code == 200, r.text
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
