"""Several hosts on one Linux box, for the multi-host tests: one network namespace per host.

Layout of one run (a `Net`):

    namespace  jbt-<pid>-<hex>-sw      the "switch": bridge jb-<hex> and the switch end of every veth.
                                       No address, no route: it only forwards frames between hosts.
    namespace  jbt-<pid>-<hex>-<host>  one per host (the coordinator's too): lo, and `jb0` (the host
                                       end of a veth pair) with 169.254.<R>.<n>/16; no default route,
                                       IPv6 off (no router solicitations or MLD chatter).

The bridge lives in a namespace of its own rather than in the root namespace, so a run adds no
interface, address or route to the root namespace, and the root namespace never carries one of its
packets. The test process itself (root namespace) sends nothing to a 169.254 address: it talks to the
coordinator through `NsTransport`, a relay process inside the coordinator's namespace fed over a
pipe. Before any process is started, `Net` checks with `ip route get` (which sends nothing) that
every peer address resolves, in every host namespace, to that host's `jb0` on the bridge, directly
(no gateway), and that no namespace of the run has a default route.

Each process runs as `ip netns exec NS unshare --uts [--mount] sh -c 'hostname H; ...; exec CMD'`:
its own network, its own hostname, and, when the caller asks for a setup snippet, its own mount
namespace (a read-only bind mount or a tiny tmpfs seen only by that process tree). Every process is
the leader of its own process group.

Cleanup (`Net.close`, idempotent, run from fixture finalizers and atexit) SIGKILLs every process
in the run's namespaces (`ip netns pids`, which also catches ranks and sshd children that left the
process groups we started), reaps our children, and deletes the namespaces; deleting the switch
namespace removes the bridge and every veth with it. Mounts die with their mount namespaces.
Names carry the creating pid, so `sweep()` removes what a crashed run (dead pid) left behind.
"""

from __future__ import annotations

import atexit
import base64
import ipaddress
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.client import Client
from tests.support.harness import wait_for

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
PREFIX = "jbt-"
NAME_RE = re.compile(r"^jbt-(\d+)-([0-9a-f]+)-")
IFACE = "jb0"
LINK_LOCAL = ipaddress.ip_network("169.254.0.0/16")


class NetnsError(RuntimeError):
    pass


def _ip(*args: str, check: bool = True, timeout: float = 15) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


# --------------------------------------------------------------------------- availability and sweeping

