"""Runs one rank's command and says how it ended, on the rank's own stdout.

Under mpirun the coordinator does not see each rank's exit status (mpirun reports one code for
all), so each rank runs behind this shim, which prints

    JUPITER_RANK_EXIT {"rank": 1, "code": 3}

when its command ends (negative code: killed by that signal), and exits with the same status.
It also prints `JUPITER_RANK_START {"rank": 1}` first, so the coordinator knows the rank really
started on its host (mpirun may still fail to reach another one). The coordinator reads these
lines with the same module that writes them, shared.rankmarkers.

Before the command starts, the shim narrows the environment mpirun gave it to the ranks'
allowlist (shared.rankenv) plus the names in `--keep` (the job's env and secret_env), and moves
into the rank's own folder, `<temp dir>/jupiter-ranks-<uid>/jobs/<job>/<attempt>` on this host:
never the coordinator's folder below $JUPITER_HOME that mpirun was started in.

    python -m agent.rankshim [--keep=NAME,NAME] -- CMD ARGS...
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from shared.rankenv import mpi_rank_root, private_dir, safe_part, shim_filter
from shared.rankmarkers import exit_line, start_line


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
        if folder is not None:  # (mpirun's PWD named the folder it was started in)
            env.update(JUPITER_JOB_DIR=str(folder.parent), PWD=str(folder))
        child = subprocess.Popen(argv[1:], env=env, cwd=folder)
    except OSError as exc:
        print(f"cannot start {argv[1]!r}: {exc}", flush=True)
        print(exit_line(rank, 127), flush=True)
        return 127

    def forward(signum, _frame):
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    code = child.wait()
    print(exit_line(rank, code), flush=True)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
