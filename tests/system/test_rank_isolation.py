"""Ranks get no control-plane secret, run apart from the agent's credentials, and nothing a node
reports chooses what mpirun runs. Real coordinator, real agents, real mpirun; each rank prints
what it can see (its environment's names, its folder, which token files a relative path reaches).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from shared.cluster_config import ConfigError, parse_cluster_config
from shared.rankenv import (BASE_NAMES, MPI_RUNTIME_PREFIXES, RANK_DEFAULTS, RANK_VARS, mpi_rank_root, mpirun_env,
                            rank_env, shim_filter)
from tests.support.harness import PY, REPO, AgentProcess, CoordinatorProcess, wait_for
from tests.system.test_jobs import log_of, wait_job

SECRET = "s3cr3t-" + secrets.token_hex(12)
LEAKS = {"JUPITER_SECRET_PROBE": "leak-" + secrets.token_hex(8), "OTHER_SECRET_PROBE": "leak-" + secrets.token_hex(8)}
# Never in a rank: the daemons' tokens and settings, and whatever else their environment holds.
FORBIDDEN = {"JUPITER_TOKEN", "JUPITER_JOIN_TOKEN", "JUPITER_JOIN_TOKEN_FILE", "JUPITER_HOME", "JUPITER_URL",
             "SSH_AUTH_SOCK", *LEAKS}
MARK = "jupiter-configured-python"

# What a rank reports: its environment's names (values only for the job's plain variable, a
# digest of the secret), its folder, and which token files `../` x N reaches.
PROBE = r"""
import hashlib, json, os, time
e = os.environ
reach = [("../" * i) + n for i in range(9) for n in ("node.json", "admin.token", "join.token")
         if os.path.exists(("../" * i) + n)]
print("PROBE " + json.dumps({"rank": int(e.get("JUPITER_RANK", "-1")), "names": sorted(e), "cwd": os.getcwd(),
      "reach": reach, "plain": e.get("PLAIN_VAR"), "job_dir": e.get("JUPITER_JOB_DIR"),
      "secret_sha": hashlib.sha256(e["API_KEY"].encode()).hexdigest() if "API_KEY" in e else None}), flush=True)
