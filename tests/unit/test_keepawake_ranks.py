"""The keep-awake follows the ranks: taken when the node's first rank starts, released when its
last one ends, through the real rank runner and the recorded macOS seam (caffeinate's argv)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from agent.keepawake import KeepAwake, mac_argv
from agent.ranks import RankRunner
from agent.system import RecordedSystem
from shared.schemas import RankAssignment

MAC = Path(__file__).resolve().parents[1] / "support" / "fixtures" / "pressure" / "mac-mini-nominal"


def _wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_two_ranks_hold_one_assertion_from_the_first_start_to_the_last_exit(tmp_path):
    system = RecordedSystem(MAC)
    keep = KeepAwake(system, pid=4242)
    seen: list[bool] = []

    def on_busy(busy: bool) -> None:
        seen.append(busy)
        keep.hold() if busy else keep.release()

    runner = RankRunner(tmp_path / "work", sys.executable, "mini", on_busy=on_busy)
    gate = tmp_path / "go"
    wait_for_gate = f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.02)"
    for rank, argv in ((0, ["python", "-c", "pass"]), (1, ["python", "-c", wait_for_gate])):
        runner.start(RankAssignment(job_id="j-keep", rank=rank, world_size=2, command=argv, backend="mpi"))
    try:
        _wait(lambda: [s.state for s in runner.states()].count("exited") == 1)
        assert seen == [True] and keep.held  # rank 0 ended; rank 1 still runs: still held
        assert system.spawned == [mac_argv(4242)]  # one caffeinate -i -s -w for both ranks
    finally:
        gate.touch()
    _wait(lambda: all(s.state == "exited" for s in runner.states()))
    _wait(lambda: seen == [True, False])
    assert not keep.held and system.spawned == [mac_argv(4242)]
