"""Where Jupiter keeps its state on a machine, and how secrets are written there."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8470"
DEFAULT_PORT = 8470


def jupiter_home() -> Path:
    """$JUPITER_HOME, else ~/.jupiter (shared/settings.py)."""
    # Imported here, not above: it loads pydantic_settings (about 2 MB resident), and shared/settings.py
    # imports this module.
    from shared.settings import current

    return current().home


def write_secret(path: Path, value: str) -> None:
    """Write `value` to `path` readable by the owner only, atomically (no window at 0644).

    The content goes to a new file under a random name beside `path`, created exclusively at
    0600: a leftover temporary file (whose mode an ordinary open would keep) or a symlink planted
    at a predictable name is never written through. `path` is then replaced by rename, which
    replaces a symlink there rather than following it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            data = memoryview((value + "\n").encode())
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


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
