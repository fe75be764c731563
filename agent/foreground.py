"""The foreground agent process (`python -m agent`), without the `jupiter` command around it.

`jupiter agent` checks its options and then replaces itself with this (`run`: same process
id, same output), so the agent does not keep typer, rich, click and pygments resident
for as long as it runs (docs/benchmarks.md, "Idle agent"). Every option arrives already checked
and filled in, so nothing here repeats the checks.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def argv_for(*, coordinator: str, name: str, host: str, state_dir: Path, python: str,
             work_dir: Path | None, verbose: bool) -> list[str]:
    """The options of `python -m agent` for a checked `jupiter agent` command line."""
    argv = ["--coordinator", coordinator, "--name", name, "--host", host, "--state-dir", str(state_dir),
            "--python", python]
    if work_dir is not None:
        argv += ["--work-dir", str(work_dir)]
    return argv + (["--verbose"] if verbose else [])


def run(argv: list[str], *, join_token: str | None) -> int:
    """Become `python -P -m agent ARGV` (exec: the same process id, signals and standard streams),
    or, where that cannot be done, run it in this process. The join token, read from the
    environment by `jupiter agent` (shared/settings.py), goes on a pipe the new process inherits:
    not on its command line (the process list) and not read again there, so the long-running
    agent never loads pydantic-settings (about 2 MB resident). -P keeps the current folder off
    sys.path: a folder there named `agent` must not be run."""
    if join_token:
        argv = [*argv, "--join-token-fd", str(_pipe_with(join_token))]
    if sys.executable:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execv(sys.executable, [sys.executable, "-P", "-m", "agent", *argv])
        except OSError:
            pass
    return main(argv)


def _pipe_with(text: str) -> int:
    """The read end of a pipe holding `text` (a token: far below any pipe's buffer), inheritable."""
    data = text.encode()
    if len(data) > 4096:
        raise ValueError("the join token is too long (more than 4096 bytes)")
    r, w = os.pipe()
    try:
        os.write(w, data)
    finally:
        os.close(w)
    os.set_inheritable(r, True)
    return r


def _read_fd(fd: int) -> str | None:
    with os.fdopen(fd, "rb") as f:
        return f.read(4097).decode(errors="replace").strip() or None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agent", description="Run one agent in the foreground "
                                 "(what `jupiter agent` runs once it has checked its options).")
    ap.add_argument("--coordinator", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--host", required=True)
    ap.add_argument("--state-dir", type=Path, required=True)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--work-dir", type=Path)
    ap.add_argument("--verbose", "-v", action="store_true")
    ap.add_argument("--join-token-fd", type=int, help="A file descriptor to read the join token from, once.")
    args = ap.parse_args(argv)
    join_token = _read_fd(args.join_token_fd) if args.join_token_fd is not None else None
    # The format of `jupiter`'s daemons (shared/cli/output.py), which tools and benches read.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    from agent.loop import Agent, AgentConfig, install_signal_handlers

    ag = Agent(AgentConfig(coordinator=args.coordinator, name=args.name, host=args.host, state_dir=args.state_dir,
                           python=args.python, work_dir=args.work_dir, join_token=join_token))
    install_signal_handlers(ag)
    return ag.run()
