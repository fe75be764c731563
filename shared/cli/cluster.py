"""`jupiter check`: cluster.yaml, the domains and the live cluster, every problem with its fix."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from shared.cli.output import console
from shared.client import ApiError, Client, default_admin_token, default_url


def register(app: typer.Typer) -> None:
    app.command()(check)


def check(config: Path = typer.Option(Path("config/cluster.yaml"), help="cluster.yaml to validate."),
          as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
          links: bool = typer.Option(False, "--links", help="Also run a short job measuring each neighbour link."),
          mpi: bool = typer.Option(False, "--mpi", help="With --links: measure with mpi4py over Open MPI (needs SSH)."),
          ) -> None:
    """Validate cluster.yaml and the domains, then show the live cluster and every problem with its
    fix. Exits non-zero when the configuration is invalid or the configured backend cannot run."""
    from shared.check import render, render_links, run_check, run_links

    report = run_check(config, default_url(), default_admin_token())
    rows = None
    if links and report.reachable:
        try:
            with Client(default_url(), default_admin_token()) as c:
                rows = run_links(c, report, mpi=mpi)
        except (RuntimeError, ApiError) as exc:
            report.problems.append({"node": None, "kind": "links", "message": f"link probe: {exc}",
                                    "fix": "see jupiter logs of the check-links job", "blocking": True})
    if as_json:
        out = report.to_json()
        if rows is not None:
            out["links"] = rows
        print(json.dumps(out, indent=2))
    else:
        render(report, console)
        if rows:
            render_links(rows, console)
    raise typer.Exit(report.exit_code)
