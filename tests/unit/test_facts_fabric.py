"""The facts JACCL and NCCL depend on, read from recorded machines (tests/support/fixtures/facts/):
`rdma_ctl`, `ibv_devices` and each port's device and capability, the chip of Intel Macs and of a
Python under Rosetta, and an NVIDIA box whose MLX has no CUDA. The outputs are modelled on the
real tools' formats, not captured on such machines (see the fixtures' README)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent.facts import collect, collect_cheap, rdma
from agent.system import RecordedSystem
from shared.backends import CUDA_FIX, RDMA_ENABLE_FIX
from shared.schemas import ThunderboltPort
from tests.unit.test_facts_scenarios import FIXTURES, PYTHONS, facts_of, port

STUDIO = "mac-studio-tb5-mesh"
PEERS = {1: "Mac Studio", 2: "Mac Studio", 3: "Mac Studio"}


def variant(tmp_path: Path, scenario: str, commands: dict[str, dict | None] | None = None) -> RecordedSystem:
    """A copy of a recorded machine with some commands' answers replaced (None: the command is missing)."""
    folder = tmp_path / scenario
    shutil.copytree(FIXTURES / scenario, folder)
    spec = json.loads((folder / "system.json").read_text())
    for argv, entry in (commands or {}).items():
        if entry is None:
            spec["commands"].pop(argv, None)
        else:
            spec["commands"][argv] = entry
    (folder / "system.json").write_text(json.dumps(spec))
    return RecordedSystem(folder)


def rdma_problems(problems: list[str]) -> list[str]:
    return [p for p in problems if "RDMA" in p or "ibv_devices" in p or "rdma_ctl" in p]


# --------------------------------------------------------------------------- one test per machine


def test_mac_studio_in_a_tb5_mesh():
    facts, system = facts_of(STUDIO)
    assert (facts.chip, facts.device_type, facts.os_version) == ("Apple M3 Ultra", "mac", "macOS 26.2 (25C56)")
    tb = facts.thunderbolt
    assert tb.rdma_enabled is True
    assert tb.rdma_devices == [f"rdma_en{n}" for n in range(2, 8)]
    # Three cables at 80 Gb/s (Thunderbolt 5); the empty ports say what they can do.
    assert [(p.port, p.status, p.speed_gbps, p.max_speed_gbps, p.interface, p.rdma_device) for p in tb.ports] == [
        (1, "connected", 80.0, None, "en2", "rdma_en2"),
        (2, "connected", 80.0, None, "en3", "rdma_en3"),
        (3, "connected", 80.0, None, "en4", "rdma_en4"),
        (4, "disconnected", None, 120.0, "en5", "rdma_en5"),
        (5, "disconnected", None, 120.0, "en6", "rdma_en6"),
        (6, "disconnected", None, 120.0, "en7", "rdma_en7"),
    ]
    assert {p.port: p.peer_name for p in tb.ports if p.peer_uuid} == PEERS
    assert len({p.peer_uuid for p in tb.ports if p.peer_uuid}) == 3
    # The bridge is off, as `mlx.distributed_config --auto-setup` leaves it: down, members kept.
    assert (tb.bridge.interface, tb.bridge.up, tb.bridge.ips) == ("bridge0", False, [])
    assert tb.bridge.members == [f"en{n}" for n in range(2, 8)]
    assert facts.problems == []
    assert system.calls.index(["rdma_ctl", "status"]) < system.calls.index(["ibv_devices"])


