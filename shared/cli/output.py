"""Where the `jupiter` command writes: the two consoles, the one-line failure, and the log format
of the daemon commands."""

from __future__ import annotations

import logging
import os
import sys

import typer
from rich.console import Console

from shared.text import markup

# Piped output (make run, CI logs) gets a wide fixed width instead of wrapping tables at 80,
# unless COLUMNS says how wide.
console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() or os.environ.get("COLUMNS") else 160)


def fail(message: str, code: int = 1) -> None:
    # The message may quote the coordinator's answer: plain text, never markup.
    err.print(f"[bold red]error:[/] {markup(message, multiline=True)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the agent's own
