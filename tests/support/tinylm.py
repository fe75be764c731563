"""A tiny llama model and a dataset that `python -m mlx_lm lora` can load and train on CPU in seconds.

Built here, from nothing: no download. The tokenizer is a word-level one trained with `tokenizers` on
the same few sentences as the data, saved with the two files `transformers.AutoTokenizer` needs; the
weights are random, written by MLX as model.safetensors.

    from tests.support.tinylm import build
    model, data = build(tmp_path)      # tmp_path/model, tmp_path/data
    build(tmp_path, config={"hidden_size": 256, "num_hidden_layers": 8})  # a bigger one (benches)

    python tests/support/tinylm.py DIR  # the same from a shell
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

WORDS = ("the cat dog bird fish sat ran flew swam on under over a mat log tree pond red blue green small big "
         "quick slow happy sad old new morning evening night day sun moon rain snow wind").split()
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
CONFIG = {
    "model_type": "llama",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
    "max_position_embeddings": 256,
}


def sentences(count: int, seed: int) -> list[str]:
    """`count` short sentences drawn from WORDS, the same for the same seed."""
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) for _ in range(count)]


def _tokenizer(folder: Path, texts: list[str], max_length: int) -> tuple[int, int, int]:
    """Train a word-level tokenizer on `texts`, save it for AutoTokenizer; (vocabulary size, bos, eos)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces again
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=SPECIALS))
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "pad_token": "<pad>", "model_max_length": max_length,
    }))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}))
    return tok.get_vocab_size(), bos, eos


def _weights(folder: Path, config: dict) -> None:
    """Random llama weights with mlx_lm's own module names, saved by MLX."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())))


def build(root: Path, *, train: int = 64, valid: int = 16, config: dict | None = None) -> tuple[Path, Path]:
    """Write `root/model` and `root/data` (train.jsonl, valid.jsonl); return both folders. `config`
    overrides keys of CONFIG (a bigger model: hidden_size, num_hidden_layers, ...)."""
    model, data = Path(root) / "model", Path(root) / "data"
    model.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    train_texts, valid_texts = sentences(train, 1), sentences(valid, 2)
    config = dict(CONFIG, **(config or {}))
    vocab, bos, eos = _tokenizer(model, [" ".join(WORDS)] + train_texts + valid_texts,
                                 config["max_position_embeddings"])
    config.update(vocab_size=vocab, bos_token_id=bos, eos_token_id=eos)
    (model / "config.json").write_text(json.dumps(config, indent=1))
    _weights(model, config)
    for name, texts in (("train", train_texts), ("valid", valid_texts)):
        (data / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return model, data


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/support/tinylm.py DIR")
    print(*build(Path(sys.argv[1])))