time.sleep(float(e.get("PROBE_SLEEP", "0")))
"""


class Cluster:
    def __init__(self, root: Path, coord: CoordinatorProcess, agents: dict[str, AgentProcess]):
        self.root, self.coord, self.agents = root, coord, agents
        self.mpi_job_dirs: set[str] = set()  # in the shared temp dir: removed when the module ends


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("isolation")
    # cluster.yaml's `python`: what mpirun runs. A wrapper that says so, then is the venv's Python.
    wrapper = root / "bin" / "leader-python"
    wrapper.parent.mkdir()
    wrapper.write_text(f"#!/bin/sh\necho {MARK}\nexec {PY} \"$@\"\n")
    wrapper.chmod(0o755)
    cfg = root / "cluster.yaml"
    cfg.write_text("backend: ring\ncheckpoint_on_failure: false\nauto_restart_failed_nodes: false\n"
                   f"python: {json.dumps(str(wrapper))}\nnodes: []\n")
    coord = CoordinatorProcess(root / "leader", heartbeat_interval=2.0, down_after=30.0, config=cfg,
                               extra_env=dict(LEAKS, SSH_AUTH_SOCK=str(root / "no-such-agent.sock"),
                                              JUPITER_URL="http://127.0.0.1:1"))
    token_file = root / "join-token"
    token_file.write_text(coord.join_token + "\n")
    coord.start()
    leaky = dict(LEAKS, JUPITER_JOIN_TOKEN_FILE=str(token_file), JUPITER_URL=coord.url,
                 SSH_AUTH_SOCK=str(root / "no-such-agent.sock"))
    agents = {name: AgentProcess(coord, name, root / "agents" / name, extra_env=leaky).start() for name in ("a1", "a2")}
    # A node that says its Python is /bin/echo (it has Open MPI on its PATH, so mpi jobs may go there).
    venv_bin = os.path.dirname(PY)
    agents["liar"] = AgentProcess(coord, "liar", root / "agents" / "liar", extra_args=["--python", "/bin/echo"],
                                  extra_env={"PATH": venv_bin + os.pathsep + os.environ.get("PATH", "")}).start()
    with coord.client() as c:
        wait_for(lambda: sorted(n.name for n in c.nodes() if n.status == "ready") == ["a1", "a2", "liar"],
                 timeout=90, what="three agents ready")
    cl = Cluster(root, coord, agents)
    yield cl
    for a in agents.values():
        a.stop()
    coord.stop()
    for d in cl.mpi_job_dirs:
        shutil.rmtree(d, ignore_errors=True)


def idle(c):
    wait_for(lambda: all(n.status == "ready" for n in c.nodes()), timeout=30, what="nodes idle")


def probes(text: str) -> dict[int, dict]:
    found = {}
    for line in text.splitlines():
        head, _, rest = line.partition(" ")
        if rest.startswith("PROBE "):
            p = json.loads(rest[len("PROBE "):])
            found[p["rank"]] = p
    return found


def run_probe(cluster, backend, node_names, **extra):
    spec = {"name": f"probe-{backend}", "command": ["python", "-c", PROBE], "backend": backend,
            "node_names": node_names, "env": {"PLAIN_VAR": "hello"}, "secret_env": {"API_KEY": SECRET}, **extra}
    with cluster.coord.client() as c:
        idle(c)
        job = c.submit(spec)
        done = wait_job(c, job.id, timeout=90)
        text = log_of(c, job.id)
    assert done.status == "succeeded", (done.error, text)
    got = probes(text)
    assert sorted(got) == list(range(len(node_names))), text
    if backend == "mpi":
        cluster.mpi_job_dirs.update(p["job_dir"] for p in got.values() if p["job_dir"])
    return done, got, text


def check_env(p: dict, *, mpi: bool) -> None:
    names = set(p["names"])
    assert not names & FORBIDDEN, names & FORBIDDEN
    assert not [n for n in names if n.startswith("JUPITER_") and n not in RANK_VARS], names
    assert p["plain"] == "hello"
    assert p["secret_sha"] == hashlib.sha256(SECRET.encode()).hexdigest()
    # Every name is accounted for: the allowlist, Jupiter's own, the job's (and on mpi, the MPI runtime's).
    allowed = set(BASE_NAMES) | RANK_VARS | set(RANK_DEFAULTS) | {"PLAIN_VAR", "API_KEY", "PROBE_SLEEP", "PWD"}
    if not mpi:
        allowed |= {"MLX_RANK", "MLX_HOSTFILE"}
    stray = [n for n in names if n not in allowed and not n.startswith("LC_")
             and not (mpi and n.startswith(MPI_RUNTIME_PREFIXES))]
    assert not stray, stray
    assert {"PATH", "HOME", "JUPITER_JOB_ID", "JUPITER_RANK", "JUPITER_WORLD_SIZE"} <= names


def check_folder(p: dict, job_id: str, *, away_from: list[Path]) -> None:
    cwd = Path(p["cwd"]).resolve()
    assert p["reach"] == [], p  # no token file as ../node.json, ../../../node.json, ...
    for folder in away_from:
        folder = folder.resolve()
        assert folder != cwd and folder not in cwd.parents, (cwd, folder)
    for ancestor in (cwd, *cwd.parents):
        assert not (ancestor / "node.json").exists() and not (ancestor / "admin.token").exists(), ancestor
    assert p["job_dir"] and Path(p["job_dir"]).name == job_id and Path(p["job_dir"]).resolve() in cwd.parents


@pytest.mark.parametrize("nodes", [1, 2])
def test_ring_ranks_see_only_the_allowlist_and_run_apart_from_the_state_dir(cluster, nodes):
    done, got, _ = run_probe(cluster, "ring", ["a1", "a2"][:nodes])
    for rank, p in got.items():
        check_env(p, mpi=False)
        state_dir = cluster.root / "agents" / done.nodes[rank]
        assert (state_dir / "node.json").exists()  # the token the rank must not be near
        # Not below the state dir, nor the agent's $JUPITER_HOME (every agent's state dir is there).
        check_folder(p, done.id, away_from=[state_dir, state_dir.parent, cluster.coord.home])


def test_mpi_ranks_see_only_the_allowlist_and_run_outside_jupiter_home(cluster):
    done, got, text = run_probe(cluster, "mpi", ["a1", "a2"])
    assert text.count(MARK) >= 2  # cluster.yaml's python ran the ranks
    for p in got.values():
        check_env(p, mpi=True)
        check_folder(p, done.id, away_from=[cluster.coord.home, cluster.root])


def test_a_node_reporting_another_python_does_not_choose_what_mpirun_runs(cluster):
    with cluster.coord.client() as c:
        liar = next(n for n in c.nodes() if n.name == "liar")
        assert c.node(liar.id).facts.python_executable == "/bin/echo"
        idle(c)
        job = c.submit({"command": ["python", "-c", "print('really-ran-' + str(6 * 7))"], "backend": "mpi",
                        "node_names": ["liar"]})
        done = wait_job(c, job.id, timeout=90)
        text = log_of(c, job.id)
    cluster.mpi_job_dirs.add(str(mpi_rank_root() / "jobs" / job.id))
    assert done.status == "succeeded", (done.error, text)
    assert "[0] really-ran-42" in text, text          # the command ran, under the leader's Python ...
    assert f"[0] {MARK}" in text and "/bin/echo" not in text, text  # ... not the node's /bin/echo
    assert done.ranks[0].exit_code == 0


@pytest.mark.parametrize("backend", ["ring", "mpi"])
def test_secret_env_reaches_ranks_and_is_never_shown(cluster, backend):
    c = cluster.coord.client()
    h = {"Authorization": f"Bearer {cluster.coord.admin_token}"}
    spec = {"name": f"secret-{backend}", "command": ["python", "-c", PROBE], "backend": backend,
            "node_names": ["a1", "a2"], "env": {"PLAIN_VAR": "hello", "PROBE_SLEEP": "2"},
            "secret_env": {"API_KEY": SECRET}, "idempotency_key": f"secret-{backend}-{secrets.token_hex(4)}"}
    idle(c)
    r = httpx.post(cluster.coord.url + "/jobs", json=spec, headers=h)
    assert r.status_code == 201 and SECRET not in r.text, r.text
    job_id = r.json()["id"]
    # While it runs: no process of the job (mpirun, its wrapper, the shims, the ranks) has it in argv.
    wait_for(lambda: "PROBE" in log_of(c, job_id), timeout=60, what="ranks running")
    procs = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("JUPITER_JOB_ID") == job_id:
                procs.append(" ".join(proc.cmdline()))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    assert procs and not [p for p in procs if SECRET in p], procs
    events = ""
    with httpx.stream("GET", f"{cluster.coord.url}/jobs/{job_id}/events", headers=h, timeout=90) as s:
        for chunk in s.iter_text():
            events += chunk
    assert "event: end" in events and SECRET not in events
    done = wait_job(c, job_id)
    text = log_of(c, job_id)
    assert done.status == "succeeded", (done.error, text)
    got = probes(text)
    if backend == "mpi":
        cluster.mpi_job_dirs.update(p["job_dir"] for p in got.values() if p["job_dir"])
    assert [p["secret_sha"] for p in got.values()] == [hashlib.sha256(SECRET.encode()).hexdigest()] * 2
    assert SECRET not in text
    detail = httpx.get(f"{cluster.coord.url}/jobs/{job_id}", headers=h)
    assert SECRET not in detail.text and "secret_env" not in detail.json()
    assert detail.json()["env"] == {"PLAIN_VAR": "hello", "PROBE_SLEEP": "2"}  # the job itself shows its env
    listed = httpx.get(f"{cluster.coord.url}/jobs", headers=h)
    assert SECRET not in listed.text
    mine = next(j for j in listed.json() if j["id"] == job_id)
    assert mine["env"] is None  # lists leave env out
    assert SECRET not in httpx.get(f"{cluster.coord.url}/metrics", headers=h).text
    # The same key: the same secret is the same job; another secret is another job (409), said without either.
    again = httpx.post(cluster.coord.url + "/jobs", json=spec, headers=h)
    assert again.status_code == 200 and again.json()["id"] == job_id and SECRET not in again.text
    other = dict(spec, secret_env={"API_KEY": SECRET + "-other"})
    clash = httpx.post(cluster.coord.url + "/jobs", json=other, headers=h)
    assert clash.status_code == 409 and SECRET not in clash.text, clash.text
    # Nor in the daemons' own logs.
    assert SECRET not in cluster.coord.log_path.read_text()
    for a in cluster.agents.values():
        assert SECRET not in a.log()
    c.close()


@pytest.mark.parametrize("body, needle", [
    ({"secret_env": {"MLX_RANK": "1"}}, "MLX_RANK"),
    ({"secret_env": {"JUPITER_JOB_DIR": "/"}}, "JUPITER_JOB_DIR"),
    ({"env": {"A": "1"}, "secret_env": {"A": "2"}}, "also in env"),
    ({"secret_env": {"1BAD": "x"}}, "secret_env"),
    ({"secret_env": {"OK": "a\x00b"}}, "secret_env"),
])
def test_bad_secret_env_is_refused_without_echoing_values(cluster, body, needle):
    r = httpx.post(cluster.coord.url + "/jobs", json={"command": ["python"], **body},
                   headers={"Authorization": f"Bearer {cluster.coord.admin_token}"})
    assert r.status_code == 422 and needle in r.text, r.text
    assert "a\\u0000b" not in r.text and '"2"' not in r.text


# ---------------------------------------------------------------------------- the pieces on their own


def test_the_allowlist_keeps_what_runs_and_drops_every_daemon_secret():
    host = {"PATH": "/bin", "HOME": "/h", "LC_ALL": "C", "LANG": "C.UTF-8", "TMPDIR": "/t",
            "JUPITER_TOKEN": "t", "JUPITER_JOIN_TOKEN": "j", "JUPITER_JOIN_TOKEN_FILE": "/f", "JUPITER_HOME": "/j",
            "JUPITER_URL": "u", "AWS_SECRET_ACCESS_KEY": "a", "SSH_AUTH_SOCK": "/s", "OMPI_MCA_btl": "self",
            "OMPI_ALLOW_RUN_AS_ROOT": "1", "JUPITER_RANK": "9"}
    env = rank_env(host, {"PATH": "/job/bin", "K": "v"}, {"API_KEY": "s"}, {"JUPITER_RANK": "0"})
    assert env == {"PATH": "/job/bin", "HOME": "/h", "LC_ALL": "C", "LANG": "C.UTF-8", "TMPDIR": "/t",
                   "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", "K": "v", "API_KEY": "s", "JUPITER_RANK": "0"}
    # mpirun itself also gets what it needs to launch (MCA settings, root permission, the ssh agent) ...
    run = mpirun_env(host, env)
    assert run == dict(env, OMPI_MCA_btl="self", OMPI_ALLOW_RUN_AS_ROOT="1", SSH_AUTH_SOCK="/s")
    # ... and the shim takes from a rank what only mpirun needed, keeping the MPI runtime's own.
    given = dict(run, OMPI_COMM_WORLD_RANK="1", PMIX_RANK="1", MLX_MPI_LIBNAME="/l", JUPITER_TOKEN="t", STRAY="x")
    kept = shim_filter(given, ["K", "API_KEY"])
    assert "SSH_AUTH_SOCK" not in kept and "JUPITER_TOKEN" not in kept and "STRAY" not in kept
    assert {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MLX_MPI_LIBNAME", "K", "API_KEY", "PATH"} <= set(kept)


def test_cluster_yaml_python_must_be_absolute_and_check_says_when_it_is_missing(tmp_path):
    assert parse_cluster_config("python: /opt/jupiter/.venv/bin/python\n").python == "/opt/jupiter/.venv/bin/python"
    with pytest.raises(ConfigError, match="field python: must be an absolute path"):
        parse_cluster_config("python: python3\n")
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text("backend: mpi\npython: /no/such/python\nnodes: []\n")
    out = subprocess.run([sys.executable, "-m", "shared.cli", "check", "--config", str(cfg)], cwd=REPO,
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, JUPITER_URL="http://127.0.0.1:1", JUPITER_TOKEN="x"))
    assert "mpi ranks run /no/such/python" in out.stdout, out.stdout + out.stderr
    assert "python /no/such/python is not an executable file" in out.stdout, out.stdout


def test_the_agent_refuses_a_work_dir_that_overlaps_its_state_dir(tmp_path):
    for work in (tmp_path / "state" / "work", tmp_path):
        out = subprocess.run([sys.executable, "-m", "shared.cli", "agent", "--coordinator", "http://127.0.0.1:1",
                              "--name", "n1", "--host", "127.0.0.1", "--state-dir", str(tmp_path / "state"),
                              "--work-dir", str(work)], cwd=REPO, capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, JUPITER_JOIN_TOKEN="x"))
        assert out.returncode == 1 and "state dir" in out.stderr and "node's token" in out.stderr, out.stderr


def test_jupiter_submit_secret_env_reads_the_value_from_the_environment_not_argv(cluster):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPITER_")}
    env.update(JUPITER_URL=cluster.coord.url, JUPITER_TOKEN=cluster.coord.admin_token, API_KEY=SECRET)
    with cluster.coord.client() as c:
        idle(c)
    argv = [PY, "-m", "shared.cli", "submit", "--node", "a1", "--backend", "ring", "--secret-env", "API_KEY",
            "-e", "PLAIN_VAR=hello", "--", "python", "-c", PROBE]
    out = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert SECRET not in " ".join(argv) and SECRET not in out.stdout + out.stderr
    [p] = probes(out.stdout).values()
    assert p["secret_sha"] == hashlib.sha256(SECRET.encode()).hexdigest()
    missing = subprocess.run([PY, "-m", "shared.cli", "submit", "--secret-env", "NOT_SET_ANYWHERE", "--", "true"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "NOT_SET_ANYWHERE" in missing.stderr and "not set" in missing.stderr
