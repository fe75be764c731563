"""The rank runner: starts the ranks the coordinator assigns to this node and watches them.

Each rank is its own process group (so a stop reaches everything it spawned), with its backend's
variables (ring: MLX_RANK, MLX_HOSTFILE; jaccl, jaccl-ring, nccl: MLX_RANK and the coordinator's
`mlx_env` / `mlx_files`, as `mlx.launch` sets them), JUPITER_* and the job's env and secret_env over
an allowlist of the agent's own environment (shared.rankenv: never the agent's tokens), in
`<work dir>/jobs/<job>/<attempt>`, a folder apart from the agent's state dir and its node token.
Output is kept as numbered lines
until the coordinator acknowledges them, so nothing is lost while it is away; exit codes are what
the OS reports, never a wrapper's guess (mlx.launch, for one, always exits 0).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent import stacks
from agent.rankchecks import gpu_problem, port_problem, rdma_problem, visible_gpu
from agent.system import LocalSystem, System
from shared.backends import AGENT_STARTED, BACKEND_VARS, FILE_VARS
from shared.paths import jupiter_home
from shared.procgroup import terminate_group
from shared.rankenv import private_dir, rank_env, safe_part
from shared.schemas.ranks import RankAssignment, RankOutput, RankState
from shared.text import plain

log = logging.getLogger("jupiter.ranks")

STOP_GRACE_S = 5.0
MAX_BUFFERED_LINES = 50_000     # per rank, while the coordinator is unreachable
MAX_LINES_PER_REPORT = 2_000
MAX_LINE_CHARS = 16_000


@dataclass
class Rank:
    job_id: str
    rank: int
    attempt: int
    proc: subprocess.Popen | None = None
    state: str = "starting"
    exit_code: int | None = None
    reason: str | None = None
    lines: list[str] = field(default_factory=list)   # not yet acknowledged
    first_seq: int = 0                               # number of lines[0]
    stopping: bool = False
    stop_grace_s: float = STOP_GRACE_S
    stop_reason: str = "stopped by Jupiter"
    ended_at: float | None = None
    folder: Path | None = None                       # where it runs (its cwd)
    stacks_dir: Path | None = None                   # where its Python processes say they can dump stacks
    stopped: int | None = None                       # the pid of a process of it that is stopped (state T)
    dumped: bool = False                             # its stacks were asked for once already


def default_work_dir(state_dir: Path) -> Path:
    """Where ranks run when --work-dir is not given: `<$JUPITER_HOME>-work/<state dir's name>`,
    e.g. ~/.jupiter-work/agent beside ~/.jupiter. Outside $JUPITER_HOME, which on a leader that
    is also a node holds the coordinator's tokens, and outside the agent's state dir."""
    home = jupiter_home().absolute()
    return home.parent / f"{home.name}-work" / Path(state_dir).absolute().name


def work_dir_problem(work_dir: Path, state_dir: Path) -> str | None:
    """Why `work_dir` cannot hold ranks beside `state_dir`, or None. Neither may contain the
    other: a rank must not reach the node token by a relative path."""
    work, state = Path(work_dir).absolute().resolve(), Path(state_dir).absolute().resolve()
    if work == state or state in work.parents:
        return f"--work-dir {work_dir} is inside the state dir {state_dir}, which holds the node's token"
    if work in state.parents:
        return f"--work-dir {work_dir} contains the state dir {state_dir}, which holds the node's token"
    return None


# Before a rank starts: fill its folder (the job's workdir, a restarted attempt's artifacts).
# Returns why it cannot start, or None. Runs on the rank's own thread, so a slow fetch holds up
# only that rank.
Prepare = Callable[[RankAssignment, Path], "str | None"]
# After a rank's process ended and before its exit is told: upload what it left (artifacts).
Collect = Callable[[RankAssignment, Path, int], None]
# Told True when the node starts holding ranks and False when the last one ended (keep-awake).
OnBusy = Callable[[bool], None]


class RankRunner:
    def __init__(self, work_dir: Path, python: str, node_name: str, *,
                 prepare: Prepare | None = None, collect: Collect | None = None, on_busy: OnBusy | None = None,
                 system: System | None = None):
        self.work_dir = Path(work_dir)  # ranks run below it; never the agent's state dir
        # What this node lists now, through the agent's one OS seam (a jaccl rank's RDMA devices).
        self.system = system if system is not None else LocalSystem()
        self.python = python
        self.node_name = node_name
        self.prepare = prepare
        self.collect = collect
        self.on_busy = on_busy
        self._busy = False
        self._ranks: dict[tuple[str, int, int], Rank] = {}  # (job, attempt, rank)
        self._lock = threading.Lock()
        self.changed = threading.Event()  # wakes the reporter

    # ------------------------------------------------------------------ start

    def start(self, a: RankAssignment) -> None:
        key = (a.job_id, a.attempt, a.rank)
        with self._lock:
            if key in self._ranks:
                return  # orders repeat until our report arrives; start each rank once
            r = self._ranks[key] = Rank(a.job_id, a.rank, a.attempt, stop_grace_s=a.stop_grace_s)
        self._busy_changed()
        ok = safe_part(a.job_id)
        problem = ((port_problem(a) or gpu_problem(a) or rdma_problem(a, self.system)) if ok
                   else f"cannot start: bad job id {a.job_id!r}")
        if problem:  # at once: the port, GPU and RDMA devices are checked as the order arrives
            self._exited(r, 98, problem)
            return
        threading.Thread(target=self._run, args=(r, a), name=f"rank-{a.job_id}-{a.rank}", daemon=True).start()

    def rank_folder(self, a: RankAssignment) -> Path:
        """Where the rank runs: the attempt's folder, or with a workdir its own unpacked copy."""
        folder = self.work_dir / "jobs" / a.job_id / str(a.attempt)
        return folder / f"rank-{a.rank}" if a.workdir else folder

    def _run(self, r: Rank, a: RankAssignment) -> None:
        """Prepare, start, then pump the rank's output until it ends (the rank's own thread)."""
        folder = r.folder = self.rank_folder(a)
        try:
            private_dir(self.work_dir)
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._exited(r, 127, f"cannot start: cannot make its folder {folder}: {exc.strerror or exc}")
            return
        if self.prepare is not None:
            problem = self.prepare(a, folder)
            if problem:
                self._exited(r, 97, problem)
                return
        try:
            env = self._env(a, folder)
            # Apart from the rank's folder: a job's artifact globs must never pick these files up.
            r.stacks_dir = self.work_dir / "stacks" / f"{a.job_id}-{a.attempt}-{a.rank}"
            stacks.prepare_env(env, r.stacks_dir)
            argv = list(a.command)
            if argv[0] in ("python", "python3"):
                argv[0] = self.python  # the interpreter the agent runs ranks with (docs/jobs.md)
            with self._lock:  # a stop either came before (no process) or finds r.proc
                if r.stopping:
                    stopped = True
                else:
                    stopped = False
                    r.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, env=env, cwd=folder,
                                              start_new_session=True, bufsize=0)
        except OSError as exc:
            self._exited(r, 127, f"cannot start {a.command[0]!r}: {exc.strerror or exc}")
            return
        if stopped:  # stopped while its folder was being filled
            self._exited(r, -15, r.stop_reason)
            return
        log.info("started rank %d of %s (pid %d)", a.rank, a.job_id, r.proc.pid)
        r.state = "running"
        self.changed.set()
        self._pump(r)
        code = r.proc.wait()
        if self.collect is not None:
            try:
                self.collect(a, folder, code)
            except Exception:  # what it left is lost, the rank's end is not
                log.exception("collecting what rank %d of %s left failed", a.rank, a.job_id)
        self._exited(r, code, r.stop_reason if r.stopping else None)

    def _env(self, a: RankAssignment, folder: Path) -> dict[str, str]:
        # Ranks run user code: an allowlist of ours, never a copy (no token, no $JUPITER_HOME).
        own = dict(JUPITER_JOB_ID=a.job_id, JUPITER_RANK=str(a.rank), JUPITER_WORLD_SIZE=str(a.world_size),
                   JUPITER_LOCAL_RANK=str(a.local_rank), JUPITER_NODE=self.node_name, JUPITER_ATTEMPT=str(a.attempt),
                   JUPITER_JOB_DIR=str(self.work_dir / "jobs" / a.job_id), PWD=str(folder))
        if a.backend == "ring" and a.hostfile is not None:
            hostfile = folder / f"hostfile-{a.rank}.json"
            hostfile.write_text(json.dumps(a.hostfile))
            own.update(MLX_RANK=str(a.rank), MLX_HOSTFILE=str(hostfile))
        elif a.backend in AGENT_STARTED and a.backend != "ring":
            own.update(self._backend_env(a, folder))
        return rank_env(os.environ, a.env, a.secret_env, own)

    @staticmethod
    def _backend_env(a: RankAssignment, folder: Path) -> dict[str, str]:
        """jaccl, jaccl-ring, nccl: what `mlx.launch` exports on each rank, from the coordinator's
        `mlx_env` and `mlx_files` (the schema already allows only Jupiter's names; checked again
        here, as these override the job's env). Each file is written with its exact text, one per
        rank (ranks of one attempt on a node may share the folder), and named by its absolute path."""
        out: dict[str, str] = {}
        for name, value in a.mlx_env.items():
            if name in BACKEND_VARS and name not in FILE_VARS:
                out[name] = value
        for name, text in a.mlx_files.items():
            if name in FILE_VARS:
                path = (folder / f"{name.lower()}-{a.rank}.json").absolute()
                path.write_bytes(text.encode("utf-8"))
                out[name] = str(path)
        if "CUDA_VISIBLE_DEVICES" in out:  # gpu_problem refused the rank if there is no such GPU
            out["CUDA_VISIBLE_DEVICES"] = visible_gpu(out["CUDA_VISIBLE_DEVICES"],
                                                      os.environ.get("CUDA_VISIBLE_DEVICES")) or ""
        out["MLX_RANK"] = str(a.rank)  # as mlx.launch: last, over everything
        return out

    def _pump(self, r: Rank) -> None:
        assert r.proc and r.proc.stdout
        for raw in iter(r.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")[:MAX_LINE_CHARS]
            with self._lock:
                r.lines.append(line)
                if len(r.lines) > MAX_BUFFERED_LINES:  # drop the oldest; the coordinator sees a gap
                    drop = len(r.lines) - MAX_BUFFERED_LINES
                    del r.lines[:drop]
                    r.first_seq += drop
            self.changed.set()

    def _exited(self, r: Rank, code: int, reason: str | None) -> None:
        stacks.forget(r.stacks_dir)
        with self._lock:
            r.state, r.exit_code, r.ended_at, r.stopped = "exited", code, time.time(), None
            # The wire takes plain text of at most 256 characters (an error's text may hold anything).
            r.reason = plain(reason)[:256] if reason else reason
            if reason and code in (98, 127):
                r.lines.append(reason)
        log.info("rank %d of %s exited with %s", r.rank, r.job_id, code)
        self.changed.set()
        self._busy_changed()

    def _busy_changed(self) -> None:
        """Tell on_busy when the node starts or stops holding ranks (once per change)."""
        if self.on_busy is None:
            return
        with self._lock:
            busy = any(r.state != "exited" for r in self._ranks.values())
            if busy == self._busy:
                return
            self._busy = busy
        try:
            self.on_busy(busy)
        except Exception:  # keeping the Mac awake is a help, never a reason to lose a rank
            log.exception("on_busy(%s) failed", busy)

    # ------------------------------------------------------------------ stalls

    def dump_stacks(self, job_id: str, attempt: int, reason: str) -> None:
        """Ask each running rank of the job's attempt here for its Python stacks (into its log),
        once per rank; say so in the rank's log, and say why when a rank cannot."""
        with self._lock:
            targets = [r for r in self._ranks.values() if r.job_id == job_id and r.attempt == attempt
                       and r.state == "running" and r.proc is not None and not r.dumped]
            for r in targets:
                r.dumped = True
        for r in targets:
            sent = stacks.dump(r.proc.pid, r.stacks_dir)
            if sent:
                note = (f"[jupiter] {reason}: the Python stack of each thread of rank {r.rank} "
                        f"(pid {', '.join(map(str, sent))}) follows")
            else:
                note = (f"[jupiter] {reason}: rank {r.rank} has no Python process that can dump its stack "
                        f"(not Python, or started with -I or -S)")
            if r.stopped:
                note += f"; process {r.stopped} is stopped (state T), so it dumps only once continued"
            with self._lock:
                r.lines.append(note)
            self.changed.set()

    def check_stopped(self) -> None:
        """Mark each running rank whose process (or a child of it) is stopped, state T; a change
        is reported at once."""
        with self._lock:
            running = [r for r in self._ranks.values() if r.state == "running" and r.proc is not None]
        for r in running:
            pid = stacks.stopped(r.proc.pid)
            if pid != r.stopped:
                r.stopped = pid
                self.changed.set()

    # ------------------------------------------------------------------ stop

    def stop_job(self, job_id: str, reason: str = "stopped by Jupiter", attempt: int | None = None) -> None:
        with self._lock:
            targets = [r for r in self._ranks.values() if r.job_id == job_id and r.state != "exited" and not r.stopping
                       and (attempt is None or r.attempt == attempt)]
            for r in targets:
                r.stopping, r.stop_reason = True, reason
        for r in targets:
            threading.Thread(target=self._terminate, args=(r,), daemon=True).start()

    def _terminate(self, r: Rank) -> None:
        """TERM the rank's whole process group, wait a grace, then KILL what is left."""
        if r.proc is not None:
            terminate_group(r.proc.pid, r.stop_grace_s)

    def stop_all(self, reason: str = "stopped by Jupiter") -> None:
        for job_id in {r.job_id for r in self._ranks.values()}:
            self.stop_job(job_id, reason)

    def wait_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(r.state == "exited" for r in self._ranks.values()):
                    return
            time.sleep(0.05)

    # ------------------------------------------------------------------ reporting

    def states(self) -> list[RankState]:
        """Every rank's state. A rank whose last lines are not yet acknowledged still shows as
        running: the coordinator must have all of a rank's output before it learns the rank
        ended, or a job could be `succeeded` before its log is complete."""
        with self._lock:
            out = []
            for r in self._ranks.values():
                done = r.state == "exited" and not r.lines
                out.append(RankState(job_id=r.job_id, rank=r.rank, attempt=r.attempt,
                                     state=r.state if (done or r.state != "exited") else "running",
                                     pid=r.proc.pid if r.proc else None,
                                     exit_code=r.exit_code if done else None, reason=r.reason if done else None,
                                     stopped=r.stopped is not None, stacks_dumped=r.dumped))
            return out

    def output(self) -> list[RankOutput]:
        with self._lock:
            return [RankOutput(job_id=r.job_id, rank=r.rank, attempt=r.attempt, seq=r.first_seq,
                               lines=r.lines[:MAX_LINES_PER_REPORT])
                    for r in self._ranks.values() if r.lines]

    def ack(self, acked: dict[str, int]) -> None:
        with self._lock:
            for key, stored in acked.items():
                job_id, attempt, rank = key.split("/")
                r = self._ranks.get((job_id, int(attempt), int(rank)))
                if r is None or stored <= r.first_seq:
                    continue
                drop = min(stored - r.first_seq, len(r.lines))
                del r.lines[:drop]
                r.first_seq += drop
                if r.state == "exited" and not r.lines:
                    self.changed.set()  # its exit can be told now: report again at once

    def ending(self) -> bool:
        """Whether a rank has ended with lines not yet acknowledged: its end is told only after them."""
        with self._lock:
            return any(r.state == "exited" and r.lines for r in self._ranks.values())

    def pending(self) -> bool:
        with self._lock:
            return any(r.lines for r in self._ranks.values())

    def forget_finished(self, older_than_s: float = 600) -> None:
        """Drop ranks that ended long ago and whose output is all delivered."""
        now = time.time()
        with self._lock:
            for key in [k for k, r in self._ranks.items()
                        if r.state == "exited" and not r.lines and r.ended_at and now - r.ended_at > older_than_s]:
                del self._ranks[key]
