"""Where Jupiter keeps its state on a machine, and how secrets are written there."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8470"
DEFAULT_PORT = 8470


def jupiter_home() -> Path:
    return Path(os.environ.get("JUPITER_HOME") or Path.home() / ".jupiter").expanduser()


def write_secret(path: Path, value: str) -> None:
    """Write `value` to `path` readable by the owner only, atomically (no window at 0644)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (value + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_secret(path: Path) -> str | None:
    try:
        value = path.read_text().strip()
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        return None
    return value or None


def load_or_create_secret(path: Path, nbytes: int = 32) -> str:
    value = read_secret(path)
    if value is None:
        value = secrets.token_urlsafe(nbytes)
        write_secret(path, value)
    return value
