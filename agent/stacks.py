"""Where a rank is stuck: its Python stacks on request, and whether it is stopped.

Every Python process of a rank loads agent/rankboot/sitecustomize.py at start-up (its folder is
put first on the rank's PYTHONPATH), which dumps all its threads' stacks to the rank's log on
SIGUSR1 and leaves a file named after its pid in the rank's stacks folder. `dump` signals exactly
those processes, and only while they are still the rank's (the process or one of its
descendants): a file there proves nothing by itself, and SIGUSR1 ends a process that has no
handler for it. Used by the rank runner (ring ranks) and by agent.rankshim (mpi ranks).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

BOOT_DIR = Path(__file__).resolve().parent / "rankboot"


def prepare_env(env: dict[str, str], stacks_dir: Path) -> None:
    """Make `stacks_dir` and set a rank's environment so its Python processes can dump stacks."""
    stacks_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    env["JUPITER_STACKS_DIR"] = str(stacks_dir)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BOOT_DIR), env.get("PYTHONPATH", "")) if p)


def _tree(pid: int) -> list:
    """The process `pid` and its descendants (psutil processes); empty when it is gone."""
    import psutil  # only an agent with ranks pays for it

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def dump(pid: int, stacks_dir: Path | None) -> list[int]:
    """SIGUSR1 to each process of the rank rooted at `pid` that installed the stack handler; the
    pids signalled (empty: no Python process of this rank can dump its stack)."""
    if stacks_dir is None:
        return []
    try:
        ready = {int(name) for name in os.listdir(stacks_dir) if name.isdigit()}
    except OSError:
        return []
    sent = []
    for proc in _tree(pid):
        if proc.pid in ready:
            try:
                os.kill(proc.pid, signal.SIGUSR1)
                sent.append(proc.pid)
            except OSError:  # ended meanwhile
                pass
    return sent


def stopped(pid: int) -> int | None:
    """A process of the rank rooted at `pid` that is stopped (state T: SIGSTOP, Ctrl-Z, a
    debugger), or None. A stopped rank holds every other rank in its next collective."""
    import psutil

    for proc in _tree(pid):
        try:
            if proc.status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP):
                return proc.pid
        except psutil.Error:
            continue
    return None


def forget(stacks_dir: Path | None) -> None:
    if stacks_dir is not None:
        import shutil  # here, not above: shutil brings bz2 and lzma, which an idle agent never needs

        shutil.rmtree(stacks_dir, ignore_errors=True)
