"""The foreground agent process (`python -m agent`), without the `jupiter` command around it.

`jupiter agent` checks its options and then replaces itself with this (`run`: same process
id, same output), so the agent does not keep typer, rich, click and pygments resident
for as long as it runs (docs/benchmarks.md, "Idle agent"). Every option arrives already checked
and filled in, so nothing here repeats the checks.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from types import SimpleNamespace


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
            os.execve(sys.executable, [sys.executable, "-P", "-m", "agent", *argv], _agent_env())
        except OSError:
            pass
    return main(argv)


def _agent_env() -> dict[str, str]:
    """This environment, with glibc's malloc kept to one arena (unless the operator chose). By
    default glibc gives each thread that allocates an arena of its own, and the agent's orders
    and reporter threads each keep one, about 0.2 MB together, for the few bytes they allocate
    while the main thread sleeps. The agent's threads wait on the network nearly all the time
    and hold the GIL when they allocate, so sharing one arena costs them nothing. Ignored
    elsewhere (macOS); ranks never see it (shared/rankenv.py builds their environment)."""
    env = dict(os.environ)
    env.setdefault("MALLOC_ARENA_MAX", "1")
    return env


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


# The options of `python -m agent` that take a value: (option, type, required, default). One table
# for both readers below, so they cannot drift apart.
_VALUED = (("--coordinator", str, True, None), ("--name", str, True, None), ("--host", str, True, None),
           ("--state-dir", Path, True, None), ("--python", str, False, sys.executable),
           ("--work-dir", Path, False, None), ("--join-token-fd", int, False, None))


def _dest(option: str) -> str:
    return option[2:].replace("-", "_")


def _parse_written(argv: list[str]) -> SimpleNamespace | None:
    """The options as argv_for writes them (`--verbose`, `--option value`), read without argparse,
    which with what it imports (gettext, shutil, bz2, lzma) would keep 0.7 MB for the life of the
    agent; None for anything else (`--help`, `--name=x`, a mistake), which argparse then reads."""
    args = SimpleNamespace(verbose=False, **{_dest(o): default for o, _, _, default in _VALUED})
    read_as = {o: kind for o, kind, _, _ in _VALUED}
    seen = set()
    rest = iter(argv)
    for option in rest:
        if option == "--verbose":
            args.verbose = True
            continue
        read, value = read_as.get(option), next(rest, None)
        if read is None or value is None or value.startswith("-"):
            return None
        try:
            setattr(args, _dest(option), read(value))
        except ValueError:
            return None
        seen.add(option)
    return args if all(o in seen for o, _, required, _ in _VALUED if required) else None


def _parse(argv: list[str] | None) -> SimpleNamespace:
    args = _parse_written(sys.argv[1:] if argv is None else argv)
    if args is not None:
        return args
    import argparse

    ap = argparse.ArgumentParser(prog="python -m agent", description="Run one agent in the foreground "
                                 "(what `jupiter agent` runs once it has checked its options).")
    for option, kind, required, default in _VALUED:
        ap.add_argument(option, type=kind, required=required, default=default,
                        help="A file descriptor to read the join token from, once." if option == "--join-token-fd"
                        else None)
    ap.add_argument("--verbose", "-v", action="store_true")
    return SimpleNamespace(**vars(ap.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    join_token = _read_fd(args.join_token_fd) if args.join_token_fd is not None else None
    # The format of `jupiter`'s daemons (shared/cli/output.py), which tools and benches read.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    _without_pydantic_plugins()
    from agent.loop import Agent, AgentConfig, install_signal_handlers

    ag = Agent(AgentConfig(coordinator=args.coordinator, name=args.name, host=args.host, state_dir=args.state_dir,
                           python=args.python, work_dir=args.work_dir, join_token=join_token))
    install_signal_handlers(ag)
    return ag.run()


def _without_pydantic_plugins() -> None:
    """Let pydantic find no plugins in this process, without looking for them.

    pydantic looks for plugins (the `pydantic` entry points of every installed distribution) when
    it builds its first validator, through a loader module that imports importlib.metadata and
    with it zipfile, csv, email and tempfile: 1.1 MB kept for the life of the agent, which uses
    no pydantic plugin. PYDANTIC_DISABLE_PLUGINS skips the search but not those imports, so the
    agent puts a loader that finds none where pydantic imports it from. The wire schemas validate
    as before: with no plugins pydantic builds the very same validators. Only this process: the
    `jupiter` command and the coordinator keep pydantic's loader. Does nothing once pydantic has
    loaded its own (main() run inside `jupiter agent`, when exec failed)."""
    import types

    name = "pydantic.plugin._loader"
    if name not in sys.modules:
        loader = types.ModuleType(name, "The agent's stand-in: no pydantic plugins (agent/foreground.py).")
        loader.get_plugins = lambda: ()
        sys.modules[name] = loader
