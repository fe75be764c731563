"""The `jupiter` command. Client subcommands talk HTTP through shared.client.

The daemon commands live with their side, `coordinator` in coordinator/cli.py and `agent` in
agent/cli.py, and join this app through the `jupiter.commands` entry points (pyproject.toml):
main() loads each and calls its `register(app)`. So shared/ never imports coordinator/ or agent/,
and a client-only command never loads the daemons' code."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from shared import __version__
from shared.client import ApiError, Client, default_admin_token, default_url
from shared.status import TERMINAL
from shared.text import ansi, cell, markup, plain

app = typer.Typer(help="Jupiter: train with MLX across a stack of Macs.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
# Piped output (make run, CI logs) gets a wide fixed width instead of wrapping tables at 80,
# unless COLUMNS says how wide.
console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() or os.environ.get("COLUMNS") else 160)


def _fail(message: str, code: int = 1) -> None:
    # The message may quote the coordinator's answer: plain text, never markup.
    err.print(f"[bold red]error:[/] {markup(message, multiline=True)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the agent's own


def _client() -> Client:
    token = default_admin_token()
    if not token:
        _fail("no admin token: set JUPITER_TOKEN (on the leader it is read from $JUPITER_HOME/admin.token)")
    return _call(lambda: Client(default_url(), token))  # trusting an https coordinator may fetch its CA


def _call(fn):
    """Run one API call and turn its failures into one clear line and a non-zero exit."""
    import httpx

    from shared.client import TrustError
    from shared.tlspin import PinMismatch

    try:
        return fn()
    except ApiError as exc:
        _fail(str(exc))
    except (TrustError, PinMismatch) as exc:
        _fail(str(exc))
    except httpx.TransportError as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc):
            _fail(f"cannot verify the certificate of {default_url()}: set JUPITER_CA_SHA256 to the CA pin (the "
                  f"coordinator logs it at start; it is the second field of a join string) or JUPITER_CA_FILE "
                  f"to its ca.pem ({exc})")
        _fail(f"cannot reach the coordinator at {default_url()} ({type(exc).__name__}); is it running?")


# ---------------------------------------------------------------------------- live state


def _gb(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"


nodes_app = typer.Typer(help="Table of the nodes the coordinator knows (or see `approve`, `delete`).",
                        invoke_without_command=True)
app.add_typer(nodes_app, name="nodes")


@nodes_app.callback()
def nodes(ctx: typer.Context,
          as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Table of the nodes the coordinator knows; pending ones wait for `jupiter nodes approve`."""
    if ctx.invoked_subcommand is not None:
        return
    with _client() as c:
        rows = _call(c.nodes)
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


@app.command()
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


# ---------------------------------------------------------------------------- jobs


def job_table(rows) -> Table:
    t = Table(title="Jobs", title_justify="left")
    for col in ("id", "name", "status", "backend", "ranks", "nodes", "created", "progress", "error"):
        t.add_column(col, overflow="fold")
    colours = {"pending": "yellow", "starting": "cyan", "running": "cyan", "succeeded": "green",
               "failed": "red", "cancelled": "magenta"}
    for j in rows:
        prog = ""
        if j.progress.get("step") is not None:
            prog = f"{j.progress['step']}/{j.progress.get('total_steps') or '?'}"
            if j.progress.get("loss") is not None:
                prog += f" loss {j.progress['loss']:.4g}"
        t.add_row(cell(j.id), cell(j.name), f"[{colours.get(j.status, 'white')}]{j.status}[/]", cell(j.backend),
                  str(j.world_size), cell(",".join(j.nodes)), j.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                  cell(prog, empty=""), cell(j.error or j.pending_reason, empty=""))
    return t


