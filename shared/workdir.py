"""A job's workdir as one archive: packed by the CLI, checked by the coordinator, unpacked by agents.

The archive is a gzipped tar named by its SHA-256, so the packing is deterministic: entries sorted,
times, owners and modes fixed (only the executable bit survives), the gzip header without a name
or time. The same folder content always gives the same digest, and a second upload of it is
skipped.

Every member must be a regular file or a folder under a relative path without `..`: no links, no
devices, nothing that could write outside the folder it is unpacked into. The coordinator checks
this when an archive arrives and the agent again when it unpacks one (`check_member`).

Standard library only (the agent imports this); pathspec, which reads `.gitignore` files, is
imported inside `pack`, the one function that needs it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import stat
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

IGNORE_FILES = (".gitignore", ".jupiterignore")  # read in every folder, the deeper ones winning
NEVER_PACKED = frozenset({".git"})  # a repository's history (or a submodule's .git file) stays home
# Bounds on what one archive may unpack to: a few KiB of gzip can claim terabytes.
MAX_MEMBERS = 100_000
MAX_UNPACKED_BYTES = 8 << 30
CHUNK = 1 << 20
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


_SAFE_PART = re.compile(r"[A-Za-z0-9._-]{1,64}")


class UnsafeArchive(ValueError):
    """The archive is not a tar.gz Jupiter will unpack; the message says why."""


@dataclass
class Packed:
    sha256: str
    archive_bytes: int
    files: int
    unpacked_bytes: int
    skipped: list[str] = field(default_factory=list)  # symlinks and special files, left out


def human_bytes(n: float) -> str:
    for div, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= div:
            return f"{n / div:.1f} {suffix}"
    return f"{n:.0f} B"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------- packing


def _walk(root: Path) -> Iterator[tuple[str, os.stat_result | None, bool]]:
    """(relative posix path, stat, is_dir) of what to pack, sorted, after the ignore files; a
    symlink or special file comes with stat None (left out, but named to the caller)."""
    import pathspec

    def ignored(rel: str, is_dir: bool, specs: list[tuple[str, pathspec.GitIgnoreSpec]]) -> bool:
        verdict = False
        for base, spec in specs:  # outermost first: a deeper file's pattern (or `!`) decides
            sub = rel[len(base) + 1:] if base else rel
            result = spec.check_file(sub + "/" if is_dir else sub)
            if result.include is not None:
                verdict = result.include
        return verdict

    def visit(folder: Path, rel: str, specs: list) -> Iterator[tuple[str, os.stat_result | None, bool]]:
        lines: list[str] = []
        for name in IGNORE_FILES:
            f = folder / name
            if f.is_file() and not f.is_symlink():
                lines += f.read_text(encoding="utf-8", errors="replace").splitlines()
        if lines:
            specs = specs + [(rel, pathspec.GitIgnoreSpec.from_lines(lines))]
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if entry.name in NEVER_PACKED:
                continue
            path = f"{rel}/{entry.name}" if rel else entry.name
            st = entry.stat(follow_symlinks=False)
            is_dir = stat.S_ISDIR(st.st_mode)
            if ignored(path, is_dir, specs):
                continue
            if is_dir:
                yield path, st, True
                yield from visit(Path(entry.path), path, specs)
            elif stat.S_ISREG(st.st_mode):
                yield path, st, False
            else:
                yield path, None, False

    yield from visit(root, "", [])


def _info(name: str, is_dir: bool, size: int = 0, executable: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.mode = 0o755 if is_dir or executable else 0o644
    info.size = 0 if is_dir else size
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


class HashingWriter(io.RawIOBase):
    """Writes through to `out`, hashing and counting what passes."""

    def __init__(self, out: BinaryIO):
        self.out, self.hash, self.count = out, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.out.write(data)
        self.hash.update(data)
        self.count += len(data)
        return len(data)


def pack(src: Path | dict[str, Path], dest: Path) -> Packed:
    """Pack the folder `src` into the file `dest`, leaving out what its `.gitignore` and
    `.jupiterignore` files ignore (git's rules), `.git`, symlinks and special files. `src` may
    also map folder names to folders (`{"model": ..., "data": ...}`): each is packed under its
    name, as `jupiter finetune` ships a model and a data set that live apart."""
    roots = {"": Path(src)} if not isinstance(src, dict) else {k: Path(v) for k, v in src.items()}
    for name, root in roots.items():
        if isinstance(src, dict) and (not _SAFE_PART.fullmatch(name) or name in (".", "..")):
            raise ValueError(f"{name!r} cannot name a folder in the archive")
        if not root.is_dir():
            raise NotADirectoryError(f"{root} is not a folder")
    files = unpacked = 0
    skipped: list[str] = []
    with open(dest, "wb") as raw:
        sink = HashingWriter(raw)
        # filename "" and mtime 0: nothing of the moment or the machine goes into the gzip header
        with gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0, compresslevel=6) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for prefix in sorted(roots):
                root = roots[prefix]
                if prefix:
                    tar.addfile(_info(prefix, True))
                for rel, st, is_dir in _walk(root):
                    name = f"{prefix}/{rel}" if prefix else rel
                    if st is None:
                        skipped.append(name)
                    elif is_dir:
                        tar.addfile(_info(name, True))
                    else:
                        with open(root / rel, "rb") as f:
                            size = os.fstat(f.fileno()).st_size  # as it is now, not as it was listed
                            tar.addfile(_info(name, False, size, bool(st.st_mode & stat.S_IXUSR)), f)
                        files += 1
                        unpacked += size
    return Packed(sink.hash.hexdigest(), sink.count, files, unpacked, skipped)


# ---------------------------------------------------------------------------- checking


def check_member(m: tarfile.TarInfo) -> str | None:
    """Why this member may not be unpacked, or None."""
    name = m.name
    if not (m.isreg() or m.isdir()):
        kind = ("a symlink" if m.issym() else "a hard link" if m.islnk() else "a fifo" if m.isfifo()
                else "a device" if m.isdev() else "not a regular file or folder")
        return f"member {name!r} is {kind}"
    if not name or "\x00" in name or "\\" in name:
        return f"member {name!r} has an unusable name"
    if name.startswith("/"):
        return f"member {name!r} has an absolute path"
    if ".." in PurePosixPath(name).parts:
        return f"member {name!r} climbs out with '..'"
    return None


def _members(tar: tarfile.TarFile, max_members: int, max_unpacked: int) -> Iterator[tarfile.TarInfo]:
    count = total = 0
    for m in tar:
        count += 1
        if count > max_members:
            raise UnsafeArchive(f"more than {max_members} members")
        why = check_member(m)
        if why:
            raise UnsafeArchive(why)
        total += m.size if m.isreg() else 0
        if total > max_unpacked:
            raise UnsafeArchive(f"it unpacks to more than {human_bytes(max_unpacked)}")
        yield m


def _reading(path: Path):
    """The archive as a stream (no seeking: a gzip is read once, front to back)."""
    return tarfile.open(path, mode="r|gz")


_BROKEN = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def inspect(path: Path, *, max_members: int = MAX_MEMBERS, max_unpacked: int = MAX_UNPACKED_BYTES
            ) -> tuple[int, int]:
    """(members, unpacked bytes) of a safe archive; UnsafeArchive saying why it is not one. The
    whole archive is read: a gzip cut short or corrupt shows only at its end."""
    members = total = 0
    try:
        with _reading(path) as tar:
            for m in _members(tar, max_members, max_unpacked):
                members += 1
                if m.isreg():
                    f = tar.extractfile(m)
                    while f.read(CHUNK):
                        pass
                    total += m.size
    except _BROKEN as exc:
        raise UnsafeArchive(f"not a valid tar.gz ({type(exc).__name__}: {exc})") from None
    return members, total


def unpack(path: Path, dest: Path, *, max_members: int = MAX_MEMBERS,
           max_unpacked: int = MAX_UNPACKED_BYTES) -> int:
    """Unpack the archive into the folder `dest` (which exists); the number of files. Every member
    is checked before it is written (UnsafeArchive), and nothing already in `dest` is followed:
    a symlink there is replaced, never written through."""
    dest = Path(dest)
    files = 0
    try:
        with _reading(path) as tar:
            for m in _members(tar, max_members, max_unpacked):
                target = dest.joinpath(*PurePosixPath(m.name).parts)
                if m.isdir():
                    _folder(target, dest)
                    continue
                _folder(target.parent, dest)
                if target.is_symlink() or target.exists():
                    target.unlink()
                mode = 0o755 if m.mode & stat.S_IXUSR else 0o644
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
                with os.fdopen(fd, "wb") as out, tar.extractfile(m) as f:
                    while block := f.read(CHUNK):
                        out.write(block)
                files += 1
    except _BROKEN as exc:
        raise UnsafeArchive(f"not a valid tar.gz ({type(exc).__name__}: {exc})") from None
    return files


def _folder(path: Path, root: Path) -> None:
    """Make `path` (below `root`) a real folder: any part that is a symlink or a file is refused."""
    rel = path.relative_to(root).parts
    current = root
    for part in rel:
        current = current / part
        if current.is_symlink() or (current.exists() and not current.is_dir()):
            raise UnsafeArchive(f"{current.relative_to(root)} is in the way (a file or a symlink)")
        if not current.exists():
            current.mkdir()
