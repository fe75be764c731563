"""/cluster, /topology and /healthz: the summary a person or a monitor looks at first."""

from __future__ import annotations

from collections import Counter
from typing import Literal

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import PlainTextResponse

from coordinator import topology
from coordinator.api.deps import Admin, RegistryDep, SurveyorDep
from coordinator.checks import fabric as fabric_checks
from shared import __version__
from shared.schemas import ClusterSummary, ErrorOut, Health, ProblemOut
from shared.status import SUMMARY_NODE_STATUSES, NodeStatus

router = APIRouter(tags=["cluster"])

NODES_HELP = "With format=jaccl: node names separated by commas, in rank order (at most 256)."
NODES_MAX_CHARS = fabric_checks.MAX_NODES * 65  # 256 names of up to 64 characters, and commas


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """Liveness probe; needs no token."""
    return Health(version=__version__)


@router.get("/cluster", response_model=ClusterSummary, dependencies=[Admin])
def cluster(request: Request, reg: RegistryDep, surveys: SurveyorDep) -> ClusterSummary:
    """Nodes by status, memory in total and available on live nodes, and every problem found."""
    found = surveys.survey()
    nodes = found.nodes
    by_status = Counter(n.status for n in nodes)
    live = [n for n in nodes if n.status != "down"]
    problems = [(f"{p.node}: " if p.node else "") + f"{p.message} (fix: {p.fix})" for p in found.problems]
    cfg_path = request.app.state.settings.config_path
    return ClusterSummary(
        nodes=len(nodes),
        nodes_by_status={**{s: by_status.get(s, 0) for s in SUMMARY_NODE_STATUSES},
                         # pending (awaiting approval) only when some node is: most clusters never have one
                         **({NodeStatus.PENDING: by_status[NodeStatus.PENDING]} if by_status.get(NodeStatus.PENDING) else {})},
        memory_gb=round(sum(n.memory_gb or 0 for n in live), 1),
        memory_available_gb=round(sum(n.memory_available_gb or 0 for n in live), 1),
        problems=problems,
        issues=[ProblemOut(**p.as_dict()) for p in found.problems],
        config_path=str(cfg_path) if cfg_path else None,
        backend=reg.config.backend,
    )


@router.get("/topology", dependencies=[Admin], responses={200: {"content": {"text/vnd.graphviz": {}}},
                                                         422: {"model": ErrorOut}})
def get_topology(reg: RegistryDep, surveys: SurveyorDep, format: Literal["json", "dot", "jaccl"] = "json",
                 nodes: str | None = Query(None, max_length=NODES_MAX_CHARS, description=NODES_HELP)):
    """The Thunderbolt graph: nodes, links (ports, negotiated speed), chains/rings/meshes found,
    cabling warnings. `?format=dot` gives Graphviz text (`dot -Tsvg`). `?format=jaccl` gives,
    for the live nodes in ring order (or `nodes`, in that order), the N x N device matrices MLX's
    JACCL backends read from MLX_IBV_DEVICES (full mesh, and jaccl-ring) or the reason there is
    none, what blocks RDMA on each node and cable with its fix, the NVIDIA nodes, and which
    backends these nodes can use and which one Jupiter would pick."""
    found = surveys.survey()
    if nodes is not None and format != "jaccl":
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "nodes: only with format=jaccl")
    if format == "dot":
        return PlainTextResponse(topology.to_dot(found.topology), media_type="text/vnd.graphviz")
    if format == "jaccl":
        try:
            names = fabric_checks.parse_names(nodes, [n.name for n in found.nodes])
        except fabric_checks.UnknownNodes as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from None
        return fabric_checks.report(found.nodes, found.topology, reg.config, reg.interfaces(), names)
    return topology.to_json(found.topology)
