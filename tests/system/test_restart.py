"""SIGKILL the coordinator and start it again on the same database: nothing is lost."""

from __future__ import annotations

import httpx

from tests.support.harness import CoordinatorProcess, sample_facts, wait_for, registration


def test_sigkill_and_restart_loses_no_node_event_or_token(tmp_path):
    home = tmp_path / "leader"
    coord = CoordinatorProcess(home, down_after=3.0).start()
    try:
        tokens = {}
        for i in range(3):
            r = httpx.post(coord.url + "/nodes/register", headers={"Authorization": f"Bearer {coord.join_token}"},
                           json=registration(f"n{i}", "127.0.0.1", sample_facts(f"m{i}")))
            tokens[r.json()["node_id"]] = r.json()["node_token"]
        with coord.client() as c:
            c.drain(next(iter(tokens)))
            before = {n.id: (n.name, n.status) for n in c.nodes()}
            events_before = {nid: [e.kind for e in c.node(nid).events] for nid in tokens}
        coord.kill()  # SIGKILL: no shutdown hooks run

        again = CoordinatorProcess(home, down_after=3.0, port=coord.port)
        again.admin_token, again.join_token = coord.admin_token, coord.join_token
        again.start()
        try:
            with again.client() as c:
                after = {n.id: (n.name, n.status) for n in c.nodes()}
                assert after == before  # within the restart window nobody is marked down
                for nid, kinds in events_before.items():
                    assert [e.kind for e in c.node(nid).events] == kinds
            # Node tokens issued before the crash still work.
            for nid, tok in tokens.items():
                r = httpx.put(f"{again.url}/nodes/{nid}/heartbeat", headers={"Authorization": f"Bearer {tok}"}, json={})
                assert r.status_code == 200
        finally:
            again.stop()
    finally:
        coord.stop()


def test_after_restart_silent_nodes_get_one_grace_then_go_down(tmp_path):
    home = tmp_path / "leader"
    coord = CoordinatorProcess(home, down_after=2.0).start()
    r = httpx.post(coord.url + "/nodes/register", headers={"Authorization": f"Bearer {coord.join_token}"},
                   json=registration("n", "127.0.0.1", sample_facts("m")))
    nid = r.json()["node_id"]
    coord.kill()
    again = CoordinatorProcess(home, down_after=2.0, port=coord.port)
    again.admin_token, again.join_token = coord.admin_token, coord.join_token
    again.start()
    try:
        with again.client() as c:
            assert c.node(nid).status == "ready"
            wait_for(lambda: c.node(nid).status == "down", timeout=8, what="down after the grace")
    finally:
        again.stop()
