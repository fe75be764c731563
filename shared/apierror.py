"""The coordinator's error answers as one exception, for every client of its API (the `jupiter`
command through httpx, the agent through the standard library): standard library only, so the
agent can use it without loading an HTTP library it does not need."""

from __future__ import annotations

import json
from typing import Any


class ApiError(Exception):
    """The coordinator answered with an error; `detail` is its own explanation."""

    def __init__(self, status: int, detail: Any, retry_after: float | None = None):
        self.status, self.detail = status, detail
        self.retry_after = retry_after  # seconds, from a 429's Retry-After
        super().__init__(f"HTTP {status}: {format_detail(detail)}")


def from_answer(status: int, body: bytes, retry_after_header: str | None = None) -> ApiError:
    """The error an answer of `status` >= 400 with `body` means: its JSON `detail`, or the body as
    text when it is not the coordinator's JSON (a proxy's page, say)."""
    text = body.decode("utf-8", "replace")
    try:
        detail = json.loads(body).get("detail", text)
    except (ValueError, AttributeError):
        detail = text
    return ApiError(status, detail, retry_after(retry_after_header))


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


def retry_after(value: str | None) -> float | None:
    """A Retry-After header in seconds, bounded to an hour; None if absent or not a number."""
    try:
        return max(0.0, min(float(value), 3600.0)) if value is not None else None
    except ValueError:
        return None
