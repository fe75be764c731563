"""Placement for the agent-started backends besides ring: jaccl (a full RDMA mesh), jaccl-ring (a
cycle over RDMA cables, in cable order) and nccl (NVIDIA nodes whose MLX has CUDA); the plan frozen
at placement (rank 0's address and port, the device matrix) and what it becomes in each rank's
start order and in the job's mlx hostfile.

No RDMA or CUDA here: this stops at the orders and the hostfile; nothing initialises JACCL or NCCL.
The clusters are tests/support/fixtures/clusters/ (mesh4-tb5, ring4-tb5, mesh4-one-tb4, chain5).
"""

from __future__ import annotations

import json
import random

import pytest

from coordinator.joblogs import JobLogs
from coordinator.jobs import Jobs, orders, placement, views
from coordinator.jobs.spec import SpecRejected, check
from coordinator.registry import Registry
from coordinator.scheduler import Placement, Unplaceable, pick_ports, place
from coordinator.store import JobRow, Store
from shared.backends import CUDA_FIX, backend_vars
from shared.cluster_config import ClusterConfig, load_cluster_config
from shared.schemas import (GPUInfo, JobSpec, MPIInfo, NetInterface, NodeOut, RankReport, RankState,
                            RegisterRequest, ThunderboltBridge, ThunderboltInfo)
from tests.support.harness import registration, sample_facts
from tests.unit.test_topology import load

CFG = ClusterConfig()  # the defaults: Thunderbolt Bridge preferred (off on these clusters), no forced interface

# mesh4-tb5's cables: 1-2 en3/en3, 1-3 en2/en4, 1-4 en4/en2, 2-3 en4/en2, 2-4 en2/en4, 3-4 en3/en3.
MESH4 = [[None, "rdma_en3", "rdma_en2", "rdma_en4"],
         ["rdma_en3", None, "rdma_en4", "rdma_en2"],
         ["rdma_en4", "rdma_en2", None, "rdma_en3"],
         ["rdma_en2", "rdma_en4", "rdma_en3", None]]
# ring4-tb5's cables: 1-2 en2/en3, 2-3 en2/en3, 3-4 en2/en3, 4-1 en2/en3; only neighbours filled.
RING4 = [[None, "rdma_en2", None, "rdma_en3"],
         ["rdma_en3", None, "rdma_en2", None],
         [None, "rdma_en3", None, "rdma_en2"],
         ["rdma_en2", None, "rdma_en3", None]]


def spec(**kw) -> JobSpec:
    return JobSpec(command=["python", "train.py"], **kw)


def names(got) -> list[str]:
    return [n.name for n in got.nodes]


def edit(nodes: list[NodeOut], name: str, **update) -> list[NodeOut]:
    return [n.model_copy(update=update) if n.name == name else n for n in nodes]


def nvidia(name: str, i: int, *, mlx_device="gpu", gpus=2) -> NodeOut:
    return NodeOut(id=f"n-{name}", name=name, host=f"10.0.0.{i}", status="ready", role="trainer",
                   device_type="nvidia", chip="Intel Xeon", memory_gb=256.0, memory_available_gb=200.0,
                   cpu_cores=32, os_version="Ubuntu 24.04", python_version="3.11.7", mlx_version="0.32.4",
                   mlx_device=mlx_device, mpi=MPIInfo(), thunderbolt=ThunderboltInfo(),
                   gpus=[GPUInfo(name="NVIDIA H100", memory_gb=80.0)] * gpus, declared=None, problems=[],
                   last_heartbeat=None, registered_at=None, agent_version="0.1.0")


def planned(backend: str, got: Placement, ppn: int = 1) -> tuple[JobRow, list]:
    """The job row and rank rows placement.py would store for `got` (ports from Random(0))."""
    job = JobRow(id="j-test", name="t", status="pending", backend=backend, world_size=len(got.nodes) * ppn,
                 spec=spec(nodes=len(got.nodes), processes_per_node=ppn, backend=backend).model_dump(mode="json"),
                 command=["python", "train.py"], spec_hash="x", plan={"why": "named by the job"})
    ranks = placement.rank_rows(job, got, ppn, pick_ports(got.addresses, ppn, set(), random.Random(0)))
    job.plan = placement.plan_of(job, got, ranks)
    return job, ranks


