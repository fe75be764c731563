"""jaccl, jaccl-ring and nccl ranks get from the agent what the real `mlx.launch` gives them.

No RDMA or CUDA here: these tests stop at the environment the ranks would get (and the device
file it names); nothing initialises JACCL or NCCL, and nothing sends a byte to any address.

For each case: the RankAssignments Jupiter would send (mlx_env / mlx_files from
shared.backends.backend_vars with a hand-written device matrix, coordinator "192.168.1.11:<port of
rank 0>"), turned into each rank's environment by the agent's RankRunner; and the oracle, the real
`.venv/bin/mlx.launch` run on the equivalent mlx hostfile with every "ssh" replaced by 127.0.0.1
(mlx.launch then runs the ranks as local processes, no ssh), `env -i`, stdin from /dev/null (so it
adds no COLUMNS/LINES) and TMPDIR in the test's folder, each rank being showenv.py, which prints
its MLX_*/NCCL_*/CUDA_* variables and the device file's text and exits. Every such variable must
match by value, a variable naming a file by the file's bytes, and Jupiter must set no other
MLX_*/NCCL_* name.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.ranks import RankRunner
from coordinator.scheduler import pick_ports
from shared import hostfiles
from shared.backends import FILE_VARS, backend_vars
from shared.schemas import RankAssignment
from tests.support.harness import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
MLX_LAUNCH = VENV_BIN / "mlx.launch"
SHOWENV = str(REPO / "tests" / "support" / "ranks" / "showenv.py")
PREFIXES = ("MLX_", "NCCL_", "CUDA_")
PATH_VARS = FILE_VARS | {"MLX_HOSTFILE"}  # variables whose value is a file's path: compared by the file's bytes
NOTICE = ("no RDMA or CUDA here: the test stops at the environment the ranks would get; "
          "nothing initialises JACCL or NCCL")

pytestmark = pytest.mark.skipif(not MLX_LAUNCH.exists(), reason="needs the venv's mlx.launch")

# A 4-node Thunderbolt 5 full mesh (Mac Studios, three cables each) and a 4-node ring (1-2-3-4-1):
# row i, column j is the device on node i cabled to node j; null on the diagonal and where no cable.
MESH4 = [[None, "rdma_en2", "rdma_en3", "rdma_en4"],
         ["rdma_en2", None, "rdma_en3", "rdma_en4"],
         ["rdma_en2", "rdma_en3", None, "rdma_en4"],
         ["rdma_en2", "rdma_en3", "rdma_en4", None]]
RING4 = [[None, "rdma_en2", None, "rdma_en3"],
         ["rdma_en2", None, "rdma_en3", None],
         [None, "rdma_en2", None, "rdma_en3"],
         ["rdma_en3", None, "rdma_en2", None]]
HOSTS4 = [(f"studio-{i}.local", f"192.168.1.1{i}") for i in range(1, 5)]


@dataclass
class Case:
    backend: str
    hosts: list[tuple[str, str]]          # (ssh name, address) per node, in rank order
    ppn: int = 1
    devices: list | None = None
    env: dict[str, str] = field(default_factory=dict)
    local: bool = False                   # mlx.launch --hosts 127.0.0.1 -n ppn instead of a hostfile


CASES = {
    "jaccl-mesh4": Case("jaccl", HOSTS4, devices=MESH4),
    "jaccl-ring4": Case("jaccl-ring", HOSTS4, devices=RING4),
    "jaccl-mesh4-job-env": Case("jaccl", HOSTS4, devices=MESH4, env={"MLX_METAL_FAST_SYNCH": "1"}),
    "nccl-2-nodes": Case("nccl", HOSTS4[:2]),
    "nccl-1-node-2-ranks": Case("nccl", [("127.0.0.1", "127.0.0.1")], ppn=2, local=True),
}
# Cases whose coordinator is on this machine, so the agent can really start their ranks here.
LOCAL_CASES = {
    "nccl-1-node-2-ranks": CASES["nccl-1-node-2-ranks"],
    "jaccl-2-on-loopback": Case("jaccl", [("mac-a.local", "127.0.0.1"), ("mac-b.local", "127.0.0.1")],
                                devices=[[None, "rdma_en2"], ["rdma_en2", None]]),
}


def assignments(case: Case, port: int) -> list[RankAssignment]:
    """What the coordinator sends for this case: ranks node by node, the coordinator at rank 0's
    address and port."""
    world = len(case.hosts) * case.ppn
    coordinator = f"{case.hosts[0][1]}:{port}"
    out = []
    for rank in range(world):
        local = rank % case.ppn
        mlx_env, mlx_files = backend_vars(case.backend, world_size=world, local_rank=local,
                                          coordinator=coordinator, devices=case.devices)
        out.append(RankAssignment(job_id="j-0123456789", rank=rank, local_rank=local, world_size=world,
                                  command=["python", SHOWENV, "--files", ",".join(sorted(PATH_VARS))],
                                  env=case.env, backend=case.backend, mlx_env=mlx_env, mlx_files=mlx_files))
    return out


def rank_port(case: Case) -> int:
    if case.local:  # real ranks start here and rank 0 binds it: a port free now, not a seeded pick
        return free_port()
    return pick_ports([h[1] for h in case.hosts], case.ppn, set(), random.Random(0))[0][0]


def oracle(case: Case, port: int, tmp: Path) -> dict[int, dict]:
    """Each rank's RANKENV as the real mlx.launch starts it, by MLX_RANK."""
    tmp.mkdir()
    argv = [str(MLX_LAUNCH), "--starting-port", str(port), "--nccl-port", str(port)]
    if case.local:
        argv += ["--backend", case.backend, "--hosts", "127.0.0.1", "-n", str(case.ppn)]
    else:
        assert case.ppn == 1  # with --hostfile, mlx.launch runs one rank per entry
        text = hostfiles.mlx([(ssh, [ip]) for ssh, ip in case.hosts], case.backend,
                             [f"{k}={v}" for k, v in case.env.items()], rdma=case.devices)
        data = json.loads(text)
        for host in data["hosts"]:
            host["ssh"] = "127.0.0.1"  # mlx.launch runs these itself, without ssh
        assert {h["ssh"] for h in data["hosts"]} == {"127.0.0.1"}
        (tmp / "hostfile.json").write_text(json.dumps(data))
        argv += ["--hostfile", str(tmp / "hostfile.json")]
    argv += ["--", PYTHON, SHOWENV, "--files", ",".join(sorted(PATH_VARS))]
    # mlx.launch exits 0 whatever its ranks do: the check is that every rank printed its line.
    proc = subprocess.run(argv, check=False, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp), "TMPDIR": str(tmp)},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, cwd=tmp)
    seen = parse(proc.stdout.splitlines())
    world = len(case.hosts) * case.ppn
    assert sorted(seen) == list(range(world)), f"mlx.launch gave {sorted(seen)}:\n{proc.stdout}\n{proc.stderr}"
    return seen


