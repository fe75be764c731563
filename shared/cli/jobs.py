"""`jupiter jobs`, `submit`, `logs` and `cancel`: any command as a distributed job, followed to
its end."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from shared.cli.api import admin_client, call
from shared.cli.output import console, err, fail
from shared.cli.progressbar import TrainingBar
from shared.client import Client
from shared.status import TERMINAL
from shared.text import ansi, cell, markup, plain


def register(app: typer.Typer) -> None:
    app.command()(jobs)
    app.command()(job)
    app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})(submit)
    app.command()(logs)
    app.command()(cancel)


COLOURS = {"pending": "yellow", "starting": "cyan", "running": "cyan", "succeeded": "green",
           "failed": "red", "cancelled": "magenta"}


def status_text(j) -> str:
    """The job's status as Rich markup: a stalled job says so ("failed (stalled)")."""
    word = markup(j.status) + (" (stalled)" if j.stalled else "")
    return f"[{COLOURS.get(j.status, 'white')}]{word}[/]"


def straggler_line(s) -> str:
    """One straggler in plain words: "rank 1 on n2, 38 % slower: thermal throttling (...)"."""
    return f"rank {s.rank} on {s.node}, {s.slower_pct:.0f} % slower" + (f": {s.cause}" if s.cause else "")


def job_table(rows) -> Table:
    t = Table(title="Jobs", title_justify="left")
    for col in ("id", "name", "status", "backend", "ranks", "nodes", "created", "progress", "error"):
        t.add_column(col, overflow="fold")
    for j in rows:
        prog = ""
        if j.progress.get("step") is not None:
            prog = f"{j.progress['step']}/{j.progress.get('total_steps') or '?'}"
            if j.progress.get("loss") is not None:
                prog += f" loss {j.progress['loss']:.4g}"
        status = status_text(j)
        if j.stragglers:
            status += f"\n[yellow]{len(j.stragglers)} straggler{'s' if len(j.stragglers) > 1 else ''}[/]"
        notes = [j.error or j.pending_reason, *j.warnings, *("straggler: " + straggler_line(s) for s in j.stragglers)]
        t.add_row(cell(j.id), cell(j.name), status, cell(j.backend),
                  str(j.world_size), cell(",".join(j.nodes)), j.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                  cell(prog, empty=""), Text("\n".join(plain(n) for n in notes if n)))
    return t


def job(job_id: str = typer.Argument(..., help="Job id."), as_json: bool = typer.Option(False, "--json")) -> None:
    """One job: status, progress, each rank's state and speed, stragglers and warnings."""
    with admin_client() as c:
        j = call(lambda: c.job(job_id))
    if as_json:
        print(json.dumps(j.model_dump(mode="json"), indent=2))
        return
    console.print(f"[bold]{markup(j.id)}[/] {markup(j.name)}: {status_text(j)} ({j.world_size} rank(s), "
                  f"{markup(j.backend)}" + (f", on {markup(', '.join(j.nodes))}" if j.nodes else "") + ")",
                  highlight=False, soft_wrap=True)
    if j.backend_reason:
        console.print(f"backend: {markup(j.backend)}, {markup(j.backend_reason)}", highlight=False, soft_wrap=True)
    p = j.progress
    if p.get("step") is not None:
        line = f"step {p['step']}" + (f"/{p['total_steps']}" if p.get("total_steps") else "")
        line += "".join(f", {label} {p[key]:.4g}" for key, label in (("loss", "loss"), ("eval_loss", "eval loss"))
                        if isinstance(p.get(key), (int, float)))
        console.print(f"progress: {markup(line)}", highlight=False)
    for label, text in (("error", j.error), ("waiting", j.pending_reason if j.status == "pending" else None)):
        if text:
            console.print(f"[red]{label}:[/] {markup(text)}" if label == "error" else f"{label}: {markup(text)}",
                          highlight=False, soft_wrap=True)
    for w in j.warnings:
        console.print(f"[yellow]warning:[/] {markup(w)}", highlight=False, soft_wrap=True)
    for s in j.stragglers:
        console.print(f"[yellow]straggler:[/] {markup(straggler_line(s))}", highlight=False, soft_wrap=True)
    speed = {r.rank: r for r in j.rank_progress}
    slow = {s.rank for s in j.stragglers}
    numbers = sorted({r.rank for r in j.ranks} | set(speed))
    if not numbers:
        return
    t = Table(title="Ranks", title_justify="left")
    for col in ("rank", "node", "state", "step", "s/step", "share", "exit", "reason"):
        t.add_column(col, overflow="fold")
    states = {r.rank: r for r in j.ranks}
    for n in numbers:
        r, sp = states.get(n), speed.get(n)
        t.add_row(f"[yellow]{n} (straggler)[/]" if n in slow else str(n),
                  cell(r.node if r else sp.node if sp else None), cell(r.state if r else None),
                  cell(sp.step if sp else None), cell(f"{sp.step_time_s:.3g}" if sp and sp.step_time_s else None),
                  cell(f"{sp.share:.3g}" if sp and sp.share is not None else None),
                  cell(r.exit_code if r else None), cell(r.reason if r else None, empty=""))
    console.print(t)


