"""`jupiter start` and `jupiter model-info`: the built-in MLX trainer, followed with a progress bar."""

from __future__ import annotations

import json
from typing import Optional

import typer

from shared.cli.api import admin_client, call
from shared.cli.jobs import on_interrupt
from shared.cli.output import console, err, fail
from shared.cli.progressbar import TrainingBar
from shared.client import Client
from shared.text import ansi, markup


def register(app: typer.Typer) -> None:
    app.command()(start)
    app.command("model-info")(model_info)


def start(
    domain: str = typer.Option(..., help="Domain to train on (config/domains/<domain>.yaml)."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Passes over the domain's data (default 1)."),
    nodes: int = typer.Option(2, min=1, help="How many nodes to train on."),
    backend: Optional[str] = typer.Option(None, help=(
        "ring | mpi | jaccl | jaccl-ring | nccl (default: cluster.yaml's, else the fastest the nodes support).")),
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
    with admin_client() as c:
        job = call(lambda: c.submit(spec))
        err.print(f"submitted [bold]{markup(job.id)}[/] on {job.world_size} rank(s), {markup(job.backend)}: "
                  + markup(" ".join(job.command)), highlight=False, soft_wrap=True)
        try:
            code = follow_training(c, job.id)
        except KeyboardInterrupt:
            on_interrupt(c, job.id)
            code = 130
    raise typer.Exit(code)


def follow_training(c: Client, job_id: str) -> int:
    """A progress bar over the job's SSE stream: step of total, loss, tokens/s, ETA."""
    import httpx

    end = None
    try:
        with TrainingBar(err) as bar:
            for event, data in c.events(job_id):
                if event == "status":
                    bar.status(data["status"])
                    if data["status"] == "pending" and data.get("pending_reason"):
                        bar.console.print(f"pending: {markup(data['pending_reason'])}", highlight=False)
                elif event == "progress":
                    bar.update(data)
                elif event == "log":
                    if data.startswith(("[jupiter]", "[0] [train]")) or "Error" in data or "error" in data:
                        bar.console.print(ansi(data), highlight=False, soft_wrap=True)
                elif event == "end":
                    end = data
    except httpx.TransportError as exc:
        fail(f"lost the coordinator while following {job_id} ({type(exc).__name__}); the job may still run")
    if end is None:
        return 1
    if end["status"] == "succeeded":
        summary = bar.summary()
        err.print(f"[bold green]{job_id} succeeded[/]" + (f": {summary}" if summary else ""), highlight=False)
        if bar.latest.get("checkpoint"):
            err.print(f"checkpoint: {markup(str(bar.latest['checkpoint']))}", highlight=False, soft_wrap=True)
        return 0
    err.print(f"[bold red]{markup(job_id)} {markup(end['status'])}[/]"
              + (f": {markup(end['error'])}" if end.get("error") else ""), highlight=False, soft_wrap=True)
    return end.get("exit_code") or 1


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
        fail(str(exc))
    if as_json:
        print(json.dumps(info, indent=2))
        return
    for line in model_info_lines(info):
        console.print(line, highlight=False)