def parse(lines: list[str]) -> dict[int, dict]:
    out = {}
    for line in lines:
        if line.startswith("RANKENV "):
            got = json.loads(line[len("RANKENV "):])
            out[int(got["env"]["MLX_RANK"])] = got
    return out


def jupiter_side(env: dict[str, str], folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The MLX_*/NCCL_*/CUDA_* part of a rank's environment and the files its path variables name."""
    mine = {k: v for k, v in env.items() if k.startswith(PREFIXES)}
    files = {}
    for name in PATH_VARS & mine.keys():
        path = Path(mine[name])
        assert path.is_absolute() and path.parent == folder.absolute(), path
        files[name] = path.read_bytes().decode("utf-8", "surrogateescape")
    return mine, files


def same(rank: int, mine: dict[str, str], my_files: dict[str, str], theirs: dict) -> None:
    extra = {k for k in mine.keys() - theirs["env"].keys() if k.startswith(("MLX_", "NCCL_"))}
    assert not extra, f"rank {rank}: Jupiter sets {sorted(extra)}, which mlx.launch does not"
    assert my_files == theirs["files"], f"rank {rank}: the files differ"
    assert _paths_hidden(mine) == _paths_hidden(theirs["env"]), f"rank {rank}"


def _paths_hidden(env: dict[str, str]) -> dict[str, str]:
    return {k: ("<file>" if k in PATH_VARS else v) for k, v in env.items()}


@pytest.fixture(autouse=True)
def _no_gpu_restriction(monkeypatch):
    # The agent maps local ranks onto its own CUDA_VISIBLE_DEVICES when it has one; mlx.launch does not.
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    print(NOTICE)


@pytest.mark.parametrize("name", list(CASES))
def test_rank_env_equals_mlx_launch(name, tmp_path):
    case = CASES[name]
    port = rank_port(case)
    expected = oracle(case, port, tmp_path / "mlx-launch")
    for a in assignments(case, port):
        node = case.hosts[a.rank // case.ppn][0]
        runner = RankRunner(tmp_path / f"agent-{node}", PYTHON, node)
        folder = runner.rank_folder(a)
        folder.mkdir(parents=True, exist_ok=True)
        mine, files = jupiter_side(runner._env(a, folder), folder)
        same(a.rank, mine, files, expected[a.rank])
    if case.devices is not None:  # the file is the matrix, as JSON, and echo's newline
        assert expected[0]["files"]["MLX_IBV_DEVICES"] == json.dumps(case.devices) + "\n"


@pytest.mark.parametrize("name", list(LOCAL_CASES))
def test_real_ranks_started_by_the_agent_see_the_same(name, tmp_path):
    """The agent's whole start path (port check, files written, the process's real environment),
    for cases whose coordinator is on this machine: rank 0's port check binds it, nothing else."""
    case = LOCAL_CASES[name]
    port = free_port()
    expected = oracle(case, port, tmp_path / "mlx-launch")
    runner = RankRunner(tmp_path / "agent", PYTHON, "here")  # one folder for both ranks: per-rank file names
    ranks = assignments(case, port)
    for a in ranks:
        runner.start(a)
    got: dict[int, dict] = {}

    def all_printed():
        for out in runner.output():
            got.update(parse(out.lines))
            runner.ack({f"{out.job_id}/{out.attempt}/{out.rank}": out.seq + len(out.lines)})
        return len(got) == len(ranks)
    wait_for(all_printed, timeout=30, what="every rank's RANKENV line")
    runner.wait_all(10)
    assert all(s.exit_code == 0 for s in runner.states()), runner.states()
    for a in ranks:
        folder = runner.rank_folder(a)
        files = {}
        for k in PATH_VARS & got[a.rank]["env"].keys():
            assert Path(got[a.rank]["env"][k]).parent == folder.absolute()
            files[k] = Path(got[a.rank]["env"][k]).read_bytes().decode("utf-8", "surrogateescape")
        assert files == got[a.rank]["files"]  # what the rank read is what is on disk
        same(a.rank, got[a.rank]["env"], got[a.rank]["files"], expected[a.rank])


CLUSTERS = REPO / "tests" / "support" / "fixtures" / "clusters"


def _cluster(name: str):
    from shared.schemas import NetInterface, NodeOut
    raw = json.loads((CLUSTERS / f"{name}.json").read_text())
    nodes = [NodeOut.model_validate({k: v for k, v in d.items() if k != "interfaces"}) for d in raw]
    return nodes, {d["id"]: [NetInterface.model_validate(i) for i in d.get("interfaces", [])] for d in raw}


@pytest.mark.parametrize("cluster, backend", [("mesh4-tb5", "jaccl"), ("ring4-tb5", "jaccl-ring")])
def test_the_coordinators_start_orders_for_a_recorded_cluster_equal_mlx_launch(cluster, backend, tmp_path):
    """The whole coordinator path over the recorded 4-node Thunderbolt 5 mesh and ring: placement
    (which nodes, which RDMA devices), the plan frozen at placement, the start orders; the oracle is
    mlx.launch on the job's own `GET /jobs/{id}/hostfile?format=mlx` (ssh replaced by 127.0.0.1)."""
    from coordinator.jobs import orders, placement, views
    from coordinator.scheduler import Placement, place
    from coordinator.store import JobRow
    from shared.cluster_config import ClusterConfig
    from shared.schemas import JobSpec

    nodes, interfaces = _cluster(cluster)
    command = ["python", SHOWENV, "--files", ",".join(sorted(PATH_VARS))]
    spec = JobSpec(command=command, nodes=4, backend=backend)
    got = place(spec, backend, nodes, ClusterConfig(), set(), interfaces)
    assert isinstance(got, Placement), got
    job = JobRow(id="j-0123456789", name="env", status="starting", backend=backend, world_size=4,
                 spec=spec.model_dump(mode="json"), command=command, spec_hash="x", plan={})
    ranks = placement.rank_rows(job, got, 1, pick_ports(got.addresses, 1, set(), random.Random(0)))
    job.plan = placement.plan_of(job, got, ranks)
    hosts = {n.id: n.host for n in nodes}
    text = views.hostfile(job, ranks, hosts, "mlx")
    data = json.loads(text)
    assert all(len(h["rdma"]) == 4 for h in data["hosts"])
    for h in data["hosts"]:
        h["ssh"] = "127.0.0.1"  # mlx.launch runs these itself, without ssh
    tmp = tmp_path / "mlx-launch"
    tmp.mkdir()
    (tmp / "hostfile.json").write_text(json.dumps(data))
    port = ranks[0].port
    proc = subprocess.run([str(MLX_LAUNCH), "--starting-port", str(port), "--hostfile", str(tmp / "hostfile.json"),
                           "--", PYTHON, *command[1:]], check=False, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=60, cwd=tmp,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp), "TMPDIR": str(tmp)})
    expected = parse(proc.stdout.splitlines())
    assert sorted(expected) == [0, 1, 2, 3], proc.stdout + proc.stderr
    for a in orders.assignments(job, ranks, ranks):
        node = got.nodes[a.rank].name
        runner = RankRunner(tmp_path / f"agent-{node}", PYTHON, node)
        folder = runner.rank_folder(a)
        folder.mkdir(parents=True, exist_ok=True)
        mine, files = jupiter_side(runner._env(a, folder), folder)
        same(a.rank, mine, files, expected[a.rank])
    assert expected[0]["env"]["MLX_JACCL_COORDINATOR"] == f"{got.addresses[0]}:{port}"
