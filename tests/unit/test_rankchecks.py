"""A jaccl rank whose RDMA device this Mac no longer lists (renamed at a reboot since placement) is
refused as its order arrives, with the reason; read from the recorded machines of
tests/support/fixtures/facts/ through the agent's OS seam, as fact collection reads them."""

from __future__ import annotations

import pytest

from agent.rankchecks import device_problem, devices_now, named_devices, rdma_problem
from agent.ranks import RankRunner
from agent.system import RecordedSystem
from shared.backends import backend_vars
from shared.schemas import RankAssignment
from tests.support.harness import free_port
from tests.unit.test_facts_fabric import variant
from tests.unit.test_facts_scenarios import FIXTURES

# Rank 0's Mac reaches rank 1 over rdma_en2 and rank 2 over rdma_en3; rank 1's uses rdma_en5 and rdma_en6.
MESH3 = [[None, "rdma_en2", "rdma_en3"],
         ["rdma_en5", None, "rdma_en6"],
         ["rdma_en4", "rdma_en7", None]]


def assignment(backend="jaccl", rank=0, matrix=MESH3, coordinator="127.0.0.1:24567") -> RankAssignment:
    env, files = backend_vars(backend, world_size=len(matrix or [[]]), local_rank=0, coordinator=coordinator,
                              devices=matrix)
    return RankAssignment(job_id="j-0000000001", rank=rank, world_size=len(matrix or [[]]),
                          command=["python", "-c", "pass"], backend=backend, mlx_env=env, mlx_files=files)


def machine(name: str) -> RecordedSystem:
    return RecordedSystem(FIXTURES / name)


def test_the_rank_reads_its_own_row_of_the_matrix():
    assert named_devices(assignment(rank=0)) == ["rdma_en2", "rdma_en3"]
    assert named_devices(assignment(rank=1)) == ["rdma_en5", "rdma_en6"]
    ring = [[None, "rdma_en2", None, "rdma_en3"], ["rdma_en3", None, "rdma_en2", None],
            [None, "rdma_en3", None, "rdma_en2"], ["rdma_en2", None, "rdma_en3", None]]
    assert named_devices(assignment("jaccl-ring", rank=2, matrix=ring)) == ["rdma_en3", "rdma_en2"]
    assert named_devices(assignment("nccl", matrix=None)) == []


def test_devices_a_mac_lists_now_are_read_as_facts_read_them():
    studio = machine("mac-studio-tb5-mesh")
    assert devices_now(studio) == [f"rdma_en{n}" for n in range(2, 8)]
    assert studio.calls == [["ibv_devices"]]
    assert devices_now(machine("mac-tb5-device-missing")) == ["rdma_en1", "rdma_en3"]
    assert devices_now(machine("mac-tb5-rdma-disabled")) == []  # header only


@pytest.mark.parametrize("name", ["linux-nvidia", "linux-plain", "mac-tb5-old-macos", "mac-no-cables"])
def test_a_node_that_cannot_tell_lets_the_rank_start(name):
    assert devices_now(machine(name)) is None
    assert rdma_problem(assignment(), machine(name)) is None  # MLX reports what it finds


def test_a_failing_ibv_devices_cannot_tell(tmp_path):
    broken = variant(tmp_path, "mac-studio-tb5-mesh", {"ibv_devices": {"returncode": 1, "stderr": "no driver"}})
    assert devices_now(broken) is None and rdma_problem(assignment(), broken) is None


def test_a_mac_that_still_has_the_devices_passes():
    studio = machine("mac-studio-tb5-mesh")
    for rank in range(3):
        assert rdma_problem(assignment(rank=rank), studio) is None


def test_a_renamed_device_is_refused_with_the_names_it_has_now():
    # The Mac of rank 0 was placed with rdma_en2 and rdma_en3; since a reboot it lists rdma_en1 and rdma_en3.
    problem = rdma_problem(assignment(rank=0), machine("mac-tb5-device-missing"))
    assert problem == ("cannot start: RDMA device rdma_en2 is not on this Mac now (it has rdma_en1, rdma_en3): "
                       "device names change at every reboot; the job must be placed again (resubmit it, or "
                       "let it restart)")
    both = device_problem(assignment(rank=1), ["rdma_en1", "rdma_en3"])
    assert both.startswith("cannot start: RDMA devices rdma_en5, rdma_en6 are not on this Mac now")
    none = rdma_problem(assignment(rank=0), machine("mac-tb5-rdma-disabled"))
    assert "rdma_en2, rdma_en3 are not on this Mac now" in none and "lists none" in none


def test_ranks_that_name_no_device_never_run_ibv_devices():
    studio = machine("mac-studio-tb5-mesh")
    assert rdma_problem(assignment("nccl", matrix=None), studio) is None
    ring = RankAssignment(job_id="j-0000000001", rank=0, world_size=1, command=["python"], backend="ring")
    assert rdma_problem(ring, studio) is None
    assert studio.calls == []


def test_the_runner_refuses_the_rank_as_its_order_arrives(tmp_path):
    system = machine("mac-tb5-device-missing")
    runner = RankRunner(tmp_path / "work", "python3", "mini", system=system)
    runner.start(assignment(rank=1, coordinator=f"127.0.0.1:{free_port()}"))
    [out] = runner.output()
    [line] = out.lines  # the reason, in full, in the rank's log
    assert line.startswith("cannot start: RDMA devices rdma_en5, rdma_en6 are not on this Mac now")
    runner.ack({"j-0000000001/0/1": len(out.lines)})
    [st] = runner.states()
    assert (st.state, st.exit_code, st.pid) == ("exited", 98, None)
    assert "rdma_en5, rdma_en6 are not on this Mac now (it has rdma_en1, rdma_en3)" in st.reason
    assert not (tmp_path / "work" / "jobs").exists()  # nothing was started nor written
    assert system.calls == [["ibv_devices"]]