_REASON: list[str | None] = []


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here (None when they can). Probed once per process."""
    if _REASON:
        return _REASON[0]
    reason = None
    if not sys.platform.startswith("linux"):
        reason = "network namespaces need Linux"
    elif os.geteuid() != 0:
        reason = "network namespaces need root (ip netns add)"
    elif not shutil.which("ip") or not shutil.which("unshare"):
        reason = "iproute2 (ip) and util-linux (unshare) are needed"
    else:
        probe = f"{PREFIX}{os.getpid()}-0-probe"
        try:
            made = _ip("netns", "add", probe, check=False)
            if made.returncode != 0:
                reason = f"ip netns add is not permitted here: {made.stderr.strip()}"
            else:
                uts = subprocess.run(["ip", "netns", "exec", probe, "unshare", "--uts", "--mount", "sh", "-c",
                                      "hostname jbt-probe && hostname"], capture_output=True, text=True, timeout=15)
                br = _ip("-n", probe, "link", "add", "jbprobe", "type", "bridge", check=False)
                if uts.returncode != 0 or uts.stdout.strip() != "jbt-probe":
                    reason = f"unshare --uts --mount inside a namespace failed: {uts.stderr.strip()}"
                elif br.returncode != 0:
                    reason = f"cannot create a bridge in a namespace: {br.stderr.strip()}"
        except (OSError, subprocess.SubprocessError) as exc:
            reason = f"network namespaces unusable: {exc}"
        finally:
            _ip("netns", "del", probe, check=False)
    _REASON.append(reason)
    return reason


def our_namespaces() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _ns_pids(ns: str) -> list[int]:
    out = _ip("netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _kill_ns(ns: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p for p in _ns_pids(ns) if p != os.getpid()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def sweep() -> list[str]:
    """Delete namespaces (and so bridges, veths, processes) left by runs whose process is gone.
    Namespaces of live runs (this one included) are left alone."""
    removed = []
    for ns in our_namespaces():
        m = NAME_RE.match(ns)
        if not m or _pid_alive(int(m.group(1))):
            continue
        _kill_ns(ns)
        _ip("netns", "del", ns, check=False)
        removed.append(ns)
    return removed


# --------------------------------------------------------------------------- processes


class HostProc:
    """One process started in a host's namespace; the leader of its own process group."""

    def __init__(self, host: "Host", popen: subprocess.Popen, what: str, log_path: Path | None):
        self.host, self.popen, self.what, self.log_path = host, popen, what, log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 10) -> int | None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            if sig in (signal.SIGKILL, signal.SIGTERM):
                try:
                    self.popen.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                    self.popen.wait(timeout=10)
        return self.popen.returncode

    def stop(self, timeout: float = 10) -> int | None:
        return self.kill(signal.SIGTERM, timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""


@dataclass
class Host:
    net: "Net"
    name: str            # short name, also the hostname the host's processes see
    ns: str
    addr: str
    switch_port: str     # the veth end on the bridge (in the switch namespace)
    procs: list[HostProc] = field(default_factory=list)
    _relay: "NsTransport | None" = None

    # -- running things -----------------------------------------------------------------------
    def wrap(self, argv: list[str], setup: str | None = None) -> list[str]:
        """argv run in this host's network namespace with its own hostname (and mount namespace
        when `setup`, a shell snippet run before exec, is given)."""
        if not self.net.verified:
            raise NetnsError("routes not verified yet: refusing to start anything")
        script = 'hostname "$1" && shift && ' + (f"{{ {setup} ; }} && " if setup else "") + 'exec "$@"'
        uts = ["unshare", "--uts"] + (["--mount"] if setup else [])
        return ["ip", "netns", "exec", self.ns, *uts, "--", "sh", "-c", script, "jbt-host", self.name, *argv]

    def popen(self, argv: list[str], *, env: dict | None = None, log_path: Path | None = None,
              setup: str | None = None, cwd: Path | str = REPO, what: str | None = None, **kw) -> HostProc:
        out = open(log_path, "ab") if log_path else kw.pop("stdout", subprocess.DEVNULL)
        try:
            p = subprocess.Popen(self.wrap(argv, setup), cwd=cwd, env=env, stdout=out,
                                 stderr=kw.pop("stderr", subprocess.STDOUT), start_new_session=True,
                                 stdin=kw.pop("stdin", subprocess.DEVNULL), **kw)
        finally:
            if log_path:
                out.close()
        hp = HostProc(self, p, what or argv[0], log_path)
        self.procs.append(hp)
        return hp

    def run(self, argv: list[str], *, timeout: float = 30, env: dict | None = None, setup: str | None = None,
            check: bool = False) -> subprocess.CompletedProcess:
        res = subprocess.run(self.wrap(argv, setup), capture_output=True, text=True, timeout=timeout, env=env,
                             cwd=REPO)
        if check and res.returncode != 0:
            raise NetnsError(f"{argv} on {self.name} failed ({res.returncode}): {res.stdout}{res.stderr}")
        return res

    def pids(self) -> list[int]:
        return _ns_pids(self.ns)

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        """The host dies: every process in its namespace gets `sig` (agent, ranks, sshd...)."""
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        for hp in self.procs:
            if sig == signal.SIGKILL:
                try:
                    hp.popen.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass

    # -- the cable ----------------------------------------------------------------------------
    def cut(self) -> None:
        """Pull the cable: the bridge port goes down, the host's jb0 loses carrier."""
        _ip("-n", self.net.switch_ns, "link", "set", self.switch_port, "down")

    def restore(self) -> None:
        _ip("-n", self.net.switch_ns, "link", "set", self.switch_port, "up")

    def link_up(self) -> bool:
        info = json.loads(_ip("-n", self.net.switch_ns, "-j", "link", "show", self.switch_port).stdout)
        return "UP" in info[0].get("flags", [])

    def tx_packets(self) -> int:
        """Packets this host has sent onto the bridge (its jb0's counter)."""
        info = json.loads(_ip("-n", self.ns, "-s", "-j", "link", "show", IFACE).stdout)
        return int(info[0]["stats64"]["tx"]["packets"])

    # -- talking to a server in this namespace ------------------------------------------------
    def transport(self, allowed: str, ca: Path | None = None) -> "NsTransport":
        if self._relay is None or not self._relay.alive():
            self._relay = NsTransport(self, allowed, ca)
        return self._relay


class Net:
    """A bridge and one namespace per host; see the module docstring."""

    def __init__(self, hosts: list[str], tag: str | None = None):
        reason = unavailable_reason()
        if reason:
            raise NetnsError(reason)
        sweep()
        self.id = tag or secrets.token_hex(3)
        self.prefix = f"{PREFIX}{os.getpid()}-{self.id}-"
        self.switch_ns = self.prefix + "sw"
        self.bridge = f"jb-{self.id}"
        self.octet = random.randint(1, 254)  # 169.254.0.x and .255.x are reserved (RFC 3927)
        self.hosts: dict[str, Host] = {}
        self.verified = False
        self._closed = False
        atexit.register(self.close)
        try:
            self._make(hosts)
            self.verify()
        except BaseException:
            self.close()
            raise

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def _add_ns(self, ns: str) -> None:
        _ip("netns", "add", ns)
        # IPv6 off before any interface comes up: nothing but our IPv4 on the wire.
        subprocess.run(["ip", "netns", "exec", ns, "sh", "-c",
                        "for f in all default; do echo 1 > /proc/sys/net/ipv6/conf/$f/disable_ipv6; done"],
                       capture_output=True, timeout=10)
        _ip("-n", ns, "link", "set", "lo", "up")

    def _make(self, names: list[str]) -> None:
        self._add_ns(self.switch_ns)
        _ip("-n", self.switch_ns, "link", "add", self.bridge, "type", "bridge", "stp_state", "0",
            "forward_delay", "0")
        _ip("-n", self.switch_ns, "link", "set", self.bridge, "up")
        for i, name in enumerate(names, start=1):
            if not re.fullmatch(r"[a-z][a-z0-9]{0,11}", name):
                raise ValueError(f"host name {name!r}: lowercase letters and digits, 12 at most")
            ns = self.prefix + name
            port = f"{self.bridge}-{i}"
            addr = f"169.254.{self.octet}.{i}"
            self._add_ns(ns)
            _ip("-n", self.switch_ns, "link", "add", port, "type", "veth", "peer", "name", IFACE, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{addr}/16", "dev", IFACE)
            _ip("-n", ns, "link", "set", IFACE, "up")
            _ip("-n", self.switch_ns, "link", "set", port, "master", self.bridge)
            _ip("-n", self.switch_ns, "link", "set", port, "up")
            self.hosts[name] = Host(self, name, ns, addr, port)

    def verify(self) -> None:
        """`ip route get` (sends nothing): every peer is on the bridge, directly, from every host."""
        problems = []
        for h in self.hosts.values():
            if not ipaddress.ip_address(h.addr) in LINK_LOCAL:
                problems.append(f"{h.addr} is not link-local")
            for ns in (h.ns, self.switch_ns):
                default = _ip("-n", ns, "-j", "route", "show", "default").stdout.strip()
                if default not in ("", "[]"):
                    problems.append(f"{ns} has a default route: {default}")
            for peer in self.hosts.values():
                got = json.loads(_ip("-n", h.ns, "-j", "route", "get", peer.addr).stdout)[0]
                want_dev = "lo" if peer is h else IFACE
                if got.get("dev") != want_dev or "gateway" in got:
                    problems.append(f"from {h.name}, {peer.addr} goes {got} (want dev {want_dev}, no gateway)")
        # The switch has no address at all: it cannot originate IP traffic.
        addrs = json.loads(_ip("-n", self.switch_ns, "-j", "addr", "show").stdout)
        for link in addrs:
            for a in link.get("addr_info", []):
                if link["ifname"] != "lo":
                    problems.append(f"switch interface {link['ifname']} has address {a.get('local')}")
        # And the root namespace has nothing of ours.
        root_links = _ip("-o", "link", "show").stdout
        if self.bridge in root_links:
            problems.append(f"{self.bridge} appeared in the root namespace")
        if problems:
            raise NetnsError("network check failed: " + "; ".join(problems))
        for h in self.hosts.values():  # STP is off, so ports forward at once; make sure
            wait_for(lambda: self._port_state(h.switch_port) == "forwarding", timeout=5,
                     every=0.02, what=f"bridge port {h.switch_port} forwarding")
        self.verified = True

    def _port_state(self, port: str) -> str | None:
        info = json.loads(_ip("-n", self.switch_ns, "-d", "-j", "link", "show", port).stdout)[0]
        return info.get("linkinfo", {}).get("info_slave_data", {}).get("state")

    def close(self) -> list[str]:
        """Kill everything in the run's namespaces and delete them. Returns what is left (nothing)."""
        if self._closed:
            return []
        self._closed = True
        for h in self.hosts.values():
            if h._relay is not None:
                h._relay.shutdown()
        namespaces = [h.ns for h in self.hosts.values()] + [self.switch_ns]
        for ns in namespaces:
            _kill_ns(ns)
        for h in self.hosts.values():
            for hp in h.procs:
                try:
                    hp.popen.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        for ns in namespaces:
            _ip("netns", "del", ns, check=False)
        left = [ns for ns in our_namespaces() if ns.startswith(self.prefix)]
        try:
            atexit.unregister(self.close)
        except Exception:
            pass
        return left


# --------------------------------------------------------------------------- the relay (HTTP over a pipe)

_RELAY_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); from tests.support.netns import relay_main; "
               "relay_main(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)")


