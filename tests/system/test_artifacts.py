"""Artifacts end to end: a real coordinator and three real agents. Rank 0's files come back
byte-identical through the API and `jupiter artifacts`; only rank 0's node may upload, within the
job's quota; a restarted attempt finds them in its folder; and a built-in trainer job whose rank-0
node dies mid-run resumes on the other nodes from the checkpoint uploaded while it ran."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys

import httpx
import psutil
import pytest

from tests.support.harness import REPO, AgentProcess, CoordinatorProcess, wait_for
from tests.system.test_jobs import log_of, wait_job

QUOTA = 8 << 20
EVERY_S = "1"  # the agents upload a running rank 0's changed files every second (30 s by default)

# Rank 0 and rank 1 both write; only rank 0's files matching out/** are the job's artifacts.
WRITER = """
import os, pathlib, random
rank = os.environ['JUPITER_RANK']
out = pathlib.Path('out')
(out / 'sub').mkdir(parents=True, exist_ok=True)
(out / 'big.bin').write_bytes(random.Random(7).randbytes(3_000_000))  # over the API's 1 MiB body limit
(out / 'sub' / 'note.txt').write_text('written by rank ' + rank)
pathlib.Path('not-an-artifact.txt').write_text('left on the node')
(out / '.hidden').write_text('a wildcard never takes a hidden name')
print('wrote', rank)
"""

RESTARTED = """
import os, pathlib, sys
attempt, rank = os.environ['JUPITER_ATTEMPT'], os.environ['JUPITER_RANK']
state = pathlib.Path('out/state.txt')
if attempt == '0':
    if rank == '0':
        state.parent.mkdir(exist_ok=True)
        state.write_text('saved by attempt 0 in ' + os.getcwd())
        sys.exit(3)
    sys.exit(0)
if not state.is_file():
    print('rank', rank, 'found nothing in', os.getcwd())
    sys.exit(4)
print('rank', rank, 'restored:', state.read_text())
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    cfg = root / "cluster.yaml"
    cfg.write_text("backend: ring\ncheckpoint_on_failure: true\nauto_restart_failed_nodes: true\nnodes: []\n")
    coord = CoordinatorProcess(root / "leader", heartbeat_interval=1.0, down_after=20.0, config=cfg,
                               extra_env={"JUPITER_ARTIFACTS_MAX_BYTES_PER_JOB": str(QUOTA)}).start()
    agents = {f"t{i}": AgentProcess(coord, f"t{i}", root / "agents" / f"t{i}",
                                    extra_env={"JUPITER_ARTIFACTS_EVERY_S": EVERY_S}).start() for i in (1, 2, 3)}
    coord.agents = agents
    with coord.client() as c:
        wait_for(lambda: sum(n.status == "ready" for n in c.nodes()) == 3, timeout=60, what="three agents ready")
    yield coord
    for a in agents.values():
        a.stop()
    coord.stop()


def idle(c):
    wait_for(lambda: all(n.status in ("ready", "down") for n in c.nodes()), timeout=60, what="nodes idle")


def node_token(cluster, name: str) -> str:
    return json.loads((cluster.agents[name].state_dir / "node.json").read_text())["node_token"]


