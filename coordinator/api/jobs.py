"""/jobs: submit, watch, read logs and hostfiles, cancel."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from coordinator.api.deps import Admin
from coordinator.jobs import JobNotFound, Jobs, SpecConflict, SpecRejected
from shared.progress import parse as parse_progress
from shared.schemas import TERMINAL, ErrorOut, JobDetail, JobOut, JobSpec, JobStatus

router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=[Admin],
                   responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}})

JobId = Annotated[str, Path(pattern=r"^j-[0-9a-f]{10}$", examples=["j-0a1b2c3d4e"])]

# Plain-text routes: their errors are still JSON, documented as such (no `model`, or FastAPI
# would file the error bodies under text/plain too).
_JSON_ERRORS = {c: {"description": "Error", "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/ErrorOut"}}}} for c in (401, 403, 404, 409)}


def jobs_dep(request: Request) -> Jobs:
    return request.app.state.jobs


JobsDep = Annotated[Jobs, Depends(jobs_dep)]


def _missing(job_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no job with id {job_id!r}")


@router.post("", status_code=201, response_model=JobOut,
             responses={200: {"model": JobOut, "description": "Already submitted under this idempotency_key"},
                        400: {"model": ErrorOut}, 409: {"model": ErrorOut}, 413: {"model": ErrorOut},
                        422: {"model": ErrorOut}})
def submit(spec: JobSpec, jobs: JobsDep, request: Request, response: Response) -> JobOut:
    """Submit a job: it waits `pending` until nodes are free, then starts at once."""
    try:
        row, created = jobs.submit(spec)
    except SpecRejected as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from None
    except SpecConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    if created:
        request.app.state.wake_scheduler()
    else:
        response.status_code = 200
    response.headers["Location"] = f"/jobs/{row.id}"
    return jobs.view(row)


@router.get("", response_model=list[JobOut])
def list_jobs(jobs: JobsDep, status_: Annotated[JobStatus | None, Query(alias="status")] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[JobOut]:
    """Jobs, newest first; `?status=running` filters. Without their loss histories (up to 2,000
    points each) and their env: `GET /jobs/{id}` has both."""
    return [jobs.view(r, history=False, env=False) for r in jobs.list_rows(status_, limit)]


@router.get("/{job_id}", response_model=JobDetail, responses={404: {"model": ErrorOut}})
def get_job(job_id: JobId, jobs: JobsDep) -> JobDetail:
    """One job with its ranks, latest progress and loss history."""
    try:
        return jobs.detail(job_id)
    except JobNotFound:
        raise _missing(job_id) from None


@router.get("/{job_id}/hostfile", response_class=PlainTextResponse, responses=_JSON_ERRORS)
def hostfile(job_id: JobId, jobs: JobsDep,
             format: Literal["openmpi", "mpich", "mlx", "ring"] = "openmpi") -> PlainTextResponse:
    """The hostfile the job was (or will be) launched with, in the format named."""
    try:
        text = jobs.hostfile(job_id, format)
    except JobNotFound:
        raise _missing(job_id) from None
    except (SpecRejected, ValueError) as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    media = "application/json" if format in ("mlx", "ring") else "text/plain"
    return PlainTextResponse(text, media_type=media)


@router.get("/{job_id}/logs", response_class=PlainTextResponse, responses=_JSON_ERRORS)
def logs(job_id: JobId, jobs: JobsDep, offset: Annotated[int, Query(ge=0, le=1 << 40)] = 0) -> PlainTextResponse:
    """Log text from byte `offset`, each line prefixed `[RANK] `; `X-Next-Offset` says where to go on."""
    if jobs.get_row(job_id) is None:
        raise _missing(job_id)
    data, nxt = jobs.logs.read(job_id, offset)
    return PlainTextResponse(data.decode("utf-8", "replace"), headers={"X-Next-Offset": str(nxt)})


@router.post("/{job_id}/cancel", response_model=JobOut, responses={404: {"model": ErrorOut}})
def cancel(job_id: JobId, jobs: JobsDep) -> JobOut:
    """Stop every rank (TERM, then KILL after a grace). Cancelling a finished job changes nothing."""
    try:
        return jobs.view(jobs.cancel(job_id))
    except JobNotFound:
        raise _missing(job_id) from None


# Lines end in a bare "\n", as this stream always did: a script that splits it on blank lines
# keeps working.
_SSE_SEP = "\n"
_RANK_PREFIX = re.compile(r"\[\d+\] ")  # how JobLogs starts a rank's line (a note's is "[jupiter] ")


def _sse(event: str, data) -> ServerSentEvent:
    # ASCII-only JSON on one line: no character in it can end an SSE line for any parser.
    return ServerSentEvent(json.dumps(data, separators=(",", ":")), event=event, sep=_SSE_SEP)


def _is_progress_line(line: str) -> bool:
    """A rank's well-formed progress line: it reaches the stream as a `progress` event, so it is not
    sent again as log text (docs/progress.md)."""
    m = _RANK_PREFIX.match(line)
    return m is not None and parse_progress(line[m.end():]) is not None


def _log_events(data: bytes, progress_lines: bool = False):
    """The stream's `log` events for a run of whole log lines, progress lines left out unless asked for."""
    for line in data.decode("utf-8", "replace").removesuffix("\n").split("\n"):
        if progress_lines or not _is_progress_line(line):
            # Split further exactly as this stream always split the log text (str.splitlines).
            for part in (line + "\n").splitlines():
                yield _sse("log", part)


