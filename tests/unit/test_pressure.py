"""Pressure facts over outputs recorded on real machines (tests/support/fixtures/pressure/), the
keep-awake over a recorded system and live on this machine, and the problems a node under
pressure shows."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.facts import collect_pressure
from agent.facts import pressure as P
from agent.keepawake import KeepAwake, linux_argv, mac_argv
from agent.system import LocalSystem, RecordedSystem
from coordinator import problems as problems_mod
from coordinator.checks import pressure as checks
from coordinator.registry import Registry
from coordinator.store import Store
from shared.cluster_config import load_cluster_config
from shared.schemas import HeartbeatRequest, NodeOut, Pressure, RegisterRequest, ThunderboltInfo
from tests.support.harness import registration, sample_facts

FIXTURES = Path(__file__).resolve().parents[1] / "support" / "fixtures" / "pressure"

EXPECTED = {
    "mac-mini-nominal": Pressure(thermal="nominal", memory="normal", swap_used_gb=0.0, swap_total_gb=0.0,
                                 sleep_after_min=1, on_battery=False),
    "mac-intel-throttled": Pressure(thermal="serious", cpu_speed_limit_pct=70, memory="normal", swap_used_gb=0.4,
                                    swap_total_gb=1.0, sleep_after_min=10, on_battery=False),
    "mac-studio-memory-warning": Pressure(thermal="fair", memory="warning", swap_used_gb=2.4, swap_total_gb=4.0,
                                          sleep_after_min=0, on_battery=False),
    "mac-mini-memory-critical": Pressure(thermal="nominal", memory="critical", swap_used_gb=9.43, swap_total_gb=11.0,
                                         sleep_after_min=0, on_battery=False),
    "macbook-air-battery": Pressure(thermal="nominal", memory="normal", swap_used_gb=0.59, swap_total_gb=2.0,
                                    sleep_after_min=1, on_battery=True),
    "mac-garbled": Pressure(),
    "linux-vm": Pressure(memory="normal", swap_used_gb=0.0, swap_total_gb=0.0),
    "linux-laptop-hot": Pressure(thermal="serious", memory="warning", swap_used_gb=5.0, swap_total_gb=8.0,
                                 on_battery=True),
}


def test_every_fixture_folder_is_tested():
    assert sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()) == sorted(EXPECTED)


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_each_recorded_machine(scenario):
    got = collect_pressure(RecordedSystem(FIXTURES / scenario), keep_awake=True)
    assert got == EXPECTED[scenario].model_copy(update={"keep_awake": True})
    assert Pressure.model_validate_json(got.model_dump_json()) == got


def test_a_mac_costs_three_processes_for_the_fast_part_and_two_for_the_slow_one():
    system = RecordedSystem(FIXTURES / "mac-mini-nominal")
    clock = [100.0]
    reader = P.PressureReader(system, clock=lambda: clock[0])
    first = reader.read(None)
    assert sorted(map(tuple, system.calls)) == sorted(map(tuple, [P.THERM_ARGV, P.THERMAL_LEVEL_ARGV, P.SYSCTL_ARGV,
                                                                  P.PMSET_ARGV, P.BATT_ARGV]))
    system.calls.clear()
    clock[0] += 14
    assert reader.read(True) == first.model_copy(update={"keep_awake": True})  # keep_awake is never cached
    assert system.calls == []
    clock[0] += 1
    reader.read(None)
    assert sorted(map(tuple, system.calls)) == sorted(map(tuple, [P.THERM_ARGV, P.THERMAL_LEVEL_ARGV, P.SYSCTL_ARGV]))
    system.calls.clear()
    clock[0] += 45
    reader.read(None)
    assert [P.PMSET_ARGV] == [c for c in system.calls if c == P.PMSET_ARGV]


# --------------------------------------------------------------------------- the parsers, one by one


def test_therm_with_a_recorded_warning_level():
    # As pmset.m prints a recorded level: the date, then "Thermal Warning Level = %d".
    text = ("2025-03-18 14:02:51 +0100 Thermal Warning Level = 5\n"
            "Note: No performance warning level has been recorded\n")
    assert P.parse_therm(text) == ("serious", None)
    assert P.parse_therm(text.replace("= 5", "= 10")) == ("critical", None)
    assert P.parse_therm(text.replace("= 5", "= 0")) == ("nominal", None)
    assert P.parse_therm(text.replace("= 5", "= 255")) == (None, None)
    assert P.parse_therm("\tCPU_Speed_Limit \t= 250\n") == (None, 100)
    assert P.parse_therm(None) == (None, None)


@pytest.mark.parametrize("text, level", [
    ("com.apple.system.thermalpressurelevel 0\n", "nominal"), ("com.apple.system.thermalpressurelevel 1", "fair"),
    ("com.apple.system.thermalpressurelevel 3\n", "critical"), ("com.apple.system.thermalpressurelevel 4", "critical"),
    ("com.apple.system.thermalpressurelevel 9", None), ("", None), (None, None), ("garbage", None),
])
def test_thermal_pressure_level(text, level):
    assert P.parse_thermal_level(text) == level


def test_sysctl_units_and_odd_lines():
    assert P.parse_sysctl("vm.swapusage: total = 2.00G  used = 512.00M  free = 1.50G  (encrypted)\n") \
        == (None, 0.5, 2.0)
    assert P.parse_sysctl("kern.memorystatus_vm_pressure_level: 3\n") == (None, None, None)  # never a real level
    assert P.parse_sysctl("vm.swapusage: total = lots\n") == (None, None, None)
    assert P.parse_sysctl(None) == (None, None, None)


def test_pmset_sleep_is_the_timer_not_its_neighbours():
    assert P.parse_pmset_sleep(" Sleep On Power Button 1\n displaysleep         10\n disksleep 10\n") is None
    assert P.parse_pmset_sleep(" sleep                0 (sleep prevented by powerd, Claude, screensharingd)\n") == 0
    assert P.parse_pmset_sleep("System-wide power settings:\n SleepDisabled\t\t0\n sleep   15\n") == 15


def test_batt_sources():
    assert P.parse_batt("Now drawing from 'UPS Power'\n") is True  # the mains are gone
    assert P.parse_batt("Now drawing from 'AC Power'\n -InternalBattery-0 (id=1)\t80%; AC attached; "
                        "not charging present: true\n") is False
    assert P.parse_batt("") is None


@pytest.mark.parametrize("text, level", [
    ("some avg10=9.99 avg60=1 avg300=0 total=1\nfull avg10=0.00 avg60=0 avg300=0 total=0\n", "normal"),
    ("some avg10=10.00 avg60=1 avg300=0 total=1\nfull avg10=9.99 avg60=0 avg300=0 total=0\n", "warning"),
    ("some avg10=80.00 avg60=1 avg300=0 total=1\nfull avg10=12.50 avg60=0 avg300=0 total=0\n", "critical"),
    ("some avg10=oops\n", None), ("", None), (None, None),
])
def test_psi_memory(text, level):
    assert P.parse_psi_memory(text) == level


def test_meminfo_without_swapfree_still_gives_the_total():
    assert P.parse_meminfo_swap("SwapTotal:       2097148 kB\n") == (None, 2.0)
    assert P.parse_meminfo_swap("MemTotal: 1 kB\n") == (None, None)


def test_a_raising_system_gives_nothing_rather_than_failing_the_beat():
    class Broken(RecordedSystem):
        def run(self, argv, timeout=10.0):
            raise RuntimeError("boom")

    assert collect_pressure(Broken(FIXTURES / "mac-mini-nominal")) == Pressure()


# --------------------------------------------------------------------------- keep-awake, recorded


def test_mac_keep_awake_is_caffeinate_idle_and_system_watching_the_agent_never_the_display():
    system = RecordedSystem(FIXTURES / "mac-mini-nominal")
    keep = KeepAwake(system, pid=4242)
    assert keep.state is False and not keep.held
    assert keep.hold() and keep.hold()
    assert system.spawned == [["caffeinate", "-i", "-s", "-w", "4242"]] == [mac_argv(4242)]
    assert "-d" not in system.spawned[0]
    assert keep.state is True and keep.held
    keep.release()
    keep.release()
    assert system.processes[0].stops == 1 and keep.state is False
    assert keep.hold() and len(system.spawned) == 2  # a new job, a new assertion


def test_linux_keep_awake_where_logind_answers():
    system = RecordedSystem(FIXTURES / "linux-laptop-hot")
    keep = KeepAwake(system, pid=1)
    assert keep.hold()
    assert system.spawned == [["systemd-inhibit", "--what=idle:sleep", "--who=jupiter", "--why=training ranks",
                               "--mode=block", "cat"]] == [linux_argv()]
    assert system.calls == [["systemd-inhibit", "--list"]]


def test_without_logind_keep_awake_is_none_and_says_why_once(caplog):
    system = RecordedSystem(FIXTURES / "linux-vm")
    keep = KeepAwake(system)
    with caplog.at_level(logging.WARNING, "jupiter.agent"):
        assert keep.state is None
        assert not keep.hold() and not keep.hold()
    assert system.spawned == [] and system.calls == [["systemd-inhibit", "--list"]]  # probed once
    said = [r.getMessage() for r in caplog.records]
    assert said == ["cannot keep this node awake while ranks run: systemd-inhibit does not work here "
                    "(Failed to connect to bus: No such file or directory)"]
    keep.release()  # nothing held: nothing to do


def test_a_keep_awake_that_dies_is_not_held_and_the_next_hold_starts_another(caplog):
    system = RecordedSystem(FIXTURES / "macbook-air-battery")
    keep = KeepAwake(system, pid=7)
    keep.hold()
    system.processes[0].end("was killed by signal 9")
    with caplog.at_level(logging.WARNING, "jupiter.agent"):
        assert keep.state is False
    assert "was killed by signal 9" in caplog.text
    assert keep.hold() and len(system.spawned) == 2


def test_a_keep_awake_that_cannot_start_is_none(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "system.json").write_text('{"platform": "Darwin", "cannot_spawn": ["caffeinate"]}')
    keep = KeepAwake(RecordedSystem(folder))
    assert not keep.hold()
    assert keep.state is None and keep.why_not == "caffeinate could not be started"
    assert KeepAwake(RecordedSystem(FIXTURES / "mac-garbled")).state is False  # Darwin: caffeinate assumed


# --------------------------------------------------------------------------- keep-awake, live


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie has ended: only its exit status waits to be collected


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def fake_inhibit(tmp_path, monkeypatch):
    """A `systemd-inhibit` that answers --list and otherwise runs its command (this machine has no
    logind): what is tested is that the command lives exactly as long as the agent."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "systemd-inhibit"
    script.write_text('#!/bin/sh\n[ "$1" = "--list" ] && exit 0\n'
                      'while [ $# -gt 0 ]; do case "$1" in --*) shift;; *) break;; esac; done\nexec "$@"\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_live_release_ends_the_keep_awake(fake_inhibit):
    keep = KeepAwake(LocalSystem())
    assert keep.hold() and keep.held
    pid = keep._proc.pid
    assert not _gone(pid)
    keep.release()
    assert _wait_gone(pid, 5) and not keep.held and keep.state is False


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_live_the_keep_awake_dies_with_an_agent_killed_by_sigkill(fake_inhibit):
    # A throwaway process stands in for the agent: it holds the keep-awake, prints its pid, waits.
    agent = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom agent.keepawake import KeepAwake\n"
         "from agent.system import LocalSystem\nk = KeepAwake(LocalSystem())\nassert k.hold()\n"
         "print(k._proc.pid, flush=True)\ntime.sleep(60)\n"],
        cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, text=True)
    try:
        held = int(agent.stdout.readline())
        time.sleep(0.3)
        assert not _gone(held), "the keep-awake ended while its agent lives"
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        assert _wait_gone(held, 10), "the keep-awake outlived its SIGKILLed agent"
    finally:
        agent.kill()
        agent.wait(10)


