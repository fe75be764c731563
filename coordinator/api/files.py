"""/files: content-addressed archives (a job's workdir), uploaded by admins, fetched by the nodes
that run the job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from starlette.requests import ClientDisconnect

from coordinator.api.deps import Admin, LargeFileResponse, _bearer, _kind, write_body
from coordinator.files import FileStore, Refused
from coordinator.jobs import repository as repo
from shared import workdir
from shared.schemas import ErrorOut
from shared.status import ACTIVE

router = APIRouter(prefix="/files", tags=["files"],
                   responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut}})

Sha256 = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="The file's SHA-256, lowercase hex.")]


def _store(request: Request) -> FileStore:
    return request.app.state.files


def _missing(sha256: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no file {sha256}")


@router.put("/{sha256}", status_code=201, dependencies=[Admin],
            responses={200: {"description": "Already stored"}, 201: {"description": "Stored"},
                       400: {"model": ErrorOut}, 413: {"model": ErrorOut}},
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def put_file(sha256: Sha256, request: Request, response: Response) -> dict:
    """Upload an archive (a tar of regular files and folders, gzipped or not) under its SHA-256.
    `201` when stored, `200` when it already was (the body is then not read). `400` for a body
    whose digest differs or that is not a safe tar, `413` over the size limit."""
    store = _store(request)
    if store.has(sha256):
        response.status_code = 200
        return {"sha256": sha256, "stored": False}
    length = request.headers.get("content-length")
    try:
        upload = store.begin(sha256, int(length) if length and length.isdigit() else None)
    except Refused as exc:
        raise HTTPException(exc.status, str(exc)) from None
    try:
        await write_body(request, upload.write)
        fresh = await run_in_threadpool(upload.finish)
    except Refused as exc:
        raise HTTPException(exc.status, str(exc)) from None
    except ClientDisconnect:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the upload was cut short") from None
    finally:
        upload.abort()
    response.status_code = 201 if fresh else 200
    return {"sha256": sha256, "stored": fresh}


# Out of the OpenAPI page: a HEAD answer has no body, and tools reading the page expect every
# error to carry one (docs/api.md describes the route).
@router.head("/{sha256}", dependencies=[Admin], include_in_schema=False)
def head_file(sha256: Sha256, request: Request) -> Response:
    """`200` if the coordinator holds the file, `404` if not (how the CLI skips an upload)."""
    path = _store(request).path(sha256)
    if not path.is_file():
        raise _missing(sha256)
    return Response(status_code=200, headers={"Content-Length": str(path.stat().st_size)})


def _placed_on(request: Request, node_id: str, sha256: str) -> bool:
    """Whether an active job with a rank on this node names this file as its workdir."""
    with request.app.state.jobs.store.read() as s:
        return any(job.status in ACTIVE and (job.spec or {}).get("workdir") == sha256
                   for _, job in repo.orders_view(s, node_id))


def _media_type(path) -> str:
    """A workdir archive is a gzipped tar, or a plain one when gzip would save little."""
    with open(path, "rb") as f:
        return "application/gzip" if f.read(len(workdir.GZIP_MAGIC)) == workdir.GZIP_MAGIC else "application/x-tar"


@router.get("/{sha256}", response_class=FileResponse,
            responses={200: {"content": {"application/gzip": {}, "application/x-tar": {}},
                             "description": "The archive"}})
def get_file(sha256: Sha256, request: Request) -> FileResponse:
    """The archive, streamed. The admin token may read any file; a node token only the workdir of
    an active job with a rank on its node. Anything else is `404`, as for a file not stored."""
    kind, who = _kind(request, _bearer(request))
    if kind != "admin" and not (kind == "node" and _placed_on(request, who, sha256)):
        raise _missing(sha256)
    path = _store(request).path(sha256)
    try:
        media_type = _media_type(path)
    except (FileNotFoundError, IsADirectoryError):
        raise _missing(sha256) from None
    return LargeFileResponse(path, media_type=media_type)
