"""Jobs across hosts: every host (the coordinator's too) in its own network namespace on a private
bridge, 169.254.0.0/16, no default route (tests/support/netns.py). Real coordinator, real agents, real MLX
ranks talking over the bridge; then the faults a real cluster sees: a host dies, a cable is pulled,
a rank is killed, the coordinator is killed, a node's disk is read-only or full.

The test process never talks to a 169.254 address itself: API calls go through a relay process in
the coordinator's namespace (netns.NsTransport). Skipped, with the reason, where namespaces are not
permitted (not root, or `ip netns add` refused).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.support import netns
from tests.support.netns import NsAgent, NsCoordinator, wait_for

REPO = Path(__file__).resolve().parents[2]
ALLSUM = str(REPO / "tests" / "support" / "ranks" / "allsum.py")
EXPECTED3 = "sum [0, 6, 12, 18]"  # ranks 0..2 contribute arange(4) * 1, * 2, * 3
AGENTS = ("n1", "n2", "n3")
HEARTBEAT_S, DOWN_AFTER_S = 0.5, 3.0


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def make_net():
    """Factory: a Net of the given hosts, torn down (everything in it killed) whatever happens."""
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(reason)
    made: list[netns.Net] = []

    def _make(hosts) -> netns.Net:
        net = netns.Net(list(hosts))
        made.append(net)
        return net

    yield _make
    leftovers = []
    for net in made:
        leftovers += net.close()
    assert not leftovers, f"namespaces left behind: {leftovers}"


@dataclass
class Cluster:
    net: netns.Net
    root: Path
    coord: NsCoordinator
    agents: dict[str, NsAgent] = field(default_factory=dict)

    def client(self):
        return self.coord.client()

    def statuses(self) -> dict[str, str]:
        with self.client() as c:
            return {n.name: n.status for n in c.nodes()}

    def job_procs(self, job_id: str, hosts=None) -> list[psutil.Process]:
        """The job's rank processes (anything with its JUPITER_JOB_ID) in the given hosts' namespaces."""
        found = []
        for name in hosts or self.agents:
            for pid in self.net[name].pids():
                try:
                    p = psutil.Process(pid)
                    if p.environ().get("JUPITER_JOB_ID") == job_id:
                        found.append(p)
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    pass
        return found

    def dump(self) -> str:
        parts = [f"--- coordinator log\n{self.coord.log()[-4000:]}"]
        for name, a in self.agents.items():
            parts.append(f"--- agent {name} log\n{a.log()[-2000:]}")
        return "\n".join(parts)


def write_config(root: Path) -> Path:
    cfg = root / "cluster.yaml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text("backend: ring\nnodes: []\n")
    return cfg


def start_cluster(net: netns.Net, root: Path, agents=AGENTS, *, coord_env: dict | None = None,
                  setups: dict | None = None, wait_ready=None) -> Cluster:
    coord = NsCoordinator(net["coord"], root / "leader", write_config(root), heartbeat_interval=HEARTBEAT_S,
                          down_after=DOWN_AFTER_S, extra_env=coord_env).start()
    cl = Cluster(net, root, coord)
    for name in agents:
        cl.agents[name] = NsAgent(coord, net[name], root / "agents" / name,
                                  setup=(setups or {}).get(name)).start()
    want = sorted(wait_ready if wait_ready is not None else agents)
    try:
        wait_for(lambda: sorted(n for n, s in cl.statuses().items() if s == "ready") == want, timeout=60,
                 what=f"agents {want} ready")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{cl.dump()}") from None
    return cl


@pytest.fixture
def cluster(make_net, tmp_path):
    """Coordinator host + three agent hosts, all registered and ready."""
    net = make_net(("coord",) + AGENTS)
    cl = start_cluster(net, tmp_path)
    yield cl
    print(cl.dump())  # shown only when the test failed


def wait_job(c, job_id, timeout=60, statuses=("succeeded", "failed", "cancelled")):
    return wait_for(lambda: (j := c.job(job_id)).status in statuses and j, timeout=timeout, every=0.1,
                    what=f"job {job_id} in {statuses}")


def log_of(c, job_id) -> str:
    return c.logs(job_id)[0]


def submit_and_wait_running(cl: Cluster, spec: dict, expect_lines: int = 3):
    with cl.client() as c:
        job = c.submit(spec)
        wait_for(lambda: log_of(c, job.id).count(EXPECTED3) == expect_lines, timeout=60,
                 what="every rank all-summed")
        return c.job(job.id)


def assert_rank_lines(text: str, job_id: str, world: int = 3) -> None:
    for r in range(world):
        assert f"[{r}] rank {r} of {world} job {job_id} jrank {r} {EXPECTED3}" in text, text


# --------------------------------------------------------------------------- the happy paths


def test_the_network_is_what_the_tests_assume(make_net):
    """Own hostnames, own addresses on the bridge, no default route, and cleanup leaves nothing."""
    net = make_net(("coord", "n1", "n2"))
    for h in net.hosts.values():
        res = h.run(["sh", "-c", "hostname; ip -4 -o addr show; ip route show default"], check=True)
        lines = res.stdout.splitlines()
        assert lines[0] == h.name
        assert any(f"inet {h.addr}/16" in ln and netns.IFACE in ln for ln in lines), res.stdout
        assert not any(ln.startswith("default") for ln in lines), res.stdout
    # A cut cable really isolates: n1 cannot reach n2 while it is down, and can again after.
    probe = ["python3", "-c", f"import socket; socket.create_connection(('{net['n2'].addr}', 9), timeout=1)"]
    assert "ConnectionRefused" in net["n1"].run(probe).stderr  # reachable: n2's kernel answers RST
    net["n2"].cut()
    assert "timed out" in net["n1"].run(probe).stderr
    net["n2"].restore()
    wait_for(lambda: "ConnectionRefused" in net["n1"].run(probe).stderr, timeout=5, what="link back")
    prefix = net.prefix
    assert net.close() == []
    assert not [ns for ns in netns.our_namespaces() if ns.startswith(prefix)]


def test_a_ring_job_across_three_hosts_succeeds_with_every_rank_in_the_log(cluster):
    with cluster.client() as c:
        nodes = {n.name: n for n in c.nodes()}
        assert {n: nodes[n].host for n in AGENTS} == {n: cluster.net[n].addr for n in AGENTS}
        for name in AGENTS:  # each agent runs under its own hostname
            assert c.node(nodes[name].id).facts.hostname.split(".")[0] == name
        job = c.submit({"name": "allsum-ring3", "command": ["python", ALLSUM, "--backend", "ring"],
                        "nodes": 3, "backend": "ring"})
        done = wait_job(c, job.id, timeout=90)
        text = log_of(c, job.id)
        assert done.status == "succeeded", (done.error, text)
        assert done.world_size == 3 and sorted(done.nodes) == list(AGENTS) and done.exit_code == 0
        assert_rank_lines(text, job.id)
        # Rank addresses are the hosts' bridge addresses, in rank order.
        ring = json.loads(c.hostfile(job.id, "ring"))
        assert [e[0].rsplit(":", 1)[0] for e in ring] == [cluster.net[n].addr for n in done.nodes]
        assert all(s == "ready" for s in cluster.statuses().values())


SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


def find_sshd() -> str | None:
    return shutil.which("sshd") or next((p for p in SSHD_CANDIDATES if Path(p).exists()), None)


@pytest.fixture
def ssh_setup(tmp_path):
    """A client key, a client config and per-host sshd configs, all generated for this test."""
    sshd = find_sshd()
    if not sshd:
        pytest.skip("openssh-server not installed (no sshd on PATH or in /usr/sbin)")
    if not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        pytest.skip("openssh-client not installed (no ssh / ssh-keygen)")
    d = tmp_path / "ssh"
    d.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "jupiter-test", "-f", str(d / "id_ed25519")],
                   check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_ed25519")], check=True)
    (d / "authorized_keys").write_text((d / "id_ed25519.pub").read_text())
    (d / "authorized_keys").chmod(0o600)
    client_cfg = d / "config"
    client_cfg.write_text(
        "Host *\n"
        "  User root\n"
        f"  IdentityFile {d / 'id_ed25519'}\n"
        "  IdentitiesOnly yes\n"
        "  StrictHostKeyChecking no\n"
        "  UserKnownHostsFile /dev/null\n"
        "  GlobalKnownHostsFile /dev/null\n"
        "  BatchMode yes\n"
        "  ConnectTimeout 5\n"
        "  LogLevel ERROR\n")
    return {"sshd": sshd, "dir": d, "client_cfg": client_cfg}


def start_sshd(host: netns.Host, ssh: dict) -> netns.HostProc:
    d = ssh["dir"]
    cfg = d / f"sshd_config-{host.name}"
    cfg.write_text(
        "Port 22\n"
        f"ListenAddress {host.addr}\n"
        f"HostKey {d / 'host_ed25519'}\n"
        f"PidFile {d / f'sshd-{host.name}.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "StrictModes no\n"
        "UseDNS no\n"
        "PrintMotd no\n"
        "LogLevel VERBOSE\n")
    # sshd's privilege-separation directory; the Debian service unit creates it when it starts,
    # which it never did here.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    return host.popen([ssh["sshd"], "-D", "-e", "-f", str(cfg)], log_path=d / f"sshd-{host.name}.log", what="sshd")


def test_an_mpi_job_across_three_hosts_succeeds_over_ssh(make_net, tmp_path, ssh_setup):
    net = make_net(("coord",) + AGENTS)
    sshds = {n: start_sshd(net[n], ssh_setup) for n in AGENTS}
    coord_host = net["coord"]
    ssh_cmd = f"ssh -F {ssh_setup['client_cfg']}"
    for name in AGENTS:  # the path mpirun takes: from the coordinator's namespace over SSH
        got = wait_for(lambda: (r := coord_host.run(shlex.split(ssh_cmd) + [net[name].addr, "hostname"],
                                                     timeout=15)).returncode == 0 and r,
                       timeout=15, every=0.2, what=f"ssh to {name}")
        assert got.stdout.strip() == name, (got.stdout, sshds[name].log())
    before = {n: sshds[n].log().count("Accepted publickey") for n in AGENTS}
    # Open MPI 5's launcher is PRRTE's: its ssh agent is plm_ssh_agent (OMPI_MCA_plm_rsh_agent alone is
    # not honoured). The coordinator hands its environment to mpirun.
    coord_env = {"PRTE_MCA_plm_ssh_agent": ssh_cmd}
    cl = start_cluster(net, tmp_path, coord_env=coord_env)
    try:
        with cl.client() as c:
            job = c.submit({"name": "allsum-mpi3", "command": ["python", ALLSUM, "--backend", "mpi"],
                            "nodes": 3, "backend": "mpi"})
            done = wait_job(c, job.id, timeout=120)
            text = log_of(c, job.id)
            assert done.status == "succeeded", (done.error, text)
            assert done.world_size == 3 and done.exit_code == 0
            assert_rank_lines(text, job.id)
            assert [r.exit_code for r in done.ranks] == [0, 0, 0]
        for name in AGENTS:  # mpirun itself went to every host over SSH, with the test's key
            assert sshds[name].log().count("Accepted publickey") > before[name], sshds[name].log()
    finally:
        print(cl.dump())


def test_an_mpi_job_whose_host_refuses_ssh_fails_naming_that_host(make_net, tmp_path, ssh_setup):
    net = make_net(("coord",) + AGENTS)
    for name in ("n1", "n3"):  # n2 runs no sshd: mpirun's ssh to it is refused
        start_sshd(net[name], ssh_setup)
    cl = start_cluster(net, tmp_path, coord_env={"PRTE_MCA_plm_ssh_agent": f"ssh -F {ssh_setup['client_cfg']}"})
    try:
        with cl.client() as c:
            job = c.submit({"command": ["python", ALLSUM, "--backend", "mpi"], "nodes": 3, "backend": "mpi"})
            done = wait_job(c, job.id, timeout=60)
            assert done.status == "failed"
            assert "node n2" in done.error, (done.error, log_of(c, job.id))
            assert "mpirun could not start it on" in done.error and "Connection refused" in done.error
    finally:
        print(cl.dump())


# --------------------------------------------------------------------------- faults


def test_an_agent_host_killed_mid_job_fails_it_naming_the_node(cluster):
    job = submit_and_wait_running(cluster, {"command": ["python", ALLSUM, "--sleep", "60"], "nodes": 3,
                                            "backend": "ring"})
    victim = job.nodes[1]
    assert cluster.job_procs(job.id, [victim])
    cluster.net[victim].kill_all(signal.SIGKILL)  # the agent and its rank, as if the host died
    t0 = time.monotonic()
    with cluster.client() as c:
        done = wait_job(c, job.id, timeout=30)
        took = time.monotonic() - t0
        assert done.status == "failed", done
        assert f"node {victim}" in done.error and "went down" in done.error, done.error
        assert took < DOWN_AFTER_S + 5, f"failed only after {took:.1f} s"
        others = [n for n in AGENTS if n != victim]
        wait_for(lambda: not cluster.job_procs(job.id, others), timeout=15, what="the other ranks stopped")
        assert cluster.statuses()[victim] == "down"
        cluster.agents[victim].restart()
        wait_for(lambda: cluster.statuses()[victim] == "ready", timeout=30, what=f"{victim} ready again")
        assert all(s == "ready" for s in cluster.statuses().values()), cluster.statuses()


def test_a_hosts_link_cut_mid_job_fails_it_and_the_node_returns_with_the_link(cluster):
    job = submit_and_wait_running(cluster, {"command": ["python", ALLSUM, "--sleep", "60"], "nodes": 3,
                                            "backend": "ring"})
    victim = job.nodes[2]
    others = [n for n in AGENTS if n != victim]
    host = cluster.net[victim]
    host.cut()
    t0 = time.monotonic()
    try:
        with cluster.client() as c:
            done = wait_job(c, job.id, timeout=30)
            took = time.monotonic() - t0
            assert done.status == "failed", done
            assert f"node {victim}" in done.error and "went down" in done.error, done.error
            assert took < DOWN_AFTER_S + 5, f"failed only after {took:.1f} s"
            wait_for(lambda: not cluster.job_procs(job.id, others), timeout=15, what="the other ranks stopped")
            assert cluster.statuses()[victim] == "down"
            # The cut-off agent hears nothing, so its rank is still there until the link is back.
            assert cluster.job_procs(job.id, [victim]), "the cut-off host's rank vanished by itself?"
            # Keep the cable out until the agent itself has noticed, so it must really reconnect.
            wait_for(lambda: "unreachable" in cluster.agents[victim].log(), timeout=20,
                     what=f"{victim}'s agent noticing the coordinator is gone")
    finally:
        host.restore()
    with cluster.client() as c:
        wait_for(lambda: cluster.statuses()[victim] == "ready", timeout=30, what=f"{victim} ready again")
        # Back on the wire, the agent is told its rank's job is over and stops it.
        wait_for(lambda: not cluster.job_procs(job.id, [victim]), timeout=20, what="the stale rank stopped")
        assert c.job(job.id).status == "failed"  # a terminal status never changes
        assert all(s == "ready" for s in cluster.statuses().values()), cluster.statuses()
    # One line per change of state, not one per failed attempt.
    assert cluster.agents[victim].log().count("unreachable") == 1, cluster.agents[victim].log()


def test_a_rank_killed_with_sigkill_fails_the_job_at_once_naming_it(cluster):
    job = submit_and_wait_running(cluster, {"command": ["python", ALLSUM, "--sleep", "60"], "nodes": 3,
                                            "backend": "ring"})
    node1 = job.nodes[1]
    rank1 = next(p for p in cluster.job_procs(job.id, [node1]) if p.environ().get("JUPITER_RANK") == "1")
    t0 = time.monotonic()
    rank1.send_signal(signal.SIGKILL)
    with cluster.client() as c:
        done = wait_job(c, job.id, timeout=20)
        took = time.monotonic() - t0
        assert done.status == "failed" and f"rank 1 on node {node1} was killed by SIGKILL" in done.error, done.error
        assert took < 5, f"failed only after {took:.1f} s (a rank exit should not wait for a heartbeat)"
        wait_for(lambda: not cluster.job_procs(job.id), timeout=15, what="the other ranks stopped")
        wait_for(lambda: all(s == "ready" for s in cluster.statuses().values()), timeout=15, what="nodes idle")


def test_the_coordinator_killed_mid_job_and_restarted_neither_loses_nor_fails_it(cluster):
    job = submit_and_wait_running(cluster, {"command": ["python", ALLSUM, "--sleep", "6"], "nodes": 3,
                                            "backend": "ring"})
    agent_pids = {n: a.proc.pid for n, a in cluster.agents.items()}
    cluster.coord.kill(signal.SIGKILL)
    time.sleep(2 * HEARTBEAT_S + 0.5)  # the agents notice it is gone
    again = cluster.coord = cluster.coord.again().start()
    with again.client() as c:
        assert c.job(job.id).status == "running"
        done = wait_job(c, job.id, timeout=40)
        text = log_of(c, job.id)
        assert done.status == "succeeded", (done.error, text)
        assert text.count(EXPECTED3) == 3, text  # nothing lost, nothing replayed
        wait_for(lambda: all(s == "ready" for s in cluster.statuses().values()), timeout=15, what="agents back")
    for name, a in cluster.agents.items():  # they came back by themselves, not restarted
        assert a.proc.alive() and a.proc.pid == agent_pids[name]
        assert "unreachable" in a.log(), a.log()


def _registrations(c) -> float | None:
    """POST /nodes/register requests the coordinator answered, from /metrics (None if not exported)."""
    text = c.request("GET", "/metrics").text
    counts = [float(m.group(1)) for m in re.finditer(
        r'^jupiter_http_requests(?:_total)?\{[^}]*route="/nodes/register"[^}]*\} (\S+)$', text, re.M)]
    if "jupiter_http_requests" not in text:
        return None
    return sum(counts)


@pytest.mark.parametrize("fault", ["read-only", "disk-full"])
def test_an_agent_whose_state_dir_is_unusable_says_so_once_and_stays_quiet(make_net, tmp_path, fault):
    net = make_net(("coord", "n1", "n2"))
    state = tmp_path / "agents" / "n2" / "state"
    state.mkdir(parents=True)
    q = shlex.quote(str(state))
    if fault == "read-only":  # root ignores permission bits; a read-only mount it cannot ignore
        setup = f"mount --bind {q} {q} && mount -o remount,bind,ro {q}"
    else:  # a 64 KiB disk, filled to the last block
        setup = (f"mount -t tmpfs -o size=64k jbt-full {q} && "
                 f"{{ dd if=/dev/zero of={q}/filler bs=4k 2>/dev/null; true; }}")
    cl = start_cluster(net, tmp_path, agents=("n1", "n2"), setups={"n2": setup}, wait_ready=("n1",))
    try:
        bad = cl.agents["n2"]
        wait_for(lambda: "not writable" in bad.log(), timeout=30, what="the agent's complaint")
        line = next(ln for ln in bad.log().splitlines() if "not writable" in ln)
        assert str(state) in line and ("Read-only file system" if fault == "read-only" else "No space left") in line, \
            line
        with cl.client() as c:
            regs0 = _registrations(c)
            tx0 = net["n2"].tx_packets()
            time.sleep(6)  # twelve heartbeat intervals: a crash loop would show
            assert bad.proc.alive(), f"the agent exited ({bad.proc.poll()}):\n{bad.log()}"
            assert bad.log().count("not writable") == 1, bad.log()  # said once, not once per attempt
            assert "Traceback" not in bad.log(), bad.log()
            sent = net["n2"].tx_packets() - tx0
            assert sent == 0, f"the broken agent sent {sent} packets to the coordinator in 6 s"
            assert "n2" not in {n.name for n in c.nodes()}
            regs1 = _registrations(c)
            if regs0 is not None:  # /metrics counts every POST /nodes/register: n1's one, none of n2's
                assert regs0 == regs1 == 1, f"registrations: {regs0} then {regs1}"
            assert cl.statuses() == {"n1": "ready"}
        # The fault was the state dir: the same agent with a usable one joins at once.
        bad.proc.stop()
        bad.setup = None
        bad.restart()
        wait_for(lambda: cl.statuses().get("n2") == "ready", timeout=30, what="n2 ready with a usable state dir")
    finally:
        print(cl.dump())