def relay_main(allowed: str, ca_path: str | None = None) -> None:
    """Runs inside a host namespace: reads one JSON request per line on stdin, makes it with httpx
    (only to `allowed`, host:port; over HTTPS trusting only the CA in `ca_path`), answers one JSON
    line on stdout."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout = sys.stderr
    http = None
    for line in sys.stdin:
        try:
            req = json.loads(line)
            url = httpx.URL(req["url"])
            if http is None:  # the coordinator writes its CA at first start: read it once it exists
                from shared.tlspin import context_for

                verify = context_for(Path(ca_path).read_bytes()) if ca_path and url.scheme == "https" else True
                http = httpx.Client(verify=verify)
            if f"{url.host}:{url.port}" != allowed:
                raise httpx.UnsupportedProtocol(f"relay only talks to {allowed}, not {url.host}:{url.port}")
            t = req.get("timeout") or {}
            resp = http.request(req["method"], url, headers=req["headers"],
                                content=base64.b64decode(req["body"]),
                                timeout=httpx.Timeout(t.get("read", 10), connect=t.get("connect", 10),
                                                      write=t.get("write", 10), pool=t.get("pool", 10)))
            drop = {"content-encoding", "content-length", "transfer-encoding"}
            answer = {"status": resp.status_code,
                      "headers": [[k, v] for k, v in resp.headers.multi_items() if k.lower() not in drop],
                      "body": base64.b64encode(resp.content).decode()}
        except httpx.HTTPError as exc:
            answer = {"error": type(exc).__name__, "message": str(exc)}
        except Exception as exc:  # never die on a bad request
            answer = {"error": "TransportError", "message": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(answer) + "\n")


class NsTransport(httpx.BaseTransport):
    """An httpx transport whose requests are made by a relay process inside a host's namespace.

    The test process (root namespace) only writes to a pipe; the TCP connection is made from the
    namespace, to the one address:port given."""

    def __init__(self, host: Host, allowed: str, ca: Path | None = None):
        self.host = host
        self.allowed = allowed
        self._lock = threading.Lock()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        extra = [str(ca)] if ca is not None else []
        self.proc = host.popen([PY, "-c", _RELAY_BOOT, str(REPO), allowed, *extra], env=env, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, what="relay")

    def alive(self) -> bool:
        return self.proc.alive()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        msg = {"method": request.method, "url": str(request.url),
               "headers": [[k.decode(), v.decode()] for k, v in request.headers.raw],
               "body": base64.b64encode(request.content).decode(),
               "timeout": request.extensions.get("timeout")}
        with self._lock:
            p = self.proc.popen
            if p.poll() is not None:
                raise httpx.TransportError(f"relay in {self.host.name} has exited ({p.returncode})")
            p.stdin.write((json.dumps(msg) + "\n").encode())
            p.stdin.flush()
            line = p.stdout.readline()
        if not line:
            raise httpx.TransportError(f"relay in {self.host.name} closed its pipe")
        ans = json.loads(line)
        if "error" in ans:
            cls = getattr(httpx, ans["error"], None)
            if not (isinstance(cls, type) and issubclass(cls, httpx.TransportError)):
                cls = httpx.TransportError
            raise cls(ans["message"], request=request)
        return httpx.Response(ans["status"], headers=ans["headers"], content=base64.b64decode(ans["body"]),
                              request=request)

    def close(self) -> None:
        """httpx.Client.close() lands here; the relay outlives clients (see shutdown)."""

    def shutdown(self) -> None:
        p = self.proc.popen
        if p.poll() is None:
            try:
                p.stdin.close()
            except OSError:
                pass
            try:
                p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for f in (p.stdout,):
            try:
                f.close()
            except OSError:
                pass


# --------------------------------------------------------------------------- Jupiter in namespaces




class NsCoordinator:
    """`jupiter coordinator` bound to its host's 169.254 address, in that host's namespace."""

    PORT = 8470

    def __init__(self, host: Host, home: Path, config: Path, *, heartbeat_interval: float = 0.5,
                 down_after: float = 3.0, extra_env: dict | None = None, port: int = PORT,
                 admin_token: str | None = None, join_token: str | None = None):
        self.host, self.home, self.config = host, home, config
        self.port = port
        # Bound off loopback, the coordinator serves only HTTPS, with its own CA (made at first start).
        self.url = f"https://{host.addr}:{port}"
        self.heartbeat_interval, self.down_after = heartbeat_interval, down_after
        self.admin_token = admin_token or "adm_" + secrets.token_hex(16)
        self.join_token = join_token or "join_" + secrets.token_hex(16)
        self.extra_env = extra_env or {}
        self.log_path = home / "coordinator.log"
        self.proc: HostProc | None = None

    def again(self) -> "NsCoordinator":
        """The same daemon (home, address, port, tokens), to start after this one died."""
        return NsCoordinator(self.host, self.home, self.config, heartbeat_interval=self.heartbeat_interval,
                             down_after=self.down_after, extra_env=self.extra_env, port=self.port,
                             admin_token=self.admin_token, join_token=self.join_token)

    def start(self, timeout: float = 30) -> "NsCoordinator":
        self.home.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, JUPITER_HOME=str(self.home), JUPITER_TOKEN=self.admin_token,
                   JUPITER_JOIN_TOKEN=self.join_token, PYTHONUNBUFFERED="1")
        env.update(self.extra_env)
        argv = [PY, "-m", "shared.cli", "coordinator", "--host", self.host.addr, "--port", str(self.port),
                "--config", str(self.config), "--heartbeat-interval", str(self.heartbeat_interval),
                "--down-after", str(self.down_after)]
        self.proc = self.host.popen(argv, env=env, log_path=self.log_path, what="coordinator")
        wait_for(self._healthy, timeout=timeout, what=f"coordinator on {self.url}")
        return self

    def _healthy(self) -> bool:
        if not self.proc.alive():
            raise AssertionError(f"coordinator exited with {self.proc.poll()}:\n{self.log()}")
        with self.client(None) as c:
            return c.health().get("status") == "ok"

    def client(self, token: str | None = "admin") -> Client:
        tok = {"admin": self.admin_token, "join": self.join_token}.get(token, token)
        return Client(self.url, tok, verify=False,  # the relay inside the namespace verifies, against our CA
                      transport=self.host.transport(f"{self.host.addr}:{self.port}", self.home / "tls" / "ca.pem"))

    def join_string(self) -> str:
        """The pinned join string (CA pin, id, secret): with the URL, all an agent is given."""
        return (self.home / "join.token").read_text().strip()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc:
            self.proc.kill(sig)

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class NsAgent:
    """`jupiter agent` in its host's namespace, reporting the host's 169.254 address as --host."""

    def __init__(self, coord: NsCoordinator, host: Host, home: Path, *, name: str | None = None,
                 state_dir: Path | None = None, setup: str | None = None, extra_env: dict | None = None):
        self.coord, self.host, self.home = coord, host, home
        self.name = name or host.name
        self.state_dir = state_dir or home / "state"
        self.setup = setup
        self.extra_env = extra_env or {}
        self.log_path = home / "agent.log"
        self.proc: HostProc | None = None

    def start(self) -> "NsAgent":
        self.home.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, JUPITER_HOME=str(self.home), JUPITER_JOIN_TOKEN=self.coord.join_string(),
                   PYTHONUNBUFFERED="1")
        env.pop("JUPITER_TOKEN", None)
        env.update(self.extra_env)
        argv = [PY, "-m", "shared.cli", "agent", "--coordinator", self.coord.url, "--name", self.name,
                "--host", self.host.addr, "--state-dir", str(self.state_dir)]
        self.proc = self.host.popen(argv, env=env, log_path=self.log_path, setup=self.setup, what="agent")
        return self

    def restart(self) -> "NsAgent":
        self.proc = None
        return self.start()

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
