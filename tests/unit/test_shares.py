"""The share arithmetic of the built-in trainer (agent/training/shares.py): parsing --shares, the
proportional split with largest remainders and a minimum of one sequence, the predicted step time,
the hysteresis that keeps noise from moving sequences back and forth, and the planner that turns
every rank's measured step times into a split. Pure functions: no MLX, no ranks."""

from __future__ import annotations

import random

import pytest

from agent.training import shares as S


def test_parse_accepts_auto_equal_and_ratios():
    assert S.parse("auto") == "auto" and S.parse(" EQUAL ") == "equal"
    assert S.parse("3:1") == [3, 1] and S.parse("1:1:2") == [1, 1, 2] and S.parse("5") == [5]
    for bad in ("", "3:0", "3:-1", "a:b", "3:", "1.5:1", "fast"):
        with pytest.raises(ValueError, match="--shares"):
            S.parse(bad)


@pytest.mark.parametrize("total, weights, expected", [
    (16, [3, 1], [12, 4]),
    (16, [1, 1], [8, 8]),
    (8, [3, 1], [6, 2]),
    (16, [2, 1], [11, 5]),             # 10.67 / 5.33: the larger remainder gets the spare one
    (10, [1, 1, 1], [4, 3, 3]),        # a tie: the lower rank first
    (16, [100, 1], [15, 1]),           # never below one sequence
    (16, [100, 1, 1], [14, 1, 1]),
    (4, [1, 1, 1, 1], [1, 1, 1, 1]),
    (17, [2210.0, 740.0], [13, 4]),    # 12.74 / 4.26
])
def test_split_is_proportional_with_largest_remainders(total, weights, expected):
    got = S.split(total, weights)
    assert got == expected and sum(got) == total


def test_split_properties_on_random_inputs():
    rng = random.Random(7)
    for _ in range(2000):
        n = rng.randint(1, 6)
        total = rng.randint(n, 64)
        weights = [rng.uniform(0.01, 10.0) for _ in range(n)]
        got = S.split(total, weights)
        assert sum(got) == total and min(got) >= 1
        assert got == S.split(total, list(weights))           # deterministic
        ideal = [total * w / sum(weights) for w in weights]
        if min(ideal) >= 1:                                    # nobody pinned: within one of its ideal
            assert all(abs(g - i) < 1 for g, i in zip(got, ideal, strict=True))
        if n > 1:  # a faster rank never gets fewer sequences
            order = sorted(range(n), key=lambda r: weights[r])
            assert all(got[a] <= got[b] for a, b in zip(order, order[1:], strict=False))


def test_split_refuses_what_cannot_work():
    for total, weights in ((1, [1, 1]), (4, []), (4, [1, 0]), (4, [1, -2])):
        with pytest.raises(ValueError):
            S.split(total, weights)


def test_fastest_split_minimises_the_slowest_rank():
    assert S.fastest(16, [1.0, 2.0]) == [11, 5] and S.fastest(16, [1.0, 1.0]) == [8, 8]
    assert S.fastest(16, [1.0, 100.0]) == [15, 1] and S.fastest(10, [1.0, 1.0, 1.0]) == [4, 3, 3]
    # rounding the proportional split (10.48 / 5.52) would give 10:6, a slower step than 11:5
    assert S.split(16, [1.0, 1 / 1.9]) == [10, 6]
    assert S.fastest(16, [1.0, 1.9]) == [11, 5]
    assert S.predicted_step([11, 5], [1.0, 1.9]) < S.predicted_step([10, 6], [1.0, 1.9])
    rng = random.Random(3)
    for _ in range(300):  # the best of every split, by brute force on 2 ranks
        total, secs = rng.randint(2, 40), [rng.uniform(0.01, 1.0), rng.uniform(0.01, 1.0)]
        best = min(S.predicted_step([n, total - n], secs) for n in range(1, total))
        assert S.predicted_step(S.fastest(total, secs), secs) == best


