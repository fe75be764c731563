"""The coordinator daemon: builds the FastAPI app around one Store and one Registry, and serves it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from coordinator.api import artifacts as artifacts_api, cluster, files as files_api, jobs as jobs_api, nodes
from coordinator.api import tokens as tokens_api
from coordinator.artifacts import ArtifactStore
from coordinator.api.deps import Admin
from coordinator.browser import HostAllowlist, SecurityHeaders
from coordinator.dashboard import routes as dashboard
from coordinator.files import FileStore
from coordinator.joblogs import JobLogs
from coordinator.jobs import Jobs
from coordinator.launchers.mpi import MpiLauncher
from coordinator.metrics import Metrics
from coordinator.notify import Notifier
from coordinator.ratelimit import ApiLimits
from coordinator.auth import admin_token_path, join_token_path, load_keyring, write_join_string
from coordinator.netnames import served_names
from coordinator.tls import ensure_server_tls
from coordinator.tokens import JoinTokens
from coordinator.problems import Surveyor
from coordinator.registry import Registry
from coordinator.settings import Settings
from shared.tlspin import is_loopback
from coordinator.store import Store
from shared import __version__
from shared.cluster_config import load_cluster_config

log = logging.getLogger("jupiter.coordinator")
# The scheduler loop's clock: it ticks at the jobs' deadlines, but at least this often (a safety
# net: a wall clock set back, a deadline no event announced) and, after a timeout fired, no
# sooner than TICK_EARLIEST_S (its effects are written by then).
TICK_AT_LEAST_S = 10.0
TICK_EARLIEST_S = 0.05

MAX_BODY_BYTES = 1 << 20  # 1 MiB: a full facts report is a few KiB


class BodyLimit:
    """Refuse request bodies over the limit with 413 before anything reads them. Paths under
    `exempt` or matching `exempt_re` (uploads) bound their bodies themselves."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES, exempt: tuple[str, ...] = (),
                 exempt_re: re.Pattern[str] | None = None):
        self.app, self.limit, self.exempt, self.exempt_re = app, limit, exempt, exempt_re

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith(self.exempt) or (
                self.exempt_re is not None and self.exempt_re.match(scope["path"])):
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = True
                if too_big:
                    return await _send_json(send, 413, f"request body over {self.limit} bytes")
        seen = 0

        async def limited_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)
            return msg

        try:
            return await self.app(scope, limited_receive, send)
        except _TooLarge:
            return await _send_json(send, 413, f"request body over {self.limit} bytes")


class _TooLarge(StarletteHTTPException):
    """Raised while the body streams in; an HTTPException so FastAPI's body parsing passes it on
    as the 413 it is, rather than turning it into a 400 "error parsing the body"."""

    def __init__(self, limit: int = MAX_BODY_BYTES):
        super().__init__(413, f"request body over {limit} bytes")


async def _send_json(send, status: int, detail: str) -> None:
    body = JSONResponse({"detail": detail}).body
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _validation_detail(exc: RequestValidationError) -> list[dict]:
    # FastAPI's default echoes the whole input back; keep location and message, which name the field.
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()]


