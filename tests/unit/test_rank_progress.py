"""shared.progress_tracker.ProgressTracker's per-rank side: each rank's step time and share, kept apart from
the job's own progress, bounded, and stored with the job."""

from __future__ import annotations

import json

import pytest

from shared.progress_tracker import MAX_RANKS, SERIES_POINTS, ProgressTracker


def test_each_ranks_step_time_is_its_own_and_only_rank_0s_is_the_jobs():
    t = ProgressTracker()
    t.feed(1, {"step": 1, "step_time_s": 0.3, "share": 0.4})
    assert t.latest == {"step": 1}  # rank 0 has not reported: its step time is unknown, not rank 1's
    t.feed(0, {"step": 1, "loss": 2.0, "step_time_s": 0.1, "share": 0.6})
    t.feed(1, {"step": 2, "step_time_s": 0.31})
    assert t.latest == {"step": 1, "loss": 2.0, "step_time_s": 0.1, "share": 0.6}
    assert t.rank_latest() == {0: (1, 0.1, 0.6), 1: (2, 0.31, 0.4)}
    # a rank's share carries over to its later reports
    assert t.rank_series() == {0: [(1, 0.1, 0.6)], 1: [(1, 0.3, 0.4), (2, 0.31, 0.4)]}


def test_when_rank_0_is_silent_the_rank_the_loss_history_follows_speaks_for_the_job():
    t = ProgressTracker()
    t.feed(2, {"step": 5, "step_time_s": 0.2})
    t.feed(3, {"step": 5, "step_time_s": 0.9})
    assert t.latest == {"step": 5}  # no loss yet: no rank stands for the job
    t.feed(3, {"step": 6, "loss": 1.0})
    assert t.history_rank == 3 and t.latest == {"step": 5, "loss": 1.0, "step_time_s": 0.9}


def test_the_series_is_bounded_and_follows_the_steps():
    t = ProgressTracker()
    for step in range(1, 40):
        t.feed(0, {"step": step, "step_time_s": step / 100})
    assert [s for s, _, _ in t.rank_series()[0]] == list(range(40 - SERIES_POINTS, 40))
    t.feed(0, {"step": 39, "step_time_s": 1.0})  # the same step again: replaced
    assert t.rank_series()[0][-1] == (39, 1.0, None) and len(t.rank_series()[0]) == SERIES_POINTS
    t.feed(0, {"step": 3, "step_time_s": 0.5})   # back to step 3: a restarted attempt starts afresh
    assert t.rank_series()[0] == [(3, 0.5, None)]


def test_reports_without_a_usable_step_time_add_nothing():
    t = ProgressTracker()
    for rec in ({"step": 1}, {"step": 2, "step_time_s": 0}, {"step": 3, "step_time_s": -1.0},
                {"step": 4, "step_time_s": "fast"}, {"step": 5, "step_time_s": None}, {"step": 6, "share": 0.5}):
        t.feed(0, rec)
    assert t.rank_series() == {}
    t.feed(0, {"step": 7, "step_time_s": 0.2, "share": 7})  # a share over 1 counts as none given
    assert t.rank_series() == {0: [(7, 0.2, None)]}


def test_ranks_are_bounded():
    t = ProgressTracker()
    for rank in range(MAX_RANKS + 5):
        t.feed(rank, {"step": 1, "step_time_s": 0.1})
    assert len(t.rank_series()) == MAX_RANKS


def test_the_rank_keys_do_not_count_against_the_extra_keys():
    t = ProgressTracker()
    for i in range(80):
        t.feed(0, {f"k{i}": i})
    t.feed(1, {"step": 1, "step_time_s": 0.5, "share": 0.5})
    assert t.rank_latest()[1] == (1, 0.5, 0.5)


def test_the_series_round_trips_and_a_store_from_before_still_loads():
    t = ProgressTracker()
    for step in range(1, 6):
        t.feed(0, {"step": step, "loss": 1.0, "step_time_s": 0.1, "share": 0.5})
        t.feed(1, {"step": step, "step_time_s": 0.3, "share": 0.5})
    stored = json.loads(json.dumps(t.to_dict(), allow_nan=False))
    assert stored["version"] == 1
    back = ProgressTracker.from_dict(stored)
    assert back.rank_series() == t.rank_series() and back.to_dict() == t.to_dict()
    back.feed(1, {"step": 6, "step_time_s": 0.4})
    assert back.rank_series()[1][-1] == (6, 0.4, 0.5)
    # A tracker stored by the version before per-rank series (no "series" in its state).
    old = {"version": 1, "max_points": 2000, "latest": {"step": 3, "loss": 1.5, "step_time_s": 0.2},
           "history": [[3, 1.5]],
           "state": {"by_rank": {"0": {"step": 3, "loss": 1.5}, "1": {"step": 3, "step_time_s": 0.2}},
                     "first_rank": 0, "rank0": {"points": [[3, 1.5]], "tail": None, "stride": 1, "count": 1},
                     "fallback_rank": None, "fallback": {"points": [], "tail": None, "stride": 1, "count": 0}}}
    back = ProgressTracker.from_dict(old)
    assert back.history == [(3, 1.5)] and back.rank_series() == {}
    assert back.latest == {"step": 3, "loss": 1.5} and back.rank_latest() == {0: (3, None, None), 1: (3, 0.2, None)}


@pytest.mark.parametrize("series", [
    {"0": [[1, 0.0, None]]}, {"0": [[1, 0.1, 2.0]]}, {"-1": [[1, 0.1, None]]}, {"0": [[1, 0.1]]},
    {"x": []}, {"0": [["1", 0.1, None]]},
])
def test_a_bad_stored_series_is_refused(series):
    t = ProgressTracker()
    t.feed(0, {"step": 1, "step_time_s": 0.1})
    stored = t.to_dict()
    stored["state"]["series"] = series
    with pytest.raises(ValueError):
        ProgressTracker.from_dict(stored)
