"""Data for the trainer: a domain's files as one token stream, a held-out tail, fixed-length
windows and the per-rank sharding of global batches.

- Stream: the domain's files in `shared.domains` order, bytes as tokens, `EOT` after each file,
  at most `max_bytes` bytes of file content (the last file cut short).
- Split: the last `holdout_fraction` of the stream is held out (eval loss); the rest trains.
- Windows: non-overlapping, window i covers tokens [i*seq, i*seq + seq] (seq inputs, the next seq
  tokens as targets).
- Batches: epoch e shuffles the window ids with a seeded generator (`Random(seed, e)`), global
  batch j is ids [j*B, (j+1)*B), and rank r of w takes its slice [r*B/w, (r+1)*B/w), or with
  unequal shares (`counts`, shares.py) the counts[r] ids after those of ranks 0..r-1. The order
  depends on (seed, epoch, B) only, never on the world size, so a run resumed on another number of
  ranks still sees the same global batches. Every rank takes the same number of steps: the
  windows that do not fill a whole optimizer step (B * sync_every) are dropped each epoch.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

import mlx.core as mx

from agent.training.tokenizer import EOT, VOCAB_SIZE
from shared.domains import Domain, usable_files


class DataError(ValueError):
    """The domain gives no (or too little) data; the message is one line naming the domain."""


@dataclass
class TokenData:
    domain: str
    train: mx.array          # uint16 tokens
    holdout: mx.array        # uint16 tokens
    files: int
    bytes: int
    digest: str              # sha256 of the stream (content and file boundaries), hex
    notes: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return int(self.train.size + self.holdout.size)


def _split(tokens: mx.array, holdout_fraction: float, seq: int) -> tuple[mx.array, mx.array]:
    n = int(tokens.size)
    n_hold = int(n * holdout_fraction)
    if n_hold < seq + 1:
        n_hold = min(seq + 1, n // 2)  # at least one eval window when the data allows it
    return tokens[: n - n_hold], tokens[n - n_hold:]


def load_tokens(domain: Domain, seq_len: int, max_bytes: int | None = None) -> TokenData:
    """Read and tokenise `domain` (at most `max_bytes`, default the domain's own cap)."""
    cap = max_bytes if max_bytes is not None else domain.max_bytes
    files = usable_files(domain)
    if not files:
        from shared.domains import check_domain

        raise DataError(check_domain(domain).summary())
    buf = bytearray()
    eot_at: list[int] = []
    h = hashlib.sha256()
    used_files = 0
    unreadable = 0
    for path, _size in files:
        room = None if cap is None else cap - (len(buf) - len(eot_at))
        if room is not None and room <= 0:
            break
        try:
            with open(path, "rb") as f:
                data = f.read() if room is None else f.read(room)
        except OSError:
            unreadable += 1
            continue
        if not data:
            continue
        buf += data
        eot_at.append(len(buf))
        buf.append(0)  # placeholder, becomes EOT
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
        used_files += 1
    content = len(buf) - len(eot_at)
    if content == 0:
        raise DataError(f"domain {domain.name!r} has no usable data: none of its {len(files)} file(s) could be read")
    tokens = mx.array(memoryview(bytes(buf))).astype(mx.uint16)
    tokens[mx.array(eot_at)] = EOT
    train, holdout = _split(tokens, domain.holdout_fraction, seq_len)
    mx.eval(train, holdout)
    notes = [f"{unreadable} file(s) could not be read"] if unreadable else []
    return TokenData(domain=domain.name, train=train, holdout=holdout, files=used_files, bytes=content,
                     digest=h.hexdigest(), notes=notes)


def n_windows(n_tokens: int, seq: int) -> int:
    return max(0, (n_tokens - 1) // seq)


def windows(tokens: mx.array, ids: list[int], seq: int) -> tuple[mx.array, mx.array]:
    """(inputs, targets), each (len(ids), seq) int32, for window ids of `tokens`."""
    starts = mx.array(ids, dtype=mx.int32) * seq
    idx = starts[:, None] + mx.arange(seq + 1, dtype=mx.int32)[None, :]
    w = tokens[idx].astype(mx.int32)
    return w[:, :-1], w[:, 1:]


@dataclass
class Sharding:
    """Which windows rank `rank` of `world` trains on at each micro-step (see module notes)."""

    n_windows: int
    global_batch: int
    sync_every: int
    world: int
    rank: int
    seed: int
    counts: list[int] | None = None  # sequences of each rank per micro-step (None: B/w each)
    _cache: tuple[int, list[int]] | None = None

    def __post_init__(self) -> None:
        if self.global_batch % self.world:
            raise ValueError(f"global batch {self.global_batch} is not a multiple of {self.world} ranks")
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} outside world of {self.world}")

    @property
    def per_rank(self) -> int:
        return self.global_batch // self.world

    @property
    def micro_per_epoch(self) -> int:
        return self.n_windows // self.global_batch

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch (each takes `sync_every` global batches)."""
        return self.micro_per_epoch // self.sync_every

    def order(self, epoch: int) -> list[int]:
        """The shuffled window ids of `epoch` (0-based); the same on every rank and world size."""
        if self._cache is None or self._cache[0] != epoch:
            ids = list(range(self.n_windows))
            random.Random(f"jupiter/{self.seed}/{epoch}").shuffle(ids)
            self._cache = (epoch, ids)
        return self._cache[1]

    def global_batch_ids(self, epoch: int, micro: int) -> list[int]:
        order = self.order(epoch)
        return order[micro * self.global_batch:(micro + 1) * self.global_batch]

    @property
    def count(self) -> int:
        """This rank's sequences per micro-step."""
        return self.per_rank if self.counts is None else self.counts[self.rank]

    def rank_ids(self, epoch: int, micro: int) -> list[int]:
        ids = self.global_batch_ids(epoch, micro)
        if self.counts is None:
            return ids[self.rank * self.per_rank:(self.rank + 1) * self.per_rank]
        start = sum(self.counts[:self.rank])
        return ids[start:start + self.counts[self.rank]]

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, first micro-batch in that epoch) of optimizer step `step` (0-based)."""
        spe = self.steps_per_epoch
        return step // spe, (step % spe) * self.sync_every


def eval_ids(n_eval_windows: int, world: int, rank: int, limit: int | None) -> list[int]:
    """The held-out windows rank `rank` evaluates: the first `limit` windows, dealt round-robin."""
    n = n_eval_windows if limit is None else min(limit, n_eval_windows)
    return list(range(rank, n, world))


__all__ = ["DataError", "Sharding", "TokenData", "VOCAB_SIZE", "eval_ids", "load_tokens", "n_windows", "windows"]
