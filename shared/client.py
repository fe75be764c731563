"""A small HTTP client for the coordinator, shaped like httpx: one object, one method per call.

The CLI, the agents, the tests and the benchmarks all talk to the coordinator through this.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from shared.paths import DEFAULT_URL, jupiter_home, read_secret
from shared.schemas import (
    ClusterSummary,
    HeartbeatRequest,
    HeartbeatResponse,
    NodeDetail,
    NodeOut,
    RegisterRequest,
    RegisterResponse,
)


class ApiError(Exception):
    """The coordinator answered with an error; `detail` is its own explanation."""

    def __init__(self, status: int, detail: Any):
        self.status, self.detail = status, detail
        super().__init__(f"HTTP {status}: {format_detail(detail)}")


def format_detail(detail: Any) -> str:
    if isinstance(detail, list):  # FastAPI validation errors: name the field
        parts = []
        for e in detail:
            if isinstance(e, dict):
                loc = ".".join(str(p) for p in e.get("loc", []) if p != "body")
                parts.append(f"{loc}: {e.get('msg', '')}" if loc else str(e.get("msg", "")))
            else:
                parts.append(str(e))
        return "; ".join(parts)
    return str(detail)


def default_url() -> str:
    return os.environ.get("JUPITER_URL") or DEFAULT_URL


def default_admin_token() -> str | None:
    """JUPITER_TOKEN, else the token the coordinator generated on this machine (the leader)."""
    return os.environ.get("JUPITER_TOKEN") or read_secret(jupiter_home() / "admin.token")


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None):
        self.url = (url or default_url()).rstrip("/")
        self.token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, method: str, path: str, **kw) -> httpx.Response:
        resp = self._http.request(method, path, **kw)
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise ApiError(resp.status_code, detail)
        return resp

    # -------------------------------------------------------------- open
    def health(self) -> dict:
        return self.request("GET", "/healthz").json()

    # -------------------------------------------------------------- agent side
    def register(self, req: RegisterRequest) -> RegisterResponse:
        return RegisterResponse.model_validate(
            self.request("POST", "/nodes/register", content=req.model_dump_json(),
                         headers={"content-type": "application/json"}).json())

    def heartbeat(self, node_id: str, req: HeartbeatRequest) -> HeartbeatResponse:
        return HeartbeatResponse.model_validate(
            self.request("PUT", f"/nodes/{node_id}/heartbeat", content=req.model_dump_json(exclude_none=True),
                         headers={"content-type": "application/json"}).json())

    # -------------------------------------------------------------- admin side
    def nodes(self) -> list[NodeOut]:
        return [NodeOut.model_validate(n) for n in self.request("GET", "/nodes").json()]

    def node(self, node_id: str) -> NodeDetail:
        return NodeDetail.model_validate(self.request("GET", f"/nodes/{node_id}").json())

    def drain(self, node_id: str) -> NodeOut:
        return NodeOut.model_validate(self.request("POST", f"/nodes/{node_id}/drain").json())

    def undrain(self, node_id: str) -> NodeOut:
        return NodeOut.model_validate(self.request("POST", f"/nodes/{node_id}/undrain").json())

    def delete_node(self, node_id: str) -> None:
        self.request("DELETE", f"/nodes/{node_id}")

    def cluster(self) -> ClusterSummary:
        return ClusterSummary.model_validate(self.request("GET", "/cluster").json())