def test_tb4_mac_mini_where_rdma_ctl_says_enabled():
    facts, _ = facts_of("mac-mini-tb4-rdma-lies")
    assert facts.chip == "Apple M4"
    tb = facts.thunderbolt
    assert tb.rdma_enabled is True  # the raw fact: what rdma_ctl printed
    assert tb.rdma_devices == []  # ibv_devices printed its header only
    assert tb.ports == [
        port(1, "connected", 40.0, "en2", tb.ports[0].peer_uuid, "Mac mini"),
        port(2, "disconnected", None, "en3", max_speed=40.0),
        port(3, "disconnected", None, "en4", max_speed=40.0),
    ]
    [problem] = facts.problems
    assert problem.startswith("rdma_ctl says RDMA is enabled, but this Mac's Thunderbolt ports are Thunderbolt 4")
    assert "RDMA will not work on Thunderbolt 4" in problem
    assert "ibv_devices lists no RDMA device" in problem
    assert f"(fix: {rdma.TB4_FIX})" in problem


def test_tb5_mac_with_rdma_disabled():
    facts, system = facts_of("mac-tb5-rdma-disabled")
    tb = facts.thunderbolt
    assert (facts.chip, facts.os_version) == ("Apple M4 Pro", "macOS 26.2 (25C56)")
    assert tb.rdma_enabled is False
    assert tb.rdma_devices == []
    assert [(p.port, p.speed_gbps, p.max_speed_gbps, p.rdma_device) for p in tb.ports] == [
        (1, 80.0, None, None), (2, None, 120.0, None), (3, None, 120.0, None)]
    # Disabled is no problem for the agent: ring needs no RDMA; `jupiter check` gives the fix
    # (RDMA_ENABLE_FIX) when cluster.yaml asks for JACCL.
    assert facts.problems == []
    assert not any(RDMA_ENABLE_FIX in p for p in facts.problems)
    assert ["ibv_devices"] in system.calls


def test_tb5_mac_whose_cabled_port_has_no_device():
    facts, _ = facts_of("mac-tb5-device-missing")
    tb = facts.thunderbolt
    assert tb.rdma_enabled is True
    assert tb.rdma_devices == ["rdma_en1", "rdma_en3"]
    by_port = {p.port: p for p in tb.ports}
    assert (by_port[2].status, by_port[2].speed_gbps, by_port[2].interface) == ("connected", 80.0, "en2")
    assert by_port[2].rdma_device is None
    assert (by_port[1].rdma_device, by_port[3].rdma_device) == ("rdma_en1", "rdma_en3")
    assert (by_port[1].max_speed_gbps, by_port[3].max_speed_gbps) == (120.0, 120.0)
    assert tb.bridge.up is False
    [problem] = facts.problems
    assert problem.startswith("Thunderbolt 2 (en2) is linked at 80 Gb/s but ibv_devices lists no rdma_en2")
    assert "rdma_en1, rdma_en3" in problem and f"(fix: {rdma.REBOOT_FIX})" in problem


def test_tb5_mac_on_macos_15_has_no_rdma_facts():
    facts, system = facts_of("mac-tb5-old-macos")
    assert facts.os_version == "macOS 15.5 (24F74)"
    tb = facts.thunderbolt
    assert (tb.rdma_enabled, tb.rdma_devices) == (None, None)
    assert ["ibv_devices"] not in system.calls  # rdma_ctl did not answer: not tried
    # The ports still say they are Thunderbolt 5.
    assert [(p.port, p.speed_gbps, p.max_speed_gbps, p.rdma_device) for p in tb.ports] == [
        (1, 80.0, None, None), (2, None, 120.0, None), (3, None, 120.0, None)]
    assert facts.problems == []


