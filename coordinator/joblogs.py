"""Job logs: one append-only file per job, every line prefixed `[RANK] `, read by byte offset.

A file rather than database rows because logs are large, append-only and read sequentially;
byte offsets make `GET /jobs/{id}/logs?offset=N` and `jupiter logs -f` trivially resumable.
"""

from __future__ import annotations

import threading
from pathlib import Path

MAX_READ = 1 << 20


class JobLogs:
    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.log"

    def _lock(self, job_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(job_id, threading.Lock())

    def append(self, job_id: str, rank: int | str, lines: list[str]) -> None:
        if not lines:
            return
        prefix = f"[{rank}] "
        data = "".join(prefix + line.rstrip("\r\n") + "\n" for line in lines).encode("utf-8", "replace")
        with self._lock(job_id), open(self.path(job_id), "ab") as f:
            f.write(data)

    def note(self, job_id: str, text: str) -> None:
        """A line from Jupiter itself (placement, failure, cancel) in the same log."""
        self.append(job_id, "jupiter", [text])

    def read(self, job_id: str, offset: int = 0, limit: int = MAX_READ) -> tuple[bytes, int]:
        """Bytes from `offset` up to the last complete line within `limit`; and the next offset."""
        try:
            with open(self.path(job_id), "rb") as f:
                f.seek(offset)
                data = f.read(limit)
        except FileNotFoundError:
            return b"", offset
        cut = data.rfind(b"\n") + 1
        data = data[:cut]
        return data, offset + len(data)

    def size(self, job_id: str) -> int:
        try:
            return self.path(job_id).stat().st_size
        except FileNotFoundError:
            return 0
