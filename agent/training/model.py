"""A decoder-only transformer language model in MLX.

Token embedding, rotary positions (RoPE, no parameters), pre-norm blocks (RMSNorm -> causal
self-attention through `mx.fast.scaled_dot_product_attention(mask="causal")`, RMSNorm -> SiLU MLP),
a final RMSNorm and an output head tied to the embedding (or untied). SiLU rather than GELU: on
MLX's CPU backend tanh/erf cost several times more than a sigmoid. No biases, no dropout, so
training is deterministic given the seed and the data order. `shared.presets.param_count` is the
exact parameter count of this module.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from shared.presets import Preset


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, rope_base: float):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not a multiple of n_heads {n_heads}")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.rope = nn.RoPE(self.head_dim, base=rope_base)

    def __call__(self, x: mx.array) -> mx.array:
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.n_heads, self.head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]            # each (b, heads, t, head_dim)
        q, k = self.rope(q), self.rope(k)
        o = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask="causal")
        return self.out(o.transpose(0, 2, 1, 3).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.down(nn.silu(self.up(x)))


class Block(nn.Module):
    def __init__(self, p: Preset):
        super().__init__()
        self.attn_norm = nn.RMSNorm(p.d_model)
        self.attn = Attention(p.d_model, p.n_heads, p.rope_base)
        self.mlp_norm = nn.RMSNorm(p.d_model)
        self.mlp = MLP(p.d_model, p.d_ff)

    def __call__(self, x: mx.array) -> mx.array:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class GPT(nn.Module):
    def __init__(self, p: Preset):
        super().__init__()
        self.preset = p.name
        self.tie_embeddings = p.tie_embeddings
        self.embed = nn.Embedding(p.vocab_size, p.d_model)
        self.blocks = [Block(p) for _ in range(p.n_layers)]
        self.norm = nn.RMSNorm(p.d_model)
        if not p.tie_embeddings:
            self.head = nn.Linear(p.d_model, p.vocab_size, bias=False)

    def __call__(self, tokens: mx.array) -> mx.array:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return self.embed.as_linear(x) if self.tie_embeddings else self.head(x)


def loss_fn(model: GPT, inputs: mx.array, targets: mx.array, scale: float | None = None) -> mx.array:
    """Mean next-token cross entropy (computed in float32 whatever the compute dtype); with
    `scale`, the sum over the tokens times `scale` instead (1 / the global batch's tokens: one
    rank's part of the global mean, each token weighted exactly as in the mean over them all)."""
    logits = model(inputs).astype(mx.float32)
    if scale is None:
        return nn.losses.cross_entropy(logits, targets, reduction="mean")
    return nn.losses.cross_entropy(logits, targets, reduction="sum") * scale
