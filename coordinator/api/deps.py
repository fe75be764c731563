"""Request dependencies: which token is speaking, and the shared objects routes need."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from coordinator.auth import Keyring
from coordinator.ratelimit import ApiLimits, retry_after
from coordinator.problems import Surveyor
from coordinator.registry import Registry
from coordinator.tokens import ADMIN_GRANT, CLUSTER_GRANT, Grant, TokenError

NODE_ID_PATTERN = r"^n-[0-9a-f]{10}$"
NodeId = Annotated[str, Path(pattern=NODE_ID_PATTERN, description="A node id as returned by register.",
                             examples=["n-3f9a1c2b7d"])]


# The dependencies below are `async def` although nothing in them awaits: FastAPI runs a plain
# `def` dependency in the thread pool, and those two hops cost a heartbeat more than its own work
# (measured: 0.23 ms of 0.71 ms). Their work is in-memory digest checks; only a `id:secret` join
# token reaches the database, by primary key, and wrong ones are rate-limited.


async def registry(request: Request) -> Registry:
    return request.app.state.registry


async def surveyor(request: Request) -> Surveyor:
    return request.app.state.surveyor


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token (Authorization: Bearer <token>)",
                            headers={"WWW-Authenticate": "Bearer"})
    return token.strip()


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _unknown_token(request: Request, detail: str) -> HTTPException:
    """A wrong token: counted against the client's address (see _kind)."""
    limits: ApiLimits | None = getattr(request.app.state, "limits", None)
    if limits is not None:
        limits.auth_failed(_client(request))
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


def _kind(request: Request, token: str) -> tuple[str, str | Grant | None]:
    """Who speaks: ("admin", None), ("join", Grant) or ("node", node id). Cheapest checks first:
    heartbeats (node tokens) never reach the join-token table. A client address that presented
    too many wrong tokens is answered 429 before any token is looked at, the right one included."""
    limits: ApiLimits | None = getattr(request.app.state, "limits", None)
    wait = limits.auth_wait(_client(request)) if limits is not None else 0.0
    if wait:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                            "too many wrong tokens from this address; try again later",
                            headers={"Retry-After": retry_after(wait)})
    keys: Keyring = request.app.state.keyring
    if keys.is_admin(token):
        return "admin", None
    if keys.is_join(token):
        return "join", CLUSTER_GRANT
    node = request.app.state.registry.node_for_token(token)
    if node is not None:
        return "node", node
    try:
        grant = request.app.state.join_tokens.grant_for(token)
    except TokenError as exc:
        raise _unknown_token(request, str(exc)) from None
    if grant is not None:
        return "join", grant
    raise _unknown_token(request, "unknown or revoked token")


async def require_admin(request: Request) -> None:
    kind, _ = _kind(request, _bearer(request))
    if kind != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"a {kind} token may not do this; use the admin token")


async def require_join(request: Request) -> Grant:
    """The grant of a join token (or of the admin token, which may enrol too)."""
    kind, who = _kind(request, _bearer(request))
    if kind == "admin":
        return ADMIN_GRANT
    if kind != "join":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "registering needs a join token")
    return who


async def require_node(request: Request, node_id: NodeId) -> None:
    kind, node = _kind(request, _bearer(request))
    if kind == "admin":
        return
    if kind != "node":
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"a {kind} token may not act for a node; use its node token")
    if node != node_id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this node token belongs to another node")


def limit_registrations(request: Request, _grant: Annotated[Grant, Depends(require_join)]) -> None:
    """Registrations per client address and overall (after the token is checked, so nobody
    without a join token uses up anyone's allowance): 429 with Retry-After beyond them."""
    limits: ApiLimits | None = getattr(request.app.state, "limits", None)
    wait = limits.register_wait(_client(request)) if limits is not None else 0.0
    if wait:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, "too many registrations; try again later",
                            headers={"Retry-After": retry_after(wait)})


Admin = Depends(require_admin)
Join = Depends(require_join)
JoinGrant = Annotated[Grant, Depends(require_join)]
NodeAuth = Depends(require_node)
RegisterRate = Depends(limit_registrations)
RegistryDep = Annotated[Registry, Depends(registry)]
SurveyorDep = Annotated[Surveyor, Depends(surveyor)]


class LargeFileResponse(FileResponse):
    """A file streamed in 1 MiB pieces. Starlette's 64 KiB ones each cross to a worker thread and
    back: two agents fetching a 100 MB workdir took 4x as long as a plain loopback copy."""

    chunk_size = 1 << 20


async def write_body(request: Request, write) -> None:
    """Stream the request body into `write`, gathered to 1 MiB and called off the event loop:
    an upload is written as it arrives, never held whole, and the loop never waits on the disk."""
    batch = bytearray()
    async for chunk in request.stream():
        batch += chunk
        if len(batch) >= 1 << 20:
            await run_in_threadpool(write, bytes(batch))
            batch.clear()
    await run_in_threadpool(write, bytes(batch))
