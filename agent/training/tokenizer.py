"""The byte-level tokenizer: one token per byte (0-255) plus one special, nothing to download.

`EOT` (256) separates documents (files) in the training stream, so the model learns where a file
ends. Tokens are held as MLX uint16 arrays (numpy is not needed).
"""

from __future__ import annotations

from shared.presets import VOCAB_SIZE  # the models are sized for this vocabulary: N_BYTES + 1

N_BYTES = 256
EOT = 256               # end of text / document separator
assert VOCAB_SIZE == N_BYTES + 1


def encode(data: bytes | str):
    """Tokens of one document (an mx.array of uint16, no separator added)."""
    import mlx.core as mx

    if isinstance(data, str):
        data = data.encode("utf-8")
    if not data:
        return mx.zeros((0,), dtype=mx.uint16)
    return mx.array(memoryview(bytes(data))).astype(mx.uint16)


def decode(tokens) -> str:
    """Text for tokens (an mx.array or a list of ints); EOT becomes a blank line, invalid UTF-8 is
    replaced."""
    values = tokens.reshape(-1).tolist() if hasattr(tokens, "tolist") else list(tokens)
    out = bytearray()
    for t in values:
        if t == EOT:
            out += b"\n\n"
        elif 0 <= t < N_BYTES:
            out.append(t)
        else:
            raise ValueError(f"token {t} is outside the vocabulary (0..{VOCAB_SIZE - 1})")
    return out.decode("utf-8", errors="replace")
