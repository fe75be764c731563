"""The node registry over HTTP against a real coordinator process and its SQLite file."""

from __future__ import annotations

import sqlite3
import time

import httpx
import pytest

from shared.client import ApiError
from tests.support.harness import sample_facts, wait_for, registration


def register(coord, name="mini-1", machine_id="m-1", host="127.0.0.1", **facts):
    r = httpx.post(coord.url + "/nodes/register", headers={"Authorization": f"Bearer {coord.join_token}"},
                   json=registration(name, host, sample_facts(machine_id, **facts)))
    assert r.status_code == 200, r.text
    return r.json()


def beat(coord, node, **body):
    return httpx.put(f"{coord.url}/nodes/{node['node_id']}/heartbeat",
                     headers={"Authorization": f"Bearer {node['node_token']}"}, json=body)


def node_status(coord, node_id):
    with coord.client() as c:
        return c.node(node_id).status


def test_register_heartbeat_ready_then_down_then_back(coordinator):
    node = register(coordinator)
    assert node["heartbeat_interval_s"] == coordinator.heartbeat_interval
    assert beat(coordinator, node, memory_available_gb=12.5).status_code == 200
    with coordinator.client() as c:
        [n] = c.nodes()
        assert (n.name, n.status, n.chip, n.memory_gb, n.memory_available_gb) == ("mini-1", "ready", "Apple M4", 24.0, 12.5)
        assert n.mpi.implementation == "openmpi" and n.thunderbolt.ports[0].speed_gbps == 40.0
        assert n.last_heartbeat is not None and n.last_heartbeat.tzinfo is not None
    # Silence: down within the grace (2 s) plus one sweep.
    t0 = time.monotonic()
    wait_for(lambda: node_status(coordinator, node["node_id"]) == "down", timeout=6, what="node down")
    assert time.monotonic() - t0 < coordinator.down_after + 2
    assert beat(coordinator, node).status_code == 200
    assert node_status(coordinator, node["node_id"]) == "ready"
    with coordinator.client() as c:
        kinds = [e.kind for e in c.node(node["node_id"]).events]
    assert kinds[:3] == ["back", "down", "registered"]


def test_reregistering_the_same_machine_keeps_the_id_and_revokes_the_old_token(coordinator):
    first = register(coordinator)
    again = register(coordinator)
    assert again["node_id"] == first["node_id"]
    assert again["node_token"] != first["node_token"]
    assert beat(coordinator, first).status_code == 401   # the replayed old token is refused
    assert beat(coordinator, again).status_code == 200
    other = register(coordinator, name="mini-2", machine_id="m-2")
    assert other["node_id"] != first["node_id"]
    with coordinator.client() as c:
        assert sorted(n.name for n in c.nodes()) == ["mini-1", "mini-2"]


def test_a_name_taken_by_another_machine_is_a_conflict(coordinator):
    register(coordinator, name="mini-1", machine_id="m-1")
    r = httpx.post(coordinator.url + "/nodes/register", headers={"Authorization": f"Bearer {coordinator.join_token}"},
                   json=registration("mini-1", "127.0.0.1", sample_facts("m-other")))
    assert r.status_code == 409 and "mini-1" in r.json()["detail"]


def test_drain_undrain_delete(coordinator):
    node = register(coordinator)
    nid = node["node_id"]
    with coordinator.client() as c:
        assert c.drain(nid).status == "draining"
        assert c.node(nid).status == "draining"
        assert c.undrain(nid).status == "ready"
        c.delete_node(nid)
        with pytest.raises(ApiError) as e:
            c.node(nid)
        assert e.value.status == 404
        assert c.nodes() == []
    # The deleted node's token is dead; its agent must register again (and gets the same id back).
    assert beat(coordinator, node).status_code == 401
    assert register(coordinator)["node_id"] != ""


@pytest.mark.parametrize("body, field", [
    ({"name": "x", "host": "127.0.0.1"}, "facts"),
    ({"name": "x", "host": "a;rm -rf /", "facts": sample_facts()}, "host"),
    ({"name": "../../etc", "host": "127.0.0.1", "facts": sample_facts()}, "name"),
    ({"name": "x", "host": "127.0.0.1", "facts": sample_facts(memory_gb="lots")}, "memory_gb"),
    ({"name": "x", "host": "127.0.0.1", "facts": sample_facts(device_type="tpu")}, "device_type"),
    ({"name": "x", "host": "127.0.0.1", "facts": sample_facts(), "extra": 1}, "extra"),
])
def test_malformed_registration_is_422_naming_the_field_and_stores_nothing(coordinator, body, field):
    r = httpx.post(coordinator.url + "/nodes/register", json=body,
                   headers={"Authorization": f"Bearer {coordinator.join_token}"})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert any(field in [str(p) for p in d["loc"]] for d in detail), detail
    with coordinator.client() as c:
        assert c.nodes() == []


def test_bad_json_oversized_bodies_and_bad_ids(coordinator):
    auth = {"Authorization": f"Bearer {coordinator.join_token}", "content-type": "application/json"}
    r = httpx.post(coordinator.url + "/nodes/register", content=b"{not json", headers=auth)
    assert r.status_code == 422 and "detail" in r.json()
    r = httpx.post(coordinator.url + "/nodes/register", content=b"x" * (2 << 20), headers=auth)
    assert r.status_code == 413
    admin = {"Authorization": f"Bearer {coordinator.admin_token}"}
    assert httpx.get(coordinator.url + "/nodes/n-0000000000", headers=admin).status_code == 404
    assert httpx.get(coordinator.url + "/nodes/..%2F..%2Fetc", headers=admin).status_code in (404, 422)
    assert httpx.post(coordinator.url + "/nodes/n-0000000000/drain", headers=admin).status_code == 404


