"""A job's artifacts on this node: rank 0's files uploaded while it runs and when it ends, and
fetched back into a restarted attempt's folders so it resumes from them (docs/jobs.md#artifacts).

- `restore`, before any rank starts: with `restore_artifacts` (a restarted attempt), every file the
  coordinator keeps for the job is fetched into the rank's folder at its path, checked against its
  SHA-256. For rank 0 of a job with artifact globs it then starts a watcher thread, which uploads
  the matching files that changed every `EVERY_S` seconds: a node that dies mid-run has left its
  latest checkpoint with the coordinator, and the next attempt resumes from it on other nodes.
- `collect`, after rank 0's process ended and before its end is told: the watcher stops and what
  changed since its last round is uploaded, so a job that shows `succeeded` has its artifacts.

A file goes up again only when its size or mtime changed, so rounds cost a folder walk. A file
sent before and deleted since (a checkpoint the trainer pruned) is deleted on the coordinator too,
so old checkpoints do not fill the job's quota. The watcher also ends when the thread that called
`restore` (the rank's own) has ended without `collect`: a rank that never started.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from agent.uplink import ApiError, Connection
from shared.schemas.artifacts import ArtifactGlobs, path_problem, upload_order
from shared.schemas.ranks import RankAssignment
from shared.workdir import sha256_file

log = logging.getLogger("jupiter.agent.artifacts")

EVERY_S = 30.0                          # between two uploads of a running rank 0's changed files
EVERY_ENV = "JUPITER_ARTIFACTS_EVERY_S"  # the agent's environment may set another (tests do)
SETTLE_S = 2.0           # a round leaves a file changed this recently for the next (it may be mid-write)
TIMEOUT_S = 60.0         # between two reads or writes of a transfer, not for all of it
TRIES = 3                # a coordinator that restarts meanwhile gets two more chances

_guard = threading.Lock()
_active: dict[tuple[str, int, int], Uploads] = {}  # (job, attempt, rank) -> rank 0's uploads, while it runs


def every_s() -> float:
    try:
        value = float(os.environ.get(EVERY_ENV) or EVERY_S)
    except ValueError:
        return EVERY_S
    return value if math.isfinite(value) and value > 0 else EVERY_S


def find(folder: Path, globs: ArtifactGlobs) -> dict[str, os.stat_result]:
    """The regular files below `folder` that the globs match, by relative path. Symbolic links are
    neither followed nor collected: nothing outside the folder goes up."""
    found = {}
    for top, _dirs, files in os.walk(folder):  # os.walk does not descend into linked folders
        rel_top = Path(top).relative_to(folder)
        for name in files:
            try:
                st = os.lstat(os.path.join(top, name))
            except OSError:
                continue  # gone meanwhile
            rel = (rel_top / name).as_posix()
            if stat.S_ISREG(st.st_mode) and globs.match(rel):
                found[rel] = st
    return found


def _key(st: os.stat_result) -> tuple[int, int]:
    return st.st_size, st.st_mtime_ns


class Uploads:
    """Rank 0's artifacts as the coordinator has them (what was sent, by size and mtime), and the
    watcher that keeps them current while the rank runs."""

    def __init__(self, a: RankAssignment, folder: Path):
        self.a, self.folder = a, Path(folder)
        self.globs = ArtifactGlobs(a.artifacts)
        self.sent: dict[str, tuple[int, int]] = {}
        self.inodes: dict[str, int] = {}  # each file's inode when the last round saw it
        self.lock = threading.Lock()  # one round at a time
        self.stop = threading.Event()
        self.refused = False          # the coordinator said no (the job moved on): no more rounds
        self.thread: threading.Thread | None = None

    def changed(self, settle_s: float) -> list[tuple[str, os.stat_result]]:
        """Matching files not sent as they are now, in upload order. A file changed in the last
        `settle_s` may be mid-write and waits for the next round, unless it is a new file put in
        place of one seen before (an atomic save: written elsewhere, then renamed, so whole)."""
        found, now = find(self.folder, self.globs), time.time()
        out = []
        for p in upload_order(list(found)):
            st = found[p]
            replaced = p in self.inodes and self.inodes[p] != st.st_ino
            self.inodes[p] = st.st_ino
            if self.sent.get(p) != _key(st) and (replaced or now - st.st_mtime >= settle_s):
                out.append((p, st))
        return out

    def gone(self) -> list[str]:
        """Files sent (or restored) earlier that rank 0 has deleted since: a pruned checkpoint."""
        found = find(self.folder, self.globs)
        return sorted(p for p in self.sent if p not in found)

    def round(self, connect: Callable[[], Connection], *, settle_s: float, final: bool) -> tuple[int, bool]:
        """Upload what changed and forget what was deleted; (files sent, whether the coordinator
        could not be reached)."""
        with self.lock:
            todo, gone = self.changed(settle_s), self.gone()
            if not (todo or gone) or self.refused:
                return 0, False
            sent = 0
            with connect() as c:
                for rel in gone:  # first: the quota counts what is kept
                    try:
                        c.request("DELETE", f"/jobs/{self.a.job_id}/artifacts/{quote(rel, safe='/')}",
                                  timeout=TIMEOUT_S)
                    except ApiError as exc:
                        if exc.status != 404:
                            log.warning("artifact %s of %s not deleted: %s", rel, self.a.job_id, exc)
                            continue
                    except OSError as exc:
                        log.warning("artifact %s of %s not deleted: %s", rel, self.a.job_id, exc)
                        return sent, True
                    self.sent.pop(rel, None)
                    self.inodes.pop(rel, None)
                for rel, _ in todo:
                    if self.stop.is_set() and not final:
                        break  # collect takes over
                    try:
                        sent += self._send(c, rel)
                    except ApiError as exc:
                        log.warning("artifact %s of %s not uploaded: %s", rel, self.a.job_id, exc)
                        if exc.status in (403, 404):
                            self.refused = True
                        if exc.status in (403, 404, 413):
                            break
                    except OSError as exc:
                        log.warning("artifact %s of %s not uploaded: %s", rel, self.a.job_id, exc)
                        return sent, True
            return sent, False

    def _send(self, c: Connection, rel: str) -> int:
        path = self.folder / rel
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return 0
            c.upload(f"/jobs/{self.a.job_id}/artifacts/{quote(rel, safe='/')}?modified={max(st.st_mtime, 0):.6f}",
                     f, st.st_size, timeout=TIMEOUT_S)
        try:
            now = os.lstat(path)
        except OSError:
            return 1
        if _key(now) == _key(st):  # changed while it went up: the next round sends it again
            self.sent[rel] = _key(st)
        return 1


def restore(connect: Callable[[], Connection], node_id: str, a: RankAssignment, folder: Path) -> str | None:
    """Fetch the job's artifacts into a restarted attempt's folder and, for rank 0, start uploading
    its changed files while it runs; why it cannot start, or None."""
    ups = Uploads(a, folder) if a.rank == 0 and a.artifacts else None
    if a.restore_artifacts:
        problem = fetch(connect, a, Path(folder), ups)
        if problem:
            return problem
    if ups is not None:
        _watch(connect, ups, threading.current_thread())
    return None


def collect(connect: Callable[[], Connection], node_id: str, a: RankAssignment, folder: Path, code: int) -> None:
    """Upload rank 0's files that match the job's artifact globs and changed since the last round."""
    if a.rank != 0 or not a.artifacts:
        return
    with _guard:
        ups = _active.pop((a.job_id, a.attempt, a.rank), None)
    if ups is None:
        ups = Uploads(a, folder)
    ups.stop.set()
    total = 0
    for attempt in range(TRIES):
        sent, unreachable = ups.round(connect, settle_s=0, final=True)
        total += sent
        if not unreachable:
            break
        if attempt + 1 < TRIES:
            time.sleep(2 ** attempt)
    log.info("rank 0 of %s ended with %s: %d artifact file(s) uploaded", a.job_id, code, total)


def _watch(connect: Callable[[], Connection], ups: Uploads, owner: threading.Thread) -> None:
    key = (ups.a.job_id, ups.a.attempt, ups.a.rank)
    with _guard:
        old = _active.get(key)
        _active[key] = ups
    if old is not None:
        old.stop.set()
    ups.thread = threading.Thread(target=_watching, args=(connect, ups, owner, key),
                                  name=f"artifacts-{ups.a.job_id}", daemon=True)
    ups.thread.start()


def _watching(connect: Callable[[], Connection], ups: Uploads, owner: threading.Thread,
              key: tuple[str, int, int]) -> None:
    every = every_s()
    while not ups.stop.wait(every):
        if not owner.is_alive():  # the rank ended without collect: it never started
            with _guard:
                if _active.get(key) is ups:
                    del _active[key]
            return
        try:
            sent, _ = ups.round(connect, settle_s=SETTLE_S, final=False)
            if sent:
                log.info("uploaded %d changed artifact file(s) of running rank 0 of %s", sent, ups.a.job_id)
        except Exception:  # a round that failed is tried again at the next
            log.exception("uploading the artifacts of %s failed", ups.a.job_id)


def fetch(connect: Callable[[], Connection], a: RankAssignment, folder: Path, ups: Uploads | None = None
          ) -> str | None:
    """Every artifact of the job into `folder`, at its path; why not, or None."""
    last: Exception | None = None
    for attempt in range(TRIES):
        try:
            with connect() as c:
                _, body = c.request("GET", f"/jobs/{a.job_id}/artifacts", timeout=TIMEOUT_S)
                listing = json.loads(body)
                fetched = sum(_fetch_one(c, a, folder, item, ups) for item in listing)
            log.info("restored %d artifact file(s) of %s (%d already there) for rank %d", fetched, a.job_id,
                     len(listing) - fetched, a.rank)
            return None
        except ApiError as exc:
            return f"cannot start: cannot fetch the job's artifacts: {exc}"
        except (OSError, ValueError, KeyError, TypeError) as exc:  # away, cut short, or changed meanwhile
            last = exc
            if attempt + 1 < TRIES:
                time.sleep(2 ** attempt)
    return f"cannot start: cannot fetch the job's artifacts: {last}"


class _Hashing:
    def __init__(self, f):
        self.f, self.sha = f, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self.f.write(data)


def _fetch_one(c: Connection, a: RankAssignment, folder: Path, item: dict, ups: Uploads | None) -> int:
    """One listed artifact into the folder (1), or 0 when the same bytes are there already."""
    rel, size, sha = item["path"], int(item["size"]), str(item["sha256"])
    problem = path_problem(rel)
    if problem:
        raise ValueError(f"the coordinator listed {rel!r}: {problem}")
    dest = folder / rel
    for parent in [p for p in dest.parents if folder in p.parents]:
        if parent.is_symlink():  # never write through a link out of the folder
            raise ValueError(f"{parent} is a symbolic link")
    mtime = datetime.fromisoformat(item["modified_at"].replace("Z", "+00:00")).timestamp()
    if dest.is_file() and not dest.is_symlink() and dest.stat().st_size == size and sha256_file(dest) == sha:
        _seen(ups, rel, dest)
        return 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{secrets.token_hex(4)}.part"  # hidden: no glob collects it
    try:
        with open(tmp, "xb") as f:
            h = _Hashing(f)
            got = c.download(f"/jobs/{a.job_id}/artifacts/{quote(rel, safe='/')}", h, size, timeout=TIMEOUT_S)
        if got != size or h.sha.hexdigest() != sha:
            raise ValueError(f"artifact {rel} changed while it was fetched")
        os.utime(tmp, (mtime, mtime))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    _seen(ups, rel, dest)
    return 1


def _seen(ups: Uploads | None, rel: str, dest: Path) -> None:
    """A restored file that rank 0 leaves as it is need not go up again."""
    if ups is not None and ups.globs.match(rel):
        ups.sent[rel] = _key(dest.stat())
