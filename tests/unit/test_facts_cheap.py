"""collect_cheap: what every heartbeat carries, without system_profiler."""

from __future__ import annotations

import shutil
from pathlib import Path

from agent.facts import collect, collect_cheap
from agent.system import RecordedSystem

FIXTURES = Path(__file__).resolve().parents[1] / "support" / "fixtures" / "facts"
MINI_PY = "/Users/alex/jupiter/.venv/bin/python"


def copy_fixture(tmp_path: Path, scenario: str) -> Path:
    folder = tmp_path / scenario
    shutil.copytree(FIXTURES / scenario, folder)
    return folder


def set_status(folder: Path, interface: str, status: str) -> None:
    """Rewrite the recorded ifconfig as if `interface`'s link went to `status`."""
    path = folder / "ifconfig.txt"
    lines, inside = [], False
    for line in path.read_text().splitlines(keepends=True):
        if not line[:1].isspace():
            inside = line.startswith(f"{interface}:")
        if inside and line.strip().startswith("status:"):
            line = f"\tstatus: {status}\n"
        lines.append(line)
    path.write_text("".join(lines))


def test_cheap_never_runs_system_profiler_and_keeps_unchanged_links():
    system = RecordedSystem(FIXTURES / "mac-mini-m4-two-peers")
    previous = collect(system, python=MINI_PY)
    system.calls.clear()

    available, tb = collect_cheap(system, previous)

    assert available == 14.2
    assert tb == previous.thunderbolt
    assert system.calls == [["ifconfig"]]


def test_cheap_sees_a_peer_unplugged(tmp_path):
    folder = copy_fixture(tmp_path, "mac-mini-m4-two-peers")
    previous = collect(RecordedSystem(folder), python=MINI_PY)
    set_status(folder, "en3", "inactive")

    _, tb = collect_cheap(RecordedSystem(folder), previous)

    by_port = {p.port: p for p in tb.ports}
    assert by_port[1] == previous.thunderbolt.ports[0]
    assert (by_port[2].status, by_port[2].speed_gbps, by_port[2].peer_uuid) == ("disconnected", None, None)
    assert by_port[2].interface == "en3"
    assert tb.domain_uuids == previous.thunderbolt.domain_uuids
    assert tb.bridge.up is True  # en2 still has its peer


def test_cheap_sees_the_bridge_go_down(tmp_path):
    folder = copy_fixture(tmp_path, "mac-mini-m4-two-peers")
    previous = collect(RecordedSystem(folder), python=MINI_PY)
    set_status(folder, "bridge0", "inactive")

    _, tb = collect_cheap(RecordedSystem(folder), previous)

    assert tb.bridge.up is False
    assert tb.bridge.members == ["en2", "en3"]


def test_cheap_sees_a_new_peer_without_knowing_its_speed(tmp_path):
    folder = copy_fixture(tmp_path, "mac-no-cables")
    previous = collect(RecordedSystem(folder), python="/Users/lab/jupiter/.venv/bin/python")
    set_status(folder, "en3", "active")

    _, tb = collect_cheap(RecordedSystem(folder), previous)

    assert tb.ports[1].port == 2
    assert (tb.ports[1].status, tb.ports[1].speed_gbps) == ("connected", None)
    assert [p.status for p in tb.ports] == ["disconnected", "connected", "disconnected", "disconnected"]


def test_cheap_keeps_dock_links_whose_network_port_is_idle():
    # A dock or display never brings the Thunderbolt network interface up: that is no unplug.
    system = RecordedSystem(FIXTURES / "macbook-pro-dock-monitor")
    previous = collect(system, python="/Users/sam/.venvs/jupiter/bin/python")

    _, tb = collect_cheap(system, previous)

    assert tb.ports == previous.thunderbolt.ports


def test_cheap_without_ifconfig_returns_the_previous_links():
    system = RecordedSystem(FIXTURES / "mac-garbled")
    previous = collect(system, python="/usr/bin/python3")

    available, tb = collect_cheap(system, previous)

    assert available == 1.8
    assert tb == previous.thunderbolt


def test_cheap_on_linux_rereads_sysfs():
    system = RecordedSystem(FIXTURES / "linux-plain")
    previous = collect(system, python="/usr/bin/python3")
    system.calls.clear()

    available, tb = collect_cheap(system, previous)

    assert available == 27.5
    assert tb == previous.thunderbolt
    assert system.calls == []  # sysfs reads only, no commands


def test_cheap_keeps_the_previous_links_if_a_parser_breaks(monkeypatch):
    from agent.facts import macos

    system = RecordedSystem(FIXTURES / "mac-mini-m4-two-peers")
    previous = collect(system, python=MINI_PY)

    def boom(system, previous):
        raise ValueError("surprise")

    monkeypatch.setattr(macos, "thunderbolt_cheap", boom)
    assert collect_cheap(system, previous) == (14.2, previous.thunderbolt)
