from __future__ import annotations

import pytest

from tests.support.harness import AgentProcess, CoordinatorProcess


@pytest.fixture
def coordinator(tmp_path):
    coord = CoordinatorProcess(tmp_path / "leader").start()
    yield coord
    coord.stop()


@pytest.fixture
def start_coordinator(tmp_path):
    """Factory for tests that need their own settings or several coordinator lives."""
    made: list[CoordinatorProcess] = []

    def _start(**kw) -> CoordinatorProcess:
        coord = CoordinatorProcess(tmp_path / "leader", **kw).start()
        made.append(coord)
        return coord

    yield _start
    for c in made:
        c.stop()


@pytest.fixture
def agents(tmp_path):
    made: list[AgentProcess] = []

    def _start(coord, name, **kw) -> AgentProcess:
        ag = AgentProcess(coord, name, tmp_path / "agents" / name, **kw).start()
        made.append(ag)
        return ag

    yield _start
    for a in made:
        a.stop()
