"""Artifacts in-process: glob matching, path safety, the coordinator store's quota, the agent's
uploads (unchanged files skipped, nothing outside the folder) and restore, the CLI's selection,
and the built-in trainer's defaults. End to end: tests/system/test_artifacts.py."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest

from agent import artifacts as agent_artifacts
from coordinator import trainer_jobs
from coordinator.artifacts import ArtifactError, ArtifactStore, BadPath, PathConflict, QuotaExceeded, fits
from coordinator.jobs.spec import stored
from shared.cli.artifacts import destinations, select
from shared.cluster_config import ClusterConfig
from shared.schemas import JobSpec, RankAssignment
from shared.schemas.artifacts import ArtifactGlobs, path_problem, upload_order


# ---------------------------------------------------------------- globs and paths

@pytest.mark.parametrize("glob, path, expected", [
    ("out/**", "out/a.txt", True),
    ("out/**", "out/deep/er/b.bin", True),
    ("out/**", "out", False),                     # a/**: the files below a, not a file named a
    ("out/**", "outer/a.txt", False),
    ("out/**", "out/.hidden", False),             # wildcards never match hidden names
    ("out/*", "out/a.txt", True),
    ("out/*", "out/sub/a.txt", True),             # a matched folder brings its files
    ("out/*", "out/.tmp-step-1/a", False),
    ("*.json", "config.json", True),
    ("*.json", "sub/config.json", False),
    ("**/*.json", "sub/dir/config.json", True),
    ("**/*.json", "config.json", True),
    ("**/*.json", ".cache/config.json", False),
    ("checkpoints/step-*/*", "checkpoints/step-00000200/model.safetensors", True),
    ("checkpoints/step-*/*", "checkpoints/.tmp-step-00000200-9/model.safetensors", False),
    ("checkpoints/**", "checkpoints/latest", True),
    ("checkpoints/**", "checkpoints/.latest-123", False),
    ("checkpoints/.latest-*", "checkpoints/.latest-123", True),  # named, a hidden file is matched
    ("adapters", "adapters/adapters.safetensors", True),
    ("model-?.bin", "model-1.bin", True),
    ("model-?.bin", "model-12.bin", False),
    ("[!a]*", "b.txt", True),
    ("[!a]*", "a.txt", False),
    ("[ab].txt", "b.txt", True),
    ("**", "anything/at/all", True),
    ("**", "x/.git/config", False),
    ("a[b", "a[b", True),                         # an unclosed bracket is a plain character
])
def test_globs_match_like_glob_with_double_star_spanning_folders(glob, path, expected):
    assert ArtifactGlobs([glob]).match(path) is expected


def test_any_of_several_globs_matches():
    globs = ArtifactGlobs(["out/**", "*.log"])
    assert globs.match("out/x") and globs.match("run.log") and not globs.match("other.txt")


@pytest.mark.parametrize("path, ok", [
    ("out/a.txt", True), ("checkpoints/step-00000001/model.safetensors", True), ("a b/ü.txt", True),
    ("", False), ("/etc/passwd", False), ("../x", False), ("a/../../x", False), ("a/./b", False),
    ("a//b", False), ("a/", False), ("a\\b", False), ("a\x00b", False), ("a\x1b[2Jb", False),
    ("a\u202eb", False), ("x" * 1025, False), ("x" * 256, False), ("d/" + "x" * 255, True),
])
def test_artifact_paths_are_relative_plain_and_bounded(path, ok):
    assert (path_problem(path) is None) is ok


def test_upload_order_puts_deeper_files_first_so_a_pointer_comes_last():
    paths = ["checkpoints/latest", "checkpoints/step-2/state.json", "checkpoints/step-2/model.safetensors",
             "top.txt"]
    assert upload_order(paths) == ["checkpoints/step-2/model.safetensors", "checkpoints/step-2/state.json",
                                   "checkpoints/latest", "top.txt"]


# ---------------------------------------------------------------- the coordinator's store

@pytest.mark.parametrize("used, replaced, incoming, quota, ok", [
    (0, 0, 10, 10, True), (0, 0, 11, 10, False), (8, 0, 2, 10, True), (8, 0, 3, 10, False),
    (8, 5, 7, 10, True),   # replacing a file: its old bytes go as the new ones arrive
    (8, 5, 8, 10, False), (10, 10, 10, 10, True),
])
def test_quota_arithmetic(used, replaced, incoming, quota, ok):
    assert fits(used, replaced, incoming, quota) is ok


def _put(store: ArtifactStore, job: str, path: str, data: bytes, modified: float | None = None):
    up = store.begin(job, path, len(data))
    try:
        up.write(data)
        return up.finish(modified)
    finally:
        up.abort()


def test_store_keeps_files_with_size_sha256_and_mtime(tmp_path):
    store = ArtifactStore(tmp_path / "artifacts", 1000)
    out = _put(store, "j-0000000001", "out/a.txt", b"hello", modified=1_700_000_000.5)
    assert out.size == 5 and out.sha256 == hashlib.sha256(b"hello").hexdigest()
    assert out.modified_at.timestamp() == pytest.approx(1_700_000_000.5, abs=1e-3)
    assert (tmp_path / "artifacts" / "j-0000000001" / "out" / "a.txt").read_bytes() == b"hello"
    _put(store, "j-0000000001", "b.bin", b"\x00" * 10)
    listed = ArtifactStore(tmp_path / "artifacts", 1000).list("j-0000000001")  # a restarted coordinator
    assert [(a.path, a.size) for a in listed] == [("b.bin", 10), ("out/a.txt", 5)]
    assert listed[1].sha256 == out.sha256
    assert store.file("j-0000000001", "out/a.txt").read_bytes() == b"hello"
    assert store.file("j-0000000001", "out/nope") is None and store.file("j-0000000001", "../x") is None
    assert store.list("j-0000000002") == []
    assert not any((tmp_path / "artifacts" / ".tmp").iterdir())


def test_store_quota_counts_every_file_replacements_and_uploads_under_way(tmp_path):
    store = ArtifactStore(tmp_path, 100)
    job = "j-0000000001"
    _put(store, job, "a", b"x" * 60)
    with pytest.raises(QuotaExceeded):
        store.begin(job, "b", 41)
    _put(store, job, "a", b"y" * 90)     # replacing: 90 in place of 60
    assert store.used(job) == 90
    held = store.begin(job, "b", 10)     # reserved while it arrives
    with pytest.raises(QuotaExceeded):
        store.begin(job, "c", 1)
    held.abort()                         # gone: its reservation too
    _put(store, job, "c", b"z" * 10)
    assert store.used(job) == 100
    _put(store, "j-0000000002", "a", b"x" * 100)  # per job


def test_store_refuses_bad_paths_conflicts_and_more_than_announced(tmp_path):
    store = ArtifactStore(tmp_path, 1000)
    job = "j-0000000001"
    for bad in ("../escape", "/abs", "a//b", "a\x07"):
        with pytest.raises(BadPath):
            store.begin(job, bad, 1)
    _put(store, job, "file", b"1")
    with pytest.raises(PathConflict):
        store.begin(job, "file/below", 1)
    _put(store, job, "dir/x", b"1")
    with pytest.raises(PathConflict):
        store.begin(job, "dir", 1)
    up = store.begin(job, "short", 3)
    up.write(b"ab")
    with pytest.raises(ArtifactError):
        up.write(b"cd")
    with pytest.raises(ArtifactError):
        up.finish()
    up.abort()
    assert store.file(job, "short") is None and store.used(job) == 2


# ---------------------------------------------------------------- the agent's uploads

class FakeConnection:
    """What the agent's artifacts module asks of agent.uplink.Connection, kept in memory."""

    def __init__(self, server: dict):
        self.server = server

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def upload(self, path, file, size, *, timeout=None):
        data = file.read(size)
        assert len(data) == size
        rel = path.split("/artifacts/", 1)[1].split("?", 1)[0]
        self.server.setdefault("uploads", []).append(rel)
        self.server.setdefault("files", {})[rel] = data
        return b"{}"

    def request(self, method, path, body=None, *, timeout=None):
        if method == "DELETE":
            rel = path.split("/artifacts/", 1)[1]
            self.server.setdefault("deletes", []).append(rel)
            self.server.get("files", {}).pop(rel, None)
            return 204, b""
        assert method == "GET" and path.endswith("/artifacts")
        listing = [{"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest(),
                    "modified_at": "2026-12-01T10:00:00Z"} for p, d in sorted(self.server.get("files", {}).items())]
        return 200, json.dumps(listing).encode()

    def download(self, path, dest_file, max_bytes, *, timeout=None):
        data = self.server["files"][path.split("/artifacts/", 1)[1]]
        dest_file.write(data)
        self.server.setdefault("downloads", []).append(path)
        return len(data)


