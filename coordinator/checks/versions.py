"""Version skew across nodes: ranks of one job must run the same MLX and the same Python minor
version, so a cluster that mixes them gets one problem naming who runs what.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from coordinator.checks.problem import Problem
from shared.schemas import NodeOut


def mlx_skew(nodes: Sequence[NodeOut]) -> list[Problem]:
    return _version_skew(nodes, "MLX", lambda n: n.mlx_version, "pip install mlx=={} in every agent's Python")


def python_skew(nodes: Sequence[NodeOut]) -> list[Problem]:
    return _version_skew(nodes, "Python", _python_minor,
                         "run every agent (and so its ranks) on Python {}: reinstall the agent with that Python")


def _python_minor(n: NodeOut) -> str | None:
    """Ranks exchange pickled and compiled state across nodes; the minor version is what must
    match (3.12.4 and 3.12.8 are fine together)."""
    parts = (n.python_version or "").split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 and all(p.isdigit() for p in parts[:2]) else None


def _version_skew(nodes: Sequence[NodeOut], what: str, get: Callable[[NodeOut], str | None],
                  fix: str) -> list[Problem]:
    by_version: dict[str, list[str]] = {}
    for n in sorted(nodes, key=lambda n: (n.name.casefold(), n.name)):
        if v := get(n):
            by_version.setdefault(v, []).append(n.name)
    if len(by_version) < 2:
        return []
    # Aim at the version most nodes have (ties: the newest), so the fewest nodes change.
    ranked = sorted(by_version, key=lambda v: (-len(by_version[v]), _neg_version(v)))
    detail = "; ".join(f"{v} on {', '.join(by_version[v])}" for v in ranked)
    return [Problem(None, f"{what} versions differ across nodes: {detail}", fix.format(ranked[0]),
                    f"{what.lower()}_version")]


def _neg_version(v: str) -> tuple:
    return tuple(-int(p) if p.isdigit() else 0 for p in v.split("."))
