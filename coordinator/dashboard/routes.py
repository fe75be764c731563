"""`GET /` and `GET /static/{name}`: the dashboard's three static files, open to anyone.

The files hold no data and no secret; the page asks for the admin token and then calls the API
with `Authorization: Bearer`, like any other client. Only the files named here are served, so no
path ever reaches the filesystem from the request.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse

HERE = Path(__file__).resolve().parent

FILES: dict[str, tuple[str, str]] = {
    "dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}

# The page loads only its own two files; nothing from elsewhere, no inline script.
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
def static(name: str) -> FileResponse:
    """One of the page's own files (`dashboard.js`, `dashboard.css`)."""
    entry = FILES.get(name)
    if entry is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no static file {name!r}")
    filename, media = entry
    return FileResponse(HERE / filename, media_type=media, headers=HEADERS)
