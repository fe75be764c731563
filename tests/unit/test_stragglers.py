"""coordinator/stragglers.py: which ranks are persistently slower, and the cause their node shows;
and the job's view that carries them (rank_progress, stragglers)."""

from __future__ import annotations

import json

import pytest

from coordinator import stragglers
from coordinator.jobs import views
from coordinator.stragglers import NO_PRESSURE, cause, slow_ranks
from shared.progress import PREFIX
from tests.unit.test_lifecycle import Cluster


def series(*times, share=None, start=1):
    return [(start + i, t, share) for i, t in enumerate(times)]


# --------------------------------------------------------------------------- who is slow


def test_a_rank_three_times_slower_is_a_straggler():
    got = slow_ranks({0: series(0.1, 0.1, 0.1), 1: series(0.3, 0.3, 0.3)})
    assert list(got) == [1] and got[1] == pytest.approx(66.7)


def test_jitter_of_identical_macs_is_not():
    jitter = [0.100, 0.104, 0.097, 0.108, 0.095, 0.103]
    assert slow_ranks({0: series(*jitter), 1: series(*reversed(jitter)), 2: series(*jitter[::2])}) == {}
    assert slow_ranks({0: series(0.10, 0.10, 0.10), 1: series(0.112, 0.112, 0.112)}) == {}  # 11 % slower


def test_it_takes_three_slow_reports_in_a_row():
    fast = series(*[0.1] * 8)
    assert slow_ranks({0: fast, 1: series(0.1, 0.1, 0.1, 0.1, 0.3, 0.3)}) == {}   # two so far
    assert slow_ranks({0: fast, 1: series(0.1, 0.3, 0.3, 0.3)}) == {1: pytest.approx(66.7)}
    assert slow_ranks({0: fast, 1: series(0.3, 0.3, 0.3, 0.1)}) == {}             # over now
    assert slow_ranks({0: fast, 1: series(0.3, 0.3)}) == {}                       # too few reports


def test_one_slow_window_of_the_others_does_not_move_the_reference():
    # rank 0's one slow report (a checkpoint save) is outvoted by its other four
    assert slow_ranks({0: series(0.1, 0.1, 0.4, 0.1, 0.1), 1: series(0.25, 0.25, 0.25)}) == {1: pytest.approx(60)}


def test_a_smaller_share_in_the_same_time_is_slower_beyond_the_rounding_margin():
    # 10 % less of the batch (rounding to whole samples), same time per step: within the margin
    assert slow_ranks({0: series(0.2, 0.2, 0.2, share=0.5), 1: series(0.2, 0.2, 0.2, share=0.45)}) == {}
    # a Mac the trainer gave a third of the batch to keep pace: nobody waits, but it is the slower one
    assert slow_ranks({0: series(0.2, 0.2, 0.2, share=2 / 3), 1: series(0.2, 0.2, 0.2, share=1 / 3)}) == \
        {1: pytest.approx(50)}


def test_a_larger_share_explains_a_longer_step():
    # twice the work in twice the time: as fast as the other
    assert slow_ranks({0: series(0.1, 0.1, 0.1, share=0.25), 1: series(0.2, 0.2, 0.2, share=0.5)}) == {}
    # the same share in three times the time: slower, whatever the default share is
    assert slow_ranks({0: series(0.1, 0.1, 0.1), 1: series(0.3, 0.3, 0.3)}, world_size=4) == {1: pytest.approx(66.7)}


def test_the_median_of_the_others_names_only_the_slow_one_of_many():
    runs = {r: series(0.1, 0.1, 0.1) for r in range(7)}
    runs[5] = series(0.2, 0.2, 0.2)
    runs[6] = series(0.13, 0.13, 0.13)   # 23 % slower: named too
    got = slow_ranks(runs)
    assert set(got) == {5, 6} and got[5] == pytest.approx(50) and got[6] == pytest.approx(23.1)


def test_half_slow_half_fast_names_the_slow_half():
    got = slow_ranks({0: series(0.1, 0.1, 0.1), 1: series(0.1, 0.1, 0.1),
                      2: series(0.3, 0.3, 0.3), 3: series(0.3, 0.3, 0.3)})
    assert set(got) == {2, 3}


def test_one_rank_or_none_reporting_has_no_stragglers():
    assert slow_ranks({}) == {}
    assert slow_ranks({0: series(0.1, 0.1, 0.1)}) == {}
    assert slow_ranks({0: series(0.1, 0.1, 0.1), 1: []}) == {}


# --------------------------------------------------------------------------- why


