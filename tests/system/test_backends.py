"""Backends through a real coordinator: the choice when a job names none, refusals of backends
the nodes cannot run, and a jaccl job on a recorded Thunderbolt 5 mesh down to the start order
each node is given.

No RDMA and no CUDA here: the mesh's nodes are registered from recorded facts and never start a
rank; the test stops at what the coordinator tells them (the rank environment itself is compared
with mlx.launch's in test_mlx_launch_env.py). Nothing here initialises JACCL or NCCL."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from shared.apierror import ApiError
from tests.support.harness import REPO, register_recorded, two_agents, wait_for
from tests.system.test_jobs import wait_job

def _register(coord, name: str) -> dict[str, dict]:
    """name -> {id, token, host} of each node of the recorded cluster, registered."""
    return {n["name"]: {"id": r["node_id"], "token": r["node_token"], "host": n["host"]}
            for n, r in register_recorded(coord, name)}


@pytest.fixture(scope="module")
def linux_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("backends")
    (root / "cluster.yaml").write_text("nodes: []\n")  # no backend: each job gets the fastest its nodes support
    with two_agents(root, config=root / "cluster.yaml") as coord:
        yield coord


def test_a_job_naming_no_backend_gets_the_fastest_these_nodes_support_and_says_why(linux_pair):
    with linux_pair.client() as c:
        job = c.submit({"command": ["python", "-c", "pass"], "nodes": 2})
        done = wait_job(c, job.id, timeout=60)
    assert done.status == "succeeded" and done.backend == "ring"
    assert done.backend_reason.startswith("the fastest backend these nodes support (jaccl: ")
    assert "nccl: no NVIDIA node whose MLX has CUDA" in done.backend_reason
    env = dict(os.environ, JUPITER_URL=linux_pair.url, JUPITER_TOKEN=linux_pair.admin_token, COLUMNS="300")
    shown = subprocess.run([sys.executable, "-m", "shared.cli", "job", job.id], cwd=REPO, capture_output=True,
                           text=True, timeout=60, env=env)
    assert "backend: ring, the fastest backend these nodes support" in shown.stdout, shown.stdout + shown.stderr


@pytest.mark.parametrize("backend, words", [("jaccl", "RDMA"), ("jaccl-ring", "RDMA"), ("nccl", "NVIDIA")])
def test_a_backend_these_nodes_cannot_run_is_refused_with_the_reason(linux_pair, backend, words):
    with linux_pair.client() as c, pytest.raises(ApiError) as err:
        c.submit({"command": ["python", "-c", "pass"], "nodes": 2, "backend": backend})
    assert err.value.status == 422
    text = str(err.value)
    assert f"backend: {backend} cannot run on these nodes" in text and words in text, text


def test_a_jaccl_job_on_a_tb5_mesh_gets_the_device_matrix_and_rank_0_as_rendezvous(start_coordinator, tmp_path):
    (tmp_path / "cluster.yaml").write_text("nodes: []\n")
    coord = start_coordinator(down_after=600, config=tmp_path / "cluster.yaml")
    nodes = _register(coord, "mesh4-tb5")
    with coord.client() as c:
        job = c.submit({"command": ["python", "-c", "pass"], "nodes": 4})  # no backend: chosen
        # placed by the scheduler loop a moment after the submit returns
        wait_for(lambda: c.job(job.id).status != "pending", timeout=10, what="the job placed")
        got = c.job(job.id)
    assert got.backend == "jaccl" and got.backend_reason == "the fastest backend these nodes support"
    assert got.status == "starting" and sorted(got.nodes) == sorted(nodes)
    admin = {"Authorization": f"Bearer {coord.admin_token}"}
    hostfile = json.loads(httpx.get(f"{coord.url}/jobs/{job.id}/hostfile?format=mlx", headers=admin).text)
    matrix = [h["rdma"] for h in hostfile["hosts"]]
    assert hostfile["backend"] == "jaccl" and len(matrix) == 4
    assert all(matrix[i][i] is None and all(d and d.startswith("rdma_en") for j, d in enumerate(row) if j != i)
               for i, row in enumerate(matrix))
    rank0 = nodes[got.nodes[0]]
    for name in got.nodes:
        n = nodes[name]
        r = httpx.post(f"{coord.url}/nodes/{n['id']}/orders", headers={"Authorization": f"Bearer {n['token']}"},
                       json={"ranks": [], "wait_s": 0})
        assert r.status_code == 200, r.text
        (order,) = r.json()["start"]
        assert order["backend"] == "jaccl" and order["hostfile"] is None
        if name == got.nodes[0]:  # the other ranks are ordered once rank 0 runs (its agent says so)
            said = httpx.post(f"{coord.url}/nodes/{n['id']}/report", headers={"Authorization": f"Bearer {n['token']}"},
                              json={"ranks": [{"job_id": job.id, "rank": order["rank"], "state": "running"}]})
            assert said.status_code == 200 and order["rank"] == 0, said.text
        host, port = order["mlx_env"]["MLX_JACCL_COORDINATOR"].rsplit(":", 1)
        assert host == rank0["host"] and 20000 <= int(port) < 32000
        assert json.loads(order["mlx_files"]["MLX_IBV_DEVICES"]) == matrix
        assert order["mlx_files"]["MLX_IBV_DEVICES"].endswith("]\n")
