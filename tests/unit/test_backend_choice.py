"""The backend a job gets when it names none (coordinator/jobs/choice.py), over recorded
clusters: the fastest the nodes support, with the reason, and refusals of backends the nodes can
never run. Pure: the same node views the scheduler places on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coordinator.jobs.choice import choose, never_runs
from shared.cluster_config import ClusterConfig
from shared.schemas import GPUInfo, JobSpec, NetInterface, NodeOut

CLUSTERS = Path(__file__).resolve().parents[1] / "support" / "fixtures" / "clusters"
CONFIG = ClusterConfig()


def load(name: str) -> tuple[list[NodeOut], dict[str, list[NetInterface]]]:
    raw = json.loads((CLUSTERS / f"{name}.json").read_text())
    nodes = [NodeOut.model_validate({k: v for k, v in d.items() if k != "interfaces"}) for d in raw]
    return nodes, {d["id"]: [NetInterface.model_validate(i) for i in d.get("interfaces", [])] for d in raw}


def job(nodes: int, **kw) -> JobSpec:
    return JobSpec(command=["python", "train.py"], nodes=nodes, **kw)


def test_a_tb5_mesh_gets_jaccl_and_a_tb5_ring_jaccl_ring():
    nodes, ifs = load("mesh4-tb5")
    assert choose(job(4), "auto", nodes, CONFIG, ifs) == ("jaccl", "the fastest backend these nodes support")
    nodes, ifs = load("ring4-tb5")
    backend, why = choose(job(4), "auto", nodes, CONFIG, ifs)
    assert backend == "jaccl-ring" and why.startswith("the fastest backend these nodes support (jaccl: ")


def test_one_tb4_cable_means_jaccl_ring_for_four_and_jaccl_for_three():
    nodes, ifs = load("mesh4-one-tb4")
    backend, why = choose(job(4), "auto", nodes, CONFIG, ifs)
    assert backend == "jaccl-ring" and "40" in why
    assert choose(job(3), "auto", nodes, CONFIG, ifs)[0] == "jaccl"


def test_busy_macs_still_get_jaccl_so_the_job_waits_for_them():
    nodes, ifs = load("mesh4-tb5")
    busy = [n.model_copy(update={"status": "busy"}) for n in nodes]
    assert choose(job(4), "auto", busy, CONFIG, ifs)[0] == "jaccl"


def test_clusters_without_rdma_or_cuda_get_ring_and_say_why():
    nodes, ifs = load("ring4")
    backend, why = choose(job(2), "auto", nodes, CONFIG, ifs)
    assert backend == "ring"
    assert "jaccl: " in why and "nccl: no NVIDIA node whose MLX has CUDA" in why


def nvidia(name: str, mlx_device: str) -> NodeOut:
    return NodeOut(id=f"id-{name}", name=name, host=f"10.0.0.{len(name)}", status="ready", role="hybrid",
                   device_type="nvidia", chip=None, memory_gb=64, memory_available_gb=60, cpu_cores=16,
                   os_version="Ubuntu 24.04", python_version="3.12", mlx_version="0.30.0", mlx_device=mlx_device,
                   mpi={}, thunderbolt={}, gpus=[GPUInfo(name="NVIDIA RTX 4090", memory_gb=24)], declared=None,
                   problems=[], last_heartbeat=None, registered_at=None, agent_version="0.1.0")


def test_nvidia_nodes_with_cuda_get_nccl_and_without_it_ring():
    gpu = [nvidia("gpu-a", "gpu"), nvidia("gpu-bb", "gpu")]
    assert choose(job(2), "auto", gpu, CONFIG, {})[0] == "nccl"
    cpu = [nvidia("gpu-a", "cpu"), nvidia("gpu-bb", "cpu")]
    assert choose(job(2), "auto", cpu, CONFIG, {})[0] == "ring"


def test_the_job_and_cluster_yaml_win_over_the_choice():
    nodes, ifs = load("mesh4-tb5")
    assert choose(job(2, backend="ring"), "auto", nodes, CONFIG, ifs) == ("ring", "named by the job")
    assert choose(job(2), "mpi", nodes, CONFIG, ifs) == ("mpi", "cluster.yaml's backend")


@pytest.mark.parametrize("fixture, backend, nodes, words", [
    ("ring4", "jaccl", 2, "RDMA"),
    ("ring4-tb5", "jaccl", 4, "cable"),
    ("ring4", "nccl", 2, "NVIDIA"),
])
def test_a_backend_the_nodes_can_never_run_is_refused_with_the_reason(fixture, backend, nodes, words):
    views, ifs = load(fixture)
    why = never_runs(job(nodes, backend=backend), backend, views, CONFIG, ifs)
    assert why and words in why
    assert never_runs(job(nodes, backend=backend), backend, views[:1], CONFIG, ifs) is None  # too few known yet


def test_one_node_or_several_ranks_per_mac_never_get_jaccl():
    nodes, ifs = load("mesh4-tb5")
    assert choose(job(1), "auto", nodes, CONFIG, ifs)[0] == "ring"
    backend, why = choose(job(2, processes_per_node=2), "auto", nodes, CONFIG, ifs)
    assert backend == "ring" and "one rank on each of at least 2 Macs" in why