# --------------------------------------------------------------------------- jaccl and jaccl-ring


def test_jaccl_on_a_full_mesh_takes_all_four_with_their_device_matrix_and_rank_0_as_coordinator():
    nodes, ifaces = load("mesh4-tb5")
    got = place(spec(nodes=4), "jaccl", nodes, CFG, set(), ifaces)
    assert isinstance(got, Placement), got
    assert names(got) == ["studio-1", "studio-2", "studio-3", "studio-4"]
    assert got.devices == MESH4 and got.left_out == () and got.note is None
    assert got.addresses == ["192.168.1.11", "192.168.1.12", "192.168.1.13", "192.168.1.14"]
    job, ranks = planned("jaccl", got)
    assert job.plan == {"why": "named by the job", "coordinator": f"192.168.1.11:{ranks[0].port}", "devices": MESH4}
    # Three of the four: the first three by name, pairwise cabled.
    three = place(spec(nodes=3), "jaccl", nodes, CFG, set(), ifaces)
    assert names(three) == ["studio-1", "studio-2", "studio-3"] and three.devices == [r[:3] for r in MESH4[:3]]
    assert three.note is None  # studio-4 could have joined: it was simply not needed
    # A restarted job keeps rank 0 where its checkpoints are.
    again = place(spec(nodes=3), "jaccl", nodes, CFG, set(), ifaces, prefer_rank0=nodes[3].id)
    assert names(again) == ["studio-4", "studio-1", "studio-2"]


def test_jaccl_ring_follows_the_cable_cycle_and_jaccl_refuses_a_ring():
    nodes, ifaces = load("ring4-tb5")
    got = place(spec(nodes=4), "jaccl-ring", nodes, CFG, set(), ifaces)
    assert isinstance(got, Placement), got
    assert names(got) == ["studio-1", "studio-2", "studio-3", "studio-4"] and got.devices == RING4
    job, ranks = planned("jaccl-ring", got)
    assert job.plan["coordinator"] == f"192.168.1.11:{ranks[0].port}"
    mesh = place(spec(nodes=4), "jaccl", nodes, CFG, set(), ifaces)
    assert isinstance(mesh, Unplaceable)
    assert "no Thunderbolt cable joins studio-1 and studio-3" in mesh.reason
    # Named nodes run in the order given, which must be a cabled cycle.
    named = place(spec(node_names=["studio-2", "studio-3", "studio-4", "studio-1"]), "jaccl-ring", nodes, CFG,
                  set(), ifaces)
    assert names(named) == ["studio-2", "studio-3", "studio-4", "studio-1"]
    crossed = place(spec(node_names=["studio-1", "studio-3", "studio-2", "studio-4"]), "jaccl-ring", nodes, CFG,
                    set(), ifaces)
    assert isinstance(crossed, Unplaceable) and "studio-1 and studio-3" in crossed.reason


def test_one_thunderbolt_4_cable_leaves_one_mac_out_and_says_why():
    nodes, ifaces = load("mesh4-one-tb4")
    got = place(spec(nodes=3), "jaccl", nodes, CFG, set(), ifaces)
    assert isinstance(got, Placement), got
    assert names(got) == ["studio-1", "studio-2", "studio-3"]
    [(left, why)] = got.left_out
    assert left == "studio-4" and "studio-4" in why and "40 Gb/s" in why
    assert got.note.startswith("left out studio-4: ")
    job, _ = planned("jaccl", got)
    assert job.plan["left_out"] == [{"node": "studio-4", "why": why}]
    four = place(spec(nodes=4), "jaccl", nodes, CFG, set(), ifaces)
    assert isinstance(four, Unplaceable)
    assert "studio-1 Thunderbolt 3 (en4) <-> studio-4 Thunderbolt 1 (en2) runs at 40 Gb/s" in four.reason
    named = place(spec(node_names=["studio-1", "studio-2", "studio-3", "studio-4"]), "jaccl", nodes, CFG, set(),
                  ifaces)
    assert isinstance(named, Unplaceable) and "40 Gb/s" in named.reason
    # jaccl-ring needs only neighbours: a cycle around the slow cable.
    ring = place(spec(nodes=4), "jaccl-ring", nodes, CFG, set(), ifaces)
    assert names(ring) == ["studio-1", "studio-2", "studio-4", "studio-3"]


