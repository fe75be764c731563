"""Model presets of the built-in trainer, their exact parameter counts and a memory estimate.

Pure data and arithmetic (no MLX, nothing from coordinator/ or agent/): the coordinator validates
a trainer job's preset with it, `jupiter model-info` prints it, and the trainer in agent/training/
builds its model from it. `param_count` is an exact formula for the module in
agent/training/model.py; a test instantiates every small preset and checks the formula against the
real parameter tree.

The model (see agent/training/model.py): token embedding (vocab x d), RoPE positions (no
parameters), `n_layers` pre-norm blocks, each RMSNorm -> causal self-attention (fused qkv + output
projection, no biases) -> RMSNorm -> MLP (d -> d_ff -> d, SiLU, no biases), a final RMSNorm, and
an output head tied to the embedding (or an untied vocab x d matrix).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# The byte-level tokenizer's vocabulary (agent/training/tokenizer.py): 256 byte tokens and one
# end-of-text token. The presets are sized for it; the tokenizer takes it from here.
VOCAB_SIZE = 257


@dataclass(frozen=True)
class Preset:
    name: str
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    seq_len: int        # default context length for this preset
    batch_size: int     # default global batch (sequences per micro-step, summed over ranks)
    lr: float           # default peak learning rate
    vocab_size: int = VOCAB_SIZE
    tie_embeddings: bool = True
    rope_base: float = 10_000.0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    p.name: p for p in (
        # for tests: ~30 steps per second on one core of a slow CPU
        Preset("micro", d_model=32, n_layers=2, n_heads=2, d_ff=128, seq_len=64, batch_size=8, lr=3e-3),
        # the demo: one epoch of `sample` (800 kB) in about two minutes on 2 CPU ranks
        Preset("tiny", d_model=64, n_layers=4, n_heads=4, d_ff=256, seq_len=128, batch_size=16, lr=2e-3),
        Preset("small", d_model=384, n_layers=6, n_heads=6, d_ff=1536, seq_len=256, batch_size=32, lr=1e-3),
        Preset("base", d_model=768, n_layers=12, n_heads=12, d_ff=3072, seq_len=512, batch_size=16, lr=6e-4),
        Preset("1b", d_model=2048, n_layers=20, n_heads=16, d_ff=8192, seq_len=1024, batch_size=16, lr=3e-4),
    )
}

DTYPE_BYTES = {"float32": 4, "bfloat16": 2}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def param_count(preset: Preset | str) -> int:
    """The exact number of trainable parameters of `model.GPT(preset)`."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    d, f, v = p.d_model, p.d_ff, p.vocab_size
    per_block = (
        d            # attention RMSNorm weight
        + 3 * d * d  # fused q, k, v projection
        + d * d      # output projection
        + d          # MLP RMSNorm weight
        + 2 * d * f  # MLP up and down projections
    )
    embed = v * d
    head = 0 if p.tie_embeddings else v * d
    return embed + p.n_layers * per_block + d + head  # + final RMSNorm


def _human(n: float) -> str:
    """A parameter count as people write it: 33.0k, 10.8M, 1.01B."""
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f}{suffix}"
    return f"{n:.0f}"


def _human_bytes(n: float) -> str:
    for div, suffix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= div:
            return f"{n / div:.2f} {suffix}"
    return f"{n:.0f} B"


def memory_estimate(preset: Preset | str, batch: int, seq: int, dtype: str = "float32",
                    sync_every: int = 1) -> dict[str, int]:
    """Bytes one rank needs to train `preset` on `batch` sequences of `seq` tokens at a time.

    - weights: fp32 master weights (4 B/param); with bfloat16 compute, a bf16 copy on top (2 B/param);
    - gradients: fp32 (4 B/param), plus a second fp32 buffer when accumulating (`sync_every` > 1);
    - optimizer: AdamW's two fp32 moments (8 B/param);
    - activations: what the backward pass keeps, per token per layer about 12*d + 2*d_ff values
      plus the attention probabilities (n_heads * seq per token: the CPU path of
      scaled_dot_product_attention materialises them), and the logits with their softmax
      (3 * vocab fp32 values per token). A rough upper estimate, not a measurement.
    `batch` is the per-rank micro-batch (global batch / world size).
    """
    p = get_preset(preset) if isinstance(preset, str) else preset
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_BYTES)}, got {dtype!r}")
    if batch < 1 or seq < 1 or sync_every < 1:
        raise ValueError("batch, seq and sync_every must be >= 1")
    n = param_count(p)
    act_b = DTYPE_BYTES[dtype]
    weights = 4 * n + (2 * n if dtype == "bfloat16" else 0)
    gradients = 4 * n * (2 if sync_every > 1 else 1)
    optimizer = 8 * n
    tokens = batch * seq
    per_token_layer = 12 * p.d_model + 2 * p.d_ff + p.n_heads * seq
    activations = tokens * p.n_layers * per_token_layer * act_b + tokens * 3 * p.vocab_size * 4
    total = weights + gradients + optimizer + activations
    return {"weights": weights, "gradients": gradients, "optimizer": optimizer,
            "activations": activations, "total": total}


def model_info(preset: str, batch: int | None = None, seq: int | None = None, dtype: str = "float32",
               world_size: int = 1, sync_every: int = 1) -> dict[str, Any]:
    """Everything `jupiter model-info` shows about a preset: shape, exact parameter count, memory
    per rank, FLOPs per token. `batch` is the GLOBAL batch (split over `world_size` ranks);
    defaults are the preset's own batch and sequence length."""
    p = get_preset(preset)
    batch = p.batch_size if batch is None else int(batch)
    seq = p.seq_len if seq is None else int(seq)
    if world_size < 1:
        raise ValueError("world_size must be >= 1")
    per_rank = max(1, batch // world_size)
    n = param_count(p)
    mem = memory_estimate(p, per_rank, seq, dtype, sync_every)
    # 6 FLOPs per parameter per token (forward + backward) + attention scores (12 * L * d * seq)
    flops_per_token = 6 * n + 12 * p.n_layers * p.d_model * seq
    return {
        "preset": p.name,
        "d_model": p.d_model, "n_layers": p.n_layers, "n_heads": p.n_heads, "d_ff": p.d_ff,
        "vocab_size": p.vocab_size, "tie_embeddings": p.tie_embeddings,
        "params": n, "params_human": _human(n),
        "batch": batch, "batch_per_rank": per_rank, "seq_len": seq, "dtype": dtype,
        "world_size": world_size, "sync_every": sync_every,
        "tokens_per_step": batch * seq * sync_every,
        "flops_per_token": flops_per_token,
        "memory_bytes": mem,
        "memory_gb": {k: round(v / 2**30, 3) for k, v in mem.items()},
        "memory_human": {k: _human_bytes(v) for k, v in mem.items()},
        "default_lr": p.lr,
    }


def model_info_lines(info: dict[str, Any]) -> list[str]:
    """`model_info` as the lines `jupiter model-info` can print."""
    mem = info["memory_human"]
    return [
        f"preset {info['preset']}: {info['params']:,} parameters ({info['params_human']})",
        f"  shape: d_model {info['d_model']}, {info['n_layers']} layers, {info['n_heads']} heads, "
        f"d_ff {info['d_ff']}, vocab {info['vocab_size']}, "
        + ("tied embeddings" if info["tie_embeddings"] else "untied head"),
        f"  batch: {info['batch']} x {info['seq_len']} tokens over {info['world_size']} rank(s) "
        f"({info['batch_per_rank']} per rank), sync every {info['sync_every']}, {info['dtype']}",
        f"  memory per rank (estimate): weights {mem['weights']}, gradients {mem['gradients']}, "
        f"AdamW {mem['optimizer']}, activations {mem['activations']}; total {mem['total']}",
        f"  compute: {info['flops_per_token'] / 1e6:,.1f} MFLOP per token (forward + backward)",
    ]
