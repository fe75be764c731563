"""The agent's rank environment for jaccl, jaccl-ring and nccl (RankRunner._env, port_problem,
gpu_problem), and ring's left exactly as it was. The comparison with the real mlx.launch is
tests/system/test_mlx_launch_env.py."""

from __future__ import annotations

import json
import socket

import pytest

from agent.rankchecks import gpu_problem, port_problem, visible_gpu
from agent.ranks import RankRunner
from shared.backends import backend_vars
from shared.schemas import RankAssignment
from tests.support.harness import free_port

MATRIX = [[None, "rdma_en2"], ["rdma_en2", None]]


def assignment(backend="jaccl", rank=0, local_rank=0, world=2, coordinator="127.0.0.1:24567", **kw):
    env, files = backend_vars(backend, world_size=world, local_rank=local_rank, coordinator=coordinator,
                              devices=MATRIX if backend.startswith("jaccl") else None)
    return RankAssignment(job_id="j-0000000001", rank=rank, local_rank=local_rank, world_size=world,
                          command=["python", "-c", "pass"], backend=backend, mlx_env=env, mlx_files=files, **kw)


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return RankRunner(tmp_path / "work", "python3", "n1")


def env_of(runner, a):
    folder = runner.rank_folder(a)
    folder.mkdir(parents=True, exist_ok=True)
    return folder, runner._env(a, folder)


def backend_part(env):
    return {k: v for k, v in env.items() if k.startswith(("MLX_", "NCCL_", "CUDA_"))}


def test_ring_is_unchanged(runner):
    ring = [["127.0.0.1:5000"], ["127.0.0.1:5001"]]
    a = RankAssignment(job_id="j-0000000001", rank=1, world_size=2, command=["python"], backend="ring",
                       hostfile=ring, mlx_env={"NCCL_PORT": "1"})  # ignored on ring
    folder, env = env_of(runner, a)
    assert backend_part(env) == {"MLX_RANK": "1", "MLX_HOSTFILE": str(folder / "hostfile-1.json")}
    assert (folder / "hostfile-1.json").read_text() == json.dumps(ring)
    one = RankAssignment(job_id="j-0000000001", rank=0, world_size=1, command=["python"], backend="ring")
    assert backend_part(env_of(runner, one)[1]) == {}  # one rank: no hostfile, no MLX_RANK, as before


@pytest.mark.parametrize("backend", ["jaccl", "jaccl-ring"])
def test_jaccl_gets_its_device_file_and_coordinator(runner, backend):
    a = assignment(backend, rank=1, env={"MLX_METAL_FAST_SYNCH": "1"})
    folder, env = env_of(runner, a)
    path = folder.absolute() / "mlx_ibv_devices-1.json"
    want = {"MLX_JACCL_COORDINATOR": "127.0.0.1:24567", "MLX_IBV_DEVICES": str(path), "MLX_RANK": "1",
            "MLX_METAL_FAST_SYNCH": "1"}
    if backend == "jaccl-ring":
        want["MLX_JACCL_RING"] = "1"
    assert backend_part(env) == want
    assert path.read_bytes() == (json.dumps(MATRIX) + "\n").encode()  # exact: JSON and echo's newline


def test_nccl_gpu_is_the_local_rank_or_the_agents_own_list(runner, monkeypatch):
    a = assignment("nccl", rank=3, local_rank=1, world=4)
    assert backend_part(env_of(runner, a)[1]) == {"NCCL_HOST_IP": "127.0.0.1", "NCCL_PORT": "24567",
                                                  "MLX_WORLD_SIZE": "4", "CUDA_VISIBLE_DEVICES": "1",
                                                  "MLX_RANK": "3"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # the GPUs this node gives Jupiter
    assert env_of(runner, a)[1]["CUDA_VISIBLE_DEVICES"] == "3"
    assert gpu_problem(a) is None
    assert visible_gpu("0", "GPU-aaaa, GPU-bbbb") == "GPU-aaaa"
    too_many = assignment("nccl", rank=2, local_rank=2, world=4)
    assert "fewer GPUs given to Jupiter than ranks" in gpu_problem(too_many)
    assert gpu_problem(too_many, environ={}) is None


def test_rank_0_must_be_able_to_listen_on_the_coordinator(runner):
    port = free_port()
    for backend in ("jaccl", "jaccl-ring", "nccl"):
        assert port_problem(assignment(backend, coordinator=f"127.0.0.1:{port}")) is None
        with socket.socket() as stranger:
            stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            stranger.bind(("127.0.0.1", port))
            stranger.listen()
            assert "already in use by another program" in port_problem(
                assignment(backend, coordinator=f"127.0.0.1:{port}"))
            # Only rank 0 serves the rendezvous; the others connect to it.
            assert port_problem(assignment(backend, rank=1, coordinator=f"127.0.0.1:{port}")) is None
        assert "is not on this node" in port_problem(assignment(backend, coordinator=f"192.0.2.77:{port}"))


def test_a_rank_without_its_gpu_is_refused_at_once(runner, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    runner.start(assignment("nccl", rank=1, local_rank=1, coordinator=f"127.0.0.1:{free_port()}"))
    [out] = runner.output()
    runner.ack({"j-0000000001/0/1": len(out.lines)})
    [st] = runner.states()
    assert (st.state, st.exit_code) == ("exited", 98) and "CUDA_VISIBLE_DEVICES='5'" in st.reason