def test_jaccl_is_refused_where_rdma_cannot_run_with_the_reason():
    chain, chain_ifaces = load("chain5")  # macOS 15, no rdma_ctl
    got = place(spec(nodes=2), "jaccl", chain, CFG, set(), chain_ifaces)
    assert isinstance(got, Unplaceable) and "0 eligible of 5" in got.reason and "macOS 26.2" in got.reason
    nodes, ifaces = load("mesh4-tb5")
    old = edit(nodes, "studio-2", os_version="macOS 15.5 (24F74)")
    got = place(spec(nodes=4), "jaccl", old, CFG, set(), ifaces)
    assert isinstance(got, Unplaceable) and "studio-2 runs macOS 15.5" in got.reason
    # Three still work, and the note says why studio-2 sits out.
    three = place(spec(nodes=3), "jaccl", old, CFG, set(), ifaces)
    assert names(three) == ["studio-1", "studio-3", "studio-4"]
    assert three.left_out[0][0] == "studio-2" and "macOS 15.5" in three.left_out[0][1]
    tb = nodes[0].thunderbolt
    tb4 = tb.model_copy(update={"ports": [p.model_copy(update={"speed_gbps": 40.0 if p.speed_gbps else None,
                                                               "max_speed_gbps": None, "rdma_device": None})
                                          for p in tb.ports], "rdma_devices": []})
    got = place(spec(node_names=["studio-1", "studio-2"]), "jaccl", edit(nodes, "studio-1", thunderbolt=tb4), CFG,
                set(), ifaces)
    assert isinstance(got, Unplaceable) and got.reason.startswith("waiting for studio-1 (")
    assert "Thunderbolt 4" in got.reason


def test_rank_0_address_is_one_every_node_reaches_never_the_bridge_nor_ipv6():
    nodes, ifaces = load("mesh4-tb5")
    bridged = edit(nodes, "studio-1", thunderbolt=nodes[0].thunderbolt.model_copy(update={
        "bridge": ThunderboltBridge(interface="bridge0", ips=["169.254.9.9"], up=True)}))
    got = place(spec(nodes=2), "jaccl", bridged, CFG, set(), ifaces)
    assert got.addresses[0] == "192.168.1.11"
    forced = ClusterConfig(network_interface="en0")
    ifs = {n.id: [NetInterface(name="en0", up=True, ips=["fe80::1", f"10.1.0.{i}"])] for i, n in enumerate(nodes)}
    got = place(spec(nodes=2), "jaccl", nodes, forced, set(), {k: v + ifaces[k] for k, v in ifs.items()})
    assert got.addresses == ["10.1.0.0", "10.1.0.1"]
    v6 = edit(nodes, "studio-1", host="fd00::11")
    got = place(spec(nodes=4), "jaccl", v6, CFG, set(), ifaces)
    assert isinstance(got, Unplaceable) and "IPv6" in got.reason and "studio-1" in got.reason


def test_one_rank_per_mac_and_at_least_two_macs_for_jaccl():
    check(spec(nodes=2, processes_per_node=2), "ring", set())
    for backend in ("jaccl", "jaccl-ring"):
        with pytest.raises(SpecRejected, match="processes_per_node: .*one rank per Mac"):
            check(spec(nodes=2, processes_per_node=2), backend, set())
        with pytest.raises(SpecRejected, match="nodes: .*at least 2"):
            check(spec(nodes=1), backend, set())


# --------------------------------------------------------------------------- nccl


@pytest.mark.parametrize("field", ["env", "secret_env"])
def test_an_nccl_job_setting_cuda_visible_devices_is_refused_naming_the_field(field):
    job = spec(nodes=2, backend="nccl", **{field: {"CUDA_VISIBLE_DEVICES": "6,7"}})
    with pytest.raises(SpecRejected) as err:
        check(job, "nccl", set())
    text = str(err.value)
    assert text.startswith(f"{field}.CUDA_VISIBLE_DEVICES: Jupiter gives each nccl rank one GPU")
    assert text.endswith("to limit the GPUs a node offers, start its agent with CUDA_VISIBLE_DEVICES set")
    assert "6,7" not in text and "names none" not in text  # the value is never echoed (secret_env)
    for other in ("ring", "mpi"):  # only nccl gives ranks their GPU: elsewhere the job's value stands
        check(spec(nodes=2, backend=other, **{field: {"CUDA_VISIBLE_DEVICES": "6,7"}}), other, set())
    check(spec(nodes=2, backend="nccl", **{field: {"NCCL_DEBUG": "INFO"}}), "nccl", set())