def test_heartbeat_facts_update_and_validation(coordinator):
    node = register(coordinator)
    r = beat(coordinator, node, facts=sample_facts("m-1", chip="Apple M4 Pro", memory_gb=64))
    assert r.status_code == 200
    assert beat(coordinator, node, memory_available_gb=-1).status_code == 422
    with coordinator.client() as c:
        n = c.node(node["node_id"])
    assert (n.chip, n.memory_gb) == ("Apple M4 Pro", 64)


def test_database_is_sqlite_wal_with_a_schema_version_and_no_plain_tokens(coordinator):
    node = register(coordinator)
    db = sqlite3.connect(coordinator.home / "coordinator.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    from coordinator.store import SCHEMA_VERSION
    from tests.support.harness import node_key, sample_facts as facts

    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    dump = "\n".join(db.iterdump())
    assert node["node_token"] not in dump
    assert node_key("mini-1", facts("m-1")) not in dump  # the node key is a secret too: only its digest
    assert coordinator.admin_token not in dump and coordinator.join_token not in dump


def test_cluster_summary(coordinator):
    a = register(coordinator, name="a", machine_id="m-a", memory_gb=24, memory_available_gb=10)
    register(coordinator, name="b", machine_id="m-b", memory_gb=64, memory_available_gb=40)
    with coordinator.client() as c:
        c.drain(a["node_id"])
        s = c.cluster()
    assert s.nodes == 2
    assert s.nodes_by_status == {"ready": 1, "busy": 0, "draining": 1, "down": 0}
    assert (s.memory_gb, s.memory_available_gb) == (88.0, 50.0)


def test_a_plain_heartbeat_is_seen_at_once_and_reaches_the_database_within_a_second(coordinator):
    node = register(coordinator)
    time.sleep(0.3)
    before = time.time()
    assert beat(coordinator, node, memory_available_gb=7.5).status_code == 200
    with coordinator.client() as c:
        n = c.node(node["node_id"])
    # The API shows the beat before any flush: its time and the memory it brought.
    assert n.last_heartbeat.timestamp() >= before - 0.01 and n.facts.memory_available_gb == 7.5
    db = sqlite3.connect(coordinator.home / "coordinator.db")
    stored = lambda: db.execute("SELECT last_heartbeat, memory_available_gb FROM nodes WHERE id=?",  # noqa: E731
                                (node["node_id"],)).fetchone()
    wait_for(lambda: stored()[0] >= before - 0.01 and stored()[1] == 7.5, timeout=3, what="the beat in SQLite")
    # GET /nodes/{id} above flushed that beat itself (a waiting beat may carry an event), so it
    # proves nothing about the coordinator's own flush. Watch that alone, at its worst: a beat
    # seen in SQLite was flushed just now, and the next one, sent at once, waits a whole period.
    assert beat(coordinator, node, memory_available_gb=6.5).status_code == 200
    wait_for(lambda: stored()[1] == 6.5, timeout=3, every=0.01, what="a beat flushed by the coordinator")
    sent = time.monotonic()
    assert beat(coordinator, node, memory_available_gb=5.5).status_code == 200
    wait_for(lambda: stored()[1] == 5.5, timeout=5, every=0.01, what="the next beat in SQLite")
    took = time.monotonic() - sent
    # One period is 1 s; the 0.5 s over it is slack for a busy machine. A flush every 2 s
    # would take ~1.95 s here, whatever the phase, since the beat is sent right after a flush.
    assert took < 1.5, f"the beat took {took:.2f} s to reach SQLite"


def test_beats_noted_in_memory_flush_in_one_batch_and_never_move_time_back(tmp_path):
    from coordinator.store import Beat, NodeRow, Store

    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = Store(url)
    with store.write() as s:
        for i in range(3):
            s.add(NodeRow(id=f"n-00000000{i:02d}", name=f"n{i}", host="127.0.0.1", online=True,
                          last_heartbeat=100.0, memory_available_gb=1.0))
    store.note_heartbeat("n-0000000000", Beat(200.0, 5.0))
    store.note_heartbeat("n-0000000001", Beat(50.0, 9.0))    # older than what is stored: ignored
    store.note_heartbeat("n-0000000002", Beat(300.0, None))  # no memory sent: the stored one stays
    seen = {r.name: (r.last_heartbeat, r.memory_available_gb) for r in store.all_nodes()}
    assert seen == {"n0": (200.0, 5.0), "n1": (100.0, 1.0), "n2": (300.0, 1.0)}
    assert store.get_node("n-0000000000").last_heartbeat == 200.0
    generation = store.generation
    assert store.flush_heartbeats() == 3 and store.flush_heartbeats() == 0
    assert store.generation == generation  # beats do not invalidate cached job reads
    with store.write() as s:  # a write that changes nothing leaves cached reads valid too
        s.get(NodeRow, "n-0000000000")
    assert store.generation == generation
    with store.write() as s:
        row = s.get(NodeRow, "n-0000000000")
        row.drained = True
        s.add(row)
    assert store.generation == generation + 1
    store.close()
    again = Store(url)  # what a restarted coordinator reads from the file
    assert {r.name: (r.last_heartbeat, r.memory_available_gb) for r in again.all_nodes()} == seen
    again.close()
