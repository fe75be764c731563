"""The parsers one by one, on the odd outputs the scenarios do not cover."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.facts import collect, linux, macos, runtime
from agent.facts.runtime import MLX_PROBE
from agent.system import CommandResult, RecordedSystem


# --------------------------------------------------------------------------- macOS text


@pytest.mark.parametrize("text, speed", [
    ("40 Gb/s", 40.0), ("80 Gb/s", 80.0), ("20 Gb/s", 20.0), (" 10 Gb/s ", 10.0),
    ("Up to 120 Gb/s", None), ("Up to 40 Gb/s", None), ("Up to 40 Gb/s x2", None),
    ("", None), (None, None), (40, None), ("fast", None),
])
def test_link_speed(text, speed):
    assert macos.parse_link_speed(text) == speed


def test_sw_vers_variants():
    assert macos.parse_sw_vers("ProductName:\tmacOS\nProductVersion:\t15.1\nBuildVersion:\t24B83\n") \
        == "macOS 15.1 (24B83)"
    # Older releases say "Mac OS X"; Rapid Security Responses add ProductVersionExtra.
    assert macos.parse_sw_vers("ProductName:\tMac OS X\nProductVersion:\t10.15.7\nBuildVersion:\t19H2\n") \
        == "Mac OS X 10.15.7 (19H2)"
    assert macos.parse_sw_vers("ProductName:\tmacOS\nProductVersion:\t13.4.1\nProductVersionExtra:\t(a)\n"
                               "BuildVersion:\t22F770820d\n") == "macOS 13.4.1 (a) (22F770820d)"
    assert macos.parse_sw_vers("") == ""
    assert macos.parse_sw_vers(None) == ""


def test_sysctl_keeps_what_it_can_read():
    values = macos.parse_sysctl("machdep.cpu.brand_string: Apple M4 Pro\nhw.memsize: 51539607552\n"
                                "garbage line\nhw.physicalcpu:\n")
    assert values == {"machdep.cpu.brand_string": "Apple M4 Pro", "hw.memsize": "51539607552"}


def test_physical_memory():
    assert macos.parse_physical_memory("24 GB") == 24 * 2**30
    assert macos.parse_physical_memory("1 TB") == 2**40
    assert macos.parse_physical_memory("lots") is None
    assert macos.parse_physical_memory(None) is None


def test_hardware_ports_only_exact_thunderbolt_n():
    ports = macos.parse_hardware_ports(
        "\nHardware Port: Thunderbolt Bridge\nDevice: bridge0\nEthernet Address: 36:00\n\n"
        "Hardware Port: Thunderbolt 12\nDevice: en14\n\n"
        "Hardware Port: Thunderbolt Ethernet Slot 1\nDevice: en8\n\n"
        "Hardware Port: Thunderbolt 2\nDevice:\n\n"
        "VLAN Configurations\n===================\n")
    assert ports == {"Thunderbolt Bridge": "bridge0", "Thunderbolt 12": "en14",
                     "Thunderbolt Ethernet Slot 1": "en8"}
    assert macos.thunderbolt_interfaces(ports) == {12: "en14"}


def test_ifconfig_bridge_states():
    blocks = macos.parse_ifconfig(
        "bridge0: flags=8822<BROADCAST,SMART,SIMPLEX,MULTICAST> mtu 1500\n"
        "\tinet 169.254.3.4 netmask 0xffff0000 broadcast 169.254.255.255\n"
        "\tmember: en2 flags=3<LEARNING,DISCOVER>\n"
        "\tstatus: active\n"
        "en2: flags=8963<UP,BROADCAST,SMART,RUNNING,PROMISC,SIMPLEX,MULTICAST> mtu 1500\n"
        "\tstatus: active\n")
    assert blocks["bridge0"].up is False  # administratively down: no UP flag
    assert blocks["bridge0"].members == ["en2"]
    assert blocks["en2"].up is True
    assert macos.bridge_facts("bridge0", {}).model_dump() == {
        "interface": "bridge0", "ips": [], "up": False, "members": []}
    assert macos.bridge_facts(None, blocks) is None


def test_bus_without_receptacle_or_with_odd_values_never_raises():
    data = {"SPThunderboltDataType": [
        {"_name": "thunderboltusb4_bus_0", "domain_uuid_key": "AAAA"},  # no receptacle tag
        {"_name": "thunderboltusb4_bus_1", "receptacle_1_tag": {"receptacle_id_key": "abc"}},
        {"_name": "thunderboltusb4_bus_2", "receptacle_1_tag": {"receptacle_id_key": "3"},
         "_items": [{"_name": "Some Dock"}, "junk", {"_items": [{"domain_uuid_key": "PEER", "_name": "Mac Pro"}]}]},
        "not a bus",
    ], "SPHardwareDataType": "nonsense"}
    ports, domains, problems = macos.parse_thunderbolt(data, {3: "en4"})
    assert domains == ["AAAA"]
    # No status key but devices present: connected; the host behind the dock is the peer.
    assert [(p.port, p.status, p.interface, p.peer_uuid, p.peer_name) for p in ports] == [
        (3, "connected", "en4", "PEER", "Mac Pro")]
    assert len(problems) == 1 and "unreadable receptacle id" in problems[0]
    assert macos.parse_hardware(data) == macos.Hardware()


def test_intel_bus_with_two_receptacles_places_the_host_only_when_unambiguous():
    bus = {"_name": "thunderbolt_bus_0", "domain_uuid_key": "INTEL",
           "receptacle_1_tag": {"receptacle_id_key": "1", "current_speed_key": "Up to 40 Gb/s x2",
                                "receptacle_status_key": "receptacle_connected"},
           "receptacle_2_tag": {"receptacle_id_key": "2", "receptacle_status_key": "receptacle_no_devices_connected"},
           "_items": [{"_name": "iMac", "domain_uuid_key": "PEER"}]}
    ports, _ = macos.parse_bus(bus, {})
    assert [(p.port, p.status, p.peer_uuid, p.speed_gbps) for p in ports] == [
        (1, "connected", "PEER", None), (2, "disconnected", None, None)]


@pytest.mark.parametrize("text", ["", "   ", "{", "[1, 2]", "null", '{"SPThunderboltDataType": 7}'])
def test_profiler_garbage(text):
    data, problems = macos.parse_profiler(text)
    ports, domains, _ = macos.parse_thunderbolt(data, {})
    assert (ports, domains) == ([], [])
    assert macos.parse_hardware(data) == macos.Hardware()
    assert bool(problems) == (text.strip() in ("", "{", "[1, 2]", "null"))


def test_rdma_status_and_ioreg():
    assert macos.parse_rdma_status("enabled\n") is True
    assert macos.parse_rdma_status("disabled") is False
    assert macos.parse_rdma_status("rdma_ctl: command not found") is None
    assert macos.parse_ioreg_uuid('    "IOPlatformUUID" = "3F0D8A62-91B4-5E7C-A2D9-6B1E4C8F0A37"\n') == \
        "3F0D8A62-91B4-5E7C-A2D9-6B1E4C8F0A37"
    assert macos.parse_ioreg_uuid("nothing") is None


# --------------------------------------------------------------------------- Linux text


def test_cpu_model_on_x86_and_arm():
    assert linux.parse_cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"
    assert linux.parse_cpu_model("processor\t: 0\nBogoMIPS\t: 108.00\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n") \
        == "Raspberry Pi 5 Model B Rev 1.0"
    assert linux.parse_cpu_model("") == ""
    assert len(linux.parse_cpu_model("model name: " + "x" * 5000)) == 256


def test_os_release_fallbacks():
    assert linux.parse_os_release('NAME="Fedora Linux"\nVERSION="40 (Workstation Edition)"\n') == \
        "Fedora Linux 40 (Workstation Edition)"
    assert linux.parse_os_release(None) == ""


def test_nvidia_smi_lines():
    gpus = linux.parse_nvidia_smi("NVIDIA GeForce RTX 4090, 24564\nNVIDIA H100 80GB HBM3, 81559\n"
                                  "Odd, Name, Inc GPU, [N/A]\n\n")
    assert [(g.name, g.memory_gb) for g in gpus] == [
        ("NVIDIA GeForce RTX 4090", 24.0), ("NVIDIA H100 80GB HBM3", 79.6), ("Odd, Name, Inc GPU", None)]
    assert linux.gpu_chip(gpus[:1]) == "NVIDIA GeForce RTX 4090"
    assert linux.gpu_chip(gpus[:2]) == "NVIDIA GeForce RTX 4090 + NVIDIA H100 80GB HBM3"


def test_xdomain_speed():
    assert linux.link_speed("20.0 Gb/s", "2") == 40.0
    assert linux.link_speed("40.0 Gb/s", None) == 40.0
    assert linux.link_speed("", "2") is None


# --------------------------------------------------------------------------- MPI


@pytest.mark.parametrize("text, expected", [
    ("mpirun (Open MPI) 5.0.11\n\nReport bugs to https://www.open-mpi.org/community/help/\n", ("openmpi", "5.0.11")),
    ("mpirun (Open MPI) 4.1.6\n", ("openmpi", "4.1.6")),
    ("mpirun (OpenRTE) 1.10.7\n", ("openmpi", "1.10.7")),
    ("HYDRA build details:\n    Version:                                 4.2.0\n"
     "    Release Date:                            Fri Feb  9 12:29:21 CST 2024\n", ("mpich", "4.2.0")),
    ("HYDRA build details:\n    CC: gcc\n", ("mpich", None)),
    ("MPICH Version:      3.4.3\nMPICH Release date: Thu Dec 16 11:20:57 CST 2021\n", ("mpich", "3.4.3")),
    ("Intel(R) MPI Library for Linux* OS, Version 2021.10 Build 20230619\n", (None, None)),
    ("", (None, None)),
])
def test_mpirun_version(text, expected):
    assert runtime.parse_mpirun_version(text) == expected


def test_mpirun_candidates_prefer_the_python_folder_unresolved():
    assert runtime.mpirun_candidates("/work/.venv/bin/python") == ["/work/.venv/bin/mpirun", "mpirun"]
    assert runtime.mpirun_candidates("python3") == ["mpirun"]


class FakeSystem:
    """A System whose commands answer from a dict keyed by argv tuples."""

    def __init__(self, answers: dict[tuple[str, ...], CommandResult]):
        self.answers = answers
        self.calls: list[list[str]] = []

    def run(self, argv, timeout=10.0):
        self.calls.append(list(argv))
        return self.answers.get(tuple(argv))


def test_open_mpi_on_path_beats_mpich_beside_python():
    system = FakeSystem({
        ("/opt/homebrew/bin/mpirun", "--version"): CommandResult(0, "HYDRA build details:\n    Version: 4.3.0\n"),
        ("mpirun", "--version"): CommandResult(0, "mpirun (Open MPI) 5.0.6\n"),
    })
    probe = runtime.probe_mpi(system, "/opt/homebrew/bin/python3")
    assert (probe.implementation, probe.version, probe.problems) == ("openmpi", "5.0.6", [])


def test_unknown_mpi_is_a_problem():
    system = FakeSystem({("mpirun", "--version"): CommandResult(0, "Intel(R) MPI Library, Version 2021.10\n")})
    probe = runtime.probe_mpi(system, "python3")
    assert probe.implementation is None
    assert "did not identify Open MPI or MPICH" in probe.problems[0]


# --------------------------------------------------------------------------- MLX probe


def test_mlx_probe_that_crashes():
    system = FakeSystem({("/x/bin/python", "-c", MLX_PROBE): CommandResult(-11, "", "")})
    probe = runtime.probe_mlx(system, "/x/bin/python")
    assert probe.mlx_version is None and probe.mlx_device is None
    assert "exit -11" in probe.problems[0]


def test_mlx_probe_with_noise_and_a_traceback():
    system = FakeSystem({("/x/bin/python", "-c", MLX_PROBE): CommandResult(
        1, "some banner\n", "Traceback (most recent call last):\n  ...\nSystemError: broken interpreter\n")})
    probe = runtime.probe_mlx(system, "/x/bin/python")
    assert "SystemError: broken interpreter" in probe.problems[0]


def test_mlx_probe_output_after_other_prints():
    answer = {"python": "3.12.1", "version": "0.32.4", "metal": False, "cuda": False, "device": "cpu"}
    system = FakeSystem({("/x/bin/python", "-c", MLX_PROBE): CommandResult(
        0, "[warn] something\n" + runtime.MLX_MARKER + json.dumps(answer) + "\n")})
    probe = runtime.probe_mlx(system, "/x/bin/python")
    assert (probe.python_version, probe.mlx_version, probe.mlx_device, probe.problems) == \
        ("3.12.1", "0.32.4", "cpu", [])


def test_mlx_probe_bad_json_and_timeouts():
    system = FakeSystem({("/x/bin/python", "-c", MLX_PROBE): CommandResult(0, runtime.MLX_MARKER + "{oops\n")})
    assert runtime.probe_mlx(system, "/x/bin/python").problems
    missing = runtime.probe_mlx(FakeSystem({}), "/nope/python", timeout=3)
    assert missing.mlx_version is None
    assert "could not run /nope/python" in missing.problems[0] and "3 s" in missing.problems[0]


def test_probe_runs_on_a_real_python_without_mlx(tmp_path):
    # The probe text itself must work on a bare interpreter: run it for real with -S -I so no
    # site-packages (and so no mlx) are visible.
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-S", "-I", "-c", MLX_PROBE], capture_output=True, text=True,
                         timeout=60)
    answer = runtime._marked_json(out.stdout)
    assert answer is not None and "error" in answer
    assert runtime.mlx_from_answer(answer, sys.executable).mlx_version is None


# --------------------------------------------------------------------------- whole collection


def write_recording(folder: Path, spec: dict) -> RecordedSystem:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "system.json").write_text(json.dumps(spec))
    return RecordedSystem(folder)


def test_an_empty_linux_box_still_gives_valid_facts(tmp_path):
    system = write_recording(tmp_path / "bare", {"platform": "Linux"})
    facts = collect(system, python="/usr/bin/python3")
    assert facts.os == "linux"
    assert facts.hostname == "localhost"
    assert facts.machine_id.startswith("host-")
    assert facts.os_version == "Linux"
    assert facts.device_type == "cpu"
    assert facts.memory_gb == 0 and facts.cpu_cores == 0
    assert any("hostname" in p for p in facts.problems)


def test_machine_id_from_dbus_when_etc_has_none(tmp_path):
    (tmp_path / "dbus").mkdir()
    (tmp_path / "dbus" / "mid").write_text("0123456789abcdef0123456789abcdef\n")
    system = write_recording(tmp_path / "dbus", {"platform": "Linux", "files": {"/var/lib/dbus/machine-id": "mid"}})
    assert collect(system, python="/usr/bin/python3").machine_id == "0123456789abcdef0123456789abcdef"


def test_failing_nvidia_smi_is_a_problem_not_a_gpu(tmp_path):
    system = write_recording(tmp_path / "nv", {"platform": "Linux", "commands": {
        " ".join(linux.NVIDIA_SMI_ARGV): {"returncode": 9, "stdout": "NVIDIA-SMI has failed because it couldn't "
                                          "communicate with the NVIDIA driver.\n"}}})
    facts = collect(system, python="/usr/bin/python3")
    assert facts.device_type == "cpu" and facts.gpus == []
    assert any(p.startswith("nvidia-smi failed (exit 9): NVIDIA-SMI has failed") for p in facts.problems)


def test_other_os_reports_what_psutil_knows(tmp_path):
    system = write_recording(tmp_path / "win", {"platform": "Windows", "cpu_count": 8,
                                                "memory": {"total_bytes": 17179869184, "available_bytes": 2**33}})
    facts = collect(system, python="C:/Python312/python.exe")
    assert (facts.os, facts.memory_gb, facts.memory_available_gb, facts.cpu_cores) == ("other", 16.0, 8.0, 8)
    assert any("no fact collection for Windows" in p for p in facts.problems)


def test_overlong_and_many_values_are_cut_to_the_wire_limits(tmp_path):
    folder = tmp_path / "huge"
    folder.mkdir()
    (folder / "cpuinfo").write_text("model name\t: " + "Z" * 4000 + "\n")
    system = write_recording(folder, {
        "platform": "Linux",
        "files": {"/proc/cpuinfo": "cpuinfo"},
        "interfaces": [{"name": f"veth{i}", "up": True, "speed_mbps": 0,
                        "ips": [f"10.0.{i % 250}.{j}" for j in range(80)]} for i in range(300)],
    })
    facts = collect(system, python="/usr/bin/python3")
    assert len(facts.chip) == 256
    assert len(facts.interfaces) == 256
    assert all(len(i.ips) == 64 and i.speed_mbps is None for i in facts.interfaces)


def test_a_parser_bug_becomes_a_problem(monkeypatch, tmp_path):
    def boom(system):
        raise KeyError("surprise")

    monkeypatch.setattr(linux, "collect_linux", boom)
    facts = collect(write_recording(tmp_path / "x", {"platform": "Linux"}), python="/usr/bin/python3")
    assert any(p.startswith("internal error during platform facts: KeyError") for p in facts.problems)


def test_mlx_on_the_cpu_of_a_gpu_node_is_a_problem(tmp_path):
    folder = tmp_path / "rosetta"
    folder.mkdir()
    answer = {"python": "3.12.1", "version": "0.32.4", "metal": False, "cuda": False, "device": "cpu"}
    (folder / "probe").write_text(runtime.MLX_MARKER + json.dumps(answer) + "\n")
    (folder / "sysctl").write_text("machdep.cpu.brand_string: Apple M2\nhw.optional.arm64: 1\n")
    system = write_recording(folder, {"platform": "Darwin", "commands": {
        " ".join(["/usr/local/bin/python3", "-c", MLX_PROBE]): {"file": "probe"},
        " ".join(macos.SYSCTL_ARGV): {"file": "sysctl"}}})
    facts = collect(system, python="/usr/local/bin/python3")
    assert (facts.device_type, facts.chip, facts.mlx_device) == ("mac", "Apple M2", "cpu")
    assert any("sees no Metal GPU" in p for p in facts.problems)
