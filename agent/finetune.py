"""`python -m agent.finetune ...`: one rank of an mlx-lm LoRA fine-tuning job (docs/finetune.md).

The coordinator turns a `finetune` job into this command on every rank. It runs mlx-lm's own
training (`mlx_lm.lora`'s model loading, datasets and `train_model`) in this process, with a
callback, mlx-lm's supported hook, that

- prints Jupiter's progress lines on rank 0 (step counted across restarts, the total, loss,
  eval loss, tokens/s), so the job is followed exactly like the built-in trainer;
- saves the adapters every `--save-every` steps on rank 0 as `<adapter path>/adapters.safetensors`,
  with the step they hold in the file's own metadata (`jupiter_step`), so weights and step can
  never be collected out of step with each other. The job collects that folder as its artifacts,
  and a restarted attempt finds it restored in its own folder: it loads those adapters
  (`--resume-adapter-file`, weights only, as mlx-lm resumes) and trains the steps that remain.
  mlx-lm's own numbered saves are left off: their names count from 1 again in a resumed run, so
  they could not say which step they hold.

Before anything heavy it checks what it needs (mlx-lm importable, the model and the data there)
and says what is missing in one line, with exit code 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from shared.progress import report

EXIT_USAGE = 2
STEP_KEY = "jupiter_step"  # in the saved adapters' safetensors metadata
NEVER = 1 << 62  # mlx-lm's own periodic saves: off (see above)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m agent.finetune", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="Model folder (config.json, weights, tokenizer).")
    ap.add_argument("--data", required=True, help="Folder with train.jsonl and valid.jsonl.")
    ap.add_argument("--iters", type=int, required=True, help="Training steps in all, across restarts.")
    ap.add_argument("--batch-size", type=int, required=True, help="Global batch (split over the ranks).")
    ap.add_argument("--num-layers", type=int, default=None, help="Layers to adapt (-1: all; mlx-lm default 16).")
    ap.add_argument("--learning-rate", type=float, default=None)
    ap.add_argument("--steps-per-report", type=int, default=10)
    ap.add_argument("--steps-per-eval", type=int, default=200)
    ap.add_argument("--val-batches", type=int, default=25)
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--max-seq-length", type=int, default=2048)
    ap.add_argument("--fine-tune-type", choices=("lora", "dora", "full"), default="lora")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--adapter-path", default="adapters", help="Where the adapters go, relative to the rank's folder.")
    return ap.parse_args(argv)


def problems(opts: argparse.Namespace) -> list[str]:
    """What stops this rank before it loads anything: each a sentence with its fix."""
    out = []
    try:
        import mlx_lm  # noqa: F401
    except ImportError as exc:
        out.append(f"mlx-lm is not importable by {sys.executable} ({exc}); install it there: "
                   f"{sys.executable} -m pip install mlx-lm")
    model, data = Path(opts.model), Path(opts.data)
    if not (model / "config.json").is_file():
        out.append(f"model: no config.json in {model.absolute()} on this node; ship it with the job "
                   f"(jupiter finetune ships a local folder) or give a path every node holds")
    if not (data / "train.jsonl").is_file():
        out.append(f"data: no train.jsonl in {data.absolute()} on this node")
    if opts.iters < 1 or opts.batch_size < 1 or opts.save_every < 1 or opts.steps_per_report < 1:
        out.append("iters, batch-size, save-every and steps-per-report must be at least 1")
    return out


def resume_point(adapter_path: Path, total: int) -> int:
    """The step the adapters in `adapter_path` were saved at (restored from an earlier attempt),
    or 0 to start afresh. Anything unreadable counts as nothing saved."""
    import mlx.core as mx

    path = adapter_path / "adapters.safetensors"
    if not path.is_file():
        return 0
    try:
        _, meta = mx.load(str(path), return_metadata=True)
        step = int(meta[STEP_KEY])
    except (OSError, RuntimeError, ValueError, KeyError, TypeError):
        return 0
    return step if 0 < step < total else 0


def save_adapters(folder: Path, weights: dict, step: int) -> Path:
    """`weights` as `folder/adapters.safetensors` holding `step`, written whole before it replaces
    the last save (a collector never reads half a file)."""
    import mlx.core as mx

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "adapters.tmp.safetensors"
    mx.save_safetensors(str(tmp), weights, metadata={STEP_KEY: str(step)})
    os.replace(tmp, folder / "adapters.safetensors")
    return folder / "adapters.safetensors"


def mlx_lm_args(opts: argparse.Namespace, offset: int):
    """mlx-lm's own argument namespace (its parser and defaults), for the steps that remain."""
    from mlx_lm import lora

    argv = ["--model", opts.model, "--data", opts.data, "--train", "--iters", str(opts.iters - offset),
            "--batch-size", str(opts.batch_size), "--steps-per-report", str(opts.steps_per_report),
            "--steps-per-eval", str(opts.steps_per_eval), "--val-batches", str(opts.val_batches),
            "--save-every", str(NEVER), "--max-seq-length", str(opts.max_seq_length),
            "--fine-tune-type", opts.fine_tune_type, "--seed", str(opts.seed), "--adapter-path", opts.adapter_path]
    if opts.num_layers is not None:
        argv += ["--num-layers", str(opts.num_layers)]
    if opts.learning_rate is not None:
        argv += ["--learning-rate", str(opts.learning_rate)]
    if offset:
        argv += ["--resume-adapter-file", str(Path(opts.adapter_path) / "adapters.safetensors")]
    args = vars(lora.build_parser().parse_args(argv))
    for key, value in lora.CONFIG_DEFAULTS.items():  # as mlx_lm.lora.main fills what is unset
        if args.get(key) is None:
            args[key] = value
    return argparse.Namespace(**args)


