"""/jobs/{id}/artifacts: the files rank 0 left, uploaded by its agent, read by people and by the
agents of a restarted attempt (docs/jobs.md#artifacts)."""

from __future__ import annotations

import re
import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from starlette.requests import ClientDisconnect

from coordinator.api.deps import LargeFileResponse, _bearer, _kind, write_body  # deps.py owns the token checks
from coordinator.api.jobs import JobId
from coordinator.artifacts import ArtifactError, ArtifactStore, BadPath, PathConflict, QuotaExceeded
from coordinator.jobs import Jobs
from shared.schemas import ArtifactOut, ErrorOut
from shared.schemas.artifacts import ArtifactGlobs, path_problem
from shared.status import RankStatus

router = APIRouter(prefix="/jobs", tags=["artifacts"],
                   responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut}})

# The upload route streams its body to disk under the job's quota: app.py's 1 MiB limit skips it.
UPLOAD_PATH = re.compile(r"^/jobs/[^/]+/artifacts/.")
# Rank 0 of the attempt before the current one may still upload for this long after it ended: a
# rank stopped by a restart collects its files after the job has moved on.
RECENT_S = 600.0


async def caller(request: Request) -> tuple[str, object]:
    """("admin", None), ("node", node id), or ("join", grant)."""
    return _kind(request, _bearer(request))


Caller = Annotated[tuple[str, object], Depends(caller)]


def _missing(job_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no job with id {job_id!r}")


def _may_upload(jobs: Jobs, job_id: str, node_id: str, path: str | None = None) -> None:
    """Only the node running (or that just ran) rank 0 of the job's current or previous attempt,
    and only a file the job's globs name: what a node uploads is restored into other nodes' rank
    folders on a restart, so it must never be, say, the script the job runs."""
    job = jobs.get_row(job_id)
    if job is None:
        raise _missing(job_id)
    if path is not None:
        problem = path_problem(path)
        if problem:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"path: {problem}")
        globs = (job.spec or {}).get("artifacts") or []
        if not ArtifactGlobs(globs).match(path):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"{path!r} is not one of the job's artifacts "
                                                           f"(its globs: {', '.join(globs) or 'none'})")
    for attempt in (job.attempt, job.attempt - 1):
        if attempt < 0:
            continue
        rank0 = next((r for r in jobs.ranks(job_id, attempt) if r.rank == 0), None)
        if rank0 is None or rank0.node_id != node_id:
            continue
        if rank0.state != RankStatus.EXITED or rank0.ended_at is None or time.time() - rank0.ended_at < RECENT_S:
            return
    raise HTTPException(status.HTTP_403_FORBIDDEN, "only the node running rank 0 of this job may upload its artifacts")


def _may_read(jobs: Jobs, job_id: str, who: tuple[str, object]) -> None:
    """The admin, or a node placed in the job's current attempt (restoring into its ranks' folders)."""
    kind, node_id = who
    job = jobs.get_row(job_id)
    if kind == "admin":
        if job is None:
            raise _missing(job_id)
        return
    if kind != "node":
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"a {kind} token may not read artifacts; use the admin token")
    if job is None:
        raise _missing(job_id)
    if not any(r.node_id == node_id for r in jobs.ranks(job_id, job.attempt)):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this node has no rank in the job's current attempt")


@router.put("/{job_id}/artifacts/{path:path}", response_model=ArtifactOut,
            responses={409: {"model": ErrorOut}, 411: {"model": ErrorOut}, 413: {"model": ErrorOut},
                       422: {"model": ErrorOut}})
async def upload(job_id: JobId, path: str, request: Request, who: Caller,
                 modified: Annotated[float | None, Query(ge=0, description="The file's mtime on the node "
                                                                           "(Unix seconds).")] = None
                 ) -> ArtifactOut:
    """Store one file of the job's artifacts at `path` (relative to rank 0's folder), replacing
    what was there. The body is the file's bytes, with a Content-Length. Only the node token of
    the node running rank 0 of the job's current (or previous) attempt may."""
    kind, node_id = who
    if kind != "node":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "artifacts are uploaded by the agent running rank 0 "
                                                       "of the job, with its node token")
    jobs: Jobs = request.app.state.jobs
    await run_in_threadpool(_may_upload, jobs, job_id, node_id, path)
    try:
        size = int(request.headers["content-length"])
        if size < 0:
            raise ValueError
    except (KeyError, ValueError):
        raise HTTPException(status.HTTP_411_LENGTH_REQUIRED, "an artifact upload needs a Content-Length") from None
    store: ArtifactStore = request.app.state.artifacts
    try:
        up = await run_in_threadpool(store.begin, job_id, path, size)
    except BadPath as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"path: {exc}") from None
    except QuotaExceeded as exc:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, str(exc)) from None
    except PathConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    try:
        await write_body(request, up.write)
        return await run_in_threadpool(up.finish, modified)
    except PathConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except ArtifactError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    except ClientDisconnect:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the upload was cut short") from None
    finally:
        up.abort()  # nothing once finished; else the partial file and its reservation go


@router.delete("/{job_id}/artifacts/{path:path}", status_code=204, responses={422: {"model": ErrorOut}})
def delete_artifact(job_id: JobId, path: str, request: Request, who: Caller) -> None:
    """Forget one artifact: rank 0's agent mirrors a file its rank deleted (a pruned checkpoint),
    so old checkpoints do not fill the job's quota. Who may is as for uploads."""
    kind, node_id = who
    if kind != "node":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "artifacts are deleted by the agent running rank 0 "
                                                       "of the job, with its node token")
    _may_upload(request.app.state.jobs, job_id, node_id)
    problem = path_problem(path)
    if problem:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"path: {problem}")
    if not request.app.state.artifacts.delete(job_id, path):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} has no artifact {path!r}")


@router.get("/{job_id}/artifacts", response_model=list[ArtifactOut])
def list_artifacts(job_id: JobId, request: Request, who: Caller) -> list[ArtifactOut]:
    """The job's artifacts by path, with size, SHA-256 and modification time. The admin token, or
    the node token of a node in the job's current attempt."""
    _may_read(request.app.state.jobs, job_id, who)
    return request.app.state.artifacts.list(job_id)


@router.get("/{job_id}/artifacts/{path:path}", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes."},
                       404: {"model": ErrorOut}})
def get_artifact(job_id: JobId, path: str, request: Request, who: Caller) -> FileResponse:
    """One artifact's bytes (`application/octet-stream`); who may read is as for the list."""
    _may_read(request.app.state.jobs, job_id, who)
    found = request.app.state.artifacts.file(job_id, path)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} has no artifact {path!r}")
    return LargeFileResponse(found, media_type="application/octet-stream")
