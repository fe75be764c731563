"""The `jupiter` command. Client subcommands talk HTTP through shared.client.

One module per command group: `cluster` (check), `jobs` (jobs, submit, logs, cancel), `artifacts`,
`training` (start, model-info), `nodes` (nodes, nodes approve|delete) and `tokens` (token create|list|revoke);
`output` holds the consoles and the one-line failure, `api` the admin client. This module builds the
app from them, in the order --help lists them.

The daemon commands live with their side, `coordinator` in coordinator/cli.py and `agent` in
agent/cli.py, and join this app through the `jupiter.commands` entry points (pyproject.toml):
main() loads each and calls its `register(app)`. So shared/ never imports coordinator/ or agent/,
and a client-only command never loads the daemons' code."""

from __future__ import annotations

import os

import typer

from shared import __version__
from shared.cli import artifacts, cluster, finetune, jobs, nodes, tokens, training
from shared.cli.jobs import job_table
from shared.cli.nodes import node_table
from shared.cli.output import console, err, fail, setup_logging
from shared.text import markup

# The daemons' commands (coordinator/cli.py, agent/cli.py) import these two by their old names.
_fail = fail
_logging = setup_logging

__all__ = ["COMMANDS_GROUP", "add_entry_point_commands", "app", "console", "err", "job_table", "main",
           "node_table"]

app = typer.Typer(help="Jupiter: train with MLX across a stack of Macs.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)


def version() -> None:
    """Print Jupiter's version."""
    print(__version__)


cluster.register(app)    # check
jobs.register(app)       # jobs, submit, logs, cancel
artifacts.register(app)  # artifacts
training.register(app)   # start, model-info
finetune.register(app)   # finetune
app.command()(version)
nodes.register(app)      # the groups come after the commands in --help: nodes, then token
tokens.register(app)


COMMANDS_GROUP = "jupiter.commands"
_extended: set[int] = set()  # the apps the entry points were already added to


def add_entry_point_commands(target: typer.Typer = app) -> list[str]:
    """Load every `jupiter.commands` entry point and call its `register(target)`; its commands
    are listed first in --help, where the daemons have always been. Returns one line per entry
    point that could not be loaded or registered (the others still work)."""
    from importlib.metadata import entry_points

    if id(target) in _extended:
        return []
    _extended.add(id(target))
    problems: list[str] = []
    found = sorted({ep.name: ep for ep in entry_points(group=COMMANDS_GROUP)}.values(), key=lambda ep: ep.name)
    if not found:
        return [f"no `{COMMANDS_GROUP}` entry points are installed, so the `coordinator` and `agent` "
                f"commands are missing: reinstall Jupiter (`make venv`, or `pip install -e .` in its checkout)"]
    commands, groups = list(target.registered_commands), list(target.registered_groups)
    target.registered_commands.clear()
    target.registered_groups.clear()
    for ep in found:
        try:
            ep.load()(target)
        except Exception as exc:  # a broken plugin must not take the client commands down with it
            problems.append(f"cannot add the `{ep.name}` command from the entry point {ep.value!r}: "
                            f"{type(exc).__name__}: {exc}")
    target.registered_commands.extend(commands)
    target.registered_groups.extend(groups)
    return problems


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    for problem in add_entry_point_commands():
        err.print(f"[bold red]error:[/] {markup(problem, multiline=True)}", highlight=False, soft_wrap=True)
    app()
