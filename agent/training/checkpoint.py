"""Checkpoints of the built-in trainer, written by rank 0 only, atomically.

Layout of a checkpoint directory (`--checkpoint-dir`):

    <dir>/
      latest                   text: the name of the newest complete checkpoint ("step-00000120")
      step-00000120/
        model.safetensors      weights (float32 master copy), names as in GPT.parameters()
        optimizer.safetensors  AdamW state, flattened: "step", "learning_rate", "<param>.m", "<param>.v"
        config.json            model preset and dimensions, tokenizer, the training settings
        state.json             step, epoch, data position, seed and RNG key, data digest, losses, why saved
      step-00000080/ ...       older ones, the newest `keep` are kept

A checkpoint is written into `<dir>/.tmp-step-...-<pid>/`, its files fsynced, then renamed into
place, and only then is `latest` replaced (write + rename); a reader never sees half a checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten, tree_map_with_path

FORMAT = "jupiter-gpt/1"
STEP_RE = re.compile(r"^step-(\d{8,})$")


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save(root: Path | str, step: int, params: dict, optimizer_state: dict, config: dict, state: dict,
         keep: int = 3) -> Path:
    """Write checkpoint `step` under `root` atomically and return its path. `params` and
    `optimizer_state` are (nested) trees of evaluated arrays."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = step_name(step)
    final = root / name
    for stale in root.glob(".tmp-step-*"):  # left by a writer that was killed (one writer per dir)
        shutil.rmtree(stale, ignore_errors=True)
    for stale in root.glob(".old-step-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp-{name}-{os.getpid()}"
    tmp.mkdir()
    try:
        weights = dict(tree_flatten(params))
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": FORMAT})
        mx.save_safetensors(str(tmp / "optimizer.safetensors"), dict(tree_flatten(optimizer_state)),
                            metadata={"format": FORMAT})
        _write_json(tmp / "config.json", {"format": FORMAT, **config})
        _write_json(tmp / "state.json", {"format": FORMAT, "saved_at": time.time(), **state})
        for f in tmp.iterdir():
            _fsync_file(f)
        _fsync_dir(tmp)
        old = None
        if final.exists():  # the same step saved again (e.g. a final save after a periodic one)
            old = root / f".old-{name}-{os.getpid()}"
            os.rename(final, old)
        os.rename(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        latest_tmp = root / f".latest-{os.getpid()}"
        latest_tmp.write_text(name + "\n")
        _fsync_file(latest_tmp)
        os.replace(latest_tmp, root / "latest")
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(root, keep, protect=name)
    return final


def list_checkpoints(root: Path | str) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = STEP_RE.match(p.name)
        if m and (p / "state.json").is_file() and (p / "model.safetensors").is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def _prune(root: Path, keep: int, protect: str) -> None:
    if keep <= 0:
        return
    cps = list_checkpoints(root)
    for _, p in cps[:-keep]:
        if p.name != protect:
            shutil.rmtree(p, ignore_errors=True)


def latest(root: Path | str) -> Path | None:
    """The newest complete checkpoint under `root` (from `latest`, else by scanning), or None."""
    root = Path(root)
    try:
        name = (root / "latest").read_text().strip()
        cand = root / name
        if STEP_RE.match(name) and (cand / "state.json").is_file() and (cand / "model.safetensors").is_file():
            return cand
    except OSError:
        pass
    cps = list_checkpoints(root)
    return cps[-1][1] if cps else None


def resolve(resume: str | None, default_root: Path) -> Path | None:
    """The checkpoint `--resume` names: `auto` = the latest in `default_root` (None if there is
    none), a checkpoint directory, or a checkpoint root (its latest). FileNotFoundError otherwise."""
    if not resume:
        return None
    if resume == "auto":
        return latest(default_root)
    p = Path(os.path.expanduser(resume))
    if (p / "state.json").is_file() and (p / "model.safetensors").is_file():
        return p
    found = latest(p) if p.is_dir() else None
    if found is None:
        raise FileNotFoundError(f"--resume {resume}: no checkpoint there (expected a step-* directory "
                                f"with model.safetensors and state.json, or a folder holding them)")
    return found


@dataclass
class Checkpoint:
    path: Path
    params: dict           # flat: "blocks.0.attn.qkv.weight" -> array
    optimizer_state: dict  # flat: "step", "learning_rate", "<param>.m", "<param>.v" -> array
    config: dict
    state: dict


def fill(template: Any, flat: dict, what: str) -> Any:
    """`template`'s tree (same nesting and key order, which fixes the order of every reduction
    over the tree, the gradient norm's included) holding the arrays of `flat`. ValueError if the
    names, shapes or dtypes differ."""
    names = {k for k, _ in tree_flatten(template)}
    if names != set(flat):
        missing, extra = sorted(names - set(flat))[:3], sorted(set(flat) - names)[:3]
        raise ValueError(f"{what} does not fit this model (missing {missing}, unexpected {extra})")

    def pick(path: str, leaf: mx.array) -> mx.array:
        got = flat[path]
        if got.shape != leaf.shape or got.dtype != leaf.dtype:
            raise ValueError(f"{what}: {path} is {got.dtype}{list(got.shape)}, the model needs "
                             f"{leaf.dtype}{list(leaf.shape)}")
        return got

    return tree_map_with_path(pick, template)


def load(path: Path | str) -> Checkpoint:
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    state = json.loads((path / "state.json").read_text())
    if config.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} checkpoint (format {config.get('format')!r})")
    weights = mx.load(str(path / "model.safetensors"))
    opt = mx.load(str(path / "optimizer.safetensors"))
    return Checkpoint(path=path, params=dict(weights), optimizer_state=dict(opt), config=config, state=state)