def assignment(**kw) -> RankAssignment:
    base = dict(job_id="j-0000000001", rank=0, attempt=0, world_size=2, command=["python"], artifacts=["out/**"])
    base.update(kw)
    return RankAssignment(**base)


def old(path, seconds=10):
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_unchanged_files_are_not_uploaded_again(tmp_path):
    (tmp_path / "out" / "sub").mkdir(parents=True)
    for name, data in (("out/a.txt", b"a"), ("out/sub/b.txt", b"b"), ("other.txt", b"o"), ("out/.part", b"p")):
        (tmp_path / name).write_bytes(data)
        old(tmp_path / name)
    server: dict = {}
    ups = agent_artifacts.Uploads(assignment(), tmp_path)
    connect = lambda: FakeConnection(server)  # noqa: E731
    assert ups.round(connect, settle_s=0, final=True) == (2, False)
    assert server["uploads"] == ["out/sub/b.txt", "out/a.txt"]  # deeper first; non-matching and hidden left
    assert ups.round(connect, settle_s=0, final=True) == (0, False)
    (tmp_path / "out" / "a.txt").write_bytes(b"A2")
    assert ups.round(connect, settle_s=0, final=True) == (1, False)
    assert server["uploads"][-1] == "out/a.txt" and server["files"]["out/a.txt"] == b"A2"