@pytest.mark.parametrize("pressure, expected", [
    (None, NO_PRESSURE),
    ({}, NO_PRESSURE),
    ({"thermal": "nominal", "cpu_speed_limit_pct": 100, "memory": "normal", "swap_used_gb": 0.3}, NO_PRESSURE),
    ({"thermal": "serious", "cpu_speed_limit_pct": 70}, "thermal throttling (CPU speed limit 70 %)"),
    ({"thermal": "fair", "cpu_speed_limit_pct": 85.5}, "thermal throttling (CPU speed limit 85.5 %)"),
    ({"thermal": "critical", "cpu_speed_limit_pct": None}, "thermal throttling (thermal state critical)"),
    ({"memory": "warning"}, "memory pressure (warning)"),
    ({"memory": "critical", "swap_used_gb": 6.25}, "memory pressure (critical); swapping (6.2 GB)"),
    ({"swap_used_gb": 3.0, "swap_total_gb": 4.0}, "swapping (3.0 GB)"),
    ({"swap_used_gb": 1.0}, NO_PRESSURE),  # some swap stays in use on any Mac up for days
    ({"on_battery": True}, "on battery power; another process may be using the CPU"),
])
def test_the_cause_from_the_nodes_pressure(pressure, expected):
    assert cause(pressure) == expected


def test_the_cause_reads_a_model_as_well_as_its_json():
    class Pressure:  # what NodeOut.pressure holds
        thermal, cpu_speed_limit_pct, memory, swap_used_gb, on_battery = "serious", 60, "normal", 0.0, False

    assert cause(Pressure()) == "thermal throttling (CPU speed limit 60 %)"


def test_stragglers_name_node_and_cause_and_read_the_nodes_only_when_needed():
    asked = []

    def pressure():
        asked.append(1)
        return {"n2": {"cpu_speed_limit_pct": 62}}

    nodes = {0: "n1", 1: "n2"}
    assert stragglers.stragglers({0: series(0.1, 0.1, 0.1), 1: series(0.1, 0.1, 0.1)}, nodes.get, pressure) == []
    assert asked == []
    [s] = stragglers.stragglers({0: series(0.1, 0.1, 0.1), 1: series(0.2, 0.2, 0.2)}, nodes.get, pressure)
    assert (s.rank, s.node, s.slower_pct, s.cause) == (1, "n2", 50.0, "thermal throttling (CPU speed limit 62 %)")
    [s] = stragglers.stragglers({0: series(0.1, 0.1, 0.1), 1: series(0.2, 0.2, 0.2)}, nodes.get, None)
    assert s.cause is None


# --------------------------------------------------------------------------- the job's view


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.close()


def lines(times, share=None, loss=False):
    out = []
    for step, took in enumerate(times, 1):
        rec = {"step": step, "step_time_s": took, **({"share": share} if share else {})}
        if loss:
            rec["loss"] = 1.0 / step
        out.append(PREFIX + json.dumps(rec))
    return out


def test_the_view_shows_each_rank_and_names_the_straggler(cluster, monkeypatch):
    monkeypatch.setattr(views, "node_pressure", lambda registry: {"b": {"memory": "warning"}})
    job = cluster.submit(nodes=2)
    cluster.jobs.schedule()
    cluster.run_both(job)
    cluster.print("a", job, 0, 0, lines([0.1] * 4, share=0.5, loss=True))
    cluster.print("b", job, 1, 0, lines([0.1, 0.3, 0.3, 0.32], share=0.5))
    view = cluster.jobs.detail(job)
    assert [(r.rank, r.node, r.step, r.step_time_s, r.share) for r in view.rank_progress] == \
        [(0, "a", 4, 0.1, 0.5), (1, "b", 4, 0.32, 0.5)]
    [s] = view.stragglers
    assert (s.rank, s.node, s.cause) == (1, "b", "memory pressure (warning)") and s.slower_pct == pytest.approx(66.7)
    # The job's own progress is rank 0's: rank 1's step time is no one else's.
    assert view.progress["step_time_s"] == 0.1
    assert [(s.rank, s.cause) for s in cluster.jobs.view(cluster.jobs.get_row(job)).stragglers] == \
        [(1, "memory pressure (warning)")]
    # Ended, the verdict stays, without a cause: the node's pressure now is not its pressure then.
    cluster.say("a", job, 0, "exited", code=0)
    cluster.say("b", job, 1, "exited", code=0)
    view = cluster.jobs.detail(job)
    assert view.status == "succeeded" and [(s.rank, s.cause) for s in view.stragglers] == [(1, None)]


def test_two_ranks_per_node_are_placed_by_processes_per_node(cluster):
    # The registry's own node views: these registered nodes report no pressure to speak of.
    job = cluster.submit(nodes=2, processes_per_node=2)
    cluster.jobs.schedule()
    row = cluster.jobs.get_row(job)
    for rank in range(4):
        cluster.say(row.nodes[rank // 2], job, rank, "running")
    for rank in range(4):
        took = [0.4] * 3 if rank == 2 else [0.1] * 3
        cluster.print(row.nodes[rank // 2], job, rank, 0, lines(took))
    view = cluster.jobs.detail(job)
    assert [(r.rank, r.node) for r in view.rank_progress] == [(0, "a"), (1, "a"), (2, "b"), (3, "b")]
    assert [(s.rank, s.node, s.cause) for s in view.stragglers] == [(2, "b", NO_PRESSURE)]
