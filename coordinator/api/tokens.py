"""/tokens: join tokens made, listed and revoked while the coordinator runs; and /ca.pem, the
certificate an agent pins before it sends any secret."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Path, Request, status
from fastapi.responses import Response

from coordinator.api.deps import Admin
from coordinator.tokens import JoinTokens, join_string, token_view
from shared.schemas import ErrorOut, TokenCreate, TokenOut

router = APIRouter(tags=["tokens"], responses={400: {"model": ErrorOut}, 401: {"model": ErrorOut},
                                               403: {"model": ErrorOut}, 413: {"model": ErrorOut}})

TokenId = Path(pattern=r"^[a-z0-9]{6}$", description="A join token's id.", examples=["k3x9q2"])


def _tokens(request: Request) -> JoinTokens:
    return request.app.state.join_tokens


@router.post("/tokens", response_model=TokenOut, status_code=201, dependencies=[Admin])
def create_token(body: TokenCreate, request: Request) -> TokenOut:
    """A new join token. The answer's `token` is the join string (CA pin, id, secret) an agent
    needs beside the coordinator's URL; it is shown here once and never again."""
    row, secret = _tokens(request).create(ttl_s=body.ttl_s, uses=body.uses, node_name=body.node,
                                          auto_approve=body.auto_approve, description=body.description)
    return token_view(row, join_string=join_string(request.app.state.tls.pin, row.id, secret))


@router.get("/tokens", response_model=list[TokenOut], dependencies=[Admin])
def list_tokens(request: Request) -> list[TokenOut]:
    """Every join token made with POST /tokens, newest first, with its uses and state; never a secret."""
    return [token_view(r) for r in _tokens(request).list()]


@router.delete("/tokens/{token_id}", response_model=TokenOut, dependencies=[Admin],
               responses={404: {"model": ErrorOut}})
def revoke_token(request: Request, token_id: str = TokenId) -> TokenOut:
    """Revoke a join token at once; nodes it enrolled keep their own node tokens. Idempotent."""
    row = _tokens(request).revoke(token_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no join token with id {token_id!r}")
    return token_view(row)


ca_router = APIRouter(tags=["cluster"])  # open, and not a token route


@ca_router.get("/ca.pem", response_class=Response,
            responses={200: {"content": {"application/x-pem-file": {}}}})
def ca_certificate(request: Request) -> Response:
    """The certificate clients trust this coordinator by (its own CA). Open: it is public, and an
    agent fetches it before it trusts the connection, then checks its SHA-256 against the pin in
    its join string before sending anything secret."""
    return Response(request.app.state.tls.anchor_pem, media_type="application/x-pem-file",
                    headers={"X-Jupiter-CA-SHA256": request.app.state.tls.pin})