def test_intel_mac_mini_chip_comes_from_sysctl():
    facts, _ = facts_of("mac-intel-mini")
    # system_profiler says "Unknown"; sysctl's brand string names the processor. sysctl exited 1
    # for the names an Intel Mac lacks and still printed the others.
    assert facts.chip == "Intel(R) Core(TM) i7-8700B CPU @ 3.20GHz"
    assert facts.device_type == "cpu"  # no Apple silicon, no Metal for MLX
    assert (facts.cpu_cores, facts.memory_gb) == (6, 32.0)
    assert facts.os_version == "macOS 15.7 (24G222)"
    tb = facts.thunderbolt
    # Two receptacles per bus, four Thunderbolt 3 ports.
    assert tb.ports == [port(n, "disconnected", None, f"en{n + 1}", max_speed=40.0) for n in (1, 2, 3, 4)]
    assert (tb.rdma_enabled, tb.rdma_devices) == (None, None)
    assert facts.mlx_version is None
    assert any("No module named 'mlx'" in p for p in facts.problems)
    assert any("Intel Mac: MLX is built only for Apple silicon" in p for p in facts.problems)
    assert not any("Rosetta" in p for p in facts.problems)
    assert rdma_problems(facts.problems) == []


def test_python_under_rosetta():
    facts, _ = facts_of("mac-rosetta")
    assert facts.chip == "Apple M2 Pro"  # system_profiler said "unknown"
    assert facts.device_type == "mac"
    assert facts.python_executable == "/usr/local/bin/python3"
    [rosetta] = [p for p in facts.problems if "Rosetta" in p]
    assert rosetta == ("the agent runs under Rosetta (x86_64 Python): MLX needs an arm64 Python "
                       "(fix: install Python for arm64 and reinstall the agent)")
    assert any("No module named 'mlx'" in p for p in facts.problems)
    assert facts.thunderbolt.rdma_devices is None


def test_nvidia_box_with_the_cpu_build_of_mlx():
    facts, _ = facts_of("linux-nvidia-mlx-cpu")
    assert (facts.device_type, facts.chip) == ("nvidia", "NVIDIA GeForce RTX 4090")
    assert [(g.name, g.memory_gb) for g in facts.gpus] == [("NVIDIA GeForce RTX 4090", 24.0)]
    assert (facts.mlx_version, facts.mlx_device) == ("0.32.4", "cpu")
    [problem] = facts.problems
    assert problem == (f"MLX from {PYTHONS['linux-nvidia-mlx-cpu']} has no CUDA backend and would train "
                       f"on the CPU (fix: {CUDA_FIX})")
    assert "pip uninstall -y mlx-cpu" in problem
    assert (facts.thunderbolt.rdma_enabled, facts.thunderbolt.rdma_devices) == (None, None)


# --------------------------------------------------------------------------- what ibv_devices may print


def test_ibv_devices_output():
    header = "    device          \t   node GUID\n    ------          \t----------------\n"
    assert rdma.parse_ibv_devices(header) == []
    assert rdma.parse_ibv_devices("") == []
    assert rdma.parse_ibv_devices(None) is None
    text = header + "    rdma_en2        \t8096a9d9edbaac05\n    rdma_en3        \t8096a9d9edbaac06\n"
    assert rdma.parse_ibv_devices(text) == ["rdma_en2", "rdma_en3"]
    # Only MLX-shaped names in the first column; repeats kept once.
    odd = header + "    mlx5_0          \t0c42a1030065c7e4\n    rdma_en2\n    rdma_en2 x\n    rdma_$(rm)\n"
    assert rdma.parse_ibv_devices(odd) == ["rdma_en2"]
    assert len(rdma.parse_ibv_devices("".join(f"rdma_en{n}\n" for n in range(200)))) == rdma.MAX_DEVICES


@pytest.mark.parametrize("text, gbps", [
    ("Up to 120 Gb/s", 120.0), ("Up to 40 Gb/s", 40.0), ("Up to 40 Gb/s x2", 40.0), (" Up to 80 Gb/s ", 80.0),
    ("80 Gb/s", None), ("40 Gb/s", None), ("", None), (None, None), (120, None), ("Up to fast", None),
])
def test_max_speed_is_only_the_up_to_text(text, gbps):
    assert rdma.parse_max_speed(text) == gbps


