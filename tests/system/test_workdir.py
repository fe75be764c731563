"""--workdir end to end: a real coordinator, two real agents, a folder shipped with the job and
unpacked for every rank on nodes that never held it."""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from shared.client import ApiError
from shared.workdir import pack
from tests.support.harness import REPO, AgentProcess, CoordinatorProcess, registration, sample_facts, wait_for

LIMIT = 1_500_000  # the coordinator's files_max_bytes here: above the 1 MiB every other body gets

RUN_PY = """\
import os
from pathlib import Path

numbers = [int(x) for x in Path("data/numbers.txt").read_text().split()]
print(f"rank {os.environ['JUPITER_RANK']} sum {sum(numbers)} noise {Path('noise.log').exists()} "
      f"git {Path('.git').exists()} in {Path.cwd().name}")
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("workdir")
    coord = CoordinatorProcess(root / "leader", extra_env={"JUPITER_FILES_MAX_BYTES": str(LIMIT)}).start()
    agents = [AgentProcess(coord, f"a{i}", root / "agents" / f"a{i}").start() for i in (1, 2)]
    with coord.client() as c:
        wait_for(lambda: sorted(n.name for n in c.nodes() if n.status == "ready") == ["a1", "a2"], timeout=60)
    coord.root = root
    yield coord
    for a in agents:
        a.stop()
    coord.stop()


def work_dirs(cluster) -> list[Path]:
    """Where the agents run ranks (agent.ranks.default_work_dir of their state dirs)."""
    return [cluster.root / "agents-work" / name for name in ("a1", "a2")]


def project(root: Path, numbers: str = "1 2 3 4") -> Path:
    """A user's folder: a script, a data file it reads by a relative path, and things left home."""
    (root / "data").mkdir(parents=True)
    (root / "run.py").write_text(RUN_PY)
    (root / "data" / "numbers.txt").write_text(numbers)
    (root / ".gitignore").write_text("*.log\n")
    (root / "noise.log").write_text("ignored")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return root


def wait_job(c, job_id, timeout=60):
    return wait_for(lambda: (j := c.job(job_id)).status in ("succeeded", "failed", "cancelled") and j,
                    timeout=timeout, every=0.1, what=f"job {job_id} to end")


def wait_idle(c):
    wait_for(lambda: all(n.status == "ready" for n in c.nodes()), timeout=30, what="nodes idle")


def puts(cluster) -> int:
    """PUT /files/{sha256} requests the coordinator has answered, from its /metrics."""
    with cluster.http() as h:
        text = h.get("/metrics", headers={"Authorization": f"Bearer {cluster.admin_token}"}).text
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith("jupiter_http_requests_total{") and 'method="PUT"' in line
               and 'route="/files/{sha256}"' in line)


