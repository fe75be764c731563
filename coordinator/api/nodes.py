"""/nodes: registration and heartbeats from agents, listing and admin actions for people."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from coordinator.api.deps import Admin, Join, NodeAuth, NodeId, RegistryDep
from coordinator.registry import Conflict, NotFound
from shared.schemas import (
    ErrorOut,
    HeartbeatRequest,
    HeartbeatResponse,
    NodeDetail,
    NodeOut,
    RegisterRequest,
    RegisterResponse,
)

router = APIRouter(prefix="/nodes", tags=["nodes"],
                   responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}})


def _missing(node_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no node with id {node_id!r}")


@router.post("/register", response_model=RegisterResponse, dependencies=[Join],
             responses={409: {"model": ErrorOut}})
def register(body: RegisterRequest, reg: RegistryDep) -> RegisterResponse:
    """Enrol a node with its facts. The same machine under the same name keeps its node id;
    every registration issues a fresh node token and revokes the previous one."""
    try:
        row, token, _ = reg.register(body)
    except Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return RegisterResponse(node_id=row.id, node_token=token, heartbeat_interval_s=reg.heartbeat_interval_s)


@router.put("/{node_id}/heartbeat", response_model=HeartbeatResponse, dependencies=[NodeAuth],
            responses={404: {"model": ErrorOut}})
def heartbeat(node_id: NodeId, body: HeartbeatRequest, reg: RegistryDep) -> HeartbeatResponse:
    """Say the node is alive, with fresh facts (full or the cheap part) and the state of its ranks."""
    try:
        reg.heartbeat(node_id, body)
    except NotFound:
        raise _missing(node_id) from None
    return HeartbeatResponse(heartbeat_interval_s=reg.heartbeat_interval_s)


@router.get("", response_model=list[NodeOut], dependencies=[Admin])
def list_nodes(reg: RegistryDep) -> list[NodeOut]:
    """Every node, declared or registered, by name."""
    return reg.list_views()


@router.get("/{node_id}", response_model=NodeDetail, dependencies=[Admin], responses={404: {"model": ErrorOut}})
def get_node(node_id: NodeId, reg: RegistryDep) -> NodeDetail:
    """One node with its full facts and its most recent events."""
    try:
        return reg.detail(node_id)
    except NotFound:
        raise _missing(node_id) from None


def _drain(node_id: str, reg, drained: bool) -> NodeOut:
    try:
        return reg.view(reg.set_drained(node_id, drained))
    except NotFound:
        raise _missing(node_id) from None


@router.post("/{node_id}/drain", response_model=NodeOut, dependencies=[Admin], responses={404: {"model": ErrorOut}})
def drain(node_id: NodeId, reg: RegistryDep) -> NodeOut:
    """Place no new work on the node; running work continues."""
    return _drain(node_id, reg, True)


@router.post("/{node_id}/undrain", response_model=NodeOut, dependencies=[Admin],
             responses={404: {"model": ErrorOut}})
def undrain(node_id: NodeId, reg: RegistryDep) -> NodeOut:
    """Make the node schedulable again."""
    return _drain(node_id, reg, False)


@router.delete("/{node_id}", status_code=204, dependencies=[Admin], responses={404: {"model": ErrorOut}})
def delete_node(node_id: NodeId, reg: RegistryDep) -> None:
    """Forget the node and revoke its token. A still-running agent will register again."""
    try:
        reg.delete(node_id)
    except NotFound:
        raise _missing(node_id) from None