def test_a_periodic_round_leaves_files_that_are_still_changing(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "fresh.bin").write_bytes(b"x")
    server: dict = {}
    ups = agent_artifacts.Uploads(assignment(), tmp_path)
    assert ups.round(lambda: FakeConnection(server), settle_s=2.0, final=False) == (0, False)
    assert ups.round(lambda: FakeConnection(server), settle_s=0, final=True) == (1, False)


def test_a_file_saved_by_replacing_the_last_goes_up_at_once(tmp_path):
    (tmp_path / "out").mkdir()
    ckpt = tmp_path / "out" / "adapters.safetensors"
    ckpt.write_bytes(b"v1")
    server: dict = {}
    ups = agent_artifacts.Uploads(assignment(), tmp_path)
    assert ups.round(lambda: FakeConnection(server), settle_s=2.0, final=False) == (0, False)  # may be mid-write
    tmp = tmp_path / "out" / ".next"
    tmp.write_bytes(b"v2")
    os.replace(tmp, ckpt)  # written elsewhere, then renamed over it: whole, though just changed
    assert ups.round(lambda: FakeConnection(server), settle_s=2.0, final=False) == (1, False)
    assert server["files"]["out/adapters.safetensors"] == b"v2"
    ckpt.write_bytes(b"v3 in place")  # the same file rewritten: it waits until it settles
    assert ups.round(lambda: FakeConnection(server), settle_s=2.0, final=False) == (0, False)


def test_a_file_rank_0_deleted_is_deleted_on_the_coordinator_too(tmp_path):
    (tmp_path / "out" / "step-1").mkdir(parents=True)
    (tmp_path / "out" / "step-1" / "w.bin").write_bytes(b"old")
    server: dict = {}
    ups = agent_artifacts.Uploads(assignment(), tmp_path)
    assert ups.round(lambda: FakeConnection(server), settle_s=0, final=True) == (1, False)
    (tmp_path / "out" / "step-1" / "w.bin").unlink()  # the trainer pruned an old checkpoint
    (tmp_path / "out" / "step-2").mkdir()
    (tmp_path / "out" / "step-2" / "w.bin").write_bytes(b"new")
    assert ups.round(lambda: FakeConnection(server), settle_s=0, final=True) == (1, False)
    assert server["deletes"] == ["out/step-1/w.bin"] and sorted(server["files"]) == ["out/step-2/w.bin"]
    assert ups.round(lambda: FakeConnection(server), settle_s=0, final=True) == (0, False)  # said once


