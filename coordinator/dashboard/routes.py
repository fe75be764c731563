"""`GET /` and `GET /static/{name}`: the dashboard's page, stylesheet and script modules, open to anyone.

The files hold no data and no secret; the page asks for the admin token and then calls the API
with `Authorization: Bearer`, like any other client. Only the files listed in FILES (read from this
folder once, at import) are served, so no path ever reaches the filesystem from the request.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse, Response

from shared.status import TERMINAL, JobStatus, NodeStatus

HERE = Path(__file__).resolve().parent

# Browsers run a module script only when it is served as JavaScript (text/javascript).
MEDIA = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
FILES: dict[str, tuple[str, str]] = {
    p.name: (p.name, MEDIA[p.suffix]) for p in sorted(HERE.iterdir()) if p.is_file() and p.suffix in MEDIA
}



def status_module() -> str:
    """status.js, made from shared/status.py: the status words the page must know, defined once.
    The server sends each node's and job's status as a plain word and the page shows it as it
    comes; these lists only order the summary tile, catch a word the page does not know (drawn
    as down), and tell which jobs can no longer be cancelled."""
    nodes = ", ".join(f"'{s}'" for s in NodeStatus)
    terminal = ", ".join(f"'{s}'" for s in JobStatus if s in TERMINAL)
    return ("// Made by the coordinator from shared/status.py (coordinator/dashboard/routes.py).\n"
            f"export const STATUSES = [{nodes}];\n"
            f"export const TERMINAL = new Set([{terminal}]);\n")


GENERATED: dict[str, str] = {"status.js": status_module()}

# The page loads only its own files; nothing from elsewhere, no inline script.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

router = APIRouter(tags=["dashboard"])


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    """The dashboard page."""
    return FileResponse(HERE / "index.html", media_type="text/html; charset=utf-8",
                        headers={**HEADERS, "Content-Security-Policy": CSP, "X-Frame-Options": "DENY"})


@router.get("/static/{name}", include_in_schema=False)
def static(name: str) -> Response:
    """One of the page's own files (`dashboard.css`, `main.js` and the modules it imports)."""
    if name in GENERATED:
        return Response(GENERATED[name], media_type=MEDIA[".js"], headers=HEADERS)
    entry = FILES.get(name)
    if entry is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no static file {name!r}")
    filename, media = entry
    return FileResponse(HERE / filename, media_type=media, headers=HEADERS)