@app.command()
def jobs(status: Optional[str] = typer.Option(None, help="Only jobs with this status."),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """Table of jobs, newest first."""
    with _client() as c:
        rows = _call(lambda: c.jobs(status))
    if as_json:
        print(json.dumps([j.model_dump(mode="json") for j in rows], indent=2))
        return
    console.print(job_table(rows))


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _fail(f"--env {pair!r}: use KEY=VALUE")
        env[key] = value
    return env


def follow(c: Client, job_id: str, *, show_logs: bool = True) -> int:
    """Stream a job's events until it ends; returns the exit code the CLI should exit with."""
    import httpx

    status = None
    try:
        for event, data in c.events(job_id):
            if event == "log" and show_logs:
                # A rank's own output: its colours kept, other escape sequences dropped, no markup.
                console.print(ansi(data), highlight=False, soft_wrap=True)
            elif event == "status" and data["status"] != status and data["status"] not in TERMINAL:
                status = data["status"]
                extra = f" ({data['pending_reason']})" if status == "pending" and data.get("pending_reason") else ""
                err.print(f"[bold]{markup(job_id)}[/] {markup(status)}{markup(extra)}", highlight=False,
                          soft_wrap=True)
            elif event == "end":
                colour = "green" if data["status"] == "succeeded" else "red"
                err.print(f"[bold {colour}]{markup(job_id)} {markup(data['status'])}[/]"
                          + (f": {markup(data['error'])}" if data.get("error") else ""),
                          highlight=False, soft_wrap=True)
                return 0 if data["status"] == "succeeded" else (data.get("exit_code") or 1)
    except httpx.TransportError as exc:
        _fail(f"lost the coordinator while following {job_id} ({type(exc).__name__}); the job may still run")
    return 1


def _on_interrupt(c: Client, job_id: str) -> None:
    if sys.stdin.isatty() and typer.confirm(f"\ncancel job {job_id}?", default=False):
        c.cancel(job_id)
        err.print(f"{job_id} cancelled")
    else:
        err.print(f"\n{job_id} keeps running; follow it with `jupiter logs {job_id} -f`, stop it with "
                  f"`jupiter cancel {job_id}`")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def submit(
    command: list[str] = typer.Argument(..., help="The command after --, as an argv list."),
    name: str = typer.Option("job", help="Job name."),
    nodes: Optional[int] = typer.Option(None, min=1, help="How many nodes (default 1, or the number of --node)."),
    node: list[str] = typer.Option([], "--node", help="Run on exactly these nodes, in rank order (repeatable)."),
    processes_per_node: int = typer.Option(1, "--processes-per-node", "--ppn", min=1),
    backend: Optional[str] = typer.Option(None, help="ring | mpi (default: cluster.yaml's backend)."),
    env: list[str] = typer.Option([], "--env", "-e", help="KEY=VALUE for every rank (repeatable)."),
    secret_env: list[str] = typer.Option([], "--secret-env", help=(
        "NAME: pass this variable of your own environment to every rank as a secret, never shown back "
        "by the API (repeatable; the value never appears on a command line).")),
    role: list[str] = typer.Option([], "--role", help="Eligible node roles (repeatable)."),
    min_memory_gb: float = typer.Option(0, min=0),
    timeout: Optional[float] = typer.Option(None, help="Fail the job after this many seconds running."),
    idempotency_key: Optional[str] = typer.Option(None),
    detach: bool = typer.Option(False, "--detach", "-d", help="Print the job id and return at once."),
) -> None:
    """Submit any command as a distributed job and follow it to the end: jupiter submit -- python train.py"""
    spec = {"name": name, "command": command, "processes_per_node": processes_per_node, "env": _parse_env(env),
            "min_memory_gb": min_memory_gb}
    if node:
        spec["node_names"] = node
    if nodes is not None:
        spec["nodes"] = nodes
    for key, value in (("backend", backend), ("timeout_s", timeout), ("idempotency_key", idempotency_key)):
        if value is not None:
            spec[key] = value
    if role:
        spec["roles"] = role
    if secret_env:
        missing = [k for k in secret_env if k not in os.environ]
        if missing:
            _fail(f"--secret-env {', '.join(missing)}: not set in this shell's environment "
                  f"(export it first; the value is read from there, never from the command line)")
        spec["secret_env"] = {k: os.environ[k] for k in secret_env}
    with _client() as c:
        job = _call(lambda: c.submit(spec))
        if detach:
            print(job.id)
            return
        err.print(f"submitted [bold]{job.id}[/] ({job.world_size} rank(s), {job.backend})", highlight=False)
        try:
            code = follow(c, job.id)
        except KeyboardInterrupt:
            _on_interrupt(c, job.id)
            code = 130
    raise typer.Exit(code)


@app.command()
def logs(job_id: str = typer.Argument(..., help="Job id."),
         follow_: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job ends.")) -> None:
    """Print a job's log (every line prefixed [RANK])."""
    import time as _time

    with _client() as c:
        offset = 0
        while True:
            text, offset_next = _call(lambda: c.logs(job_id, offset))
            if text:
                # Ranks' colours pass; any other escape sequence a node sent is dropped.
                sys.stdout.write(plain(text, multiline=True, keep_colour=True))
                sys.stdout.flush()
            offset = offset_next
            if not follow_:
                return
            if not text:
                job = _call(lambda: c.job(job_id))
                if job.status in TERMINAL:
                    text, _ = _call(lambda: c.logs(job_id, offset))
                    sys.stdout.write(plain(text, multiline=True, keep_colour=True))
                    raise typer.Exit(0 if job.status == "succeeded" else 1)
                _time.sleep(0.5)


@app.command()
def cancel(job_id: str = typer.Argument(..., help="Job id.")) -> None:
    """Stop every rank of a job (TERM, then KILL after a grace). Safe to repeat."""
    with _client() as c:
        job = _call(lambda: c.cancel(job_id))
    console.print(f"{job.id} {job.status}")


@app.command()
def start(
    domain: str = typer.Option(..., help="Domain to train on (config/domains/<domain>.yaml)."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Passes over the domain's data (default 1)."),
    nodes: int = typer.Option(2, min=1, help="How many nodes to train on."),
    backend: Optional[str] = typer.Option(None, help="ring | mpi (default: cluster.yaml's backend)."),
    preset: Optional[str] = typer.Option(None, help="micro | tiny | small | base | 1b (default tiny)."),
    steps: Optional[int] = typer.Option(None, min=1, help="Stop after this many steps."),
    name: Optional[str] = typer.Option(None, help="Job name (default train-<domain>)."),
    node: list[str] = typer.Option([], "--node", help="Train on exactly these nodes, in rank order."),
) -> None:
    """Train the built-in MLX model on a domain across the cluster, with a live progress bar."""
    spec: dict = {"name": name or f"train-{domain}"[:64], "domain": domain, "nodes": nodes}
    for key, value in (("epochs", epochs), ("backend", backend), ("preset", preset), ("steps", steps)):
        if value is not None:
            spec[key] = value
    if node:
        spec["node_names"] = node
        spec["nodes"] = len(node)
    with _client() as c:
        job = _call(lambda: c.submit(spec))
        err.print(f"submitted [bold]{markup(job.id)}[/] on {job.world_size} rank(s), {markup(job.backend)}: "
                  + markup(" ".join(job.command)), highlight=False, soft_wrap=True)
        try:
            code = follow_training(c, job.id)
        except KeyboardInterrupt:
            _on_interrupt(c, job.id)
            code = 130
    raise typer.Exit(code)


def follow_training(c: Client, job_id: str) -> int:
    """A progress bar over the job's SSE stream: step of total, loss, tokens/s, ETA."""
    import httpx
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
                   TextColumn("ETA {task.fields[eta]}"), TimeElapsedColumn(), console=err, transient=False)
    task = bar.add_task("waiting", total=None, loss="-", tps="-", eta="-")
    last: dict = {}
    end = None
    try:
        with bar:
            for event, data in c.events(job_id):
                if event == "status":
                    bar.update(task, description=markup(data["status"]))
                    if data["status"] == "pending" and data.get("pending_reason"):
                        bar.console.print(f"pending: {markup(data['pending_reason'])}", highlight=False)
                elif event == "progress":
                    last.update(data)
                    total = data.get("total_steps")
                    bar.update(task, total=total, completed=data.get("step") or 0,
                               loss=f"{data['loss']:.4f}" if isinstance(data.get("loss"), (int, float)) else "-",
                               tps=f"{data['tokens_per_s']:,.0f}" if data.get("tokens_per_s") else "-",
                               eta=f"{data['eta_s']:.0f}s" if isinstance(data.get("eta_s"), (int, float)) else "-")
                elif event == "log" and " JUPITER_PROGRESS " not in data and not data.endswith("JUPITER_PROGRESS"):
                    if data.startswith(("[jupiter]", "[0] [train]")) or "Error" in data or "error" in data:
                        bar.console.print(ansi(data), highlight=False, soft_wrap=True)
                elif event == "end":
                    end = data
    except httpx.TransportError as exc:
        _fail(f"lost the coordinator while following {job_id} ({type(exc).__name__}); the job may still run")
    if end is None:
        return 1
    if end["status"] == "succeeded":
        loss = last.get("final_loss", last.get("loss"))
        err.print(f"[bold green]{job_id} succeeded[/]"
                  + (f": final loss {loss:.4f}" if isinstance(loss, (int, float)) else "")
                  + (f", eval loss {last['eval_loss']:.4f}" if isinstance(last.get("eval_loss"), (int, float)) else ""),
                  highlight=False)
        if last.get("checkpoint"):
            err.print(f"checkpoint: {markup(last['checkpoint'])}", highlight=False, soft_wrap=True)
        return 0
    err.print(f"[bold red]{markup(job_id)} {markup(end['status'])}[/]"
              + (f": {markup(end['error'])}" if end.get("error") else ""), highlight=False, soft_wrap=True)
    return end.get("exit_code") or 1


@app.command("model-info")
def model_info(preset: str = typer.Argument("tiny", help="micro | tiny | small | base | 1b"),
               batch: Optional[int] = typer.Option(None, help="Global batch (default: the preset's)."),
               seq: Optional[int] = typer.Option(None, help="Sequence length (default: the preset's)."),
               world_size: int = typer.Option(1, min=1, help="Ranks the batch is split over."),
               bf16: bool = typer.Option(False, "--bf16", help="bfloat16 compute."),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Parameters and memory per rank of a built-in trainer preset."""
    from shared.presets import model_info as info_of
    from shared.presets import model_info_lines

    try:
        info = info_of(preset, batch, seq, "bfloat16" if bf16 else "float32", world_size)
    except ValueError as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(info, indent=2))
        return
    for line in model_info_lines(info):
        console.print(line, highlight=False)


@app.command()
def version() -> None:
    """Print Jupiter's version."""
    print(__version__)


from shared import cli_admin  # noqa: E402  (registers `jupiter token` and `jupiter nodes approve|delete`)

cli_admin.register(app, nodes_app)


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


if __name__ == "__main__":
    main()
