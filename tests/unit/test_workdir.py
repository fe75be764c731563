"""A job's workdir archive, in-process: deterministic packing, ignore files, the member checks the
coordinator and the agents share, the coordinator's file store and the agent's cache."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
import time
from pathlib import Path

import pytest

from agent import workdir as agent_workdir
from coordinator.files import FileStore, Refused
from shared import workdir
from shared.apierror import ApiError
from shared.schemas.ranks import RankAssignment


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def names(archive: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        return tar.getnames()


def raw_tar(dest: Path, *members: tuple[tarfile.TarInfo, bytes | None], gz: bool = True) -> Path:
    """A tar.gz (or plain tar) made by hand, for members `pack` would never write."""
    with tarfile.open(dest, "w:gz" if gz else "w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return dest


def member(name: str, kind=tarfile.REGTYPE, data: bytes = b"x", **extra) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    if kind == tarfile.REGTYPE:
        info.size = len(data)
    for k, v in extra.items():
        setattr(info, k, v)
    return info, data if kind == tarfile.REGTYPE else None


# ---------------------------------------------------------------------------- packing


def test_the_same_content_always_packs_to_the_same_digest(tmp_path):
    files = {"run.py": "print('hi')\n", "data/x.csv": "a,b\n1,2\n", "data/deep/y.txt": "y"}
    one, two = tree(tmp_path / "one", files), tree(tmp_path / "elsewhere" / "two", files)
    os.utime(two / "run.py", (1, 1))  # times, the folder's own name and path do not count
    os.chmod(two / "data" / "x.csv", 0o600)  # nor permissions other than the executable bit
    a = workdir.pack(one, tmp_path / "a.tar.gz")
    time.sleep(1.1)  # gzip would record the time of packing
    b = workdir.pack(two, tmp_path / "b.tar.gz")
    assert a.sha256 == b.sha256 == workdir.sha256_file(tmp_path / "b.tar.gz")
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()
    assert a.files == 3 and a.unpacked_bytes == sum(len(t) for t in files.values())
    assert a.archive_bytes == (tmp_path / "a.tar.gz").stat().st_size
    assert names(tmp_path / "a.tar.gz") == ["data", "data/deep", "data/deep/y.txt", "data/x.csv", "run.py"]
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        for m in tar.getmembers():
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
            assert m.mode == (0o755 if m.isdir() else 0o644)

    os.chmod(two / "run.py", 0o755)  # the executable bit counts
    c = workdir.pack(two, tmp_path / "c.tar.gz")
    (two / "data" / "x.csv").write_text("changed")
    d = workdir.pack(two, tmp_path / "d.tar.gz")
    assert len({a.sha256, c.sha256, d.sha256}) == 3
    out = tmp_path / "out"
    out.mkdir()
    assert workdir.unpack(tmp_path / "c.tar.gz", out) == 3
    assert os.access(out / "run.py", os.X_OK) and not os.access(out / "data" / "x.csv", os.X_OK)
    assert (out / "data" / "deep" / "y.txt").read_text() == "y"


def test_ignore_files_are_read_with_gits_rules_and_git_is_never_packed(tmp_path):
    src = tree(tmp_path / "src", {
        ".gitignore": "*.log\n!keep.log\nbuild/\n/top-only.txt\n",
        ".jupiterignore": "secret.txt\n",
        "keep.log": "kept", "noise.log": "x", "build/out.bin": "x", "top-only.txt": "x",
        "sub/top-only.txt": "kept: the pattern is anchored to the root",
        "sub/.gitignore": "data.csv\n!noise.log\n", "sub/data.csv": "x", "sub/noise.log": "re-included deeper",
        "other/data.csv": "kept: sub's rules stay in sub", "secret.txt": "x", "run.py": "x",
        ".git/HEAD": "ref", ".git/config": "x", "vendor/lib/.git": "gitdir: ../../.git/modules/lib",
        "vendor/lib/code.py": "x",
    })
    os.symlink("/etc/passwd", src / "link")
    packed = workdir.pack(src, tmp_path / "a.tar.gz")
    assert set(names(tmp_path / "a.tar.gz")) == {
        ".gitignore", ".jupiterignore", "keep.log", "run.py", "sub", "sub/.gitignore", "sub/top-only.txt",
        "sub/noise.log", "other", "other/data.csv", "vendor", "vendor/lib", "vendor/lib/code.py"}
    assert packed.skipped == ["link"]


# ---------------------------------------------------------------------------- checking


@pytest.mark.parametrize("bad, why", [
    (member("/etc/x"), "absolute path"),
    (member("../x"), "'..'"),
    (member("a/../../x"), "'..'"),
    (member("ln", tarfile.SYMTYPE, linkname="/etc/passwd"), "a symlink"),
    (member("hard", tarfile.LNKTYPE, linkname="run.py"), "a hard link"),
    (member("dev", tarfile.CHRTYPE, devmajor=1, devminor=3), "a device"),
    (member("fifo", tarfile.FIFOTYPE), "a fifo"),
    (member("holes", tarfile.GNUTYPE_SPARSE), "a sparse file"),
])
@pytest.mark.parametrize("gz", [True, False], ids=["tar.gz", "tar"])
def test_unsafe_members_are_refused_by_both_checks(tmp_path, bad, why, gz):
    archive = raw_tar(tmp_path / "bad.tar.gz", member("ok.txt"), bad, gz=gz)
    with pytest.raises(workdir.UnsafeArchive, match=why):
        workdir.inspect(archive)
    dest = tmp_path / "deep" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(workdir.UnsafeArchive, match=why):
        workdir.unpack(archive, dest)
    assert not (tmp_path / "deep" / "x").exists() and not (tmp_path / "x").exists()


def test_member_count_size_and_corruption_are_bounded(tmp_path):
    many = raw_tar(tmp_path / "many.tar.gz", *(member(f"f{i}") for i in range(11)))
    with pytest.raises(workdir.UnsafeArchive, match="more than 10 members"):
        workdir.inspect(many, max_members=10)
    assert workdir.inspect(many, max_members=11) == (11, 11)
    big = raw_tar(tmp_path / "big.tar.gz", member("zeros", data=bytes(5000)))
    with pytest.raises(workdir.UnsafeArchive, match="unpacks to more than"):
        workdir.inspect(big, max_unpacked=4096)
    with pytest.raises(workdir.UnsafeArchive, match="unpacks to more than"):
        workdir.unpack(big, tmp_path, max_unpacked=4096)
    (tmp_path / "plain.txt").write_text("not an archive")
    with pytest.raises(workdir.UnsafeArchive, match="not a valid tar.gz"):
        workdir.inspect(tmp_path / "plain.txt")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(big.read_bytes()[:-20])
    with pytest.raises(workdir.UnsafeArchive, match="not a valid tar.gz"):
        workdir.inspect(cut)


def test_unpack_replaces_a_planted_symlink_instead_of_writing_through_it(tmp_path):
    src = tree(tmp_path / "src", {"a.txt": "mine"})
    workdir.pack(src, tmp_path / "a.tar.gz")
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(victim, dest / "a.txt")
    workdir.unpack(tmp_path / "a.tar.gz", dest)
    assert victim.read_text() == "untouched" and not (dest / "a.txt").is_symlink()
    assert (dest / "a.txt").read_text() == "mine"


# ---------------------------------------------------------------------------- the coordinator's store


def upload(store: FileStore, sha: str, data: bytes, declared: int | None = None) -> bool:
    up = store.begin(sha, declared)
    try:
        for i in range(0, len(data), 1000):
            up.write(data[i:i + 1000])
        return up.finish()
    finally:
        up.abort()


def test_the_file_store_keeps_only_whole_safe_archives_under_their_digest(tmp_path):
    store = FileStore(tmp_path / "files", max_bytes=100_000)
    packed = workdir.pack(tree(tmp_path / "src", {"run.py": "x"}), tmp_path / "a.tar.gz")
    data = (tmp_path / "a.tar.gz").read_bytes()
    assert not store.has(packed.sha256)
    assert upload(store, packed.sha256, data) is True and store.has(packed.sha256)
    assert upload(store, packed.sha256, data) is False
    with pytest.raises(Refused, match="digest mismatch") as bad:
        upload(store, "0" * 64, data)
    assert bad.value.status == 400
    evil = raw_tar(tmp_path / "evil.tar.gz", member("../x")).read_bytes()
    with pytest.raises(Refused, match="'..'") as bad:
        upload(store, hashlib.sha256(evil).hexdigest(), evil)
    assert bad.value.status == 400
    with pytest.raises(Refused, match="limit of 100000 bytes") as big:
        upload(store, "1" * 64, os.urandom(100_001))
    assert big.value.status == 413
    with pytest.raises(Refused, match="limit of 100000 bytes"):
        store.begin("1" * 64, 100_001)
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == [packed.sha256]  # no part left behind
    with pytest.raises(ValueError):
        store.path("../admin.token")


# ---------------------------------------------------------------------------- the agent's cache


class FakeConnection:
    """agent.uplink.Connection's download, serving bytes from a dict (and counting)."""

    served: dict[str, bytes] = {}
    calls: list[str] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def download(self, path, dest_file, max_bytes, *, timeout=None):
        self.calls.append(path)
        time.sleep(0.2)  # long enough for the other ranks to arrive meanwhile
        data = self.served.get(path.rsplit("/", 1)[1])
        if data is None:
            raise ApiError(404, "no file")
        dest_file.write(data)
        return len(data)


