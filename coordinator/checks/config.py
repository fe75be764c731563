"""cluster.yaml settings this version reads but does not honour, so setting them has no effect."""

from __future__ import annotations

from coordinator.checks.problem import Problem
from shared.cluster_config import ClusterConfig, unhonoured_fields


def unhonoured(cfg: ClusterConfig) -> list[Problem]:
    return [Problem(None, f"cluster.yaml: {m}", "set it to false in cluster.yaml until a version supports it, "
                                                 "or accept that it has no effect", "config")
            for m in unhonoured_fields(cfg)]
