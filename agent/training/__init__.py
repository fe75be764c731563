"""The built-in trainer (runs as every rank: `python -m agent.training --domain D ...`).

In-process API::

    from agent.training import TrainConfig, train
    result = train(TrainConfig(domain="sample", preset="micro", steps=50))
    result.final_loss, result.checkpoint, result.losses

The presets, their exact parameter counts and `model_info(preset, batch, seq, dtype)` live in
`shared.presets` (no MLX import), which the coordinator and `jupiter model-info` read too. The
heavy modules are imported lazily so that importing this package stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainConfig", "TrainResult", "train", "model_info", "PRESETS"]


def __getattr__(name: str) -> Any:
    if name in ("TrainConfig", "TrainResult", "train"):
        from agent.training import trainer

        return getattr(trainer, name)
    if name in ("model_info", "PRESETS"):
        from shared import presets

        return getattr(presets, name)
    raise AttributeError(name)