@pytest.mark.skipif(sys.platform != "linux", reason="this machine's own answer")
def test_live_here_without_logind():
    keep = KeepAwake(LocalSystem())
    probe = LocalSystem().run(["systemd-inhibit", "--list"])
    if probe is not None and probe.returncode == 0:
        pytest.skip("logind answers on this machine")
    assert keep.state is None and not keep.hold()


# --------------------------------------------------------------------------- problems


def node(name="m1", status="busy", **pressure) -> NodeOut:
    return NodeOut(id=f"n-{name}", name=name, host=f"{name}.local", status=status, role="trainer", device_type="mac",
                   chip="Apple M4", memory_gb=24, memory_available_gb=8, cpu_cores=10, os_version="macOS 15.1",
                   python_version="3.12.8", mlx_version="0.32.4", mlx_device="gpu", mpi={"implementation": "openmpi"},
                   thunderbolt=ThunderboltInfo(), declared=None, problems=[], last_heartbeat=None, registered_at=None,
                   agent_version="0.1.0", pressure=Pressure(**pressure) if pressure else None)


def kinds(n: NodeOut) -> list[str]:
    return [p.kind for p in checks.problems(n)]


def test_a_busy_node_under_every_pressure():
    n = node(thermal="serious", cpu_speed_limit_pct=70, memory="warning", swap_used_gb=2.5, sleep_after_min=10,
             keep_awake=False, on_battery=False)
    found = checks.problems(n)
    assert [p.kind for p in found] == ["throttling", "sleep_while_training", "memory_pressure", "swapping"]
    assert "thermal state serious, CPU speed limited to 70 %" in found[0].message
    assert "sleep after 10 min" in found[1].message and "pmset -c sleep 0" in found[1].fix
    assert "over 2 GB of swap" in found[3].message
    assert all(p.node == "m1" and p.fix for p in found)