def test_the_store_forgets_a_deleted_artifact_and_its_empty_folders(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    for path in ("ckpt/step-1/w.bin", "ckpt/step-2/w.bin"):
        up = store.begin("j-1", path, 3)
        up.write(b"abc")
        up.finish()
    assert store.used("j-1") == 6
    assert store.delete("j-1", "ckpt/step-1/w.bin") and not store.delete("j-1", "ckpt/step-1/w.bin")
    assert store.used("j-1") == 3 and [a.path for a in store.list("j-1")] == ["ckpt/step-2/w.bin"]
    assert not (tmp_path / "store" / "j-1" / "ckpt" / "step-1").exists()
    assert not store.delete("j-1", "../j-2/x")


def test_nothing_outside_the_folder_goes_up(tmp_path):
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "token").write_bytes(b"s")
    rank = tmp_path / "rank"
    (rank / "out").mkdir(parents=True)
    os.symlink(outside / "token", rank / "out" / "link-to-file")
    os.symlink(outside, rank / "out" / "link-to-dir")
    (rank / "out" / "real").write_bytes(b"r")
    found = agent_artifacts.find(rank, ArtifactGlobs(["out/**", "**"]))
    assert sorted(found) == ["out/real"]


def test_collect_uploads_only_for_rank_0_with_globs(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "r.txt").write_bytes(b"r")
    server: dict = {}
    connect = lambda: FakeConnection(server)  # noqa: E731
    agent_artifacts.collect(connect, "n-0000000000", assignment(rank=1, artifacts=[]), tmp_path, 0)
    agent_artifacts.collect(connect, "n-0000000000", assignment(artifacts=[]), tmp_path, 0)
    assert "uploads" not in server
    agent_artifacts.collect(connect, "n-0000000000", assignment(), tmp_path, 1)
    assert server["uploads"] == ["out/r.txt"]


def test_restore_fetches_every_artifact_and_rank_0_does_not_send_them_back(tmp_path, monkeypatch):
    monkeypatch.setenv(agent_artifacts.EVERY_ENV, "0.05")
    server = {"files": {"out/a.txt": b"first", "out/deep/b.bin": b"\x01\x02"}}
    connect = lambda: FakeConnection(server)  # noqa: E731
    folder = tmp_path / "rank-1"
    assert agent_artifacts.restore(connect, "n-0000000000", assignment(rank=1, attempt=1, artifacts=[],
                                                                       restore_artifacts=True), folder) is None
    assert (folder / "out" / "a.txt").read_bytes() == b"first"
    assert (folder / "out" / "deep" / "b.bin").read_bytes() == b"\x01\x02"
    assert not list(folder.rglob(".*.part"))
    folder0 = tmp_path / "rank-0"
    (folder0 / "out").mkdir(parents=True)
    (folder0 / "out" / "a.txt").write_bytes(b"first")  # already there: not fetched again
    a0 = assignment(attempt=1, restore_artifacts=True)
    ended, restored = threading.Event(), []

    def rank_thread():  # restore runs on the rank's own thread; rank 0's watcher lives while it does
        restored.append(agent_artifacts.restore(connect, "n-0000000000", a0, folder0))
        ended.wait(5)

    owner = threading.Thread(target=rank_thread)
    owner.start()
    wait = time.monotonic() + 5
    while not restored and time.monotonic() < wait:
        time.sleep(0.01)
    assert restored == [None]
    assert server["downloads"] == ["/jobs/j-0000000001/artifacts/out/a.txt",
                                   "/jobs/j-0000000001/artifacts/out/deep/b.bin",
                                   "/jobs/j-0000000001/artifacts/out/deep/b.bin"]
    time.sleep(0.2)                       # the watcher's rounds: nothing changed, nothing sent
    assert "uploads" not in server
    (folder0 / "out" / "new.txt").write_bytes(b"new")
    old(folder0 / "out" / "new.txt")
    agent_artifacts.collect(connect, "n-0000000000", a0, folder0, 0)
    assert server["uploads"] == ["out/new.txt"]
    ended.set()
    owner.join()