def cli(cluster, *args, cwd=REPO):
    env = dict(os.environ, JUPITER_URL=cluster.url, JUPITER_TOKEN=cluster.admin_token, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_ships_a_folder_to_every_rank_once(cluster, tmp_path):
    src = project(tmp_path / "proj")
    for d in work_dirs(cluster):  # the nodes' disks never held it
        assert not d.exists() or not list(d.rglob("numbers.txt"))
    first = cli(cluster, "submit", "--workdir", str(src), "--node", "a1", "--node", "a2", "--", "python", "run.py")
    assert first.returncode == 0, first.stderr
    for rank in (0, 1):
        assert f"rank {rank} sum 10 noise False git False in rank-{rank}" in first.stdout, first.stdout
    assert re.search(r"workdir .*proj: 3 files, .*sha256 [0-9a-f]{12}, uploaded", first.stderr), first.stderr
    job_id = re.search(r"submitted (j-[0-9a-f]{10})", first.stderr).group(1)
    sha = pack(src, tmp_path / "same.tar.gz").sha256
    for rank, d in enumerate(work_dirs(cluster)):
        folder = d / "jobs" / job_id / "0" / f"rank-{rank}"
        assert (folder / "data" / "numbers.txt").read_text() == "1 2 3 4" and (folder / "run.py").is_file()
        assert not (folder / "noise.log").exists() and not (folder / ".git").exists()
        assert (d / "cache" / "files" / sha).is_file()
    stored = cluster.home / "files" / sha
    before, put_count = stored.stat().st_mtime_ns, puts(cluster)
    assert put_count == 1

    # The same content again: nothing is uploaded, and the job runs the same.
    (src / "noise.log").write_text("changed, but ignored")
    again = cli(cluster, "submit", "--workdir", str(src), "--node", "a1", "--node", "a2", "--", "python", "run.py")
    assert again.returncode == 0, again.stderr
    assert "already on the coordinator" in again.stderr and f"sha256 {sha[:12]}" in again.stderr
    assert again.stdout.count("sum 10") == 2
    assert stored.stat().st_mtime_ns == before and puts(cluster) == put_count


def test_the_api_path_upload_check_submit_and_fetch(cluster, tmp_path):
    src = project(tmp_path / "proj", numbers="10 20 30")
    blob = os.urandom(1_200_000)  # over the 1 MiB other bodies are held to, under this store's limit
    (src / "data" / "blob.bin").write_bytes(blob)
    packed = pack(src, tmp_path / "a.tar.gz")
    assert 1 << 20 < packed.archive_bytes < LIMIT
    with cluster.client() as c:
        wait_idle(c)
        assert c.has_file(packed.sha256) is False
        assert c.upload_file(packed.sha256, tmp_path / "a.tar.gz") is True
        assert c.has_file(packed.sha256) is True
        assert c.upload_file(packed.sha256, tmp_path / "a.tar.gz") is False  # 200: already there
        job = c.submit({"command": ["python", "run.py"], "node_names": ["a1", "a2"], "backend": "ring",
                        "workdir": packed.sha256})
        assert job.workdir == packed.sha256
        done = wait_job(c, job.id)
        text = c.logs(job.id)[0]
        assert done.status == "succeeded", (done.error, text)
        assert "[0] rank 0 sum 60" in text and "[1] rank 1 sum 60" in text
        for rank, d in enumerate(work_dirs(cluster)):
            assert (d / "jobs" / job.id / "0" / f"rank-{rank}" / "data" / "blob.bin").read_bytes() == blob
        got = c.request("GET", f"/files/{packed.sha256}")
        assert got.content == (tmp_path / "a.tar.gz").read_bytes()
        assert got.headers["content-type"] == "application/gzip"


def test_a_job_naming_a_workdir_the_coordinator_lacks_is_refused(cluster):
    with cluster.client() as c:
        for body in ({"command": ["true"], "workdir": "ab" * 32},
                     {"command": ["true"], "backend": "mpi", "workdir": "ab" * 32}):
            with pytest.raises(ApiError) as refused:
                c.submit(body)
            assert refused.value.status == 422 and "workdir" in str(refused.value)
        with pytest.raises(ApiError) as bad:
            c.submit({"command": ["true"], "workdir": "../etc"})
        assert bad.value.status == 422 and "workdir" in str(bad.value)


def test_oversized_and_corrupt_uploads_are_refused_and_never_stored(cluster, tmp_path):
    big = os.urandom(LIMIT + 1)
    sha = hashlib.sha256(big).hexdigest()
    auth = {"Authorization": f"Bearer {cluster.admin_token}"}
    with cluster.http(timeout=30) as h:
        told = h.put(f"/files/{sha}", content=big, headers=auth)  # Content-Length says it at once
        assert told.status_code == 413 and str(LIMIT) in told.json()["detail"], told.text
        streamed = h.put(f"/files/{sha}", content=iter([big[:LIMIT], big[LIMIT:]]), headers=auth)  # chunked
        assert streamed.status_code == 413 and str(LIMIT) in streamed.json()["detail"], streamed.text

        good = tmp_path / "good.tar.gz"
        pack(project(tmp_path / "proj"), good)
        wrong = h.put(f"/files/{'0' * 64}", content=good.read_bytes(), headers=auth)
        assert wrong.status_code == 400 and "digest mismatch" in wrong.json()["detail"]

        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo("../x")
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
        evil = buf.getvalue()
        climbing = h.put(f"/files/{hashlib.sha256(evil).hexdigest()}", content=evil, headers=auth)
        assert climbing.status_code == 400 and "'..'" in climbing.json()["detail"], climbing.text
        junk = b"not a tarball at all"
        garbage = h.put(f"/files/{hashlib.sha256(junk).hexdigest()}", content=junk, headers=auth)
        assert garbage.status_code == 400 and "not a valid tar.gz" in garbage.json()["detail"]
        assert h.put(f"/files/{sha}", content=b"x").status_code == 401
        assert h.put("/files/not-a-digest", content=b"x", headers=auth).status_code == 422
    left = [p.name for p in (cluster.home / "files").iterdir()]
    assert sha not in left and hashlib.sha256(evil).hexdigest() not in left
    assert not [n for n in left if n.endswith(".part")]


def test_a_node_token_reads_only_the_workdirs_of_jobs_placed_on_it(cluster, tmp_path):
    packed = pack(project(tmp_path / "proj", numbers="7"), tmp_path / "a.tar.gz")
    with cluster.client() as c, cluster.http() as h:
        c.upload_file(packed.sha256, tmp_path / "a.tar.gz")
        body = registration("snoop", "127.0.0.1", sample_facts("m-snoop"))
        enrolled = h.post("/nodes/register", json=body, headers={"Authorization": f"Bearer {cluster.join_token}"})
        assert enrolled.status_code == 200, enrolled.text
        node = enrolled.json()
        try:
            as_node = {"Authorization": f"Bearer {node['node_token']}"}
            assert h.get(f"/files/{packed.sha256}", headers=as_node).status_code == 404
            assert h.get(f"/files/{'ab' * 32}", headers=as_node).status_code == 404  # same answer: nothing told
            assert h.head(f"/files/{packed.sha256}", headers=as_node).status_code == 403
            assert h.put(f"/files/{packed.sha256}", content=b"x", headers=as_node).status_code == 403
            join = {"Authorization": f"Bearer {cluster.join_token}"}
            assert h.get(f"/files/{packed.sha256}", headers=join).status_code == 404
            assert h.get(f"/files/{packed.sha256}").status_code == 401
        finally:
            c.delete_node(node["node_id"])


def test_an_archive_gone_from_the_coordinator_fails_the_job_before_its_command_runs(cluster, tmp_path):
    # Content no agent has cached: random numbers.
    packed = pack(project(tmp_path / "proj", numbers=os.urandom(8).hex()), tmp_path / "a.tar.gz")
    marker = tmp_path / "ran"
    with cluster.client() as c:
        wait_idle(c)
        c.upload_file(packed.sha256, tmp_path / "a.tar.gz")
        a1 = next(n for n in c.nodes() if n.name == "a1")
        c.drain(a1.id)  # holds the job pending while its archive goes
        try:
            job = c.submit({"command": ["python", "-c", f"open({str(marker)!r}, 'w').write('ran')"],
                            "node_names": ["a1"], "backend": "ring", "workdir": packed.sha256})
            assert c.job(job.id).status == "pending"
            (cluster.home / "files" / packed.sha256).unlink()
        finally:
            c.undrain(a1.id)
        done = wait_job(c, job.id)
        assert done.status == "failed", done
        assert f"workdir archive {packed.sha256[:12]}" in done.error and "not on the coordinator" in done.error
        assert not marker.exists()