def test_a_busy_node_at_ease_has_none():
    assert kinds(node(thermal="fair", cpu_speed_limit_pct=100, memory="normal", swap_used_gb=1.0,
                      sleep_after_min=10, keep_awake=True, on_battery=False)) == []
    assert kinds(node(sleep_after_min=0, keep_awake=None)) == []   # never sleeps anyway
    assert kinds(node()) == []                                     # no pressure reported (an older agent)


def test_on_battery_a_keep_awake_is_not_enough():
    found = checks.problems(node(on_battery=True, keep_awake=True, sleep_after_min=1))
    assert [p.kind for p in found] == ["sleep_while_training"] and found[0].fix == "plug it in"


def test_an_idle_node_says_only_what_hurts_the_next_job():
    busy_only = dict(thermal="critical", cpu_speed_limit_pct=50, memory="warning", swap_used_gb=3.9,
                     sleep_after_min=10, keep_awake=False, on_battery=True)
    for status in ("ready", "draining", "pending"):
        assert kinds(node(status=status, **busy_only)) == []
    assert kinds(node(status="ready", memory="critical", swap_used_gb=4.5)) == ["memory_pressure", "swapping"]
    assert kinds(node(status="down", memory="critical", swap_used_gb=40)) == []  # a stale reading


def test_the_signature_moves_only_with_what_the_messages_say():
    base = Pressure(memory="normal", swap_used_gb=1.2, swap_total_gb=4.0, thermal="nominal")
    same = base.model_copy(update={"swap_used_gb": 1.9, "swap_total_gb": 5.0})
    assert checks.signature(base) == checks.signature(same)
    assert checks.signature(base) != checks.signature(base.model_copy(update={"swap_used_gb": 0.9}))
    assert checks.signature(base) != checks.signature(base.model_copy(update={"thermal": "serious"}))
    assert checks.signature(None) == ()