def test_devices_attach_by_interface_name():
    ports = [ThunderboltPort(port=1, interface="en2"), ThunderboltPort(port=2, interface="en3"),
             ThunderboltPort(port=3)]
    got = rdma.attach_devices(ports, ["rdma_en2", "rdma_en9"])
    assert [p.rdma_device for p in got] == ["rdma_en2", None, None]
    assert [p.rdma_device for p in rdma.attach_devices(ports, None)] == [None, None, None]


def test_ibv_devices_failing_is_unknown_devices_and_a_problem(tmp_path):
    system = variant(tmp_path, STUDIO, {"ibv_devices": {
        "stdout": "", "returncode": 1, "stderr": "Failed to get IB devices list: Function not implemented\n"}})
    facts = collect(system, python=PYTHONS[STUDIO])
    assert facts.thunderbolt.rdma_enabled is True
    assert facts.thunderbolt.rdma_devices is None
    assert all(p.rdma_device is None for p in facts.thunderbolt.ports)
    [problem] = facts.problems
    assert problem.startswith("ibv_devices failed (exit 1): Failed to get IB devices list: Function not implemented")


def test_ibv_devices_missing_on_a_tb5_mac_is_no_problem(tmp_path):
    facts = collect(variant(tmp_path, STUDIO, {"ibv_devices": None}), python=PYTHONS[STUDIO])
    assert (facts.thunderbolt.rdma_enabled, facts.thunderbolt.rdma_devices) == (True, None)
    assert facts.problems == []


def test_tb5_mac_with_rdma_enabled_but_no_device(tmp_path):
    system = variant(tmp_path, STUDIO, {"ibv_devices": {
        "stdout": "    device          \t   node GUID\n    ------          \t----------------\n"}})
    facts = collect(system, python=PYTHONS[STUDIO])
    assert facts.thunderbolt.rdma_devices == []
    [problem] = facts.problems
    assert problem.startswith("rdma_ctl says RDMA is enabled but ibv_devices lists no RDMA device")
    assert "Thunderbolt 4" not in problem


@pytest.mark.parametrize("answer", [None, {"stdout": "", "returncode": 1, "stderr": "rdma_ctl: not permitted\n"},
                                    {"stdout": "something else\n"}])
def test_ibv_devices_runs_only_when_rdma_ctl_answered(tmp_path, answer):
    system = variant(tmp_path, STUDIO, {"rdma_ctl status": answer})
    facts = collect(system, python=PYTHONS[STUDIO])
    assert (facts.thunderbolt.rdma_enabled, facts.thunderbolt.rdma_devices) == (None, None)
    assert ["ibv_devices"] not in system.calls
    assert rdma_problems(facts.problems) == []


def test_tb4_lie_without_ibv_devices_is_still_named(tmp_path):
    facts = collect(variant(tmp_path, "mac-mini-tb4-rdma-lies", {"ibv_devices": None}),
                    python=PYTHONS["mac-mini-tb4-rdma-lies"])
    [problem] = facts.problems
    assert "Thunderbolt 4" in problem and "ibv_devices was not read" in problem


def test_heartbeat_refresh_keeps_devices_and_capability(tmp_path):
    system = variant(tmp_path, STUDIO)
    previous = collect(system, python=PYTHONS[STUDIO])
    ifconfig = Path(system.folder / "ifconfig.txt")
    text = ifconfig.read_text()
    start = text.index("en3: flags")
    end = text.index("status: active", start)
    ifconfig.write_text(text[:end] + "status: inactive" + text[end + len("status: active"):])

    _, tb = collect_cheap(RecordedSystem(system.folder), previous)

    unplugged = tb.ports[1]
    assert (unplugged.port, unplugged.status, unplugged.peer_uuid) == (2, "disconnected", None)
    assert unplugged.rdma_device == "rdma_en3"
    assert tb.rdma_devices == previous.thunderbolt.rdma_devices
    assert [p.max_speed_gbps for p in tb.ports] == [p.max_speed_gbps for p in previous.thunderbolt.ports]
