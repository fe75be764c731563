"""`jupiter finetune`: mlx-lm LoRA fine-tuning across the nodes as one command (docs/finetune.md).

A model and data set on this machine are shipped with the job (one workdir archive holding
`model/` and `data/`, uploaded once); with `--remote` they are paths every node already holds.
The job is followed with the training progress bar, and `--output` downloads the adapters at
the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from shared.cli.api import admin_client, call
from shared.cli.jobs import on_interrupt, ship_workdir
from shared.cli.output import err, fail
from shared.cli.training import follow_training
from shared.client import Client
from shared.text import markup


def register(app: typer.Typer) -> None:
    app.command()(finetune)


def finetune(
    model: str = typer.Option(..., help="Model folder (config.json, weights, tokenizer): on this machine, "
                                        "or with --remote on every node."),
    data: str = typer.Option(..., help="Folder with train.jsonl and valid.jsonl, like --model."),
    nodes: int = typer.Option(2, min=1, help="How many nodes to train on."),
    iters: int = typer.Option(1000, min=1, help="Training steps in all."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Global batch; must divide by the ranks."),
    num_layers: Optional[int] = typer.Option(None, "--num-layers", help="Layers to adapt (-1: all)."),
    learning_rate: Optional[float] = typer.Option(None, "--learning-rate"),
    save_every: int = typer.Option(100, "--save-every", min=1, help="Save (and collect) the adapters this often."),
    steps_per_report: int = typer.Option(10, "--steps-per-report", min=1),
    steps_per_eval: int = typer.Option(200, "--steps-per-eval", min=1),
    max_seq_length: Optional[int] = typer.Option(None, "--max-seq-length", min=1),
    max_restarts: int = typer.Option(2, "--max-restarts", min=0, max=20,
                                     help="Restart a failed attempt this many times, from the last saved adapters."),
    remote: bool = typer.Option(False, "--remote", help="--model and --data are paths on the nodes: ship nothing."),
    node: list[str] = typer.Option([], "--node", help="Train on exactly these nodes, in rank order."),
    name: str = typer.Option("finetune", help="Job name."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Download the adapters here at the end."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Print the job id and return at once."),
) -> None:
    """Fine-tune a model with mlx-lm LoRA across the cluster, with a live progress bar."""
    ft: dict = {"iters": iters, "batch_size": batch_size, "save_every": save_every,
                "steps_per_report": steps_per_report, "steps_per_eval": steps_per_eval}
    for key, value in (("num_layers", num_layers), ("learning_rate", learning_rate),
                       ("max_seq_length", max_seq_length)):
        if value is not None:
            ft[key] = value
    spec: dict = {"name": name, "nodes": len(node) or nodes, "max_restarts": max_restarts, "finetune": ft}
    if node:
        spec["node_names"] = node
    spec["backend"] = "ring"  # the agents ship the model and collect the adapters (docs/finetune.md)
    with admin_client() as c:
        if remote:
            ft.update(model=model, data=data)
        else:
            spec["workdir"] = ship_workdir(c, _local_folders(model, data))
            ft.update(model="model", data="data")
        job = call(lambda: c.submit(spec))
        if detach:
            print(job.id)
            return
        err.print(f"submitted [bold]{markup(job.id)}[/]: mlx-lm {markup(ft.get('model'))} on {job.world_size} "
                  f"rank(s), {markup(job.backend)}, {iters} steps", highlight=False, soft_wrap=True)
        try:
            code = follow_training(c, job.id)
        except KeyboardInterrupt:
            on_interrupt(c, job.id)
            code = 130
        if code == 0 and output is not None:
            _download_adapters(c, job.id, output)
    raise typer.Exit(code)


def _local_folders(model: str, data: str) -> dict[str, Path]:
    folders = {"model": Path(model).expanduser(), "data": Path(data).expanduser()}
    for flag, folder in folders.items():
        if not folder.is_dir():
            fail(f"--{flag} {folder}: no such folder here (give --remote if it is a path on the nodes)")
    if not (folders["model"] / "config.json").is_file():
        fail(f"--model {folders['model']}: no config.json in it (a local mlx-lm model folder is needed; "
             f"nothing is downloaded)")
    if not (folders["data"] / "train.jsonl").is_file():
        fail(f"--data {folders['data']}: no train.jsonl in it")
    return folders


def _download_adapters(c: Client, job_id: str, output: Path) -> None:
    got = [a for a in call(lambda: c.artifacts(job_id)) if a.path.startswith("adapters/")]
    for a in got:
        call(lambda a=a: c.download_artifact(job_id, a.path, output / a.path[len("adapters/"):]))
    err.print(f"adapters: {len(got)} file(s) in {markup(str(output))}", highlight=False, soft_wrap=True)