def test_choose_moves_only_for_a_real_gain():
    # rank 1 takes twice as long per sequence: 11:5 is predicted 11/16 of the equal split's time
    assert S.predicted_step([8, 8], [1.0, 2.0]) == 16.0
    assert S.choose([8, 8], [1.0, 2.0]) == [11, 5]
    assert S.choose([11, 5], [1.0, 2.0]) is None               # already there
    # a 15 % difference (noise, or a nearly equal pair) would move one sequence for a 2 % gain
    assert S.split(16, [1 / 1.0, 1 / 1.15]) == [9, 7]
    assert S.choose([8, 8], [1.0, 1.15]) is None
    # two neighbouring splits of a 1.9x pair are 3.5 % apart: from either one, no flapping
    assert S.choose([10, 6], [1.0, 1.9]) is None and S.choose([11, 5], [1.0, 1.9]) is None
    assert S.choose([10, 6], [1.0, 1.9], margin=0.0) == [11, 5]
    assert S.choose([11, 5], [1.0, 1.9], margin=0.0) is None


def _feed(planner: S.Planner, per_seq: list[float], steps: int, noise: float = 0.0, seed: int = 1):
    rng = random.Random(seed)
    changes = []
    for _ in range(steps):
        times = [n * s * (1 + rng.uniform(-noise, noise)) for n, s in zip(planner.counts, per_seq, strict=True)]
        new = planner.observe(times)
        if new is not None:
            changes.append(new)
    return changes


def test_planner_measures_after_settling_then_rebalances():
    p = S.Planner("auto", 16, 2)
    assert p.counts == [8, 8] and p.equal and p.measuring
    first = S.SETTLE + 2 * S.WINDOW
    assert _feed(p, [0.05, 0.1], first - 1) == []             # settling, then two windows, one step short
    assert _feed(p, [0.05, 0.1], 1) == [[11, 5]]
    assert p.counts == [11, 5] and not p.equal
    assert p.last_rates == pytest.approx([20.0, 10.0])
    assert _feed(p, [0.05, 0.1], 40, noise=0.05) == []         # balanced: noise moves nothing


def test_planner_follows_a_rank_that_slows_down_and_recovers():
    p = S.Planner("auto", 16, 2)
    assert _feed(p, [0.1, 0.1], 30, noise=0.05) == []          # equal ranks stay equal
    assert _feed(p, [0.1, 0.3], 30, noise=0.05) == [[12, 4]]   # rank 1 at a third of the speed
    assert _feed(p, [0.1, 0.1], 30, noise=0.05) == [[8, 8]]    # and back


def test_one_window_of_load_moves_nothing():
    p = S.Planner("auto", 16, 2)
    assert _feed(p, [0.1, 0.1], S.SETTLE + S.WINDOW) == []
    assert _feed(p, [0.1, 0.3], S.WINDOW) == []                # a burst on rank 1's machine
    assert _feed(p, [0.1, 0.1], 3 * S.WINDOW) == []
    assert _feed(p, [0.1, 0.3], 2 * S.WINDOW) == [[12, 4]]     # two windows in a row: it is real


def test_planner_never_flaps_under_noise():
    for seed in range(20):
        p = S.Planner("auto", 16, 2)
        changes = _feed(p, [0.1, 0.19], 200, noise=0.15, seed=seed)
        assert len(changes) <= 2, (seed, changes)


def test_fixed_planners_never_change():
    p = S.Planner([3, 1], 16, 2)
    assert p.counts == [12, 4] and not p.measuring and p.observe([1.0, 9.0]) is None
    assert S.Planner("equal", 16, 4).counts == [4, 4, 4, 4]
    assert not S.Planner("equal", 16, 2).measuring
    assert not S.Planner("auto", 16, 1).measuring              # nothing to balance on one rank
    with pytest.raises(ValueError, match="names 2 rank"):
        S.Planner([3, 1], 16, 3)
    with pytest.raises(ValueError, match="names 2 rank"):
        S.Planner([3, 1], 16, 1)


def test_slowdown_aid():
    env = {S.SLOWDOWN_ENV: "1:0.5, 2:0.25"}
    assert S.slowdown(env, 1) == 0.5 and S.slowdown(env, 2) == 0.25 and S.slowdown(env, 0) is None
    assert S.slowdown({}, 1) is None
    assert S.slowdown({S.SLOWDOWN_ENV: "1:2"}, 1) is None and S.slowdown({S.SLOWDOWN_ENV: "x"}, 1) is None
