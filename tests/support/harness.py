"""Real processes for the tests: a coordinator (uvicorn on a free loopback port) and agents.

Nothing here fakes the coordinator or the agent; tests drive them over HTTP as a user would.
"""

from __future__ import annotations

import contextlib

import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from shared.client import Client

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


def free_port_run(count: int) -> int:
    """First of `count` consecutive free loopback ports, for launchers that take a starting port.

    Searched below the kernel's ephemeral range (so no outgoing connection can take one between
    this check and the real bind) and below the scheduler's rank ports (20000-32000), so a test's
    coordinator never sits on a port a job's ranks are handed.
    """
    for _ in range(200):
        start = random.randrange(10000, 20000 - count)
        socks = []
        try:
            for port in range(start, start + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no run of {count} free ports found")


def free_ports(n: int) -> list[int]:
    """`n` distinct loopback ports the kernel says are free now (held together while chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_port_run(1)


def wait_for(predicate, timeout: float = 10.0, every: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # the thing may not be up yet
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class CoordinatorProcess:
    def __init__(self, home: Path, *, config: Path | None = None, heartbeat_interval: float = 0.5,
                 down_after: float = 2.0, extra_env: dict | None = None, port: int | None = None,
                 tls: bool = False, extra_args: list[str] | None = None):
        self.home = home
        self.port = port or free_port()
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.extra_args = list(extra_args or [])
        self.config = config
        self.heartbeat_interval = heartbeat_interval
        self.down_after = down_after
        self.admin_token = "adm_" + secrets.token_hex(16)
        self.join_token = "join_" + secrets.token_hex(16)
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None
        self.log_path = home / "coordinator.log"

    def env(self) -> dict:
        env = dict(os.environ, JUPITER_HOME=str(self.home), JUPITER_TOKEN=self.admin_token,
                   JUPITER_JOIN_TOKEN=self.join_token, PYTHONUNBUFFERED="1")
        env.update(self.extra_env)
        return env

    def argv(self) -> list[str]:
        argv = [PY, "-m", "shared.cli", "coordinator", "--port", str(self.port),
                "--heartbeat-interval", str(self.heartbeat_interval), "--down-after", str(self.down_after)]
        argv += ["--config", str(self.config)] if self.config else ["--config", str(REPO / "tests" / "support" / "empty.yaml")]
        if self.tls:
            argv.append("--tls")
        return argv + self.extra_args

    def start(self) -> "CoordinatorProcess":
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), cwd=REPO, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_for(self._healthy, timeout=20, what=f"coordinator on {self.url}")
        return self

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"coordinator exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
        return httpx.get(self.url + "/healthz", timeout=1, verify=self.verify()).status_code == 200

    def verify(self):
        """Trust for this coordinator: its own CA (made on first start) when it serves HTTPS."""
        if not self.tls:
            return True
        from shared.tlspin import context_for

        return context_for((self.home / "tls" / "ca.pem").read_bytes())

    @property
    def ca_pin(self) -> str:
        from shared.tlspin import fingerprint

        return fingerprint((self.home / "tls" / "ca.pem").read_bytes())

    def join_string(self) -> str:
        """The pinned join string the coordinator wrote for its cluster join secret."""
        return (self.home / "join.token").read_text().strip()

    def http(self, **kw) -> httpx.Client:
        """A bare httpx client for this coordinator (raw requests in tests), trusting its CA."""
        return httpx.Client(base_url=self.url, verify=self.verify(), **kw)

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def client(self, token: str | None = "admin") -> Client:
        tok = {"admin": self.admin_token, "join": self.join_token}.get(token, token)
        return Client(self.url, tok, verify=self.verify())


class AgentProcess:
    def __init__(self, coord: CoordinatorProcess, name: str, state_dir: Path, *, host: str = "127.0.0.1",
                 extra_env: dict | None = None, extra_args: list[str] | None = None):
        self.coord, self.name, self.state_dir, self.host = coord, name, state_dir, host
        self.extra_env = extra_env or {}
        self.extra_args = list(extra_args or [])  # more `jupiter agent` options (--python, --work-dir)
        self.proc: subprocess.Popen | None = None
        self.log_path = state_dir.parent / f"agent-{name}.log"

    def start(self) -> "AgentProcess":
        # Over HTTPS an agent needs the pinned join string; on plain loopback the bare secret does.
        join = self.coord.join_string() if self.coord.tls else self.coord.join_token
        env = dict(os.environ, JUPITER_HOME=str(self.state_dir.parent), JUPITER_JOIN_TOKEN=join,
                   PYTHONUNBUFFERED="1")
        env.pop("JUPITER_TOKEN", None)
        env.update(self.extra_env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [PY, "-m", "shared.cli", "agent", "--coordinator", self.coord.url, "--name", self.name,
             "--host", self.host, "--state-dir", str(self.state_dir)] + self.extra_args,
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def stop(self, sig=signal.SIGTERM, timeout: float = 10) -> int | None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def sample_facts(machine_id: str = "m-test-1", **over) -> dict:
    """Facts as an agent on a Mac mini M4 would send them (the shape the real collector produces)."""
    facts = {
        "machine_id": machine_id, "hostname": "mac-mini-1.local", "os": "macos", "os_version": "macOS 15.1 (24B83)",
        "device_type": "mac", "chip": "Apple M4", "memory_gb": 24.0, "memory_available_gb": 17.5, "cpu_cores": 10,
        "python_version": "3.11.7", "python_executable": "/usr/bin/python3", "mlx_version": "0.32.4",
        "mlx_device": "gpu", "mpi": {"implementation": "openmpi", "version": "5.0.11"},
        "thunderbolt": {"bridge": {"interface": "bridge0", "ips": ["169.254.10.1"], "up": True, "members": ["en2"]},
                        "ports": [{"port": 1, "status": "connected", "speed_gbps": 40.0, "interface": "en2",
                                   "peer_uuid": "B1C2"}], "domain_uuids": ["A1B2"]},
        "agent_version": "0.1.0",
    }
    facts.update(over)
    return facts


def node_key(name: str, facts: dict | None = None) -> str:
    """A node key for a hand-made registration: the same name on the same machine always shows
    the same key (as one agent would), another machine under that name another key."""
    import hashlib

    machine = (facts or {}).get("machine_id", "")
    return "nk_" + hashlib.sha256(f"{name}/{machine}".encode()).hexdigest()[:43]


def registration(name: str, host: str, facts: dict, **extra) -> dict:
    """A POST /nodes/register body as an agent sends it."""
    return {"name": name, "host": host, "facts": facts, "node_key": node_key(name, facts), **extra}


def register_recorded(coord, cluster: str | list[dict]) -> list[tuple[dict, dict]]:
    """Register each node of a recorded cluster (tests/support/fixtures/clusters/<cluster>.json, or
    its node dicts: node views as GET /nodes shows them) as its agent would; [(the recorded node,
    the RegisterResponse)]. Nothing runs on them: they stand for Macs this machine cannot be."""
    import json

    if isinstance(cluster, str):
        cluster = json.loads((REPO / "tests" / "support" / "fixtures" / "clusters" / f"{cluster}.json").read_text())
    out = []
    for n in cluster:
        facts = {"machine_id": n["id"], "hostname": n["host"], "os": "macos", "os_version": n["os_version"] or "",
                 "device_type": n["device_type"] or "mac", "chip": n["chip"] or "", "memory_gb": n["memory_gb"] or 0,
                 "memory_available_gb": n["memory_available_gb"] or 0, "cpu_cores": n["cpu_cores"] or 0,
                 "python_version": n["python_version"] or "", "mlx_version": n["mlx_version"],
                 "mlx_device": n["mlx_device"], "mpi": n["mpi"], "thunderbolt": n["thunderbolt"],
                 "interfaces": n.get("interfaces", [])}
        r = httpx.post(coord.url + "/nodes/register", headers={"Authorization": f"Bearer {coord.join_token}"},
                       json=registration(n["name"], n["host"], facts))
        assert r.status_code == 200, r.text
        out.append((n, r.json()))
    return out


@contextlib.contextmanager
def two_agents(root: Path, **coordinator):
    """A coordinator under `root` and two agents, a1 and a2, both ready; all stopped at the end."""
    coord = CoordinatorProcess(root / "leader", **coordinator).start()
    agents = [AgentProcess(coord, f"a{i}", root / "agents" / f"a{i}").start() for i in (1, 2)]
    try:
        with coord.client() as c:
            wait_for(lambda: sorted(n.name for n in c.nodes() if n.status == "ready") == ["a1", "a2"], timeout=60)
        yield coord
    finally:
        for a in agents:
            a.stop()
        coord.stop()

