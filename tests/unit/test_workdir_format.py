"""The workdir archive's two kinds, in-process: gzipped when that saves much, a plain tar when the
data does not compress; both unpack, archives gzipped before plain tars existed included, and the
SHA-256 is of the archive's bytes either way."""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
from pathlib import Path

import pytest

from agent import workdir as agent_workdir
from coordinator.files import FileStore, Refused
from shared import workdir
from tests.unit.test_workdir import FakeConnection, assignment, tree, upload

MIB = 1 << 20


@pytest.fixture
def small_threshold(monkeypatch):
    """Choose between gzip and plain from 1 MiB of file data up, so tests stay small."""
    monkeypatch.setattr(workdir, "GZIP_ALWAYS_BELOW", MIB)


def project(root: Path, blob: bytes) -> Path:
    tree(root, {"run.py": "print('hi')\n", "config.json": '{"lr": 0.1}'})
    (root / "data").mkdir()
    (root / "data" / "blob.bin").write_bytes(blob)
    return root


def is_gzip(path: Path) -> bool:
    return path.read_bytes()[:2] == workdir.GZIP_MAGIC


def pack_as_before(src: Path, dest: Path) -> None:
    """How every archive was packed before plain tars existed (those are in caches and stores)."""
    with open(dest, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in ("config.json", "data", "data/blob.bin", "run.py"):
            path = src / rel
            info = tarfile.TarInfo(rel)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = path.stat().st_size, 0o644
                with open(path, "rb") as f:
                    tar.addfile(info, f)


def test_incompressible_data_is_stored_and_compressible_data_gzipped(tmp_path, small_threshold):
    blob = os.urandom(2 * MIB)
    plain = workdir.pack(project(tmp_path / "random", blob), tmp_path / "random.tar")
    assert not plain.gzipped and not is_gzip(tmp_path / "random.tar")
    assert plain.sha256 == hashlib.sha256((tmp_path / "random.tar").read_bytes()).hexdigest()
    assert plain.archive_bytes == (tmp_path / "random.tar").stat().st_size
    with tarfile.open(tmp_path / "random.tar", "r:") as tar:  # an ordinary tar
        assert tar.getnames() == ["config.json", "data", "data/blob.bin", "run.py"]

    text = b"".join(b"step %d loss %.4f\n" % (i, 1 / (i + 1)) for i in range(120_000))
    gz = workdir.pack(project(tmp_path / "text", text), tmp_path / "text.tar.gz")
    assert gz.gzipped and is_gzip(tmp_path / "text.tar.gz") and gz.archive_bytes < len(text) / 2

    # 3,000 files of 500 random bytes: each takes a 512-byte header and 12 bytes of padding that gzip removes
    many = tmp_path / "many"
    many.mkdir()
    for i in range(3000):
        (many / f"f{i:04}.bin").write_bytes(os.urandom(500))
    assert workdir.pack(many, tmp_path / "many.tar.gz").gzipped


def test_a_small_workdir_is_always_gzipped_as_it_was(tmp_path):
    src = project(tmp_path / "src", os.urandom(100_000))  # incompressible, but far under GZIP_ALWAYS_BELOW
    packed = workdir.pack(src, tmp_path / "a.tar.gz")
    pack_as_before(src, tmp_path / "before.tar.gz")
    assert packed.gzipped and (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "before.tar.gz").read_bytes()


def test_the_plain_tar_is_the_gzipped_one_unzipped(tmp_path, small_threshold, monkeypatch):
    src = project(tmp_path / "src", os.urandom(2 * MIB))
    stored = workdir.pack(src, tmp_path / "a.tar")
    monkeypatch.setattr(workdir, "GZIP_MIN_SAVING", -1.0)  # gzip whatever it saves
    zipped = workdir.pack(src, tmp_path / "a.tar.gz")
    assert not stored.gzipped and zipped.gzipped and stored.sha256 != zipped.sha256
    assert gzip.decompress((tmp_path / "a.tar.gz").read_bytes()) == (tmp_path / "a.tar").read_bytes()
    pack_as_before(src, tmp_path / "before.tar.gz")  # and a gzipped one is byte for byte what it was
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "before.tar.gz").read_bytes()