def test_pressure_problems_reach_the_survey_lines():
    n = node(memory="critical", status="ready")
    lines = problems_mod.with_problems([n], problems_mod.combine(
        problems_mod.topology.build([n], {}), [n], backend="ring",
        extra=checks.problems(n)))[0].problems
    assert any(line.startswith("memory pressure is critical") and "(fix: " in line for line in lines)


# --------------------------------------------------------------------------- the registry


def _registry(tmp_path) -> tuple[Registry, str]:
    store = Store(f"sqlite:///{tmp_path / 'coordinator.db'}")
    reg = Registry(store, load_cluster_config(None), heartbeat_interval_s=1, down_after_s=30, started_at=0.0)
    row, _, _ = reg.register(RegisterRequest.model_validate(
        registration("a", "10.9.0.1", sample_facts("m-a", hostname="a.local"))))
    return reg, row.id


def test_registry_keeps_the_latest_pressure_in_memory_and_shows_it(tmp_path):
    reg, nid = _registry(tmp_path)
    assert reg.list_views()[0].pressure is None
    hot = Pressure(thermal="serious", memory="normal", swap_used_gb=0.2, keep_awake=True)
    writes = reg.store.generation
    assert reg.heartbeat(nid, HeartbeatRequest(pressure=hot), in_memory=True) == (False, False)
    assert reg.store.generation == writes  # nothing written to the database for it
    assert reg.list_views()[0].pressure == hot
    detail = reg.detail(nid)
    assert detail.pressure == hot and detail.facts.pressure == hot
    assert reg.facts_of(reg.store.get_node(nid)).pressure is None  # never in the stored facts


def test_only_a_change_problems_can_see_moves_the_state_key(tmp_path):
    reg, nid = _registry(tmp_path)
    p = Pressure(memory="normal", swap_used_gb=0.2, swap_total_gb=2.0)
    reg.heartbeat(nid, HeartbeatRequest(pressure=p))
    key = reg.state_key()
    reg.heartbeat(nid, HeartbeatRequest(pressure=p.model_copy(update={"swap_used_gb": 0.3})))
    assert reg.state_key() == key
    assert reg.list_views()[0].pressure.swap_used_gb == 0.3  # the view is live all the same
    reg.heartbeat(nid, HeartbeatRequest(pressure=p.model_copy(update={"memory": "critical"})))
    assert reg.state_key() != key


def test_pressure_in_full_facts_never_makes_them_new(tmp_path):
    reg, nid = _registry(tmp_path)
    facts = reg.facts_of(reg.store.get_node(nid))
    moved = facts.model_copy(update={"pressure": Pressure(memory="warning")})
    assert reg.heartbeat(nid, HeartbeatRequest(facts=moved), in_memory=True) == (False, False)
    assert reg.list_views()[0].pressure.memory == "warning"
    assert reg.facts_of(reg.store.get_node(nid)).pressure is None
