"""/cluster, /topology and /healthz: the summary a person or a monitor looks at first."""

from __future__ import annotations

from collections import Counter

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from coordinator import topology

from shared.status import SUMMARY_NODE_STATUSES, NodeStatus
from coordinator.api.deps import Admin, RegistryDep, SurveyorDep
from shared import __version__
from shared.schemas import ClusterSummary, Health, ProblemOut

router = APIRouter(tags=["cluster"])


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


@router.get("/topology", dependencies=[Admin], responses={200: {"content": {"text/vnd.graphviz": {}}}})
def get_topology(surveys: SurveyorDep, format: Literal["json", "dot", "jaccl"] = "json"):
    """The Thunderbolt graph: nodes, links (ports, negotiated speed), chains/rings/meshes found,
    cabling warnings. `?format=dot` gives Graphviz text (`dot -Tsvg`). `?format=jaccl` gives,
    for the live nodes in ring order, the N x N device matrix MLX's JACCL backend reads from
    MLX_IBV_DEVICES (full mesh) and the one for jaccl-ring, or the reason there is none
    (every node must report RDMA enabled, macOS 26.2+)."""
    found = surveys.survey()
    if format == "dot":
        return PlainTextResponse(topology.to_dot(found.topology), media_type="text/vnd.graphviz")
    if format == "jaccl":
        live = [n.id for n in found.nodes if n.status != "down"]
        order = topology.ring_order(found.topology, live)
        mesh = topology.jaccl_check(found.topology, order)
        ring = topology.jaccl_check(found.topology, order, ring=True)
        names = {n.id: n.name for n in found.nodes}
        return {"nodes": [names[i] for i in order],
                "jaccl": {"devices": mesh.matrix, "reason": mesh.reason},
                "jaccl_ring": {"devices": ring.matrix, "reason": ring.reason}}
    return topology.to_json(found.topology)
