"""`jupiter artifacts JOB [--get PATH] [-o DEST]`: list what a job's rank 0 left, or download it
(docs/jobs.md#artifacts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.filesize import decimal
from rich.table import Table

from shared.cli.api import admin_client, call
from shared.cli.output import console, err, fail
from shared.schemas.artifacts import ArtifactGlobs, path_problem
from shared.text import cell, markup
from shared.workdir import sha256_file


def register(app: typer.Typer) -> None:
    app.command()(artifacts)


def select(paths: list[str], wanted: str) -> list[str]:
    """The listed paths `--get` means: the one named, those a glob matches, or those below a folder."""
    if wanted in paths:
        return [wanted]
    if any(ch in wanted for ch in "*?["):
        globs = ArtifactGlobs([wanted])
        return [p for p in paths if globs.match(p)]
    prefix = wanted.strip("/") + "/"
    return [p for p in paths if p.startswith(prefix)]


def destinations(chosen: list[str], wanted: str, dest: Path | None) -> dict[str, Path]:
    """Where each chosen artifact goes: one file named exactly to `dest` (or into it, if it is a
    folder; by default into the current one), several below `dest` at their own paths."""
    if chosen == [wanted]:
        name = Path(wanted).name
        if dest is None:
            return {wanted: Path(name)}
        return {wanted: dest / name if dest.is_dir() else dest}
    root = dest if dest is not None else Path(".")
    return {p: root / p for p in chosen}



def artifacts(
    job_id: str = typer.Argument(..., help="Job id."),
    get: Optional[str] = typer.Option(None, "--get", help=(
        "Download this artifact; with a glob (quote it) or a folder, every one it matches, keeping "
        "their paths.")),
    out: Optional[Path] = typer.Option(None, "--output", "-o", help=(
        "Where to: a file or folder for one artifact, a folder for several (default: here).")),
    as_json: bool = typer.Option(False, "--json", help="List as JSON."),
) -> None:
    """A job's artifacts: the files of rank 0's folder matching the job's `artifacts` globs, kept
    by the coordinator (jupiter submit --artifacts GLOB)."""
    with admin_client() as c:
        listed = call(lambda: c.artifacts(job_id))
        if get is None:
            if as_json:
                print(json.dumps([a.model_dump(mode="json") for a in listed], indent=2))
                return
            t = Table(title=f"Artifacts of {job_id}", title_justify="left")
            for col, justify in (("path", "left"), ("size", "right"), ("sha256", "left"), ("modified", "left")):
                t.add_column(col, justify=justify, overflow="fold")
            for a in listed:
                t.add_row(cell(a.path), decimal(a.size), a.sha256[:12],
                          a.modified_at.astimezone().strftime("%Y-%m-%d %H:%M:%S"))
            console.print(t)
            if not listed:
                err.print(f"{markup(job_id)} has no artifacts (yet)", highlight=False)
            return
        by_path = {a.path: a for a in listed}
        chosen = select(sorted(by_path), get)
        if not chosen:
            fail(f"no artifact of {job_id} matches {get!r} (`jupiter artifacts {job_id}` lists them)")
        total = 0
        for path, dest in destinations(chosen, get, out).items():
            if path_problem(path):  # a path from the coordinator never leaves the destination
                fail(f"the coordinator listed an unsafe artifact path {path!r}")
            call(lambda: c.download_artifact(job_id, path, dest))  # noqa: B023 (called at once)
            if sha256_file(dest) != by_path[path].sha256:
                fail(f"{path} changed while it was downloaded; run the command again")
            total += by_path[path].size
            err.print(f"{markup(path)} -> {markup(str(dest))}", highlight=False, soft_wrap=True)
    err.print(f"{len(chosen)} file(s), {decimal(total)}", highlight=False)