def put(cluster, token: str, job_id: str, path: str, data: bytes) -> httpx.Response:
    return httpx.put(f"{cluster.url}/jobs/{job_id}/artifacts/{path}", content=data, timeout=30,
                     headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def written(cluster):
    """A finished 2-rank job whose rank 0 wrote out/big.bin and out/sub/note.txt."""
    with cluster.client() as c:
        idle(c)
        job = c.submit({"name": "writer", "command": ["python", "-c", WRITER], "nodes": 2, "backend": "ring",
                        "artifacts": ["out/**"]})
        done = wait_job(c, job.id, timeout=120)
        # Listed at once: a job shows `succeeded` only after rank 0's files went up.
        listed = {a.path: a for a in c.artifacts(job.id)}
    assert done.status == "succeeded", (done.error, log_of(c, job.id))
    return done, listed


def test_rank_0s_matching_files_come_back_byte_identical(cluster, written, tmp_path):
    done, listed = written
    assert sorted(listed) == ["out/big.bin", "out/sub/note.txt"]  # not rank 1's, not the others
    big = random.Random(7).randbytes(3_000_000)
    assert listed["out/big.bin"].size == len(big)
    with cluster.client() as c:
        assert c.download_artifact(done.id, "out/big.bin", tmp_path / "api" / "big.bin").read_bytes() == big
        note = c.download_artifact(done.id, "out/sub/note.txt", tmp_path / "api" / "note.txt").read_text()
        assert note == "written by rank 0"
    env = dict(os.environ, JUPITER_URL=cluster.url, JUPITER_TOKEN=cluster.admin_token, COLUMNS="200")
    cli = [sys.executable, "-m", "shared.cli", "artifacts", done.id]
    shown = subprocess.run(cli, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "out/big.bin" in shown.stdout and "out/sub/note.txt" in shown.stdout
    assert listed["out/big.bin"].sha256[:12] in shown.stdout
    folder = subprocess.run(cli + ["--get", "out", "-o", str(tmp_path / "all")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert folder.returncode == 0, folder.stderr
    assert (tmp_path / "all" / "out" / "big.bin").read_bytes() == big
    assert (tmp_path / "all" / "out" / "sub" / "note.txt").read_text() == "written by rank 0"
    one = subprocess.run(cli + ["--get", "out/big.bin", "-o", str(tmp_path / "one.bin")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert one.returncode == 0 and (tmp_path / "one.bin").read_bytes() == big, one.stderr
    glob = subprocess.run(cli + ["--get", "**/*.txt", "-o", str(tmp_path / "txt")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert glob.returncode == 0, glob.stderr
    assert [p.relative_to(tmp_path / "txt").as_posix() for p in (tmp_path / "txt").rglob("*") if p.is_file()] == \
        ["out/sub/note.txt"]
    none = subprocess.run(cli + ["--get", "nothing/here"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    assert none.returncode != 0 and "no artifact" in none.stderr


def test_only_rank_0s_node_uploads_within_the_quota(cluster, written):
    done, _ = written
    rank0_node = done.ranks[0].node
    others = [name for name in cluster.agents if name != rank0_node]
    own = node_token(cluster, rank0_node)
    assert put(cluster, node_token(cluster, others[0]), done.id, "out/x", b"x").status_code == 403
    assert put(cluster, cluster.admin_token, done.id, "out/x", b"x").status_code == 403
    assert put(cluster, cluster.join_token, done.id, "out/x", b"x").status_code == 403
    assert put(cluster, own, "j-00000000ff", "out/x", b"x").status_code == 404
    assert put(cluster, own, done.id, "%2E%2E/escape", b"x").status_code == 422
    r = put(cluster, own, done.id, "out/too-big.bin", b"\x00" * (QUOTA - 3_000_000))
    assert r.status_code == 413 and "artifacts_max_bytes_per_job" in r.json()["detail"], r.text
    assert put(cluster, own, done.id, "out/extra.txt", b"fits").status_code == 200
    with cluster.client() as c:
        assert sorted(a.path for a in c.artifacts(done.id)) == ["out/big.bin", "out/extra.txt", "out/sub/note.txt"]
    # Reading: the admin, or a node of the job's current attempt; never another node.
    placed = {r.node for r in done.ranks}
    outsider = next((n for n in cluster.agents if n not in placed), None)
    if outsider is not None:
        stranger = {"Authorization": f"Bearer {node_token(cluster, outsider)}"}
        r = httpx.get(f"{cluster.url}/jobs/{done.id}/artifacts", headers=stranger)
        assert r.status_code == 403
    r = httpx.get(f"{cluster.url}/jobs/{done.id}/artifacts/out/sub/note.txt",
                  headers={"Authorization": f"Bearer {own}"})
    assert r.status_code == 200 and r.content == b"written by rank 0"


def test_a_restarted_attempt_finds_rank_0s_artifacts_in_its_folder(cluster):
    with cluster.client() as c:
        idle(c)
        job = c.submit({"name": "restarted", "command": ["python", "-c", RESTARTED], "nodes": 2, "backend": "ring",
                        "artifacts": ["out/**"], "max_restarts": 1})
        done = wait_job(c, job.id, timeout=120)
        text = log_of(c, job.id)
    assert done.status == "succeeded" and done.attempt == 1, (done.error, text)
    assert "rank 0 on node" in done.attempts[0].error and "exited with code 3" in done.attempts[0].error
    for rank in (0, 1):
        assert re.search(rf"\[{rank}\] rank {rank} restored: saved by attempt 0 in \S+/0$", text, re.M), text


def _processes_on(job_id: str, node: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            env = p.environ()
            if env.get("JUPITER_JOB_ID") == job_id and env.get("JUPITER_NODE") == node:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def test_a_trainer_job_resumes_on_other_nodes_from_the_checkpoint_its_dead_rank_0_uploaded(cluster):
    with cluster.client() as c:
        idle(c)
        job = c.submit({"name": "survivor", "domain": "sample", "preset": "micro", "steps": 700, "nodes": 2,
                        "backend": "ring", "max_restarts": 1})
        assert job.artifacts == ["checkpoints/**"]  # the trainer's default: its checkpoints
        # A periodic checkpoint (every 200 steps) reaches the coordinator while the job runs.
        wait_for(lambda: {"checkpoints/latest", "checkpoints/step-00000200/state.json"}
                 <= {a.path for a in c.artifacts(job.id)}, timeout=240, every=0.5, what="a checkpoint uploaded")
        running = c.job(job.id)
        assert running.status == "running" and running.attempt == 0
        dead = running.ranks[0].node
        cluster.agents[dead].stop(signal.SIGKILL)  # the node dies: its agent first, so nothing more goes up
        for p in _processes_on(job.id, dead):
            p.send_signal(signal.SIGKILL)
        done = wait_job(c, job.id, timeout=400)
        text = log_of(c, job.id)
    assert done.status == "succeeded", (done.error, text[-3000:])
    assert done.attempt == 1 and dead in done.attempts[0].nodes and dead not in done.nodes
    resumed = re.search(r"resumed from \S+/checkpoints/step-(\d+) at step (\d+)", text)
    assert resumed, text[-3000:]
    assert int(resumed.group(2)) >= 200  # from the uploaded checkpoint, not from step 0
    assert done.progress["step"] == 700


def test_only_rank_0s_node_deletes_an_artifact(cluster, written):
    done, _ = written
    rank0_node = done.ranks[0].node
    other = next(name for name in cluster.agents if name != rank0_node)
    own = node_token(cluster, rank0_node)
    assert put(cluster, own, done.id, "out/pruned.txt", b"old checkpoint").status_code == 200

    def delete(token: str, path: str) -> int:
        return httpx.delete(f"{cluster.url}/jobs/{done.id}/artifacts/{path}", timeout=30,
                            headers={"Authorization": f"Bearer {token}"}).status_code

    assert delete(node_token(cluster, other), "out/pruned.txt") == 403
    assert delete(cluster.admin_token, "out/pruned.txt") == 403
    assert delete(own, "%2E%2E/escape") == 422
    assert delete(own, "out/pruned.txt") == 204 and delete(own, "out/pruned.txt") == 404
    with cluster.client() as c:
        assert "out/pruned.txt" not in {a.path for a in c.artifacts(done.id)}


def test_a_node_uploads_only_what_the_jobs_globs_name(cluster, written):
    """What rank 0's node uploads is restored into other nodes' rank folders on a restart: a file
    the globs do not name (the job's own script, say) is refused."""
    done, _ = written
    own = node_token(cluster, done.ranks[0].node)
    r = put(cluster, own, done.id, "run.py", b"import os; os.system('evil')")
    assert r.status_code == 403 and "not one of the job's artifacts" in r.json()["detail"]
    with cluster.client() as c:
        assert "run.py" not in {a.path for a in c.artifacts(done.id)}
