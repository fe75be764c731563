"""How the global batch is split between ranks (`--shares`): equally, by a fixed ratio, or in
proportion to each rank's measured speed (`auto`, the default), so a slower Mac gets fewer
sequences and nobody waits long in the all-reduce.

Whatever the split, step s trains on the same global batch: rank r takes the contiguous slice
of `counts[r]` sequences after those of ranks 0..r-1 (data.Sharding), and the gradients and the
loss are weighted by each slice's tokens (steps.py), so the update is the one a single process
would make on the whole batch. Every rank keeps at least one sequence: it stays measured (a rank
with no work could never show that it got faster again) and every slice has a real shape.

`auto`: every step each rank times its own forward and backward (before the all-reduce, so
waiting for a peer is not counted) and the step's loss all-sum carries all those times, so every
rank holds the same numbers and makes the same decision (plain float arithmetic, no collective
of its own). The first SETTLE steps after the start or a change are not measured (the compile of
a new shape); then, every WINDOW steps, the median time per sequence of each rank gives the
split with the shortest predicted step (about proportional to the speeds), taken only when it is
predicted to make the step at least MARGIN faster, in two windows in a row. The margin keeps
noise of a few per cent from moving a sequence back and forth (each new split is a new shape to
compile, and two neighbouring splits are often within a few per cent of each other); the second
window keeps a burst of load on a machine (another process for a few seconds) from moving it.
A rank that really slows down moves the prediction by far more, and for longer. MLX keeps a
compiled graph per shape, so the splits seen before cost nothing to return to.

No MLX here: pure functions and a small planner, unit-tested in tests/unit/test_shares.py.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.training.run_state import Run

AUTO, EQUAL = "auto", "equal"
SETTLE = 2      # steps not measured after the start or a change (the first one at a shape compiles)
WINDOW = 4      # measured steps per decision
MARGIN = 0.10   # take a new split only when the predicted step time falls by at least this
SLOWDOWN_ENV = "JUPITER_TRAIN_SLOWDOWN"  # test and bench aid: "RANK:SPEED,..." (speed 0.5 = half)


def parse(text: str) -> str | list[int]:
    """`auto`, `equal`, or a ratio like `3:1` (positive integers, one per rank). ValueError else."""
    t = text.strip().lower()
    if t in (AUTO, EQUAL):
        return t
    parts = t.split(":")
    try:
        ratio = [int(p) for p in parts]
    except ValueError:
        ratio = []
    if not ratio or any(r < 1 for r in ratio):
        raise ValueError(f"--shares must be auto, equal or a ratio of positive integers like 3:1, got {text!r}")
    return ratio


def split(total: int, weights: list[float], minimum: int = 1) -> list[int]:
    """`total` in whole parts proportional to `weights` (each > 0), every part >= `minimum`;
    the parts left after rounding down go to the largest remainders (the lower rank on a tie).
    Deterministic: the same inputs give the same split on every rank."""
    n = len(weights)
    if n == 0 or total < n * minimum or any(not w > 0 for w in weights):
        raise ValueError(f"cannot split {total} into {n} parts of at least {minimum} by {weights}")
    counts = [0] * n
    free = list(range(n))
    rest = total
    while True:  # a part whose ideal is below the minimum is pinned there; the others share the rest
        wsum = sum(weights[r] for r in free)
        ideal = {r: rest * weights[r] / wsum for r in free}
        pinned = [r for r in free if ideal[r] < minimum]
        if not pinned:
            break
        for r in pinned:
            counts[r] = minimum
        rest -= minimum * len(pinned)
        free = [r for r in free if r not in pinned]
    for r in free:
        counts[r] = int(ideal[r])
    left = rest - sum(counts[r] for r in free)
    for r in sorted(free, key=lambda r: (-(ideal[r] - counts[r]), r))[:left]:
        counts[r] += 1
    return counts


def predicted_step(counts: list[int], secs_per_seq: list[float]) -> float:
    """The step's compute time for this split: the slowest rank's."""
    return max(n * s for n, s in zip(counts, secs_per_seq, strict=True))


def fastest(total: int, secs_per_seq: list[float], minimum: int = 1) -> list[int]:
    """The split of `total` with the shortest predicted step: about proportional to the speeds,
    but rounded towards the slowest rank's time (each sequence goes, one at a time, to the rank
    that would finish it soonest, the lower rank on a tie), which rounding the proportional split
    does not always do."""
    n = len(secs_per_seq)
    if n == 0 or total < n * minimum or any(not s > 0 for s in secs_per_seq):
        raise ValueError(f"cannot split {total} into {n} parts of at least {minimum} by {secs_per_seq}")
    counts = [minimum] * n
    for _ in range(total - n * minimum):
        r = min(range(n), key=lambda r: ((counts[r] + 1) * secs_per_seq[r], r))
        counts[r] += 1
    return counts


def choose(counts: list[int], secs_per_seq: list[float], margin: float = MARGIN) -> list[int] | None:
    """The fastest split for the measured speeds, when it beats `counts` by `margin`; else None."""
    target = fastest(sum(counts), secs_per_seq)
    if target == counts:
        return None
    if predicted_step(target, secs_per_seq) > predicted_step(counts, secs_per_seq) * (1.0 - margin):
        return None
    return target


def median(xs: list[float]) -> float:
    s = sorted(xs)
    m = len(s) // 2
    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2


class Planner:
    """The split of one run: fixed (`equal`, a ratio) or measured (`auto`, `observe` every step)."""

    def __init__(self, mode: str | list[int], batch: int, world: int):
        if isinstance(mode, list):
            if len(mode) != world:
                raise ValueError(f"--shares {':'.join(map(str, mode))} names {len(mode)} rank(s), "
                                 f"this run has {world}")
            if batch < world:
                raise ValueError(f"a global batch of {batch} cannot give each of {world} ranks a sequence")
            self.counts = split(batch, [float(r) for r in mode])
        else:
            self.counts = [batch // world] * world
        self.mode = mode
        self.measuring = mode == AUTO and world > 1
        self._skip = SETTLE
        self._times: list[list[float]] = []
        self._pending = False  # the last window already asked for a change
        self.last_rates: list[float] | None = None  # sequences per second of each rank, last decision

    @property
    def equal(self) -> bool:
        return len(set(self.counts)) == 1

    def observe(self, times: list[float]) -> list[int] | None:
        """Every rank's compute seconds of the step just done (auto): the new split when it
        changes (the caller applies it from the next step), else None."""
        if not self.measuring:
            return None
        if self._skip > 0:
            self._skip -= 1
            return None
        self._times.append(list(times))
        if len(self._times) < WINDOW:
            return None
        per_seq = [median([t[r] for t in self._times]) / n for r, n in enumerate(self.counts)]
        self._times = []
        if any(not s > 0 for s in per_seq):
            return None
        self.last_rates = [1.0 / s for s in per_seq]
        new = choose(self.counts, per_seq)
        if new is None or not self._pending:  # a change needs two windows in a row asking for one
            self._pending = new is not None
            return None
        self.counts = new
        self._skip = SETTLE
        self._pending = False
        return new


def slowdown(env: dict[str, str] | None, rank: int) -> float | None:
    """This rank's speed under `JUPITER_TRAIN_SLOWDOWN` ("1:0.5": rank 1 at half speed), or None.
    A test and benchmark aid: the rank busy-spins after its compute (steps.py)."""
    text = (env if env is not None else os.environ).get(SLOWDOWN_ENV, "").strip()
    for item in filter(None, (p.strip() for p in text.split(","))):
        r, _, speed = item.partition(":")
        try:
            if int(r) == rank and 0 < float(speed) < 1:
                return float(speed)
        except ValueError:
            continue
    return None


def describe(run: Run, counts: list[int]) -> str:
    return ", ".join(f"rank {r} {n}/{run.batch}" for r, n in enumerate(counts))


def plan(run: Run) -> None:
    """The run's planner, as soon as the batch and the world are known (UsageError if a ratio
    does not fit them); and the slowdown aid."""
    try:
        run.shares = Planner(parse(run.cfg.shares), run.batch, run.world)
    except ValueError as exc:
        from agent.training.config import UsageError

        raise UsageError(str(exc)) from None
    run.slowdown = slowdown(None, run.rank)


def start(run: Run) -> None:
    """Apply the first split (once the sharding exists) and say what it is (rank 0)."""
    apply(run, run.shares.counts)
    if os.environ.get(SLOWDOWN_ENV):
        run.log(f"note: {SLOWDOWN_ENV}={os.environ[SLOWDOWN_ENV]}: ranks slowed on purpose (a test aid)")
    if run.world == 1:
        return
    if isinstance(run.shares.mode, list):
        run.log(f"shares: {describe(run, run.shares.counts)} (fixed by --shares {run.cfg.shares})")
    elif run.shares.measuring:
        run.log(f"shares: {run.batch // run.world}/{run.batch} each to start, then in proportion to each rank's "
                f"measured speed (checked every {WINDOW} steps; changed when {MARGIN:.0%} faster twice in a row)")


def apply(run: Run, counts: list[int]) -> None:
    run.sharding.counts = list(counts)
    run.share = counts[run.rank] / run.batch


def rebalance(run: Run, times: list[float]) -> None:
    """After a step (auto): feed every rank's time to the planner, apply and log a new split."""
    new = run.shares.observe(times)
    if new is None:
        return
    per_seq_tokens = run.seq * run.cfg.sync_every
    rates = " vs ".join(f"{r * per_seq_tokens:,.0f}" for r in run.shares.last_rates or [])
    apply(run, new)
    run.log(f"shares: {describe(run, new)} (measured {rates} tokens/s)")
