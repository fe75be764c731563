"""Rank 0 first: jaccl, jaccl-ring and nccl ranks other than 0 are ordered to start only once rank
0 of their attempt has started (its agent reported it running, or it exited), and every node of
the job is woken then; ring ranks are all ordered at once. MLX gives a JACCL rank about 15 s to
reach rank 0's rendezvous, so a rank 0 started late (its agent fetching the workdir) failed the job.

The rule is coordinator/jobs/rendezvous.py; here it is checked alone and through a real Jobs over
the recorded 4-Mac Thunderbolt 5 mesh (and two NVIDIA nodes with two ranks each)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from coordinator.jobs import rendezvous
from shared.schemas import JobSpec, RankReport, RankState, RegisterRequest
from tests.support.harness import registration, sample_facts
from tests.unit.test_backend_placement import Mesh

NAMES = ["studio-1", "studio-2", "studio-3", "studio-4"]


@dataclass
class R:
    rank: int
    state: str = "assigned"


# --------------------------------------------------------------------------- the rule alone


@pytest.mark.parametrize("backend", ["jaccl", "jaccl-ring", "nccl"])
def test_only_rank_0_may_start_until_it_runs_or_exits(backend):
    for rank0 in ("assigned", "starting"):
        everyone = [R(0, rank0), R(1), R(2)]
        assert [r.rank for r in rendezvous.may_start(backend, everyone, everyone)] == [0]
        assert rendezvous.may_start(backend, everyone[1:], everyone) == []  # rank 0 already ordered
    for rank0 in ("running", "exited"):
        everyone = [R(0, rank0), R(1), R(2)]
        assert [r.rank for r in rendezvous.may_start(backend, everyone[1:], everyone)] == [1, 2]


@pytest.mark.parametrize("backend", ["ring", "mpi"])
def test_ring_and_mpi_ranks_never_wait(backend):
    everyone = [R(0), R(1), R(2)]
    assert [r.rank for r in rendezvous.may_start(backend, everyone, everyone)] == [0, 1, 2]


def test_rank_0_releases_the_others_once_when_it_first_starts():
    assert rendezvous.releases_others("jaccl", 0, "assigned", "running")
    assert rendezvous.releases_others("nccl", 0, "starting", "exited")
    assert not rendezvous.releases_others("jaccl", 0, "assigned", "starting")  # no process yet
    assert not rendezvous.releases_others("jaccl", 0, "running", "exited")     # released before
    assert not rendezvous.releases_others("jaccl", 1, "assigned", "running")
    assert not rendezvous.releases_others("ring", 0, "assigned", "running")


# --------------------------------------------------------------------------- through Jobs


def say(mesh, name: str, job_id: str, rank: int, state: str, *, attempt: int = 0, code: int | None = None):
    st = RankState(job_id=job_id, rank=rank, attempt=attempt, state=state, exit_code=code)
    mesh.jobs.report(mesh.ids[name], RankReport(ranks=[st]))


def started(mesh, name: str, have=()) -> list[int]:
    """The ranks the agent on `name` is told to start, holding `have`."""
    return [a.rank for a in mesh.jobs.orders_for(mesh.ids[name], list(have))[0]]


@pytest.fixture
def mesh(tmp_path):
    m = Mesh(tmp_path)
    m.woken = []
    m.jobs.on_node_orders = m.woken.append
    yield m
    m.store.close()


def placed(mesh, **spec) -> str:
    row, _ = mesh.jobs.submit(JobSpec(command=["python", "train.py"], **spec))
    assert mesh.jobs.schedule() == [row.id]
    mesh.woken.clear()
    return row.id


@pytest.mark.parametrize("backend", ["jaccl", "jaccl-ring"])
def test_a_jaccl_job_orders_rank_0_first_and_the_others_once_it_runs(mesh, backend):
    job = placed(mesh, nodes=4, backend=backend)
    order = mesh.jobs.get_row(job).nodes
    assert sorted(order) == NAMES
    assert {name: started(mesh, name) for name in order} == {order[0]: [0], **{n: [] for n in order[1:]}}
    # Its agent has it but has not started its process yet (fetching the workdir): still rank 0 alone.
    mine = [RankState(job_id=job, rank=0, state="starting")]
    say(mesh, order[0], job, 0, "starting")
    assert mesh.woken == [] and [started(mesh, n) for n in order[1:]] == [[], [], []]
    assert started(mesh, order[0], mine) == []
    say(mesh, order[0], job, 0, "running")
    assert sorted(mesh.woken) == sorted(mesh.ids.values())  # every node of the job, at once
    # Rank 0's node has nothing new (rank 0 runs); each other node now gets its rank.
    assert [started(mesh, n) for n in order] == [[], [1], [2], [3]]
    for rank, name in enumerate(order[1:], start=1):
        say(mesh, name, job, rank, "running")
    assert mesh.jobs.get_row(job).status == "running"


def test_the_others_start_when_rank_0_already_exited(mesh):
    job = placed(mesh, nodes=4, backend="jaccl")
    order = mesh.jobs.get_row(job).nodes
    say(mesh, order[0], job, 0, "exited", code=0)  # a command that never calls init()
    assert mesh.jobs.get_row(job).status == "starting"
    assert [started(mesh, n) for n in order[1:]] == [[1], [2], [3]] and mesh.woken


def test_a_rank_0_that_fails_starts_no_one(mesh):
    job = placed(mesh, nodes=4, backend="jaccl")
    order = mesh.jobs.get_row(job).nodes
    say(mesh, order[0], job, 0, "exited", code=1)
    assert mesh.jobs.get_row(job).status == "failed"
    assert [started(mesh, n) for n in order[1:]] == [[], [], []]


def test_a_restarted_attempt_waits_for_its_own_rank_0(mesh):
    job = placed(mesh, nodes=4, backend="jaccl", max_restarts=1)
    order = mesh.jobs.get_row(job).nodes
    say(mesh, order[0], job, 0, "running")
    for rank, name in enumerate(order[1:], start=1):
        say(mesh, name, job, rank, "running")
    say(mesh, order[2], job, 2, "exited", code=1)
    for rank, name in enumerate(order):  # the agents stop the rest of attempt 0
        if rank != 2:
            say(mesh, name, job, rank, "exited", code=-15)
    assert mesh.jobs.get_row(job).status == "pending" and mesh.jobs.schedule() == [job]
    row = mesh.jobs.get_row(job)
    assert row.attempt == 1
    again = row.nodes
    assert [started(mesh, n) for n in again] == [[0], [], [], []]
    say(mesh, again[0], job, 0, "running", attempt=1)
    assert [started(mesh, n) for n in again[1:]] == [[1], [2], [3]]


def test_a_ring_job_orders_every_rank_at_once(mesh):
    job = placed(mesh, nodes=4, backend="ring")
    order = mesh.jobs.get_row(job).nodes
    assert [started(mesh, n) for n in order] == [[0], [1], [2], [3]]
    say(mesh, order[0], job, 0, "running")
    assert mesh.woken == []  # nothing was held back, so no one to wake


def test_rank_1_on_rank_0s_node_waits_too(tmp_path):
    """nccl with two ranks per node: rank 1 shares rank 0's node but is ordered only once rank 0
    runs, in the answer to that node's next long-poll (woken with the others)."""
    m = Mesh(tmp_path)
    try:
        woken: list[str] = []
        m.jobs.on_node_orders = woken.append
        ids = {}
        for i, name in enumerate(("gpu-a", "gpu-b"), start=1):
            facts = sample_facts(f"m-{name}", hostname=f"{name}.lan", os="linux", os_version="Ubuntu 24.04",
                                 device_type="nvidia", chip="Intel Xeon", mlx_device="gpu", thunderbolt={},
                                 gpus=[{"name": "NVIDIA H100", "memory_gb": 80.0}] * 2)
            row, _, _ = m.jobs.registry.register(RegisterRequest.model_validate(
                registration(name, f"10.0.0.{i}", facts)))
            ids[name] = row.id
        spec = JobSpec(command=["python", "train.py"], node_names=["gpu-a", "gpu-b"], processes_per_node=2,
                       backend="nccl")
        job, _ = m.jobs.submit(spec)
        assert m.jobs.schedule() == [job.id]

        def starts(name, have=()):
            return [a.rank for a in m.jobs.orders_for(ids[name], list(have))[0]]

        assert (starts("gpu-a"), starts("gpu-b")) == ([0], [])
        woken.clear()
        have = [RankState(job_id=job.id, rank=0, state="running")]
        m.jobs.report(ids["gpu-a"], RankReport(ranks=have))
        assert sorted(woken) == sorted(ids.values())
        assert (starts("gpu-a", have), starts("gpu-b")) == ([1], [2, 3])
    finally:
        m.store.close()