def create_app(settings: Settings) -> FastAPI:
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.home.chmod(0o700)  # tokens and the database live here
    config = load_cluster_config(settings.config_path)
    keyring = load_keyring(settings)
    # The CA exists even when serving plain HTTP on loopback: join.token carries its pin, so the
    # same string works the day the leader is moved off loopback.
    tls = ensure_server_tls(settings.home, served_names(settings.host, settings.allowed_hosts),
                            cert=settings.tls_cert, key=settings.tls_key)
    write_join_string(settings.home, keyring, tls.pin)
    store = Store(settings.database_url(), events_per_node=settings.events_per_node)
    registry = Registry(store, config, heartbeat_interval_s=settings.heartbeat_interval_s,
                        down_after_s=settings.down_after_s)
    jobs = Jobs(store, registry, JobLogs(settings.home / "jobs", settings.job_log_quota_bytes), default_backend=config.backend)
    node_orders, job_events = Notifier(), Notifier()
    jobs.on_node_orders = node_orders.notify
    files = FileStore(settings.home / "files", settings.files_max_bytes)
    jobs.has_file = files.has
    mpi = MpiLauncher(jobs, registry, settings.home / "mpi")
    jobs.launchers["mpi"] = mpi
    registry.busy_of = jobs.busy_nodes
    wake = asyncio.Event()
    loop_ref: dict = {}

    def wake_scheduler() -> None:  # callable from any thread
        lp = loop_ref.get("loop")
        if lp is not None and not lp.is_closed():
            lp.call_soon_threadsafe(wake.set)

    jobs.on_change = job_events.notify
    jobs.wake_scheduler = wake_scheduler  # a job that ended may have freed nodes, one that runs has deadlines

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        loop_ref["loop"] = loop
        node_orders.bind(loop)
        job_events.bind(loop)
        await asyncio.to_thread(jobs.recover_logs)  # before anyone resends: no line logged twice
        await asyncio.to_thread(mpi.resume)  # re-attach to mpirun launches from before a restart
        tasks = [asyncio.create_task(_liveness_loop(registry, jobs, liveness_every(settings))),
                 asyncio.create_task(_scheduler_loop(jobs, wake))]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            mpi.detach()
            store.flush_heartbeats()
            store.close()

    # A leader on a Thunderbolt-only network has no CDN to fetch Swagger UI from: serve it ourselves.
    app = FastAPIOffline(
        title="Jupiter coordinator",
        version=__version__,
        description="Nodes report in; jobs go out. Every route but /healthz and the docs needs "
                    "`Authorization: Bearer <token>` (admin, join or node token).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.config = config
    app.state.keyring = keyring
    app.state.limits = ApiLimits(register_burst=settings.register_burst,
                                 auth_failures_burst=settings.auth_failures_burst,
                                 limit_loopback=settings.limit_loopback)
    app.state.tls = tls
    app.state.join_tokens = JoinTokens(store)
    app.state.store = store
    app.state.registry = registry
    app.state.surveyor = Surveyor(registry)
    app.state.jobs = jobs
    app.state.files = files
    app.state.artifacts = ArtifactStore(settings.home / "artifacts", settings.artifacts_max_bytes_per_job)
    app.state.node_orders = node_orders
    app.state.job_events = job_events
    app.state.wake_scheduler = wake_scheduler
    app.include_router(cluster.router)
    app.include_router(nodes.router)
    app.include_router(jobs_api.router)
    app.include_router(tokens_api.router)
    app.include_router(tokens_api.ca_router)
    app.include_router(files_api.router)
    app.include_router(artifacts_api.router)
    app.include_router(dashboard.router)
    metrics = Metrics(registry, jobs)
    app.state.metrics = metrics

    @app.get("/metrics", tags=["cluster"], dependencies=[Admin], response_class=PlainTextResponse)
    def prometheus_metrics() -> PlainTextResponse:
        """Prometheus text format: nodes and jobs by status, heartbeat age per node, job progress
        and loss, API request counts and latencies."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(metrics.prom), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(_request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": _validation_detail(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(_request: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _on_crash(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; see the coordinator log"}, status_code=500)

    app.add_middleware(BodyLimit, exempt=("/files/",), exempt_re=artifacts_api.UPLOAD_PATH)
    # A request for another host name (DNS rebinding) reaches nothing but this refusal.
    app.add_middleware(HostAllowlist, names=lambda: served_names(settings.host, settings.allowed_hosts))
    app.add_middleware(SecurityHeaders)
    app.add_middleware(lambda inner: metrics.middleware(inner))
    return app


def liveness_every(settings: Settings) -> float:
    """How often silent nodes are looked for: liveness_check_s, or a tenth of down_after_s when
    that is longer (at most 5 s). A node is then marked down within 10 % of down_after_s of its
    grace running out, and a coordinator with a long grace does not query its nodes every second
    on the cores the leader's ranks train on."""
    return max(settings.liveness_check_s, min(5.0, settings.down_after_s / 10))


async def _liveness_loop(registry: Registry, jobs: Jobs, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            down = await asyncio.to_thread(registry.sweep)
            for nid in down:
                log.info("node %s is down", nid)
                await asyncio.to_thread(jobs.node_down, nid, registry.down_after_s)
        except Exception:  # a locked or vanished DB must not end liveness for good
            log.exception("liveness sweep failed")


async def _scheduler_loop(jobs: Jobs, wake: asyncio.Event) -> None:
    """Place pending jobs the moment something changes (a submit, a job ending, a node joining),
    and tick the jobs' clocks when their next deadline comes (Jobs.tick says when): every second
    only while a job waits to be placed, and never less than every TICK_AT_LEAST_S."""
    delay: float | None = 0.0
    while True:
        # Not asyncio.wait_for: on Python 3.11 it swallows a cancel that lands as the wake-up comes,
        # and the loop then outlived the lifespan that cancelled it (the coordinator never exited).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await wake.wait()
        wake.clear()
        try:
            await asyncio.to_thread(jobs.schedule)
            due = await asyncio.to_thread(jobs.tick)
        except Exception:
            log.exception("scheduling failed")
            due = None
        now = time.time()
        # a little past the deadline: the rules fire strictly after it
        delay = TICK_AT_LEAST_S if due is None else min(TICK_AT_LEAST_S, max(TICK_EARLIEST_S, due - now + 0.01))


class RefusedToStart(RuntimeError):
    pass


def check_bind(settings: Settings) -> None:
    """Never listen beyond loopback unless tokens were configured beforehand (docs/api.md#transport)."""
    if is_loopback(settings.host):
        return
    configured = (settings.token is not None or admin_token_path(settings.home).exists()) and \
                 (settings.join_token is not None or join_token_path(settings.home).exists())
    if not configured:
        raise RefusedToStart(
            f"refusing to listen on {settings.host} without tokens: set JUPITER_TOKEN and JUPITER_JOIN_TOKEN, "
            f"or start once on 127.0.0.1 so they are generated into {settings.home}")


def check_transport(settings: Settings) -> None:
    """Off loopback every token and every job's env would cross the network: HTTPS only."""
    if settings.tls is False and not is_loopback(settings.host):
        raise RefusedToStart(f"refusing plain HTTP on {settings.host}: off loopback the coordinator serves only "
                             f"HTTPS (drop --no-tls; it makes its own certificate, or give --tls-cert/--tls-key)")


def serve(settings: Settings) -> None:
    from coordinator import httpserver

    check_bind(settings)
    check_transport(settings)
    app = create_app(settings)
    tls = app.state.tls
    log.info("coordinator on %s, database %s", settings.url(), settings.database_url())
    if settings.serves_tls():
        log.info("CA SHA-256 %s; agents join with the string in %s (or `jupiter token create`)",
                 tls.pin, join_token_path(settings.home))
    ssl = {"ssl_certfile": str(tls.certfile), "ssl_keyfile": str(tls.keyfile)} if settings.serves_tls() else {}
    # keep-alive well past the heartbeat interval: at 5 s both, an idle connection could close mid-request
    httpserver.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False,
                   timeout_keep_alive=max(75, int(3 * settings.heartbeat_interval_s)),
                   header_timeout_s=settings.header_timeout_s, max_connections=settings.max_connections,
                   on_exit=app.state.node_orders.close, **ssl)
