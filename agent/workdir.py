"""A job's workdir on this node: fetched from the coordinator, verified, cached, unpacked per rank.

The archive is fetched once per node into `<work dir>/cache/files/<sha256>` (streamed to a
temporary file, hashed as it arrives, renamed into place only when the digest matches), so ranks
of one job on this node, and later jobs naming the same archive, share one download. A lock per
digest makes concurrent ranks wait for the first one's fetch. The cache is bounded: after a fetch
the least recently used archives go, never one a rank is unpacking. Each rank then unpacks its
own copy, with the same member checks as the coordinator's (shared/workdir.py).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent.uplink import ApiError, Connection
from shared import workdir
from shared.schemas.ranks import RankAssignment

log = logging.getLogger("jupiter.agent.workdir")

CACHE_MAX_BYTES = 5 << 30  # archives kept on a node; an archive alone may use it all
FETCH_TRIES = 3            # a coordinator that restarts or a dropped connection gets two more
FETCH_TIMEOUT_S = 60.0     # between two reads of the download, not for all of it
PART = ".part"
STALE_PART_S = 3600.0  # a download's temporary file this old was left by an earlier agent

_locks_guard = threading.Lock()
_locks: dict[str, threading.Lock] = {}   # digest -> held while it is fetched
_in_use: dict[str, int] = {}             # digest -> ranks unpacking it now (never evicted)


def cache_dir(work_dir: Path) -> Path:
    return Path(work_dir) / "cache" / "files"


def prepare(connect: Callable[[], Connection], node_id: str, work_dir: Path, a: RankAssignment,
            folder: Path) -> str | None:
    """Unpack the job's workdir archive into `folder`; why it cannot, or None."""
    if a.workdir is None:
        return None
    sha = a.workdir
    name = f"workdir archive {sha[:12]}"
    if not workdir.SHA256_RE.match(sha):
        return f"cannot start: {name} is not named by a SHA-256"
    with _locks_guard:
        lock = _locks.setdefault(sha, threading.Lock())
        _in_use[sha] = _in_use.get(sha, 0) + 1
    try:
        with lock:  # the first rank fetches; the others find it cached
            archive, problem = _cached_or_fetched(connect, work_dir, sha)
        if problem:
            return f"cannot start: {name} {problem}"
        t0 = time.monotonic()
        try:
            files = workdir.unpack(archive, folder)
        except workdir.UnsafeArchive as exc:
            archive.unlink(missing_ok=True)  # a cached copy that went bad is fetched again next time
            return f"cannot start: {name} cannot be unpacked ({exc})"
        except OSError as exc:
            return f"cannot start: {name} cannot be unpacked into {folder} ({exc.strerror or exc})"
        log.info("unpacked %s (%d files) for rank %d of %s in %.3f s", name, files, a.rank, a.job_id,
                 time.monotonic() - t0)
        return None
    finally:
        with _locks_guard:
            _in_use[sha] -= 1
            if not _in_use[sha]:
                del _in_use[sha]
                if not lock.locked():
                    _locks.pop(sha, None)


def _cached_or_fetched(connect: Callable[[], Connection], work_dir: Path, sha: str) -> tuple[Path, str | None]:
    """(the archive in the cache, None), or (its path, why it could not be had)."""
    cache = cache_dir(work_dir)
    archive = cache / sha
    try:
        cache.mkdir(mode=0o700, parents=True, exist_ok=True)
        if archive.is_file():
            os.utime(archive)  # recently used: evicted last
            return archive, None
    except OSError as exc:
        return archive, f"cannot be cached in {cache} ({exc.strerror or exc})"
    problem = None
    t0 = time.monotonic()
    for attempt in range(FETCH_TRIES):
        problem, retry = _fetch(connect, archive, sha)
        if not retry:
            break
        if attempt + 1 < FETCH_TRIES:
            time.sleep(2 ** attempt)
    if problem is None:
        log.info("fetched workdir archive %s (%s, SHA-256 checked) in %.3f s", sha[:12],
                 workdir.human_bytes(archive.stat().st_size), time.monotonic() - t0)
        evict(cache, CACHE_MAX_BYTES)
    return archive, problem


def _fetch(connect: Callable[[], Connection], archive: Path, sha: str) -> tuple[str | None, bool]:
    """Download into the cache; (why not or None, whether trying again may help)."""
    part = archive.with_name(f"{sha}.{secrets.token_hex(6)}{PART}")
    try:
        with open(part, "xb") as f:
            hashing = workdir.HashingWriter(f)
            with connect() as c:
                c.download(f"/files/{sha}", hashing, CACHE_MAX_BYTES, timeout=FETCH_TIMEOUT_S)
        got = hashing.hash.hexdigest()
        if got != sha:
            return f"arrived corrupt (its SHA-256 is {got})", True
        os.replace(part, archive)
        return None, False
    except ApiError as exc:
        if exc.status == 404:
            return "is not on the coordinator (404: removed, or this node may not read it)", False
        return f"could not be fetched ({exc.status}: {exc.detail})", exc.status >= 500 or exc.status == 429
    except ValueError as exc:
        return f"is too large for this node's cache ({exc})", False
    except OSError as exc:
        return f"could not be fetched ({type(exc).__name__}: {exc})", True
    finally:
        part.unlink(missing_ok=True)


def evict(cache: Path, max_bytes: int) -> list[str]:
    """Remove the least recently used archives until the cache holds at most `max_bytes`; never
    one in use. The digests removed."""
    entries = []
    for p in cache.iterdir():
        try:
            st = p.stat()
        except OSError:
            continue
        if p.name.endswith(PART) and st.st_mtime < time.time() - STALE_PART_S:
            p.unlink(missing_ok=True)  # a fetch cut short by the agent's end
        if workdir.SHA256_RE.match(p.name):
            entries.append((st.st_mtime, st.st_size, p))
    total = sum(size for _, size, _ in entries)
    removed = []
    with _locks_guard:
        busy = set(_in_use)
    for _, size, p in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        if p.name in busy:
            continue
        p.unlink(missing_ok=True)
        total -= size
        removed.append(p.name)
    if removed:
        log.info("workdir cache over %s: removed %d archive(s)", workdir.human_bytes(max_bytes), len(removed))
    return removed
