"""Content-addressed files: archives uploaded with PUT /files/{sha256}, kept as $JUPITER_HOME/files/<sha256>.

`FileStore` is the one owner of that folder. An upload streams into a temporary file beside the
final one while it is hashed; only a body whose SHA-256 is its name, within the size limit, and
that is a safe tar, gzipped or not (shared/workdir.py: regular files and folders under relative
paths, bounded in number and unpacked size) is renamed into place. The rename is atomic, so a half-written or
refused archive is never served.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from shared import workdir

FILES_MAX_BYTES = 1 << 30  # 1 GiB: a script, a config and a small dataset; models come another way
PART = ".part"


class Refused(ValueError):
    """An upload that is not stored; `status` is the HTTP answer (400 or 413), the message why."""

    def __init__(self, status: int, why: str):
        super().__init__(why)
        self.status = status


class Upload:
    """One upload on its way in: written and hashed chunk by chunk, then checked and stored
    (`finish`) or dropped (`abort`)."""

    def __init__(self, store: FileStore, sha256: str):
        self.store, self.sha256 = store, sha256
        self.part = store.root / f"{sha256}.{secrets.token_hex(6)}{PART}"
        self._f = open(self.part, "xb")
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.store.max_bytes:
            raise self.store.too_large()
        self._hash.update(chunk)
        self._f.write(chunk)

    def finish(self) -> bool:
        """Check the whole archive and rename it into place; True if it was not there before."""
        try:
            self._f.close()
            got = self._hash.hexdigest()
            if got != self.sha256:
                raise Refused(400, f"digest mismatch: the body's SHA-256 is {got}, not {self.sha256}")
            try:
                workdir.inspect(self.part, max_members=self.store.max_members,
                                max_unpacked=self.store.max_unpacked)
            except workdir.UnsafeArchive as exc:
                raise Refused(400, f"not a workdir archive Jupiter accepts: {exc}") from None
            final = self.store.path(self.sha256)
            fresh = not final.exists()
            os.chmod(self.part, 0o600)
            os.replace(self.part, final)
            return fresh
        finally:
            self.abort()

    def abort(self) -> None:
        self._f.close()
        self.part.unlink(missing_ok=True)


class FileStore:
    def __init__(self, root: Path, max_bytes: int = FILES_MAX_BYTES, *, max_members: int = workdir.MAX_MEMBERS,
                 max_unpacked: int = workdir.MAX_UNPACKED_BYTES):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.max_members, self.max_unpacked = max_members, max_unpacked
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for stale in self.root.glob(f"*{PART}"):  # uploads cut short by a restart
            stale.unlink(missing_ok=True)

    def path(self, sha256: str) -> Path:
        if not workdir.SHA256_RE.match(sha256):  # the routes check this too; a name is never a path here
            raise ValueError(f"not a SHA-256: {sha256!r}")
        return self.root / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def too_large(self) -> Refused:
        return Refused(413, f"archive over the coordinator's limit of {self.max_bytes} bytes "
                            f"({workdir.human_bytes(self.max_bytes)}; files_max_bytes, JUPITER_FILES_MAX_BYTES)")

    def begin(self, sha256: str, declared_size: int | None = None) -> Upload:
        """Start an upload; Refused (413) at once when its declared size is over the limit."""
        self.path(sha256)
        if declared_size is not None and declared_size > self.max_bytes:
            raise self.too_large()
        return Upload(self, sha256)
