"""A small HTTP client for the coordinator, shaped like httpx: one object, one method per call.

The CLI, the agents, the tests and the benchmarks all talk to the coordinator through this.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import httpx
from httpx_sse import connect_sse

from shared import settings
from shared.apierror import ApiError, format_detail, from_answer, retry_after  # noqa: F401 (ApiError, format_detail: imported from here)
from shared.paths import read_secret
from shared.schemas import (
    ArtifactOut,
    ClusterSummary,
    HeartbeatRequest,
    HeartbeatResponse,
    JobDetail,
    JobOut,
    JobSpec,
    NodeDetail,
    NodeOut,
    OrdersRequest,
    RankReport,
    RankReportAck,
    RegisterRequest,
    RegisterResponse,
    TokenCreate,
    TokenOut,
)
from shared.tlspin import context_for, fetch_pinned_ca, is_https


def _retry_after(resp: httpx.Response) -> float | None:
    return retry_after(resp.headers.get("retry-after"))


def default_url() -> str:
    return settings.current().url


def default_admin_token() -> str | None:
    """JUPITER_TOKEN, else the token the coordinator generated on this machine (the leader)."""
    given = settings.current()
    return settings.secret(given.token) or read_secret(given.home / "admin.token")


_pinned: dict[tuple[str, str], ssl.SSLContext] = {}


def default_verify(url: str) -> ssl.SSLContext | bool:
    """How a client on this machine trusts an https coordinator: the CA file in JUPITER_CA_FILE,
    else the CA whose SHA-256 is JUPITER_CA_SHA256 (fetched and checked before any token is
    sent), else the leader's own CA in $JUPITER_HOME/tls/ca.pem, else the system's trust store
    (a coordinator started with a certificate from a public CA)."""
    if not is_https(url):
        return True
    given = settings.current()
    ca_file = given.ca_file
    if ca_file:
        try:
            return context_for(Path(ca_file).expanduser().read_bytes())
        except (OSError, ValueError, ssl.SSLError) as exc:
            raise TrustError(f"JUPITER_CA_FILE {ca_file}: not a readable PEM certificate ({exc})") from None
    pin = given.ca_sha256
    if pin:
        key = (url, pin)
        if key not in _pinned:
            try:
                _pinned[key] = context_for(fetch_pinned_ca(url, pin))
            except ValueError as exc:
                raise TrustError(f"JUPITER_CA_SHA256: {exc}") from None
        return _pinned[key]
    own = given.home / "tls" / "ca.pem"
    if own.is_file():
        try:
            return context_for(own.read_bytes())
        except (OSError, ValueError, ssl.SSLError):
            pass
    return True


class TrustError(Exception):
    """The client was told how to trust the coordinator, and that cannot be done."""


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None, verify: ssl.SSLContext | bool | None = None):
        self.url = (url or default_url()).rstrip("/")
        self.token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if verify is None:
            verify = default_verify(self.url)
        # Keep idle connections for a minute (the coordinator keeps them 75 s): httpx's default of
        # 5 s equals the heartbeat interval, so every beat paid a new connection and TLS handshake.
        limits = httpx.Limits(max_connections=10, max_keepalive_connections=5, keepalive_expiry=60.0)
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport,
                                  verify=verify, limits=limits)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, method: str, path: str, **kw) -> httpx.Response:
        resp = self._http.request(method, path, **kw)
        if resp.status_code >= 400:
            raise from_answer(resp.status_code, resp.content, resp.headers.get("retry-after"))
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

    def orders(self, node_id: str, req: OrdersRequest) -> HeartbeatResponse:
        return HeartbeatResponse.model_validate(
            self.request("POST", f"/nodes/{node_id}/orders", content=req.model_dump_json(),
                         headers={"content-type": "application/json"}, timeout=req.wait_s + 15).json())

    def report(self, node_id: str, req: RankReport) -> RankReportAck:
        return RankReportAck.model_validate(
            self.request("POST", f"/nodes/{node_id}/report", content=req.model_dump_json(),
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

    def approve(self, node_id: str) -> NodeOut:
        return NodeOut.model_validate(self.request("POST", f"/nodes/{node_id}/approve").json())

    def create_token(self, req: TokenCreate) -> TokenOut:
        return TokenOut.model_validate(self.request("POST", "/tokens", content=req.model_dump_json(),
                                                    headers={"content-type": "application/json"}).json())

    def tokens(self) -> list[TokenOut]:
        return [TokenOut.model_validate(t) for t in self.request("GET", "/tokens").json()]

    def revoke_token(self, token_id: str) -> TokenOut:
        return TokenOut.model_validate(self.request("DELETE", f"/tokens/{token_id}").json())

    def cluster(self) -> ClusterSummary:
        return ClusterSummary.model_validate(self.request("GET", "/cluster").json())

    # -------------------------------------------------------------- jobs
    def submit(self, spec: JobSpec | dict) -> JobOut:
        body = spec.model_dump(mode="json", exclude_none=True) if isinstance(spec, JobSpec) else spec
        return JobOut.model_validate(self.request("POST", "/jobs", json=body).json())

    def jobs(self, status: str | None = None) -> list[JobOut]:
        params = {"status": status} if status else {}
        return [JobOut.model_validate(j) for j in self.request("GET", "/jobs", params=params).json()]

    def job(self, job_id: str) -> JobDetail:
        return JobDetail.model_validate(self.request("GET", f"/jobs/{job_id}").json())

    def cancel(self, job_id: str) -> JobOut:
        return JobOut.model_validate(self.request("POST", f"/jobs/{job_id}/cancel").json())

    def logs(self, job_id: str, offset: int = 0) -> tuple[str, int]:
        r = self.request("GET", f"/jobs/{job_id}/logs", params={"offset": offset})
        return r.text, int(r.headers.get("X-Next-Offset", offset))

    def hostfile(self, job_id: str, fmt: str) -> str:
        return self.request("GET", f"/jobs/{job_id}/hostfile", params={"format": fmt}).text

    def events(self, job_id: str):
        """Yield (event, data) from the job's Server-Sent Events stream until it ends."""
        # No read timeout: a stream is as quiet as its job between events (a pending job's for
        # hours), and a coordinator from before the pings sends nothing at all meanwhile.
        with connect_sse(self._http, "GET", f"/jobs/{job_id}/events",
                         timeout=httpx.Timeout(10, read=None)) as source:
            resp = source.response
            if resp.status_code >= 400:
                resp.read()
                raise from_answer(resp.status_code, resp.content, resp.headers.get("retry-after"))
            for sse in source.iter_sse():
                yield sse.event, json.loads(sse.data) if sse.data else None
                if sse.event == "end":
                    return

    # -------------------------------------------------------------- files (a job's workdir)
    def has_file(self, sha256: str) -> bool:
        """Whether the coordinator holds the file (HEAD /files/{sha256}: 200 or 404)."""
        resp = self._http.request("HEAD", f"/files/{sha256}")
        if resp.status_code == 404:
            return False
        if resp.status_code >= 400:  # a HEAD answer has no body to read a detail from
            raise ApiError(resp.status_code, f"HEAD /files/{sha256}: {resp.reason_phrase}", _retry_after(resp))
        return True

    def upload_file(self, sha256: str, path: Path, progress=None) -> bool:
        """Stream the file at `path` to PUT /files/{sha256}, never holding it whole; True when the
        coordinator stored it now, False when it had it already. `progress(n)` is called with the
        size of each chunk as it goes."""
        size = Path(path).stat().st_size

        def chunks():
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    yield block
                    if progress is not None:
                        progress(len(block))

        # Checking a large archive takes the coordinator a while after the last byte.
        resp = self.request("PUT", f"/files/{sha256}", content=chunks(),
                            headers={"content-type": "application/octet-stream", "content-length": str(size)},
                            timeout=httpx.Timeout(self._http.timeout.connect, read=600.0, write=60.0, pool=10.0))
        return resp.status_code == 201

    # -------------------------------------------------------------- artifacts (what rank 0 left)
    def artifacts(self, job_id: str) -> list[ArtifactOut]:
        return [ArtifactOut.model_validate(a) for a in self.request("GET", f"/jobs/{job_id}/artifacts").json()]

    def download_artifact(self, job_id: str, path: str, dest: Path | str) -> Path:
        """Stream one artifact into the file `dest` (its folders made), never holding it whole:
        written beside it first and renamed once whole. Returns `dest`."""
        import os
        import secrets
        from urllib.parse import quote

        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}.{secrets.token_hex(4)}.part"
        try:
            with self._http.stream("GET", f"/jobs/{job_id}/artifacts/{quote(path, safe='/')}",
                                   timeout=httpx.Timeout(self._http.timeout.connect, read=60.0)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise from_answer(resp.status_code, resp.content, resp.headers.get("retry-after"))
                with open(tmp, "xb") as f:
                    for block in resp.iter_bytes(1 << 20):
                        f.write(block)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest
