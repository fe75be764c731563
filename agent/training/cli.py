"""`python -m agent.training`: the built-in trainer, run as every rank of a Jupiter job.

Exit status: 0 done (or stopped by --stop-at-step), 2 unusable settings or no usable data (one
line on stderr naming the domain), 143 stopped by SIGTERM (130 for SIGINT), 1 a lost peer or any
other failure. Only rank 0 prints progress lines and writes checkpoints.
"""

from __future__ import annotations

import argparse
import sys

from shared.presets import PRESETS

PROG = "python -m agent.training"


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _non_negative(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description="Train a byte-level transformer LM on a Jupiter domain, "
                                 "data-parallel over MLX distributed (run one process per rank).")
    g = ap.add_argument_group("what to train")
    g.add_argument("--domain", default="sample", help="config/domains/<DOMAIN>.yaml (default: sample)")
    g.add_argument("--domains-dir", help="read domains from this folder instead of config/domains")
    g.add_argument("--preset", default="tiny", choices=list(PRESETS), help="model size (default: tiny)")
    g.add_argument("--epochs", type=_positive, default=1, help="passes over the training data (default: 1)")
    g.add_argument("--steps", type=_positive, help="cap on the total optimizer steps")
    g.add_argument("--max-bytes", type=_positive,
                   help="read at most this many bytes of the domain (overrides its max_bytes)")
    g = ap.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=_positive,
                   help="GLOBAL batch: sequences per micro-step over all ranks (preset default)")
    g.add_argument("--seq-len", type=_positive, help="tokens per sequence (preset default)")
    g.add_argument("--lr", type=float, help="peak learning rate (preset default)")
    g.add_argument("--warmup", type=_non_negative, help="linear warmup steps (default: 5%% of the run, at most 200)")
    g.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine decay ends at lr * this (default: 0.1)")
    g.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default: 0.01)")
    g.add_argument("--clip", type=float, default=1.0,
                   help="clip the global gradient norm to this; 0 = off (default: 1.0)")
    g.add_argument("--sync-every", type=_positive, default=1,
                   help="micro-steps accumulated locally per optimizer step; gradients are all-reduced once per step")
    g.add_argument("--grad-compression", action="store_true", help="all-reduce gradients in bfloat16 (half the bytes)")
    g.add_argument("--bf16", action="store_true", help="bfloat16 compute, float32 master weights and optimizer state")
    g.add_argument("--seed", type=int, default=0, help="model init and data order (default: 0)")
    g.add_argument("--no-compile", dest="compile", action="store_false", help="do not mx.compile the step")
    g.add_argument("--shares", default="auto", metavar="auto|equal|R0:R1...",
                   help="how the global batch is split between ranks: auto = in proportion to each rank's "
                        "measured speed, re-measured as it runs; equal; or a fixed ratio like 3:1 (default: auto)")
    g = ap.add_argument_group("checkpoints (rank 0)")
    g.add_argument("--checkpoint-dir",
                   help="default: $JUPITER_JOB_DIR/checkpoints under Jupiter (the job's folder on this node), "
                        "else ./checkpoints/<domain>")
    g.add_argument("--checkpoint-every", type=_non_negative, default=200,
                   help="steps between checkpoints; 0 = only at the end (default: 200)")
    g.add_argument("--keep-checkpoints", type=_non_negative, default=3,
                   help="keep the newest N; 0 = keep all (default: 3)")
    g.add_argument("--resume", metavar="PATH|auto",
                   help="continue from a checkpoint (a step-* folder or a checkpoint dir); "
                        "auto = the latest in --checkpoint-dir, if any")
    g.add_argument("--checkpoint-on-failure", action=argparse.BooleanOptionalAction, default=False,
                   help="on SIGTERM or a lost peer, rank 0 saves the last completed step before exiting")
    g.add_argument("--stop-at-step", type=_positive,
                   help="end this run after that step (with a checkpoint), keeping the full run's schedule")
    g = ap.add_argument_group("evaluation and output")
    g.add_argument("--eval-every-epoch", action=argparse.BooleanOptionalAction, default=True,
                   help="held-out loss at the end of every epoch and of the run (default: on)")
    g.add_argument("--eval-max-windows", type=_non_negative, default=256,
                   help="held-out windows per eval; 0 = all (default: 256)")
    g.add_argument("--log-every", type=_positive,
                   help="steps between progress lines (default: about 100 lines per run)")
    g.add_argument("--dump-params", metavar="PATH",
                   help="test aid: every rank writes its final weights to PATH ({rank} is replaced)")
    return ap


def config_from_args(args: argparse.Namespace):
    from agent.training.trainer import TrainConfig

    return TrainConfig(
        domain=args.domain, domains_dir=args.domains_dir, epochs=args.epochs, preset=args.preset,
        steps=args.steps,
        batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr, warmup=args.warmup,
        min_lr_ratio=args.min_lr_ratio, weight_decay=args.weight_decay, clip=args.clip,
        sync_every=args.sync_every,
        grad_compression=args.grad_compression, bf16=args.bf16, seed=args.seed, max_bytes=args.max_bytes,
        checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints, resume=args.resume,
        checkpoint_on_failure=args.checkpoint_on_failure,
        eval_every_epoch=args.eval_every_epoch, eval_max_windows=args.eval_max_windows or None,
        log_every=args.log_every, stop_at_step=args.stop_at_step, dump_params=args.dump_params,
        compile=args.compile, shares=args.shares)


def _error(msg: str) -> None:
    print(f"jupiter-train: error: {' '.join(msg.split())}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from agent.training.data import DataError
    from agent.training.trainer import UsageError, final_line, train
    from shared.domains import ConfigError

    cfg = config_from_args(args)
    try:
        result = train(cfg)
    except (DataError, UsageError, ConfigError) as exc:
        _error(str(exc))
        return 2
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except RuntimeError as exc:
        from agent.training.trainer import _PEER_LOST

        if not _PEER_LOST.search(str(exc)):
            raise
        _error(f"lost a peer before training started: {exc}")  # e.g. rank 0 refused its settings
        return 1
    if result.rank == 0:
        final_line(result)
        if result.status in ("completed", "stopped", "nothing_to_do"):
            tps = f" ({result.tokens_per_s:,.0f} tokens/s)" if result.tokens_per_s else ""
            evals = f", eval loss {result.eval_losses[-1][1]:.4f}" if result.eval_losses else ""
            loss = f"final loss {result.final_loss:.4f}" if result.final_loss is not None else "no new steps"
            print(f"[train] {result.message or 'done'}: step {result.step} of {result.total_steps} in "
                  f"{result.elapsed_s:.1f} s{tps}; {loss}{evals}; checkpoint {result.checkpoint}", flush=True)
    if result.exit_code:
        saved = f"; checkpoint saved to {result.checkpoint}" if result.checkpoint and result.rank == 0 else ""
        _error(f"rank {result.rank}: {result.message}{saved}")
    return result.exit_code
