"""`jupiter agent` (run one agent in the foreground) and `jupiter agent install|uninstall` (as a
launchd or systemd service).

Registered into the `jupiter` command through the `jupiter.commands` entry point (pyproject.toml),
so shared/cli/ never imports agent/. The agent's own modules are imported when a command runs.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Optional

import typer

from shared.cli import _fail, console, err
from shared.client import default_url
from shared.paths import jupiter_home
from shared.schemas import HOST_RE, NAME_RE, validate_host

agent_app = typer.Typer(help="Run an agent, or install it as a service.", invoke_without_command=True)


def register(app: typer.Typer) -> None:
    """Add the `agent` group to the `jupiter` app (the `jupiter.commands` entry point)."""
    app.add_typer(agent_app, name="agent")


def _default_name() -> str:
    short = socket.gethostname().split(".")[0]
    return short if NAME_RE.match(short) else "node"


def _default_host() -> str:
    name = socket.gethostname()
    return name if HOST_RE.fullmatch(name) else "127.0.0.1"


@agent_app.callback()
def agent(
    ctx: typer.Context,
    coordinator_url: str = typer.Option(None, "--coordinator", help="Coordinator URL (default $JUPITER_URL)."),
    name: Optional[str] = typer.Option(None, help="Node name (default: short hostname)."),
    host: Optional[str] = typer.Option(None, help="Address other nodes reach this one at."),
    state_dir: Optional[Path] = typer.Option(None, help="Where the node token lives (default $JUPITER_HOME/agent-NAME)."),
    python: str = typer.Option(sys.executable, help="Interpreter that runs ranks (its MLX is reported)."),
    work_dir: Optional[Path] = typer.Option(None, help="Where ranks run, apart from the state dir "
                                                       "(default $JUPITER_HOME-work/<state dir name>)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run one agent in the foreground (or see `install`, `uninstall`)."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"coordinator": coordinator_url, "name": name, "host": host, "state_dir": state_dir}
        return
    name = name or _default_name()
    host = host or _default_host()
    if not NAME_RE.match(name):
        _fail(f"--name {name!r}: use letters, digits, spaces and . _ ( ) + - (at most 64)")
    try:
        validate_host(host)
    except ValueError as exc:
        _fail(f"--host: {exc}")
    state_dir = state_dir or jupiter_home() / f"agent-{name.replace(' ', '_')}"
    from agent.ranks import default_work_dir, work_dir_problem
    from agent.state import find_join_token

    work_dir = work_dir or default_work_dir(state_dir)
    problem = work_dir_problem(work_dir, state_dir)
    if problem:
        _fail(problem)
    from agent import foreground

    argv = foreground.argv_for(coordinator=(coordinator_url or default_url()).rstrip("/"), name=name, host=host,
                               state_dir=state_dir, python=python, work_dir=work_dir, verbose=verbose)
    # The agent runs for months: it does so in a process of its own without this command's
    # libraries (exec, so the process id stays); in this one only if that cannot be. Everything it
    # takes from the environment is read here, once, and handed over.
    try:
        raise typer.Exit(foreground.run(argv, join_token=find_join_token()))
    except ValueError as exc:
        _fail(str(exc))


def _service_manager(launchd: bool, systemd: bool):
    if launchd and systemd:
        _fail("choose one of --launchd and --systemd")
    return "launchd" if launchd else "systemd" if systemd else None


def _carry_out(plan, print_only: bool, done: str) -> None:
    """Show a service plan (--print) or apply it, with its warnings; errors are one clear line."""
    from agent.service import ServiceError, apply_plan, format_plan

    if print_only:
        print(format_plan(plan))
        return
    try:
        outcome = apply_plan(plan)
    except ServiceError as exc:
        _fail(str(exc))
    for w in outcome.warnings:
        err.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    console.print(f"[green]{done}[/]")


def _join_token_given(from_stdin: bool, path: Optional[Path]) -> str | None:
    """The join token from standard input or a file, as `agent install` was told; None if neither."""
    from shared.paths import read_secret

    if from_stdin and path is not None:
        _fail("choose one of --join-token-stdin and --join-token-file")
    if path is not None:
        token = read_secret(path.expanduser())
        if token is None:
            _fail(f"--join-token-file: {path} is missing, unreadable or empty")
        return token
    if not from_stdin:
        return None
    if sys.stdin.isatty():
        import getpass

        text = getpass.getpass("join token (not echoed): ")
    else:
        text = sys.stdin.read(8192)
    token = text.strip()
    if not token:
        _fail("--join-token-stdin: nothing on standard input; pipe the token in, e.g. "
              "`jupiter agent install ... --join-token-stdin < join.token`")
    return token


@agent_app.command("install")
def agent_install(
    ctx: typer.Context,
    launchd: bool = typer.Option(False, "--launchd", help="Install a launchd LaunchAgent (macOS)."),
    systemd: bool = typer.Option(False, "--systemd", help="Install a systemd unit (Linux, NVIDIA boxes)."),
    coordinator_url: Optional[str] = typer.Option(None, "--coordinator", help="Coordinator URL (default $JUPITER_URL)."),
    name: Optional[str] = typer.Option(None, help="Node name (default: short hostname)."),
    host: Optional[str] = typer.Option(None, help="Address other nodes reach this one at."),
    state_dir: Optional[Path] = typer.Option(None, help="Agent state dir (default $JUPITER_HOME/agent)."),
    join_token_stdin: bool = typer.Option(False, "--join-token-stdin", help=(
        "Read the join token from standard input (a pipe, or a prompt that does not echo). "
        "Default: $JUPITER_JOIN_TOKEN. It is kept in a 0600 file, never in the service file.")),
    join_token_file: Optional[Path] = typer.Option(None, "--join-token-file", help=(
        "Read the join token from this file (a copy of the leader's join.token).")),
    join_token: Optional[str] = typer.Option(None, "--join-token", hidden=True,
                                             help="Refused: use --join-token-stdin or --join-token-file."),
    print_only: bool = typer.Option(False, "--print", help="Show the file and commands; change nothing."),
) -> None:
    """Write the service file so the OS keeps the agent running, and load it."""
    from agent.service import agent_service, plan_install
    from agent.state import find_join_token

    if join_token is not None:
        _fail("--join-token would put the secret in the process list and the shell history: give it on "
              "standard input (--join-token-stdin < join.token), in a file (--join-token-file PATH) or in "
              "the environment (JUPITER_JOIN_TOKEN)")
    token = _join_token_given(join_token_stdin, join_token_file) or find_join_token()
    parent = ctx.obj or {}
    try:
        svc = agent_service(coordinator_url or parent.get("coordinator"), name or parent.get("name"),
                            host=host or parent.get("host"), state_dir=state_dir or parent.get("state_dir"),
                            join_token=token)
        plan = plan_install(svc, _service_manager(launchd, systemd))
    except ValueError as exc:
        _fail(str(exc))
    _carry_out(plan, print_only, "agent service installed and started")


@agent_app.command("uninstall")
def agent_uninstall(
    launchd: bool = typer.Option(False, "--launchd"),
    systemd: bool = typer.Option(False, "--systemd"),
    purge: Optional[Path] = typer.Option(None, help="Also delete this agent state dir."),
    print_only: bool = typer.Option(False, "--print", help="Show the commands; change nothing."),
) -> None:
    """Stop the agent service and remove its file (the state dir stays unless --purge)."""
    from agent.service import plan_uninstall

    try:
        plan = plan_uninstall(_service_manager(launchd, systemd), purge_state_dir=purge)
    except ValueError as exc:
        _fail(str(exc))
    _carry_out(plan, print_only, "agent service removed")
