"""The wire contract of issue 14's backends: the variables and files each rank gets, the mlx
hostfile with an RDMA matrix, and the new facts fields."""

import json

import pytest
from pydantic import ValidationError

from shared import hostfiles
from shared.backends import backend_vars, macos_version
from shared.schemas import RankAssignment, ThunderboltInfo, ThunderboltPort

MATRIX = [[None, "rdma_en2", "rdma_en3"], ["rdma_en2", None, "rdma_en4"], ["rdma_en3", "rdma_en4", None]]


def test_jaccl_rank_gets_the_coordinator_and_the_device_file_as_mlx_launch_writes_it():
    env, files = backend_vars("jaccl", world_size=3, local_rank=0, coordinator="10.0.0.1:32323", devices=MATRIX)
    assert env == {"MLX_JACCL_COORDINATOR": "10.0.0.1:32323"}
    assert files == {"MLX_IBV_DEVICES": json.dumps(MATRIX) + "\n"}  # echo's newline
    env, _ = backend_vars("jaccl-ring", world_size=3, local_rank=0, coordinator="10.0.0.1:1", devices=MATRIX)
    assert env["MLX_JACCL_RING"] == "1"
    with pytest.raises(ValueError, match="device matrix"):
        backend_vars("jaccl", world_size=3, local_rank=0, coordinator="10.0.0.1:1", devices=None)


def test_nccl_rank_gets_host_port_world_and_its_gpu():
    env, files = backend_vars("nccl", world_size=4, local_rank=1, coordinator="10.0.0.1:12345")
    assert env == {"NCCL_HOST_IP": "10.0.0.1", "NCCL_PORT": "12345", "MLX_WORLD_SIZE": "4",
                   "CUDA_VISIBLE_DEVICES": "1"} and files == {}
    assert backend_vars("ring", world_size=2, local_rank=0, coordinator=None) == ({}, {})


def test_macos_version_reads_the_os_version_fact():
    assert macos_version("macOS 26.2 (25C56)") == (26, 2)
    assert macos_version("macOS 15 (24A335)") == (15, 0)
    assert macos_version("Ubuntu 24.04") is None and macos_version(None) is None


def test_mlx_hostfile_carries_the_rdma_rows_and_refuses_a_bad_matrix():
    hosts = [("a", ["10.0.0.1"]), ("b", ["10.0.0.2"]), ("c", ["10.0.0.3"])]
    doc = json.loads(hostfiles.mlx(hosts, "jaccl", rdma=MATRIX))
    assert [h["rdma"] for h in doc["hosts"]] == MATRIX
    assert "rdma" not in json.loads(hostfiles.mlx(hosts, "ring"))["hosts"][0]
    with pytest.raises(ValueError, match="3 x 3"):
        hostfiles.mlx(hosts, "jaccl", rdma=MATRIX[:2])
    with pytest.raises(ValueError, match="must be null"):
        hostfiles.mlx(hosts, "jaccl", rdma=[["rdma_en1", "rdma_en2", "rdma_en3"], *MATRIX[1:]])
    with pytest.raises(ValueError, match="not an RDMA device"):
        hostfiles.mlx(hosts, "jaccl", rdma=[[None, "en2; rm", "rdma_en3"], *MATRIX[1:]])


def test_rank_assignment_takes_only_backend_variables():
    base = {"job_id": "j", "rank": 0, "world_size": 2, "command": ["true"]}
    a = RankAssignment(**base, backend="jaccl", mlx_env={"MLX_JACCL_COORDINATOR": "h:1"},
                       mlx_files={"MLX_IBV_DEVICES": "[]\n"})
    assert a.mlx_files["MLX_IBV_DEVICES"] == "[]\n"
    with pytest.raises(ValidationError, match="LD_PRELOAD"):
        RankAssignment(**base, mlx_env={"LD_PRELOAD": "/tmp/x.so"})
    with pytest.raises(ValidationError, match="MLX_JACCL_COORDINATOR"):
        RankAssignment(**base, mlx_files={"MLX_JACCL_COORDINATOR": "h:1"})


def test_thunderbolt_facts_carry_capability_and_devices():
    port = ThunderboltPort(port=1, status="disconnected", max_speed_gbps=120, rdma_device="rdma_en2")
    info = ThunderboltInfo(ports=[port], rdma_enabled=True, rdma_devices=["rdma_en2", "rdma_en3"])
    assert ThunderboltInfo.model_validate_json(info.model_dump_json()) == info
    with pytest.raises(ValidationError):
        ThunderboltPort(port=1, rdma_device="../../etc")
