"""Request dependencies: which token is speaking, and the shared objects routes need."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status

from coordinator.auth import Keyring
from coordinator.registry import Registry

NODE_ID_PATTERN = r"^n-[0-9a-f]{10}$"
NodeId = Annotated[str, Path(pattern=NODE_ID_PATTERN, description="A node id as returned by register.",
                             examples=["n-3f9a1c2b7d"])]


def registry(request: Request) -> Registry:
    return request.app.state.registry


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token (Authorization: Bearer <token>)",
                            headers={"WWW-Authenticate": "Bearer"})
    return token.strip()


def _kind(request: Request, token: str) -> tuple[str, str | None]:
    keys: Keyring = request.app.state.keyring
    if keys.is_admin(token):
        return "admin", None
    if keys.is_join(token):
        return "join", None
    node = request.app.state.registry.node_for_token(token)
    if node is not None:
        return "node", node
    raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown or revoked token",
                        headers={"WWW-Authenticate": "Bearer"})


def require_admin(request: Request) -> None:
    kind, _ = _kind(request, _bearer(request))
    if kind != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"a {kind} token may not do this; use the admin token")


def require_join(request: Request) -> None:
    kind, _ = _kind(request, _bearer(request))
    if kind not in ("admin", "join"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "registering needs the join token")


def require_node(request: Request, node_id: NodeId) -> None:
    kind, node = _kind(request, _bearer(request))
    if kind == "admin":
        return
    if kind != "node":
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"a {kind} token may not act for a node; use its node token")
    if node != node_id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this node token belongs to another node")


Admin = Depends(require_admin)
Join = Depends(require_join)
NodeAuth = Depends(require_node)
RegistryDep = Annotated[Registry, Depends(registry)]
