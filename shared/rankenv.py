"""The environment a rank runs with, on every backend: an allowlist, never a copy.

Ranks run user code. Whatever the process that starts them holds (the coordinator's admin and
join tokens, the agent's join token file, $JUPITER_HOME, cloud keys an operator exported in the
shell that started the daemon) must not reach them by inheritance. So a rank's environment is
built up from nothing:

1. the few variables of the starting process that a program needs to run at all (`BASE_NAMES`,
   `BASE_PREFIXES`: each is explained below);
2. Jupiter's defaults for ranks (unbuffered Python output, no colours);
3. the job's `env`, then its `secret_env`;
4. Jupiter's own per-rank variables (`JUPITER_RANK`, `MLX_RANK`, ...), which a job cannot set.

No `JUPITER_*` name other than the per-rank ones is ever taken from the starting process.
Pure functions over dicts: both the agent (ring ranks) and the coordinator (mpirun) use them,
and `agent.rankshim` applies the same filter again on every host mpirun reaches.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

# Variables taken from the starting process, and why each one is needed.
BASE_NAMES: dict[str, str] = {
    "PATH": "finds the command's executables (`mlx_lm.lora`, `mpirun`, the venv's console scripts)",
    "HOME": "where user-level caches and configs live (~/.cache/huggingface, ~/.ssh for libraries)",
    "USER": "the account name some libraries ask for (getpass.getuser)",
    "LOGNAME": "the same, as POSIX names it",
    "SHELL": "the shell a program spawns for its own subcommands",
    "LANG": "text encoding of stdin/stdout/filenames; without it Python may fall back to ASCII",
    "TZ": "the local time zone for timestamps in logs",
    "TMPDIR": "where temporary files go (per-user on macOS; tempfile and MLX use it)",
    "VIRTUAL_ENV": "marks the venv the agent (and so the rank interpreter) runs from",
    "PYTHONPATH": "the import path the operator gave the agent; `python -m agent.*` ranks need the same",
    "LD_LIBRARY_PATH": "shared libraries outside the default path (CUDA, a custom Open MPI)",
    "DYLD_LIBRARY_PATH": "the same on macOS",
    "CUDA_VISIBLE_DEVICES": "the GPUs this node gives to Jupiter (NVIDIA nodes)",
}
# Prefixes taken from the starting process.
BASE_PREFIXES: dict[str, str] = {
    "LC_": "locale categories, like LANG",
}

# Set by Jupiter for ranks unless the job sets them itself.
RANK_DEFAULTS: dict[str, str] = {
    "PYTHONUNBUFFERED": "1",   # output reaches the log line by line, not at exit
    "NO_COLOR": "1",           # no terminal colour codes in stored logs
}

# Jupiter's per-rank variables: the only JUPITER_* names a rank ever sees (besides the job's own).
RANK_VARS = frozenset({"JUPITER_JOB_ID", "JUPITER_RANK", "JUPITER_WORLD_SIZE", "JUPITER_LOCAL_RANK",
                       "JUPITER_NODE", "JUPITER_ATTEMPT", "JUPITER_JOB_DIR", "JUPITER_STACKS_DIR"})
# What the MPI runtime itself sets on each rank (rank numbers, the PMIx server's address, the
# MCA parameters mpirun was given) and MLX's own variables; kept by the shim on mpi ranks.
MPI_RUNTIME_PREFIXES = ("OMPI_", "PMIX_", "PRTE_", "OPAL_", "MLX_")

# What mpirun itself (not the ranks) needs from the coordinator's environment, beyond the
# ranks' allowlist: MCA parameters the operator set for Open MPI, the permission to run as root,
# and the ssh agent socket that lets mpirun's ssh reach the other hosts.
MPIRUN_PREFIXES = ("OMPI_MCA_", "PRTE_MCA_", "PMIX_MCA_")
MPIRUN_NAMES = frozenset({"OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "SSH_AUTH_SOCK"})

_SAFE_PART = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def base_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The allowlisted part of `environ`: what any process needs to run."""
    return {k: v for k, v in environ.items()
            if k in BASE_NAMES or any(k.startswith(p) for p in BASE_PREFIXES)}


def rank_env(environ: Mapping[str, str], job_env: Mapping[str, str] | None = None,
             secret_env: Mapping[str, str] | None = None, rank_vars: Mapping[str, str] | None = None
             ) -> dict[str, str]:
    """A rank's whole environment: `environ`'s allowlisted part, Jupiter's defaults, the job's
    env and secret_env, then Jupiter's per-rank variables (which win)."""
    env = base_env(environ)
    env.update(RANK_DEFAULTS)
    env.update(job_env or {})
    env.update(secret_env or {})
    env.update(rank_vars or {})
    return env


def mpirun_env(environ: Mapping[str, str], ranks: Mapping[str, str]) -> dict[str, str]:
    """mpirun's own environment: the ranks' (`ranks`, from `rank_env`) plus the few things of
    `environ` that mpirun needs to launch them. Local ranks inherit it, so it holds no token."""
    env = {k: v for k, v in environ.items()
           if k in MPIRUN_NAMES or any(k.startswith(p) for p in MPIRUN_PREFIXES)}
    env.update(ranks)
    return env


def shim_filter(environ: Mapping[str, str], keep: Iterable[str]) -> dict[str, str]:
    """What an mpi rank keeps of the environment mpirun gave it: the allowlist, the MPI
    runtime's own variables, Jupiter's defaults and per-rank variables, and the job's names
    (`keep`). Everything mpirun needed only for itself (the ssh agent socket) and anything of
    the remote login's that is not allowlisted is dropped."""
    keep = set(keep)
    env = base_env(environ)
    for k, v in environ.items():
        if k in keep or k in RANK_VARS or k in RANK_DEFAULTS or k.startswith(MPI_RUNTIME_PREFIXES):
            env[k] = v
    return env


# --------------------------------------------------------------------------- rank folders


def safe_part(value: str) -> bool:
    """True when `value` can be one path component (a job id, an attempt number)."""
    return bool(_SAFE_PART.match(value)) and value not in (".", "..")


def private_dir(path: Path) -> Path:
    """Create `path` (and its parents) and make sure the last part is a real folder of ours,
    readable by us only: not a symlink, not someone else's. Raises OSError otherwise (a shared
    temp folder is where another account could plant either)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(f"{path} is not a folder (a symlink?)")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise OSError(f"{path} belongs to another account (uid {st.st_uid})")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


def mpi_rank_root() -> Path:
    """Where mpi ranks run on a host: `<temp dir>/jupiter-ranks-<uid>`, computed on that host.

    Not below $JUPITER_HOME (the coordinator's tokens) nor any agent's state dir (node tokens),
    and the same rule on every host, so no path from another machine decides it."""
    # Imported here: tempfile brings shutil, bz2 and lzma (about 0.5 MB resident), and an
    # idle agent imports this module (for ring ranks) without ever running an mpi rank.
    import tempfile

    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"jupiter-ranks-{uid}"