def jobs(status: Optional[str] = typer.Option(None, help="Only jobs with this status."),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """Table of jobs, newest first."""
    with admin_client() as c:
        rows = call(lambda: c.jobs(status))
    if as_json:
        print(json.dumps([j.model_dump(mode="json") for j in rows], indent=2))
        return
    console.print(job_table(rows))


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--env {pair!r}: use KEY=VALUE")
        env[key] = value
    return env


def follow(c: Client, job_id: str, *, show_logs: bool = True) -> int:
    """Stream a job's events until it ends; returns the exit code the CLI should exit with. Once
    the job reports progress, a progress bar follows it below the log."""
    import httpx

    status = None
    bar: TrainingBar | None = None
    try:
        for event, data in c.events(job_id):
            if event == "log" and show_logs:
                # A rank's own output: its colours kept, other escape sequences dropped, no markup.
                # (While the bar is shown, stdout goes above it.)
                console.print(ansi(data), highlight=False, soft_wrap=True)
            elif event == "progress" and isinstance(data.get("step"), int):
                if bar is None:
                    bar = TrainingBar(err, status or "running").__enter__()
                bar.update(data)
            elif event == "status" and data["status"] != status and data["status"] not in TERMINAL:
                status = data["status"]
                extra = f" ({data['pending_reason']})" if status == "pending" and data.get("pending_reason") else ""
                if bar is not None:
                    bar.status(status)
                err.print(f"[bold]{markup(job_id)}[/] {markup(status)}{markup(extra)}", highlight=False,
                          soft_wrap=True)
            elif event == "end":
                if bar is not None:
                    bar.__exit__()
                    summary, bar = bar.summary(), None
                else:
                    summary = ""
                colour = "green" if data["status"] == "succeeded" else "red"
                err.print(f"[bold {colour}]{markup(job_id)} {markup(data['status'])}[/]"
                          + (f": {markup(data['error'])}" if data.get("error") else "")
                          + (f" ({summary})" if summary and data["status"] == "succeeded" else ""),
                          highlight=False, soft_wrap=True)
                return 0 if data["status"] == "succeeded" else (data.get("exit_code") or 1)
    except httpx.TransportError as exc:
        fail(f"lost the coordinator while following {job_id} ({type(exc).__name__}); the job may still run")
    finally:
        if bar is not None:
            bar.__exit__()
    return 1


def on_interrupt(c: Client, job_id: str) -> None:
    """Ctrl-C while following a job: ask whether to cancel it, else say how to find it again."""
    if sys.stdin.isatty() and typer.confirm(f"\ncancel job {job_id}?", default=False):
        c.cancel(job_id)
        err.print(f"{job_id} cancelled")
    else:
        err.print(f"\n{job_id} keeps running; follow it with `jupiter logs {job_id} -f`, stop it with "
                  f"`jupiter cancel {job_id}`")


def submit(
    command: list[str] = typer.Argument(..., help="The command after --, as an argv list."),
    name: str = typer.Option("job", help="Job name."),
    nodes: Optional[int] = typer.Option(None, min=1, help="How many nodes (default 1, or the number of --node)."),
    node: list[str] = typer.Option([], "--node", help="Run on exactly these nodes, in rank order (repeatable)."),
    processes_per_node: int = typer.Option(1, "--processes-per-node", "--ppn", min=1),
    backend: Optional[str] = typer.Option(None, help=(
        "ring | mpi | jaccl | jaccl-ring | nccl (default: cluster.yaml's, else the fastest the nodes support).")),
    env: list[str] = typer.Option([], "--env", "-e", help="KEY=VALUE for every rank (repeatable)."),
    secret_env: list[str] = typer.Option([], "--secret-env", help=(
        "NAME: pass this variable of your own environment to every rank as a secret, never shown back "
        "by the API (repeatable; the value never appears on a command line).")),
    role: list[str] = typer.Option([], "--role", help="Eligible node roles (repeatable)."),
    min_memory_gb: float = typer.Option(0, min=0),
    timeout: Optional[float] = typer.Option(None, help="Fail the job after this many seconds running."),
    stall_timeout: Optional[float] = typer.Option(None, "--stall-timeout", help=(
        "Fail the job (with each rank's Python stack in the log) when no rank printed or reported progress "
        "for this many seconds; default adaptive: 10 min until the first progress report, then 10x its interval.")),
    idempotency_key: Optional[str] = typer.Option(None),
    detach: bool = typer.Option(False, "--detach", "-d", help="Print the job id and return at once."),
    artifacts: list[str] = typer.Option([], "--artifacts", help=(
        "Keep the files of rank 0's folder this glob matches, e.g. 'out/**' (repeatable; "
        "`jupiter artifacts JOB` lists and downloads them).")),
    workdir: Optional[Path] = typer.Option(None, "--workdir", file_okay=False, exists=True, help=(
        "Ship this folder with the job: every rank runs in its own unpacked copy (.gitignore and "
        ".jupiterignore are honoured, .git is left out; an archive the coordinator has is not sent again).")),
) -> None:
    """Submit any command as a distributed job and follow it to the end: jupiter submit -- python train.py"""
    spec = {"name": name, "command": command, "processes_per_node": processes_per_node, "env": _parse_env(env),
            "min_memory_gb": min_memory_gb}
    if node:
        spec["node_names"] = node
    if nodes is not None:
        spec["nodes"] = nodes
    for key, value in (("backend", backend), ("timeout_s", timeout), ("stall_timeout_s", stall_timeout),
                       ("idempotency_key", idempotency_key)):
        if value is not None:
            spec[key] = value
    if role:
        spec["roles"] = role
    if artifacts:
        spec["artifacts"] = artifacts
    if secret_env:
        missing = [k for k in secret_env if k not in os.environ]
        if missing:
            fail(f"--secret-env {', '.join(missing)}: not set in this shell's environment "
                 f"(export it first; the value is read from there, never from the command line)")
        spec["secret_env"] = {k: os.environ[k] for k in secret_env}
    with admin_client() as c:
        if workdir is not None:
            spec["workdir"] = ship_workdir(c, workdir)
        job = call(lambda: c.submit(spec))
        if detach:
            print(job.id)
            return
        err.print(f"submitted [bold]{job.id}[/] ({job.world_size} rank(s), {job.backend})", highlight=False)
        try:
            code = follow(c, job.id)
        except KeyboardInterrupt:
            on_interrupt(c, job.id)
            code = 130
    raise typer.Exit(code)


def ship_workdir(c: Client, folder: Path | dict[str, Path]) -> str:
    """Pack `folder` (or folders by name, shared.workdir.pack), upload it unless the coordinator
    has it, and say so in one line; its SHA-256."""
    import tempfile

    from shared.workdir import human_bytes, pack

    with tempfile.TemporaryDirectory(prefix="jupiter-workdir-") as tmp:
        archive = Path(tmp) / "workdir.tar.gz"
        try:
            packed = pack(folder, archive)
        except (OSError, ValueError) as exc:
            fail(f"{_label(folder)}: cannot pack it ({exc})")
        for name in packed.skipped[:5]:
            err.print(f"[yellow]--workdir: left out {markup(name)} (a symlink or special file)[/]", highlight=False)
        if call(lambda: c.has_file(packed.sha256)):
            outcome = "already on the coordinator"
        else:
            _upload(c, packed.sha256, archive, packed.archive_bytes)
            outcome = "uploaded"
    err.print(f"{markup(_label(folder))}: {packed.files} files, {human_bytes(packed.unpacked_bytes)} "
              f"({human_bytes(packed.archive_bytes)} packed), sha256 {packed.sha256[:12]}, {outcome}",
              highlight=False, soft_wrap=True)
    return packed.sha256


def _label(folder: Path | dict[str, Path]) -> str:
    if isinstance(folder, dict):
        return ", ".join(f"{name} ({path})" for name, path in sorted(folder.items()))
    return f"--workdir {folder}"


def _upload(c: Client, sha256: str, archive: Path, size: int) -> None:
    if size < 1 << 20:  # a bar would only flash by
        call(lambda: c.upload_file(sha256, archive))
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    with Progress(TextColumn("uploading workdir"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("upload", total=size)
        call(lambda: c.upload_file(sha256, archive, progress=lambda n: bar.advance(task, n)))


def logs(job_id: str = typer.Argument(..., help="Job id."),
         follow_: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job ends.")) -> None:
    """Print a job's log (every line prefixed [RANK])."""
    import time as _time

    with admin_client() as c:
        offset = 0
        while True:
            text, offset_next = call(lambda: c.logs(job_id, offset))
            if text:
                # Ranks' colours pass; any other escape sequence a node sent is dropped.
                sys.stdout.write(plain(text, multiline=True, keep_colour=True))
                sys.stdout.flush()
            offset = offset_next
            if not follow_:
                return
            if not text:
                job = call(lambda: c.job(job_id))
                if job.status in TERMINAL:
                    text, _ = call(lambda: c.logs(job_id, offset))
                    sys.stdout.write(plain(text, multiline=True, keep_colour=True))
                    raise typer.Exit(0 if job.status == "succeeded" else 1)
                _time.sleep(0.5)


def cancel(job_id: str = typer.Argument(..., help="Job id.")) -> None:
    """Stop every rank of a job (TERM, then KILL after a grace). Safe to repeat."""
    with admin_client() as c:
        job = call(lambda: c.cancel(job_id))
    console.print(f"{job.id} {job.status}")