def assignment(sha: str, rank: int = 0) -> RankAssignment:
    return RankAssignment(job_id="j-0123456789", rank=rank, attempt=0, world_size=4, command=["true"], workdir=sha)


def test_ranks_of_one_job_on_a_node_fetch_once_and_each_unpack_a_copy(tmp_path, monkeypatch):
    packed = workdir.pack(tree(tmp_path / "src", {"run.py": "print(1)", "d/x.txt": "x"}), tmp_path / "a.tar.gz")
    FakeConnection.served = {packed.sha256: (tmp_path / "a.tar.gz").read_bytes(), "f" * 64: b"not it"}
    FakeConnection.calls = []
    work = tmp_path / "work"
    results: dict[int, str | None] = {}

    def rank(n):
        folder = work / "jobs" / "j" / "0" / f"rank-{n}"
        folder.mkdir(parents=True)
        results[n] = agent_workdir.prepare(FakeConnection, "n-0123456789", work, assignment(packed.sha256, n), folder)

    threads = [threading.Thread(target=rank, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {n: None for n in range(4)} and len(FakeConnection.calls) == 1
    for n in range(4):
        assert (work / "jobs" / "j" / "0" / f"rank-{n}" / "d" / "x.txt").read_text() == "x"
    assert (agent_workdir.cache_dir(work) / packed.sha256).is_file()

    monkeypatch.setattr(agent_workdir, "FETCH_TRIES", 1)
    missing = agent_workdir.prepare(FakeConnection, "n", work, assignment("e" * 64), tmp_path)
    assert missing.startswith(f"cannot start: workdir archive {'e' * 12} is not on the coordinator")
    corrupt = agent_workdir.prepare(FakeConnection, "n", work, assignment("f" * 64), tmp_path)
    assert "arrived corrupt" in corrupt and not (agent_workdir.cache_dir(work) / ("f" * 64)).exists()
    assert sorted(p.name for p in agent_workdir.cache_dir(work).iterdir()) == [packed.sha256]


def test_the_cache_evicts_the_least_recently_used_but_never_one_in_use(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    for i, name in enumerate(("a", "b", "c")):
        p = cache / (name * 64)
        p.write_bytes(bytes(100))
        os.utime(p, (1000 + i, 1000 + i))
    (cache / ("a" * 64 + ".123.part")).write_bytes(b"")
    os.utime(cache / ("a" * 64 + ".123.part"), (1, 1))
    agent_workdir._in_use["a" * 64] = 1  # the oldest, but a rank is unpacking it
    try:
        assert agent_workdir.evict(cache, 150) == ["b" * 64, "c" * 64]
    finally:
        del agent_workdir._in_use["a" * 64]
    assert sorted(p.name for p in cache.iterdir()) == ["a" * 64]
    assert agent_workdir.evict(cache, 150) == []


def test_folders_that_live_apart_pack_under_their_names(tmp_path):
    model = tree(tmp_path / "somewhere" / "m", {"config.json": "{}", ".gitignore": "*.tmp\n", "w.tmp": "x"})
    data = tree(tmp_path / "elsewhere" / "d", {"train.jsonl": "{}\n"})
    a = workdir.pack({"model": model, "data": data}, tmp_path / "a.tar.gz")
    b = workdir.pack({"data": data, "model": model}, tmp_path / "b.tar.gz")
    assert a.sha256 == b.sha256  # the mapping's order does not matter
    assert names(tmp_path / "a.tar.gz") == ["data", "data/train.jsonl", "model", "model/.gitignore",
                                            "model/config.json"]
    for bad in ("../up", "a/b", ""):
        with pytest.raises(ValueError):
            workdir.pack({bad: model, "x": data}, tmp_path / "c.tar.gz")