@pytest.mark.parametrize("kind", ["before", "plain"])
@pytest.mark.parametrize("copy_file_range", [True, False], ids=["kernel-copy", "buffer-copy"])
def test_both_kinds_unpack_and_pass_the_stores_check(tmp_path, small_threshold, monkeypatch, kind, copy_file_range):
    if not copy_file_range:
        monkeypatch.delattr(os, "copy_file_range", raising=False)
    blob = os.urandom(2 * MIB + 7)
    src = project(tmp_path / "src", blob)
    os.chmod(src / "run.py", 0o755)
    archive = tmp_path / "archive"
    if kind == "before":
        pack_as_before(src, archive)
    else:
        assert not workdir.pack(src, archive).gzipped
    assert workdir.inspect(archive) == (4, len(blob) + len("print('hi')\n") + len('{"lr": 0.1}'))
    out = tmp_path / "out"
    out.mkdir()
    assert workdir.unpack(archive, out) == 3
    assert (out / "data" / "blob.bin").read_bytes() == blob and (out / "config.json").read_text() == '{"lr": 0.1}'
    assert os.access(out / "run.py", os.X_OK) == (kind == "plain")  # pack_as_before writes 0644 throughout

    data = archive.read_bytes()
    store = FileStore(tmp_path / "files", max_bytes=10 * MIB)
    assert upload(store, hashlib.sha256(data).hexdigest(), data) is True


@pytest.mark.parametrize("gz", [True, False], ids=["tar.gz", "tar"])
def test_an_archive_cut_short_is_refused(tmp_path, small_threshold, monkeypatch, gz):
    if gz:
        monkeypatch.setattr(workdir, "GZIP_MIN_SAVING", -1.0)
    src = project(tmp_path / "src", os.urandom(2 * MIB))
    workdir.pack(src, tmp_path / "a")
    cut = tmp_path / "cut"
    cut.write_bytes((tmp_path / "a").read_bytes()[:MIB])  # in the middle of blob.bin
    with pytest.raises(workdir.UnsafeArchive, match="not a valid tar.gz or tar"):
        workdir.inspect(cut)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(workdir.UnsafeArchive, match="not a valid tar.gz or tar"):
        workdir.unpack(cut, out)
    store = FileStore(tmp_path / "files")
    data = cut.read_bytes()
    with pytest.raises(Refused, match="not a valid tar.gz or tar"):
        upload(store, hashlib.sha256(data).hexdigest(), data)


def test_an_agent_fetches_checks_and_unpacks_a_plain_tar(tmp_path, small_threshold, monkeypatch):
    blob = os.urandom(2 * MIB)
    packed = workdir.pack(project(tmp_path / "src", blob), tmp_path / "a.tar")
    assert not packed.gzipped
    data = (tmp_path / "a.tar").read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1  # one bit of blob.bin: still a valid tar, but not the archive named
    FakeConnection.served = {packed.sha256: bytes(flipped)}
    FakeConnection.calls = []
    work, folder = tmp_path / "work", tmp_path / "rank-0"
    folder.mkdir()
    monkeypatch.setattr(agent_workdir, "FETCH_TRIES", 1)
    why = agent_workdir.prepare(FakeConnection, "n", work, assignment(packed.sha256), folder)
    assert "arrived corrupt" in why and not list(folder.iterdir())
    FakeConnection.served = {packed.sha256: data}
    assert agent_workdir.prepare(FakeConnection, "n", work, assignment(packed.sha256), folder) is None
    assert (folder / "data" / "blob.bin").read_bytes() == blob
    assert (agent_workdir.cache_dir(work) / packed.sha256).read_bytes() == data
