"""The registry's liveness rules in-process: heartbeats against the sweep that marks nodes down,
including a beat that lands while a sweep is deciding (the interleaving is forced, not hoped for)."""

from __future__ import annotations

import time

from coordinator.registry import Registry
from coordinator.store import NodeRow, Store
from shared.cluster_config import load_cluster_config
from shared.schemas import HeartbeatRequest, RegisterRequest
from shared.status import NodeStatus
from tests.support.harness import registration, sample_facts


def _registry(tmp_path) -> tuple[Registry, str]:
    store = Store(f"sqlite:///{tmp_path / 'coordinator.db'}")
    reg = Registry(store, load_cluster_config(None), heartbeat_interval_s=1, down_after_s=30,
                   started_at=0.0)
    row, _, _ = reg.register(RegisterRequest.model_validate(
        registration("a", "10.9.0.1", sample_facts("m-a", hostname="a.local"))))
    return reg, row.id


def _status(reg: Registry, node_id: str) -> str:
    return next(v.status for v in reg.list_views() if v.id == node_id)


def test_a_silent_node_goes_down_and_its_next_beat_brings_it_back(tmp_path):
    reg, nid = _registry(tmp_path)
    assert reg.sweep(time.time() + 31) == [nid]
    assert _status(reg, nid) == NodeStatus.DOWN
    came_back, restarted = reg.heartbeat(nid, HeartbeatRequest())
    assert (came_back, restarted) == (True, False)
    assert _status(reg, nid) == NodeStatus.READY
    kinds = [e.kind for e in reg.detail(nid).events]
    assert "down" in kinds and "back" in kinds


def test_a_beat_that_lands_while_the_sweep_decides_keeps_the_node_up(tmp_path, monkeypatch):
    reg, nid = _registry(tmp_path)
    with reg.store.write() as s:  # the table says the node was last heard a minute ago
        row = s.get(NodeRow, nid)
        row.last_heartbeat = time.time() - 60
        s.add(row)
    records = reg.store.node_records

    def records_then_a_beat():
        seen = records()  # the sweep has its picture of the table (the node silent) ...
        reg.heartbeat(nid, HeartbeatRequest())  # ... and now the node speaks
        return seen

    monkeypatch.setattr(reg.store, "node_records", records_then_a_beat)
    assert reg.sweep(time.time()) == [], "a node that beat during the sweep was marked down"
    monkeypatch.setattr(reg.store, "node_records", records)
    assert _status(reg, nid) == NodeStatus.READY
    assert "down" not in [e.kind for e in reg.detail(nid).events]


def test_an_unchanged_beat_is_taken_in_memory_and_a_changed_one_is_left_for_the_thread_pool(tmp_path):
    reg, nid = _registry(tmp_path)
    writes = reg.store.generation
    assert reg.heartbeat(nid, HeartbeatRequest(memory_available_gb=3.0), in_memory=True) == (False, False)
    facts = reg.facts_of(reg.store.get_node(nid))
    moved = facts.model_copy(update={"chip": "Apple M9"})
    assert reg.heartbeat(nid, HeartbeatRequest(facts=moved), in_memory=True) is None
    assert reg.store.generation == writes  # nothing was written for the refused one
    reg.heartbeat(nid, HeartbeatRequest(facts=moved))
    assert reg.facts_of(reg.store.get_node(nid)).chip == "Apple M9"
