"""`jupiter nodes`: the table of nodes, and the admin's `nodes approve` and `nodes delete`."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from shared.cli.api import admin_client, call
from shared.cli.output import console, fail
from shared.text import cell, markup

nodes_app = typer.Typer(help="Table of the nodes the coordinator knows (or see `approve`, `delete`).",
                        invoke_without_command=True)


def register(app: typer.Typer) -> None:
    app.add_typer(nodes_app, name="nodes")


def _gb(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"


@nodes_app.callback()
def nodes(ctx: typer.Context,
          as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Table of the nodes the coordinator knows; pending ones wait for `jupiter nodes approve`."""
    if ctx.invoked_subcommand is not None:
        return
    with admin_client() as c:
        rows = call(c.nodes)
    if as_json:
        print(json.dumps([n.model_dump(mode="json") for n in rows], indent=2))
        return
    console.print(node_table(rows))


def node_table(rows) -> Table:
    t = Table(title="Nodes", title_justify="left")
    for col in ("name", "host", "status", "role", "type", "chip", "RAM GB", "free GB", "MLX", "MPI", "problems"):
        t.add_column(col)
    colours = {"ready": "green", "busy": "cyan", "draining": "yellow", "down": "red", "pending": "magenta"}
    for n in rows:  # every string a node reported is shown as plain text (cell), never as markup
        mpi = f"{n.mpi.implementation} {n.mpi.version or ''}".strip() if n.mpi.implementation else "-"
        t.add_row(cell(n.name), cell(n.host), f"[{colours.get(n.status, 'white')}]{n.status}[/]", n.role,
                  n.device_type or "-", cell(n.chip), _gb(n.memory_gb), _gb(n.memory_available_gb),
                  cell(f"{n.mlx_version or '-'} ({n.mlx_device or '-'})"), cell(mpi),
                  str(len(n.problems)) if n.problems else "")
    return t


def _node_id(c, ref: str) -> str:
    rows = call(c.nodes)
    for n in rows:
        if ref in (n.id, n.name):
            return n.id
    fail(f"no node named {ref!r} (see `jupiter nodes`)")


@nodes_app.command("approve")
def nodes_approve(node: str = typer.Argument(..., help="Node name or id.")) -> None:
    """Admit a pending node: it becomes schedulable."""
    with admin_client() as c:
        out = call(lambda: c.approve(_node_id(c, node)))
    console.print(f"node {markup(out.name)} approved: {out.status}", highlight=False)


@nodes_app.command("delete")
def nodes_delete(node: str = typer.Argument(..., help="Node name or id.")) -> None:
    """Forget a node and revoke its node token and key: its name can then be enrolled afresh."""
    with admin_client() as c:
        nid = _node_id(c, node)
        call(lambda: c.delete_node(nid))
    console.print(f"node {markup(node)} deleted", highlight=False)
