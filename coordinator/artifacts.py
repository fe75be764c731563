"""Jobs' artifacts on the coordinator: the files rank 0 left, kept under
`$JUPITER_HOME/artifacts/<job id>/<path>` until the job is deleted (docs/jobs.md#artifacts).

`ArtifactStore` is their one owner. An upload streams into a temporary file beside the job
folders and is renamed into place once whole, so a reader (a restarted attempt's `restore`) never
sees half a file. Each job may keep at most `max_bytes_per_job`; an upload that would pass it is
refused before a byte is written when its size is declared, and cut off when it sends more.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from shared.schemas.artifacts import ArtifactOut, path_problem
from shared.workdir import sha256_file

log = logging.getLogger("jupiter.artifacts")

MAX_BYTES_PER_JOB = 64 << 30  # 64 GiB: the trainer keeps 3 checkpoints, 12 GB each for the 1b preset


class ArtifactError(Exception):
    """An upload refused; the message says why."""


class BadPath(ArtifactError):
    pass


class QuotaExceeded(ArtifactError):
    pass


class PathConflict(ArtifactError):
    """A file where the path needs a folder, or a folder where it names a file."""


def fits(used: int, replaced: int, incoming: int, quota: int) -> bool:
    """Whether a job holding `used` bytes may take `incoming` bytes at a path that now holds
    `replaced` of them (0 for a new path): the old content goes as the new one arrives."""
    return used - replaced + incoming <= quota


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


@dataclass
class Upload:
    """One file arriving; `write` its bytes, then `finish` (or `abort`)."""

    store: ArtifactStore
    job_id: str
    path: str
    size: int                     # declared: exactly this many bytes must come
    tmp: Path
    ticket: str
    written: int = 0
    done: bool = False
    _sha: object = field(default_factory=hashlib.sha256)
    _file: object = None

    def write(self, data: bytes) -> None:
        if self.written + len(data) > self.size:
            raise ArtifactError(f"more bytes than the Content-Length of {self.size}")
        self._file.write(data)
        self._sha.update(data)
        self.written += len(data)

    def finish(self, modified: float | None = None) -> ArtifactOut:
        if self.written != self.size:
            raise ArtifactError(f"{self.written} bytes arrived of the {self.size} announced")
        self._file.flush()
        os.fsync(self._file.fileno())  # a checkpoint a restart resumes from must survive a crash
        self._file.close()
        return self.store._place(self, self._sha.hexdigest(), modified)

    def abort(self) -> None:
        if not self.done:
            self.done = True
            if self._file is not None:
                self._file.close()
            self.tmp.unlink(missing_ok=True)
            self.store._release(self)


class ArtifactStore:
    def __init__(self, root: Path, max_bytes_per_job: int = MAX_BYTES_PER_JOB):
        self.root = Path(root)
        self.max_bytes_per_job = max_bytes_per_job
        self._tmp = self.root / ".tmp"  # job ids never start with '.', so no job folder is named so
        self._lock = threading.Lock()
        self._sizes: dict[str, dict[str, int]] = {}          # job -> path -> bytes, read from disk once
        self._reserved: dict[str, dict[str, int]] = {}       # job -> upload ticket -> bytes announced
        self._hashes: dict[tuple[str, str], tuple[int, int, str]] = {}  # (job, path) -> (size, mtime_ns, sha256)
        shutil.rmtree(self._tmp, ignore_errors=True)  # uploads a previous coordinator never finished
        self._tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root.chmod(0o700)

    def job_dir(self, job_id: str) -> Path:
        return self.root / job_id

    # ------------------------------------------------------------------ uploads

    def begin(self, job_id: str, path: str, size: int) -> Upload:
        """Start an upload of `size` bytes to `path`, within the job's quota (QuotaExceeded, BadPath,
        PathConflict otherwise)."""
        problem = path_problem(path)
        if problem:
            raise BadPath(problem)
        self._conflict(job_id, path)
        with self._lock:
            sizes = self._sizes_of(job_id)
            reserved = self._reserved.setdefault(job_id, {})
            used = sum(sizes.values()) + sum(reserved.values())
            if not fits(used, sizes.get(path, 0), size, self.max_bytes_per_job):
                raise QuotaExceeded(f"job {job_id} may keep {self.max_bytes_per_job} bytes of artifacts; it holds "
                                    f"{used}, and {path} would bring {size} (the setting "
                                    f"artifacts_max_bytes_per_job)")
            ticket = secrets.token_hex(8)
            reserved[ticket] = size
        tmp = self._tmp / f"{job_id}-{ticket}"
        up = Upload(self, job_id, path, size, tmp, ticket)
        try:
            up._file = open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")
        except OSError:
            self._release(up)
            raise
        return up

    def _conflict(self, job_id: str, path: str) -> None:
        target = self.job_dir(job_id) / path
        for parent in [p for p in target.parents if self.job_dir(job_id) in p.parents]:
            if parent.is_symlink() or (parent.exists() and not parent.is_dir()):
                raise PathConflict(f"{parent.relative_to(self.job_dir(job_id))} is a file, not a folder")
        if target.is_dir() and not target.is_symlink():
            raise PathConflict(f"{path} is a folder of artifacts, not a file")

    def _place(self, up: Upload, sha256: str, modified: float | None) -> ArtifactOut:
        dest = self.job_dir(up.job_id) / up.path
        try:
            self._conflict(up.job_id, up.path)
            dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            when = modified if modified is not None and 0 <= modified <= time.time() + 86400 else time.time()
            os.utime(up.tmp, (when, when))
            os.replace(up.tmp, dest)
            st = dest.stat()
            with self._lock:
                self._sizes_of(up.job_id)[up.path] = st.st_size
                self._hashes[(up.job_id, up.path)] = (st.st_size, st.st_mtime_ns, sha256)
        finally:
            up.abort()  # the temporary file is gone (renamed) or dropped; the reservation ends
        return ArtifactOut(path=up.path, size=st.st_size, sha256=sha256, modified_at=_utc(st.st_mtime))

    def _release(self, up: Upload) -> None:
        up.done = True
        with self._lock:
            self._reserved.get(up.job_id, {}).pop(up.ticket, None)

    def _sizes_of(self, job_id: str) -> dict[str, int]:
        """(Under the lock.) The job's files and their sizes, read from disk the first time."""
        sizes = self._sizes.get(job_id)
        if sizes is None:
            sizes = self._sizes[job_id] = {path: st.st_size for path, st in self._walk(job_id)}
        return sizes

    def used(self, job_id: str) -> int:
        with self._lock:
            return sum(self._sizes_of(job_id).values())

    # ------------------------------------------------------------------ reads

    def _walk(self, job_id: str) -> list[tuple[str, os.stat_result]]:
        """Every regular file under the job's folder, as (relative path, stat); symlinks skipped
        (the store makes none)."""
        top = self.job_dir(job_id)
        found = []
        for folder, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
            for name in files:
                full = os.path.join(folder, name)
                st = os.lstat(full)
                if os.path.isfile(full) and not os.path.islink(full):
                    found.append((Path(full).relative_to(top).as_posix(), st))
        return found

    def list(self, job_id: str) -> list[ArtifactOut]:
        """The job's artifacts by path, each with its size, SHA-256 and modification time."""
        out = []
        for path, st in sorted(self._walk(job_id)):
            key = (job_id, path)
            with self._lock:
                known = self._hashes.get(key)
            if known is None or known[:2] != (st.st_size, st.st_mtime_ns):
                known = (st.st_size, st.st_mtime_ns, sha256_file(self.job_dir(job_id) / path))
                with self._lock:
                    self._hashes[key] = known
            out.append(ArtifactOut(path=path, size=st.st_size, sha256=known[2], modified_at=_utc(st.st_mtime)))
        return out

    def delete(self, job_id: str, path: str) -> bool:
        """Forget artifact `path` (rank 0 deleted it: a pruned checkpoint); whether it was there.
        Folders it leaves empty go too."""
        found = self.file(job_id, path)
        if found is None:
            return False
        with self._lock:
            found.unlink(missing_ok=True)
            self._sizes_of(job_id).pop(path, None)
            self._hashes.pop((job_id, path), None)
        top = self.job_dir(job_id).resolve()
        for parent in found.parents:
            if parent == top or top not in parent.parents:
                break
            try:
                parent.rmdir()
            except OSError:
                break  # not empty
        return True

    def file(self, job_id: str, path: str) -> Path | None:
        """The stored file of artifact `path`, or None."""
        if path_problem(path):
            return None
        top = self.job_dir(job_id).resolve()
        p = (top / path).resolve()
        return p if top in p.parents and p.is_file() else None  # the store makes no symlinks; follow none out
