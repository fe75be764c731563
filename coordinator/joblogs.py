"""Job logs: one append-only file per job, every line prefixed `[RANK] `, read by byte offset.

A file rather than database rows because logs are large, append-only and read sequentially;
byte offsets make `GET /jobs/{id}/logs?offset=N` and `jupiter logs -f` trivially resumable.

Each job's file has a quota. When an append takes it over, the oldest part is dropped: the file is
rewritten as one notice line (`[jupiter] earlier output (N bytes) dropped: ...`, N counting every
byte dropped so far) followed by the newest lines. Offsets stay those of the whole output ever
written, so a follower goes on where it was; a reader whose offset fell in the dropped part is
given the notice and then everything kept.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import zlib
from pathlib import Path
from typing import BinaryIO

MAX_READ = 1 << 20
LOCK_STRIPES = 64
# Per job. A training run printing a 200-byte line per step fills 64 MiB after some 300,000 steps;
# the newest half of that is plenty to see how a job ended, and a few dozen jobs that all print
# without end still fit any leader's disk. Reaching it costs one copy of the kept half, at most
# once per 32 MiB written.
JOB_LOG_QUOTA_BYTES = 64 << 20
# Written by the cut itself, never by a rank (their lines start with their rank number) nor by any
# other note of Jupiter's.
_NOTICE = re.compile(rb"\A\[jupiter\] earlier output \((\d+) bytes\) dropped: [^\n]*\n")
_NOTICE_MAX = 512

log = logging.getLogger("jupiter.coordinator.joblogs")


def _head(f: BinaryIO) -> tuple[int, int]:
    """(bytes dropped before the file's first kept byte, length of the notice line) of an open log."""
    f.seek(0)
    m = _NOTICE.match(f.read(_NOTICE_MAX))
    return (int(m.group(1)), m.end()) if m else (0, 0)


class JobLogs:
    def __init__(self, folder: Path, quota_bytes: int = JOB_LOG_QUOTA_BYTES):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.quota_bytes = max(int(quota_bytes), 4096)  # room for the notice and some lines
        # A fixed set of locks, a job hashed onto one: writes to one job's file are serialised and
        # the set never grows with the number of jobs (a lock per job was never freed).
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]
        self._told: set[str] = set()  # jobs whose first cut was logged

    def path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.log"

    def _lock(self, job_id: str) -> threading.Lock:
        return self._locks[zlib.crc32(job_id.encode()) % LOCK_STRIPES]

    def append(self, job_id: str, rank: int | str, lines: list[str]) -> None:
        if not lines:
            return
        prefix = f"[{rank}] "
        data = "".join(prefix + line.rstrip("\r\n") + "\n" for line in lines).encode("utf-8", "replace")
        with self._lock(job_id):
            with open(self.path(job_id), "ab") as f:
                f.write(data)
                size = f.tell()
            if size > self.quota_bytes:
                self._cut(job_id)

    def _cut(self, job_id: str) -> None:
        """Drop the oldest output, keeping about half the quota of the newest whole lines."""
        path = self.path(job_id)
        tmp = path.with_name(path.name + ".cut")
        with open(path, "rb") as src:
            dropped, notice_len = _head(src)
            size = src.seek(0, os.SEEK_END)
            start = max(notice_len, size - self.quota_bytes // 2)
            if start > notice_len:  # begin at the start of a line
                src.seek(start - 1)
                chunk = src.read(64 * 1024)
                nl = chunk.find(b"\n")
                while nl < 0 and chunk:
                    start += len(chunk)
                    chunk = src.read(64 * 1024)
                    nl = chunk.find(b"\n")
                start = start + nl if nl >= 0 else size
            dropped += start - notice_len
            notice = (f"[jupiter] earlier output ({dropped} bytes) dropped: this job's log is limited to "
                      f"{self.quota_bytes} bytes and keeps the newest\n").encode()
            with open(tmp, "wb") as dst:
                dst.write(notice)
                src.seek(start)
                shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp, path)
        if job_id not in self._told:
            self._told.add(job_id)
            log.warning("job %s: its log reached its quota of %d bytes; the oldest output is dropped "
                        "from now on (a notice at the top of the log says how much)", job_id, self.quota_bytes)

    def note(self, job_id: str, text: str) -> None:
        """A line from Jupiter itself (placement, failure, cancel) in the same log."""
        self.append(job_id, "jupiter", [text])

    def read(self, job_id: str, offset: int = 0, limit: int = MAX_READ) -> tuple[bytes, int]:
        """Bytes from `offset` up to the last complete line within `limit`; and the next offset.
        An offset in output already dropped by the quota gets the cut notice and what was kept."""
        try:
            with open(self.path(job_id), "rb") as f:
                dropped, notice_len = _head(f)
                if offset >= dropped:
                    f.seek(notice_len + offset - dropped)
                    data = f.read(limit)
                    data = data[:data.rfind(b"\n") + 1]
                    return data, offset + len(data)
                f.seek(0)
                data = f.read(max(limit, notice_len + 1))
        except FileNotFoundError:
            return b"", offset
        data = data[:data.rfind(b"\n") + 1]
        return data, dropped + len(data) - notice_len

    def rollback(self, job_id: str, committed: int) -> int:
        """Drop the rank output written after logical offset `committed` (what the database says
        was stored), keeping Jupiter's own `[jupiter]` notes; return the bytes dropped.

        Rank lines are appended before the transaction that counts them commits; if that commit
        never happens (a crash, a SIGKILL, a failed write), the agent sends the lines again and
        they would be in the log twice. Rolling back to the committed size first makes the
        resend the only copy."""
        with self._lock(job_id):
            try:
                f = open(self.path(job_id), "r+b")
            except FileNotFoundError:
                return 0
            with f:
                dropped, notice_len = _head(f)
                end = f.seek(0, os.SEEK_END)
                if committed < dropped:  # the quota cut past that point already: nothing to match
                    return 0
                at = notice_len + committed - dropped
                if at >= end:
                    return 0
                f.seek(at)
                tail = f.read()
                notes = b"".join(ln for ln in tail.splitlines(keepends=True) if ln.startswith(b"[jupiter] "))
                f.seek(at)
                f.truncate()
                f.write(notes)
                return len(tail) - len(notes)

    def size(self, job_id: str) -> int:
        """The offset just past the end: every byte ever written, dropped ones included."""
        try:
            with open(self.path(job_id), "rb") as f:
                dropped, notice_len = _head(f)
                return dropped + f.seek(0, os.SEEK_END) - notice_len
        except FileNotFoundError:
            return 0