class Reporter:
    """mlx-lm's TrainingCallback: progress lines and saves, on rank 0 only."""

    def __init__(self, model, opts: argparse.Namespace, offset: int, rank: int):
        self.model, self.opts, self.offset, self.rank = model, opts, offset, rank
        self.next_save = (offset // opts.save_every + 1) * opts.save_every
        self.loss: float | None = None

    def on_train_loss_report(self, info: dict) -> None:
        step = self.offset + int(info["iteration"])
        self.loss = float(info["train_loss"])
        extra = {}
        if self.rank == 0 and step >= self.next_save and step < self.opts.iters:
            extra["checkpoint"] = self.save(step)
            self.next_save = (step // self.opts.save_every + 1) * self.opts.save_every
        if self.rank == 0:
            report(step=step, total_steps=self.opts.iters, loss=_finite(self.loss),
                   tokens_per_s=_finite(info.get("tokens_per_second")),
                   learning_rate=_finite(info.get("learning_rate")), **extra)

    def on_val_loss_report(self, info: dict) -> None:
        if self.rank == 0:
            report(step=self.offset + max(int(info["iteration"]), 0), total_steps=self.opts.iters,
                   eval_loss=_finite(info.get("val_loss")))

    def save(self, step: int) -> str:
        from mlx.utils import tree_flatten

        weights = dict(tree_flatten(self.model.trainable_parameters()))
        return str(save_adapters(Path(self.opts.adapter_path), weights, step))


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    found = problems(opts)
    if found:
        for line in found:
            print(f"cannot fine-tune: {line}", flush=True)
        return EXIT_USAGE
    import mlx.core as mx
    from mlx_lm import lora
    from mlx_lm.tuner.datasets import load_dataset
    from mlx_lm.utils import load

    rank = mx.distributed.init().rank()
    offset = resume_point(Path(opts.adapter_path), opts.iters)
    if offset and rank == 0:
        print(f"resuming from the adapters saved at step {offset} of {opts.iters}", flush=True)
    args = mlx_lm_args(opts, offset)
    model, tokenizer = load(args.model)
    train_set, valid_set, _ = load_dataset(args, tokenizer)
    reporter = Reporter(model, opts, offset, rank)
    lora.train_model(args, model, train_set, valid_set, reporter)
    if rank == 0:  # mlx-lm saved the final adapters.safetensors itself
        report(step=opts.iters, total_steps=opts.iters, final_loss=reporter.loss,
               checkpoint=str(Path(opts.adapter_path) / "adapters.safetensors"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
