"""A job's artifacts on this node: rank 0's files uploaded when it ends, and fetched back into a
restarted attempt's folder so it resumes from them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agent.uplink import Connection
from shared.schemas.ranks import RankAssignment


def restore(connect: Callable[[], Connection], node_id: str, a: RankAssignment, folder: Path) -> str | None:
    """Fetch the job's artifacts into a restarted attempt's folder; why it cannot, or None."""
    return


def collect(connect: Callable[[], Connection], node_id: str, a: RankAssignment, folder: Path, code: int) -> None:
    """Upload rank 0's files that match the job's artifact globs."""
    return
