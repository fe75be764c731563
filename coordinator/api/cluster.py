"""/cluster and /healthz: the summary a person or a monitor looks at first."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, Request

from coordinator.api.deps import Admin, RegistryDep
from shared import __version__
from shared.cluster_config import unhonoured_fields
from shared.schemas import ClusterSummary, Health

router = APIRouter(tags=["cluster"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """Liveness probe; needs no token."""
    return Health(version=__version__)


@router.get("/cluster", response_model=ClusterSummary, dependencies=[Admin])
def cluster(request: Request, reg: RegistryDep) -> ClusterSummary:
    """Nodes by status, memory in total and available on live nodes, and every problem found."""
    nodes = reg.list_views()
    by_status = Counter(n.status for n in nodes)
    live = [n for n in nodes if n.status != "down"]
    problems = [f"{n.name}: {p}" for n in nodes for p in n.problems]
    problems += [f"cluster.yaml: {p}" for p in unhonoured_fields(reg.config)]
    cfg_path = request.app.state.settings.config_path
    return ClusterSummary(
        nodes=len(nodes),
        nodes_by_status={s: by_status.get(s, 0) for s in ("ready", "busy", "draining", "down")},
        memory_gb=round(sum(n.memory_gb or 0 for n in live), 1),
        memory_available_gb=round(sum(n.memory_available_gb or 0 for n in live), 1),
        problems=problems,
        config_path=str(cfg_path) if cfg_path else None,
        backend=reg.config.backend,
    )
