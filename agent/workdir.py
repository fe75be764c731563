"""A job's workdir on this node: fetched from the coordinator, verified, cached, unpacked per rank."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agent.uplink import Connection
from shared.schemas.ranks import RankAssignment


def prepare(connect: Callable[[], Connection], node_id: str, work_dir: Path, a: RankAssignment,
            folder: Path) -> str | None:
    """Unpack the job's workdir archive into `folder`; why it cannot, or None."""
    if a.workdir is None:
        return None
    return "cannot start: this agent cannot fetch a workdir yet"