def test_the_watcher_uploads_while_the_rank_runs_and_ends_with_its_thread(tmp_path, monkeypatch):
    monkeypatch.setenv(agent_artifacts.EVERY_ENV, "0.05")
    monkeypatch.setattr(agent_artifacts, "SETTLE_S", 0.0)
    server: dict = {}
    done = threading.Event()
    a = assignment(job_id="j-00000000aa")

    def rank_thread():  # what the rank runner's thread does: restore, then the rank runs (no collect)
        agent_artifacts.restore(lambda: FakeConnection(server), "n-0000000000", a, tmp_path)
        done.wait(5)

    t = threading.Thread(target=rank_thread)
    t.start()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "ckpt").write_bytes(b"1")
    deadline = time.monotonic() + 5
    while "uploads" not in server and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server["uploads"] == ["out/ckpt"]
    done.set()
    t.join()
    deadline = time.monotonic() + 5
    while (a.job_id, 0, 0) in agent_artifacts._active and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (a.job_id, 0, 0) not in agent_artifacts._active  # the rank's thread ended: so did the watcher


@pytest.mark.parametrize("raw, expected", [(None, 30.0), ("2.5", 2.5), ("0", 30.0), ("nan", 30.0), ("x", 30.0)])
def test_the_upload_interval_can_be_set_in_the_agents_environment(monkeypatch, raw, expected):
    if raw is None:
        monkeypatch.delenv(agent_artifacts.EVERY_ENV, raising=False)
    else:
        monkeypatch.setenv(agent_artifacts.EVERY_ENV, raw)
    assert agent_artifacts.every_s() == expected


# ---------------------------------------------------------------- the CLI and the trainer

def test_cli_get_selects_one_a_glob_or_a_folder(tmp_path):
    paths = ["out/a.txt", "out/sub/b.txt", "other.txt"]
    assert select(paths, "out/a.txt") == ["out/a.txt"]
    assert select(paths, "out/**") == ["out/a.txt", "out/sub/b.txt"]
    assert select(paths, "out") == select(paths, "out/") == ["out/a.txt", "out/sub/b.txt"]
    assert select(paths, "*.txt") == ["other.txt"]
    assert select(paths, "nope") == []
    assert destinations(["out/a.txt"], "out/a.txt", None) == {"out/a.txt": Path("a.txt")}
    assert destinations(["out/a.txt"], "out/a.txt", tmp_path) == {"out/a.txt": tmp_path / "a.txt"}
    assert destinations(["out/a.txt"], "out/a.txt", tmp_path / "x.txt") == {"out/a.txt": tmp_path / "x.txt"}
    assert destinations(["out/a.txt", "out/sub/b.txt"], "out", tmp_path) == {
        "out/a.txt": tmp_path / "out/a.txt", "out/sub/b.txt": tmp_path / "out/sub/b.txt"}


def test_trainer_jobs_checkpoint_into_the_rank_folder_and_keep_it_as_artifacts():
    spec = JobSpec(domain="sample", preset="micro", steps=10, nodes=2)
    ring = trainer_jobs.trainer_command(spec, ClusterConfig(backend="ring"))
    assert ring[ring.index("--checkpoint-dir") + 1] == "checkpoints" and ring[-2:] == ["--resume", "auto"]
    mpi = trainer_jobs.trainer_command(spec, ClusterConfig(backend="mpi"))
    assert "--checkpoint-dir" not in mpi  # no agent collects mpi ranks' files
    assert stored(spec).artifacts == ["checkpoints/**"]
    assert spec.artifacts == []  # filled into the stored copy; the digest is of the spec as sent
    own = JobSpec(domain="sample", artifacts=["checkpoints/latest"])
    assert stored(own).artifacts == ["checkpoints/latest"]
    assert stored(JobSpec(command=["python"])).artifacts == []