def test_a_job_naming_no_backend_is_refused_once_nccl_is_chosen_for_it(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'coordinator.db'}")
    registry = Registry(store, load_cluster_config(None), heartbeat_interval_s=1, down_after_s=30)
    jobs = Jobs(store, registry, JobLogs(tmp_path / "jobs"), default_backend="auto")
    registry.busy_of = jobs.busy_nodes
    for i, name in enumerate(["gpu-a", "gpu-b"], 1):
        facts = sample_facts(f"m-{name}", hostname=name, os="linux", os_version="Ubuntu 24.04", device_type="nvidia",
                             chip="Intel Xeon", gpus=[{"name": "NVIDIA H100", "memory_gb": 80.0}] * 2,
                             thunderbolt={})
        registry.register(RegisterRequest.model_validate(registration(name, f"10.0.0.{i}", facts)))
    try:
        row, _ = jobs.submit(spec(nodes=2))
        assert row.backend == "nccl"  # these nodes' fastest: the refusal below is about nccl, chosen
        with pytest.raises(SpecRejected) as err:
            jobs.submit(spec(nodes=2, env={"CUDA_VISIBLE_DEVICES": "1"}))
        assert str(err.value).startswith("env.CUDA_VISIBLE_DEVICES: Jupiter gives each nccl rank one GPU")
        assert "nccl is the backend chosen for this job, which names none: name another backend" in str(err.value)
        assert jobs.submit(spec(nodes=2, backend="ring", env={"CUDA_VISIBLE_DEVICES": "1"}))[0].backend == "ring"
    finally:
        store.close()


def test_nccl_places_on_nvidia_nodes_whose_mlx_has_cuda_and_names_the_fix_otherwise():
    gpus = [nvidia("gpu-b", 2), nvidia("gpu-a", 1)]
    got = place(spec(nodes=2, processes_per_node=2), "nccl", gpus, CFG, set(), {})
    assert isinstance(got, Placement) and names(got) == ["gpu-a", "gpu-b"] and got.devices is None
    job, ranks = planned("nccl", got, ppn=2)
    assert job.plan == {"why": "named by the job", "coordinator": f"10.0.0.1:{ranks[0].port}"}
    cpu = place(spec(nodes=2), "nccl", [nvidia("gpu-a", 1), nvidia("gpu-b", 2, mlx_device="cpu")], CFG, set(), {})
    assert isinstance(cpu, Unplaceable) and "gpu-b: MLX there has no CUDA" in cpu.reason and CUDA_FIX in cpu.reason
    few = place(spec(nodes=1, processes_per_node=4), "nccl", gpus, CFG, set(), {})
    assert isinstance(few, Unplaceable) and "2 GPU(s) for 4 processes per node" in few.reason
    macs, ifaces = load("mesh4-tb5")
    got = place(spec(nodes=1), "nccl", macs, CFG, set(), ifaces)
    assert isinstance(got, Unplaceable) and "studio-1: not an NVIDIA node" in got.reason


# --------------------------------------------------------------------------- orders and the hostfile


@pytest.mark.parametrize("backend,cluster,ppn", [("jaccl", "mesh4-tb5", 1), ("jaccl-ring", "ring4-tb5", 1),
                                                 ("nccl", None, 2)])
