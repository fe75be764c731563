"""GET /metrics parses with the Prometheus client's own parser and says what a person would check."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.harness import sample_facts, registration


def scrape(coord) -> dict:
    r = httpx.get(coord.url + "/metrics", headers={"Authorization": f"Bearer {coord.admin_token}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_parse_and_count_nodes_jobs_and_requests(coordinator):
    h = {"Authorization": f"Bearer {coordinator.join_token}"}
    node = httpx.post(coordinator.url + "/nodes/register", headers=h,
                      json=registration("m1", "127.0.0.1", sample_facts("id1"))).json()
    httpx.put(f"{coordinator.url}/nodes/{node['node_id']}/heartbeat", json={},
              headers={"Authorization": f"Bearer {node['node_token']}"})
    admin = {"Authorization": f"Bearer {coordinator.admin_token}"}
    httpx.post(coordinator.url + "/jobs", headers=admin, json={"command": ["python", "-c", "1"], "nodes": 5})
    httpx.get(coordinator.url + "/nodes", headers=admin)
    m = scrape(coordinator)
    assert m[("jupiter_nodes", (("status", "ready"),))] == 1
    assert m[("jupiter_nodes", (("status", "down"),))] == 0
    assert m[("jupiter_jobs", (("status", "pending"),))] == 1
    assert 0 <= m[("jupiter_node_heartbeat_age_seconds", (("node", "m1"),))] < 30
    key = ("jupiter_http_requests_total", (("method", "GET"), ("route", "/nodes"), ("status", "200")))
    assert m[key] >= 1
    beat = ("jupiter_http_requests_total", (("method", "PUT"), ("route", "/nodes/{node_id}/heartbeat"), ("status", "200")))
    assert m[beat] == 1  # the route template, not one label per node id
    assert m[("jupiter_http_request_duration_seconds_count", (("method", "GET"), ("route", "/nodes")))] >= 1
    assert httpx.get(coordinator.url + "/metrics").status_code == 401
    assert httpx.get(coordinator.url + "/metrics", headers=h).status_code == 403
