"""/nodes: registration and heartbeats from agents, listing and admin actions for people."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from coordinator.api.deps import (
    Admin,
    JoinGrant,
    NodeAuth,
    NodeId,
    RegisterRate,
    RegistryDep,
    SurveyorDep,
)
from coordinator.registry import Conflict, Forbidden, NotFound
from coordinator.tokens import TokenError
from shared.schemas import (
    ErrorOut,
    HeartbeatRequest,
    HeartbeatResponse,
    NodeDetail,
    NodeOut,
    OrdersRequest,
    RankReport,
    RankReportAck,
    RegisterRequest,
    RegisterResponse,
)

router = APIRouter(prefix="/nodes", tags=["nodes"],
                   responses={400: {"model": ErrorOut}, 401: {"model": ErrorOut}, 403: {"model": ErrorOut},
                              413: {"model": ErrorOut}})


def _missing(node_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no node with id {node_id!r}")


@router.post("/register", response_model=RegisterResponse, dependencies=[RegisterRate],
             responses={409: {"model": ErrorOut}, 429: {"model": ErrorOut}})
def register(body: RegisterRequest, reg: RegistryDep, request: Request, grant: JoinGrant) -> RegisterResponse:
    """Enrol a node with its facts and its node key. The same name with the same node key keeps
    its node id; another key under an enrolled name is 409 until an admin deletes the node.
    Every registration issues a fresh node token and revokes the previous one. A node enrolled
    with an unbound join token (not auto-approve) is pending until approved."""
    try:
        row, token, _ = reg.register(body, grant)
    except Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except Forbidden as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    except TokenError as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
    request.app.state.wake_scheduler()
    return RegisterResponse(node_id=row.id, node_token=token, heartbeat_interval_s=reg.heartbeat_interval_s,
                            admitted=row.admitted)


@router.put("/{node_id}/heartbeat", response_model=HeartbeatResponse, dependencies=[NodeAuth],
            responses={404: {"model": ErrorOut}})
async def heartbeat(node_id: NodeId, body: HeartbeatRequest, reg: RegistryDep, request: Request) -> HeartbeatResponse:
    """Say the node is alive, with fresh facts (full or the cheap part). Liveness only: rank
    states go up in reports and orders come down the long-poll, so the answer carries no orders."""
    try:
        # Most beats change nothing but the time and are taken in memory, here on the event loop;
        # one that must write (new facts, an unknown node's first beat) goes to the thread pool.
        done = reg.heartbeat(node_id, body, in_memory=True)
        if done is None:
            done = await run_in_threadpool(reg.heartbeat, node_id, body)
    except NotFound:
        raise _missing(node_id) from None
    came_back, restarted = done
    if restarted and "ranks" in body.model_fields_set:
        # An agent of an earlier version lists its ranks here: after its restart, this is the
        # one place it says which ranks it still has.
        await run_in_threadpool(request.app.state.jobs.report, node_id, RankReport(ranks=body.ranks), complete=True)
    if came_back:
        request.app.state.wake_scheduler()
    return HeartbeatResponse(heartbeat_interval_s=reg.heartbeat_interval_s)


@router.post("/{node_id}/orders", response_model=HeartbeatResponse, dependencies=[NodeAuth],
             responses={404: {"model": ErrorOut}})
async def orders(node_id: NodeId, body: OrdersRequest, reg: RegistryDep, request: Request) -> HeartbeatResponse:
    """Long-poll for work, the one way orders come down: answers at once when there are ranks to
    start or jobs to stop, otherwise as soon as there are, or after `wait_s`. This is how a job
    starts within moments of its nodes being free rather than a heartbeat later."""
    if not reg.store.has_node(node_id):
        raise _missing(node_id)
    jobs = request.app.state.jobs
    wake = request.app.state.node_orders.subscribe(node_id)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + body.wait_s
        while True:
            wake.clear()
            start, stop, dump = await run_in_threadpool(jobs.orders_for, node_id, body.ranks)
            left = deadline - loop.time()
            if start or stop or dump or left <= 0 or request.app.state.node_orders.closed or \
                    await request.is_disconnected():
                return HeartbeatResponse(heartbeat_interval_s=reg.heartbeat_interval_s, start=start, stop=stop,
                                         dump_stacks=dump)
            # Not asyncio.wait_for: on Python 3.11 it can swallow a cancel that lands with a wake-up.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 5.0)):
                    await wake.wait()
    finally:
        request.app.state.node_orders.unsubscribe(node_id, wake)


@router.post("/{node_id}/report", response_model=RankReportAck, dependencies=[NodeAuth],
             responses={404: {"model": ErrorOut}})
def report(node_id: NodeId, body: RankReport, reg: RegistryDep, request: Request) -> RankReportAck:
    """The one way rank states and output (numbered lines) go up from the agent that runs them."""
    if not reg.store.has_node(node_id):
        raise _missing(node_id)
    acked = request.app.state.jobs.report(node_id, body, complete=body.complete)
    return RankReportAck(acked=acked)


@router.get("", response_model=list[NodeOut], dependencies=[Admin])
def list_nodes(surveys: SurveyorDep) -> Response:
    """Every node, declared or registered, by name, each with the problems found (and their fixes)."""
    # The bytes FastAPI would make of list[NodeOut], but each node's kept while it is unchanged
    # (coordinator/jsonitems.py): 1,000 nodes re-validated and re-serialised cost more than the rest.
    return Response(surveys.nodes_json(), media_type="application/json")


@router.get("/{node_id}", response_model=NodeDetail, dependencies=[Admin], responses={404: {"model": ErrorOut}})
def get_node(node_id: NodeId, reg: RegistryDep, surveys: SurveyorDep) -> NodeDetail:
    """One node with its full facts and its most recent events."""
    try:
        detail = reg.detail(node_id)
    except NotFound:
        raise _missing(node_id) from None
    mine = next((n for n in surveys.survey().nodes if n.id == node_id), None)
    return detail.model_copy(update={"problems": mine.problems if mine else []})


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
def undrain(node_id: NodeId, reg: RegistryDep, request: Request) -> NodeOut:
    """Make the node schedulable again."""
    out = _drain(node_id, reg, False)
    request.app.state.wake_scheduler()
    return out


@router.post("/{node_id}/approve", response_model=NodeOut, dependencies=[Admin],
             responses={404: {"model": ErrorOut}})
def approve(node_id: NodeId, reg: RegistryDep, request: Request) -> NodeOut:
    """Admit a node that enrolled with an unbound join token: it becomes schedulable. Idempotent."""
    try:
        out = reg.view(reg.approve(node_id))
    except NotFound:
        raise _missing(node_id) from None
    request.app.state.wake_scheduler()
    return out


@router.delete("/{node_id}", status_code=204, dependencies=[Admin], responses={404: {"model": ErrorOut}})
def delete_node(node_id: NodeId, reg: RegistryDep) -> None:
    """Forget the node and revoke its token. A still-running agent will register again."""
    try:
        reg.delete(node_id)
    except NotFound:
        raise _missing(node_id) from None