def test_start_orders_carry_the_backend_variables_and_files(backend, cluster, ppn):
    if cluster:
        nodes, ifaces = load(cluster)
    else:
        nodes, ifaces = [nvidia("gpu-a", 1), nvidia("gpu-b", 2)], {}
    got = place(spec(nodes=len(nodes), processes_per_node=ppn), backend, nodes, CFG, set(), ifaces)
    job, ranks = planned(backend, got, ppn)
    out = orders.assignments(job, ranks, ranks)
    assert [a.rank for a in out] == list(range(len(ranks)))
    for a, r in zip(out, ranks, strict=True):
        env, files = backend_vars(backend, world_size=job.world_size, local_rank=r.local_rank,
                                  coordinator=f"{ranks[0].address}:{ranks[0].port}", devices=got.devices)
        assert (a.mlx_env, a.mlx_files, a.hostfile, a.backend) == (env, files, None, backend)
    if backend != "nccl":
        assert json.loads(out[1].mlx_files["MLX_IBV_DEVICES"]) == got.devices
        assert out[0].mlx_env["MLX_JACCL_COORDINATOR"] == f"192.168.1.11:{ranks[0].port}"
    else:
        assert [a.mlx_env["CUDA_VISIBLE_DEVICES"] for a in out] == ["0", "1", "0", "1"]
    text = views.hostfile(job, ranks, {n.id: n.host for n in nodes}, "mlx")
    hosts = json.loads(text)["hosts"]
    assert [h["ips"][0] for h in hosts][:1] == [ranks[0].address]
    if backend != "nccl":
        assert [h["rdma"] for h in hosts] == got.devices
    assert views.job_out(job).backend_reason == "named by the job"


class Mesh:
    """A real Jobs over a real store, the four mesh4-tb5 Macs registered as their agents would."""

    def __init__(self, tmp_path):
        self.store = Store(f"sqlite:///{tmp_path / 'coordinator.db'}")
        registry = Registry(self.store, load_cluster_config(None), heartbeat_interval_s=1, down_after_s=30)
        self.jobs = Jobs(self.store, registry, JobLogs(tmp_path / "jobs"), default_backend="ring")
        registry.busy_of = self.jobs.busy_nodes
        nodes, ifaces = load("mesh4-tb5")
        self.ids = {}
        for n in nodes:
            facts = sample_facts(f"m-{n.name}", hostname=f"{n.name}.local", os_version=n.os_version, chip=n.chip,
                                 thunderbolt=n.thunderbolt.model_dump(mode="json"),
                                 interfaces=[i.model_dump(mode="json") for i in ifaces[n.id]])
            row, _, _ = registry.register(RegisterRequest.model_validate(registration(n.name, n.host, facts)))
            self.ids[n.name] = row.id


def test_a_jaccl_job_through_jobs_stores_its_plan_and_each_agent_gets_its_rank(tmp_path):
    mesh = Mesh(tmp_path)
    try:
        row, _ = mesh.jobs.submit(spec(nodes=4, backend="jaccl"))
        assert mesh.jobs.schedule() == [row.id]
        row = mesh.jobs.get_row(row.id)
        assert row.status == "starting" and row.nodes == ["studio-1", "studio-2", "studio-3", "studio-4"]
        assert row.plan["devices"] == MESH4 and row.plan["coordinator"].startswith("192.168.1.11:")
        for rank, name in enumerate(row.nodes):
            [a] = mesh.jobs.orders_for(mesh.ids[name], [])[0]
            assert a.rank == rank and a.mlx_env == {"MLX_JACCL_COORDINATOR": row.plan["coordinator"]}
            assert a.mlx_files == {"MLX_IBV_DEVICES": json.dumps(MESH4) + "\n"} and a.hostfile is None
            if rank == 0:  # the other ranks are ordered once rank 0 runs (tests/unit/test_rank0_first.py)
                running = RankState(job_id=row.id, rank=0, state="running")
                mesh.jobs.report(mesh.ids[name], RankReport(ranks=[running]))
        hosts = json.loads(mesh.jobs.hostfile(row.id, "mlx"))
        assert hosts["backend"] == "jaccl" and [h["rdma"] for h in hosts["hosts"]] == MESH4
        assert "placed on studio-1 (rank 0), studio-2 (rank 1)" in mesh.jobs.logs.read(row.id)[0].decode()
        # Nothing left for a second jaccl job: it waits, saying which Macs are busy.
        other, _ = mesh.jobs.submit(spec(nodes=2, backend="jaccl"))
        assert mesh.jobs.schedule() == []
        assert "studio-1: busy" in mesh.jobs.get_row(other.id).pending_reason
    finally:
        mesh.store.close()
