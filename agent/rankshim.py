"""Runs one rank's command and says how it ended, on the rank's own stdout.

Under mpirun the coordinator does not see each rank's exit status (mpirun reports one code for
all), so each rank runs behind this shim, which prints

    JUPITER_RANK_EXIT {"rank": 1, "code": 3}

when its command ends (negative code: killed by that signal), and exits with the same status.
It also prints `JUPITER_RANK_START {"rank": 1}` first, so the coordinator knows the rank really
started on its host (mpirun may still fail to reach another one). The coordinator reads these
lines with the same module that writes them, shared.rankmarkers.

The command's stdout and stderr come through the shim (one pipe, passed on in chunks as they
arrive), so the command never sees the terminal mpirun gives a rank and draws no live progress
bar; and the exit line always starts a line of its own, even after output with no newline at its
end (a progress bar), so the coordinator never misses it.

Before the command starts, the shim narrows the environment mpirun gave it to the ranks'
allowlist (shared.rankenv) plus the names in `--keep` (the job's env and secret_env), and moves
into the rank's own folder, `<temp dir>/jupiter-ranks-<uid>/jobs/<job>/<attempt>` on this host:
never the coordinator's folder below $JUPITER_HOME that mpirun was started in.

    python -m agent.rankshim [--keep=NAME,NAME] -- CMD ARGS...
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from agent import stacks
from shared.rankenv import mpi_rank_root, private_dir, safe_part, shim_filter
from shared.rankmarkers import exit_line, start_line, stopped_line


def rank_from_env() -> int:
    for key in ("JUPITER_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "MLX_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def rank_folder(environ) -> Path | None:
    """This rank's own folder on this host (created, private), or None outside a Jupiter job."""
    job, attempt = environ.get("JUPITER_JOB_ID", ""), environ.get("JUPITER_ATTEMPT", "0")
    if not (safe_part(job) and attempt.isdigit()):
        return None
    folder = private_dir(mpi_rank_root()) / "jobs" / job / attempt
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def main(argv: list[str]) -> int:
    keep: list[str] = []
    if argv and argv[0].startswith("--keep="):
        keep = [k for k in argv[0][len("--keep="):].split(",") if k]
        argv = argv[1:]
    if not argv or argv[0] != "--" or len(argv) < 2:
        print("usage: python -m agent.rankshim [--keep=NAME,...] -- CMD ARGS...", file=sys.stderr)
        return 2
    rank = rank_from_env()
    os.environ["JUPITER_RANK"] = str(rank)
    print(start_line(rank), flush=True)
    env = shim_filter(os.environ, keep)
    try:
        folder = rank_folder(env)
        stacks_dir = None
        if folder is not None:  # (mpirun's PWD named the folder it was started in)
            env.update(JUPITER_JOB_DIR=str(folder.parent), PWD=str(folder))
            stacks_dir = private_dir(mpi_rank_root()) / "stacks" / f"{folder.parent.name}-{folder.name}-{rank}"
            stacks.prepare_env(env, stacks_dir)
        read_end, write_end = os.pipe()
        try:
            child = subprocess.Popen(argv[1:], env=env, cwd=folder, stdout=write_end, stderr=write_end)
        except OSError:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
    except OSError as exc:
        print(f"cannot start {argv[1]!r}: {exc}", flush=True)
        print(exit_line(rank, 127), flush=True)
        return 127

    def pass_on(signum, _frame):
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, pass_on)
    # mpirun passes SIGUSR1 on to every rank: the coordinator sends it when the job stalled.
    # The signal only raises a flag; forward() acts on it between two chunks of output.
    signal.signal(signal.SIGUSR1, lambda _s, _f: _dump_asked.append(True))
    try:
        watch = _Watch(rank, child, stacks_dir)
        last = forward(read_end, child, on_idle=watch)
    finally:
        stacks.forget(stacks_dir)
    code = child.wait()
    marker = exit_line(rank, code).encode() + b"\n"
    _write_all(1, marker if last in (b"", b"\n") else b"\n" + marker)
    return code if code >= 0 else 128 - code


_dump_asked: list[bool] = []
STOPPED_EVERY_S = 1.0


class _Watch:
    """Between two chunks of output: carry out a stack dump mpirun passed on, and tell the
    coordinator when a process of the rank is stopped (state T) or continues."""

    def __init__(self, rank: int, child: subprocess.Popen, stacks_dir):
        self.rank, self.child, self.stacks_dir = rank, child, stacks_dir
        self.stopped, self.looked = False, 0.0

    def __call__(self, last: bytes) -> None:
        lines = []
        if _dump_asked:
            _dump_asked.clear()
            if not stacks.dump(self.child.pid, self.stacks_dir):
                lines.append(f"[jupiter] rank {self.rank} has no Python process that can dump its stack "
                             f"(not Python, or started with -I or -S)")
        if time.monotonic() - self.looked >= STOPPED_EVERY_S:
            self.looked = time.monotonic()
            stopped = stacks.stopped(self.child.pid) is not None
            if stopped != self.stopped:
                self.stopped = stopped
                lines.append(stopped_line(self.rank, stopped))
        if lines:
            start = b"" if last in (b"", b"\n") else b"\n"
            _write_all(1, start + "".join(line + "\n" for line in lines).encode())


def forward(fd: int, child: subprocess.Popen, chunk: int = 1 << 16, on_idle=None) -> bytes:
    """Copy what comes out of `fd` to stdout until the child's output ends; the last byte copied.

    Chunks as they come, no per-line work. The output ends at end of file, or once what the child
    wrote before it ended is passed on, even if a process it left behind holds the pipe open."""
    last, out_ok, until = b"", True, None
    while True:
        if on_idle is not None and out_ok:
            on_idle(last)
        wait = 0.5 if until is None else max(0.0, until - time.monotonic())
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            if until is not None:
                break
            if child.poll() is not None:  # all it wrote is in the pipe: drain that, a second at most
                until = time.monotonic() + 1.0
            continue
        data = os.read(fd, chunk)
        if not data:
            break
        if out_ok:
            try:
                _write_all(1, data)
                last = data[-1:]
            except OSError:  # mpirun gone: keep draining so the command is not stuck on a full pipe
                out_ok = False
        if until is None and child.poll() is not None:
            until = time.monotonic() + 1.0
        elif until is not None and time.monotonic() > until:
            break
    os.close(fd)
    return last


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
