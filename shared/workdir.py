"""A job's workdir as one archive: packed by the CLI, checked by the coordinator, unpacked by agents.

The archive is a tar named by its SHA-256, so the packing is deterministic: entries sorted, times,
owners and modes fixed (only the executable bit survives), the gzip header without a name or time.
The same folder content always gives the same digest, and a second upload of it is skipped.

The tar is gzipped unless that would save little: a large folder of data that does not compress
(random or already compressed bytes) is stored as a plain tar, so no node spends a gunzip pass on
it, and a plain tar unpacks with the kernel copying each member out of the archive. Which one is
decided from the content (`_gzip_pays`), so it is deterministic too. Both kinds unpack, told apart
by the gzip magic; archives packed before plain tars existed are all gzipped.

Every member must be a regular file or a folder under a relative path without `..`: no links, no
devices, nothing that could write outside the folder it is unpacked into. The coordinator checks
this when an archive arrives and the agent again when it unpacks one (`check_member`).

Standard library only (the agent imports this); pathspec, which reads `.gitignore` files, is
imported inside `pack`, the one function that needs it.
"""

from __future__ import annotations

import contextlib
import errno
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
GZIP_MAGIC = b"\x1f\x8b"
# Gzip or not: below this much file data always gzip (either is cheap, and small workdirs keep the
# digests they had); above it gzip only when it is expected to save at least GZIP_MIN_SAVING of
# the plain tar. The estimate compresses a SAMPLE_BYTES window from the middle of each of the
# SAMPLED_FILES largest files.
GZIP_ALWAYS_BELOW = 8 << 20
GZIP_MIN_SAVING = 0.2
SAMPLE_BYTES = 64 << 10
SAMPLED_FILES = 64
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


_SAFE_PART = re.compile(r"[A-Za-z0-9._-]{1,64}")


class UnsafeArchive(ValueError):
    """The archive is not a tar (gzipped or not) Jupiter will unpack; the message says why."""