@router.get("/{job_id}/events", responses={404: {"model": ErrorOut}, 200: {"content": {"text/event-stream": {}}}})
async def events(job_id: JobId, request: Request, jobs: JobsDep,
                 progress_lines: Annotated[bool, Query(description=(
                     "Also send ranks' progress lines as `log` lines, raw as stored (the dashboard's "
                     "'show progress lines'). By default progress reaches the client once, as `progress` "
                     "events."))] = False) -> EventSourceResponse:
    """Server-Sent Events: `status`, `progress` and `log` as they happen, then `end`, then the
    stream closes. Progress lines come as `progress` events only, not as `log` lines, unless
    `progress_lines` asks for them."""
    row = await run_in_threadpool(jobs.get_row, job_id)
    if row is None:
        raise _missing(job_id)
    notifier = request.app.state.job_events
    # Progress lines are left out of the log only where they became progress: a job whose
    # progress_format does not read Jupiter's lines shows them as the text they are.
    keep_progress_lines = progress_lines or (row.spec or {}).get("progress_format", "auto") not in ("auto", "jupiter")

    async def stream():
        # Subscribed in here, not in the route: a HEAD request never runs the generator, so its
        # finally would never drop a subscription made outside. EventSourceResponse cancels the
        # generator when the client leaves or the server shuts down (the finally runs then too).
        changes: asyncio.Event = notifier.subscribe(job_id)
        offset, last_status, last_progress = 0, None, None
        try:
            while True:
                changes.clear()
                job = await run_in_threadpool(jobs.view, await run_in_threadpool(jobs.get_row, job_id))
                if job.status != last_status:
                    last_status = job.status
                    yield _sse("status", {"status": job.status, "error": job.error, "exit_code": job.exit_code,
                                          "nodes": job.nodes, "pending_reason": job.pending_reason})
                if job.progress and job.progress != last_progress:
                    last_progress = job.progress
                    yield _sse("progress", job.progress)
                while True:
                    data, nxt = await run_in_threadpool(jobs.logs.read, job_id, offset, 64 * 1024)
                    if not data:
                        break
                    offset = nxt
                    for event in _log_events(data, keep_progress_lines):
                        yield event
                if job.status in TERMINAL:
                    yield _sse("end", {"status": job.status, "exit_code": job.exit_code, "error": job.error})
                    return
                # A missed wake-up costs at most a second. Not asyncio.wait_for: on Python 3.11 it
                # can swallow the cancel that ends this stream when it lands with a wake-up.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await changes.wait()
        finally:
            notifier.unsubscribe(job_id, changes)

    return EventSourceResponse(stream(), sep=_SSE_SEP, headers={"Cache-Control": "no-cache"})