@dataclass
class Packed:
    sha256: str
    archive_bytes: int
    files: int
    unpacked_bytes: int
    skipped: list[str] = field(default_factory=list)  # symlinks and special files, left out
    gzipped: bool = True


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

    def tell(self) -> int:  # tarfile writing straight into it asks where it starts
        return self.count

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
    entries: list[tuple[str, Path | None, os.stat_result | None]] = []  # (name, its file or None: a folder, stat)
    skipped: list[str] = []
    for prefix in sorted(roots):
        root = roots[prefix]
        if prefix:
            entries.append((prefix, None, None))
        for rel, st, is_dir in _walk(root):
            name = f"{prefix}/{rel}" if prefix else rel
            if st is None:
                skipped.append(name)
            else:
                entries.append((name, None if is_dir else root / rel, st))
    gzipped = _gzip_pays([(name, path, st.st_size) for name, path, st in entries if path is not None], len(entries))
    files = unpacked = 0
    with open(dest, "wb") as raw:
        sink = HashingWriter(raw)
        with contextlib.ExitStack() as stack:
            if gzipped:  # written as it always was, so gzipped archives keep their digests
                # filename "" and mtime 0: nothing of the moment or the machine goes into the gzip header
                gz = stack.enter_context(gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0, compresslevel=6))
                tar = stack.enter_context(tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT))
            else:
                tar = stack.enter_context(
                    tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK))
            for name, path, st in entries:
                if path is None:
                    tar.addfile(_info(name, True))
                    continue
                with open(path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size  # as it is now, not as it was listed
                    tar.addfile(_info(name, False, size, bool(st.st_mode & stat.S_IXUSR)), f)
                files += 1
                unpacked += size
    return Packed(sink.hash.hexdigest(), sink.count, files, unpacked, skipped, gzipped)


def _gzip_pays(files: list[tuple[str, Path, int]], members: int) -> bool:
    """Whether gzip is expected to make the archive at least GZIP_MIN_SAVING smaller. A window from
    the middle of each of the largest files is compressed (the middle: a header at the start may
    compress unlike the bulk); the smaller files count as the sampled ones did on average. Each tar
    header is 512 bytes that gzip all but removes, so many small files favour gzip."""
    data = sum(size for _, _, size in files)
    if data < GZIP_ALWAYS_BELOW:
        return True
    sampled = sampled_gz = 0.0
    for _, path, size in sorted(files, key=lambda f: (-f[2], f[0]))[:SAMPLED_FILES]:
        with open(path, "rb") as f:
            f.seek(max(0, (size - SAMPLE_BYTES) // 2))
            window = f.read(SAMPLE_BYTES)
        if window:
            sampled += size
            sampled_gz += size * len(zlib.compress(window, 6)) / len(window)
    gz_data = sampled_gz / sampled * data if sampled else data
    plain = sum(-(-size // 512) * 512 for _, _, size in files) + 512 * members
    return gz_data + 64 * members <= (1 - GZIP_MIN_SAVING) * plain


# ---------------------------------------------------------------------------- checking


def check_member(m: tarfile.TarInfo) -> str | None:
    """Why this member may not be unpacked, or None."""
    name = m.name
    if not (m.isreg() or m.isdir()):
        kind = ("a symlink" if m.issym() else "a hard link" if m.islnk() else "a fifo" if m.isfifo()
                else "a device" if m.isdev() else "not a regular file or folder")
        return f"member {name!r} is {kind}"
    if m.sparse is not None:  # its bytes are not laid out as they unpack; pack never writes one
        return f"member {name!r} is a sparse file"
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


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[tuple[tarfile.TarFile, BinaryIO | None]]:
    """(the tar, the archive's file when it is a plain tar: its members' bytes lie in it at
    `offset_data`, to be copied out directly). A gzipped tar is read as a stream, once, front to
    back; a plain one by seeking from header to header."""
    with open(path, "rb") as raw:
        gzipped = raw.read(len(GZIP_MAGIC)) == GZIP_MAGIC
        raw.seek(0)
        with tarfile.open(fileobj=raw, mode="r|gz" if gzipped else "r:") as tar:
            yield tar, None if gzipped else raw


_BROKEN = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def _not_valid(exc: Exception) -> UnsafeArchive:
    return UnsafeArchive(f"not a valid tar.gz or tar ({type(exc).__name__}: {exc})")


def inspect(path: Path, *, max_members: int = MAX_MEMBERS, max_unpacked: int = MAX_UNPACKED_BYTES
            ) -> tuple[int, int]:
    """(members, unpacked bytes) of a safe archive; UnsafeArchive saying why it is not one. A
    gzipped archive is read whole: one cut short or corrupt shows only at its end. A plain tar's
    headers are read (tarfile checks that each member's bytes lie within the file)."""
    members = total = 0
    try:
        with _reading(path) as (tar, plain):
            for m in _members(tar, max_members, max_unpacked):
                members += 1
                if m.isreg():
                    if plain is None:
                        f = tar.extractfile(m)
                        while f.read(CHUNK):
                            pass
                    total += m.size
    except _BROKEN as exc:
        raise _not_valid(exc) from None
    return members, total


def unpack(path: Path, dest: Path, *, max_members: int = MAX_MEMBERS,
           max_unpacked: int = MAX_UNPACKED_BYTES) -> int:
    """Unpack the archive into the folder `dest` (which exists); the number of files. Every member
    is checked before it is written (UnsafeArchive), and nothing already in `dest` is followed:
    a symlink there is replaced, never written through."""
    dest = Path(dest)
    files = 0
    try:
        with _reading(path) as (tar, plain):
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
                with os.fdopen(fd, "wb") as out:
                    if plain is not None:
                        _copy_out(plain, m.offset_data, m.size, out)
                    else:
                        with tar.extractfile(m) as f:
                            while block := f.read(CHUNK):
                                out.write(block)
                files += 1
    except _BROKEN as exc:
        raise _not_valid(exc) from None
    return files


def _copy_out(src: BinaryIO, offset: int, size: int, out: BinaryIO) -> None:
    """Copy `size` bytes of `src` from `offset` into `out` (fresh, nothing written yet). Where the
    system has copy_file_range the kernel copies them, never through this process (or shares the
    blocks, on file systems that can); elsewhere through one buffer, in CHUNK pieces."""
    left = size
    if left and hasattr(os, "copy_file_range"):
        try:
            while left:
                n = os.copy_file_range(src.fileno(), out.fileno(), min(left, 1 << 30), offset)
                if not n:
                    raise UnsafeArchive(f"not a valid tar.gz or tar (cut short: {left} bytes missing)")
                offset, left = offset + n, left - n
            return
        except OSError as exc:  # not across these file systems or on this kernel: copy it here
            if left != size or exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP,
                                                  errno.EPERM, errno.ENOTSUP):
                raise
    src.seek(offset)
    buf = memoryview(bytearray(min(CHUNK, left)))
    while left:
        n = src.readinto(buf[:min(CHUNK, left)])
        if not n:
            raise UnsafeArchive(f"not a valid tar.gz or tar (cut short: {left} bytes missing)")
        out.write(buf[:n])
        left -= n


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
