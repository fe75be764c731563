"""Every route refuses a missing, wrong or wrong-kind token (docs/api.md#authentication)."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from tests.support.harness import REPO, free_port, sample_facts, registration

ADMIN_ROUTES = [
    ("GET", "/nodes"), ("GET", "/nodes/{id}"), ("POST", "/nodes/{id}/drain"), ("POST", "/nodes/{id}/undrain"),
    ("DELETE", "/nodes/{id}"), ("GET", "/cluster"),
]


@pytest.fixture
def nodes(coordinator):
    out = []
    for i in (1, 2):
        r = httpx.post(coordinator.url + "/nodes/register", headers={"Authorization": f"Bearer {coordinator.join_token}"},
                       json=registration(f"n{i}", "127.0.0.1", sample_facts(f"m{i}")))
        out.append(r.json())
    return out


def call(coord, method, path, token, node_id, json=None):
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.request(method, coord.url + path.format(id=node_id), headers=headers, json=json)


@pytest.mark.parametrize("method, path", ADMIN_ROUTES)
def test_admin_routes_refuse_everything_but_the_admin_token(coordinator, nodes, method, path):
    nid = nodes[0]["node_id"]
    assert call(coordinator, method, path, None, nid).status_code == 401
    assert call(coordinator, method, path, "not-a-token", nid).status_code == 401
    assert call(coordinator, method, path, coordinator.join_token, nid).status_code == 403
    assert call(coordinator, method, path, nodes[0]["node_token"], nid).status_code == 403
    assert call(coordinator, method, path, coordinator.admin_token, nid).status_code in (200, 204)


def test_heartbeat_needs_that_nodes_own_token(coordinator, nodes):
    a, b = nodes
    path = "/nodes/{id}/heartbeat"
    assert call(coordinator, "PUT", path, None, a["node_id"], {}).status_code == 401
    assert call(coordinator, "PUT", path, coordinator.join_token, a["node_id"], {}).status_code == 403
    assert call(coordinator, "PUT", path, b["node_token"], a["node_id"], {}).status_code == 403
    assert call(coordinator, "PUT", path, a["node_token"], a["node_id"], {}).status_code == 200


def test_register_needs_the_join_token(coordinator, nodes):
    body = registration("n3", "127.0.0.1", sample_facts("m3"))
    assert call(coordinator, "POST", "/nodes/register", None, "", body).status_code == 401
    assert call(coordinator, "POST", "/nodes/register", nodes[0]["node_token"], "", body).status_code == 403
    assert call(coordinator, "POST", "/nodes/register", coordinator.join_token, "", body).status_code == 200


def test_open_routes(coordinator):
    assert httpx.get(coordinator.url + "/healthz").json()["status"] == "ok"
    spec = httpx.get(coordinator.url + "/openapi.json").json()
    assert "/nodes/register" in spec["paths"]
    # The wire models document their fields with examples.
    assert spec["components"]["schemas"]["NodeFacts"]["properties"]["chip"]["examples"] == ["Apple M4 Pro"]
    assert httpx.get(coordinator.url + "/docs").status_code == 200


def test_generated_tokens_are_0600_and_found_by_the_cli(tmp_path):
    home = tmp_path / "home"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPITER_")}
    env["JUPITER_HOME"] = str(home)
    proc = subprocess.Popen([sys.executable, "-m", "shared.cli", "coordinator", "--port", str(port),
                             "--config", str(REPO / "tests" / "support" / "empty.yaml")], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        from tests.support.harness import wait_for

        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200, timeout=20)
        for name in ("admin.token", "join.token"):
            assert (home / name).stat().st_mode & 0o777 == 0o600
        out = subprocess.run([sys.executable, "-m", "shared.cli", "nodes", "--json"], cwd=REPO,
                             env=dict(env, JUPITER_URL=f"http://127.0.0.1:{port}"), capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "[]"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_refuses_a_non_loopback_bind_without_tokens(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPITER_")}
    env["JUPITER_HOME"] = str(tmp_path / "fresh")
    out = subprocess.run([sys.executable, "-m", "shared.cli", "coordinator", "--host", "0.0.0.0",
                          "--port", str(free_port())], cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "refusing to listen on 0.0.0.0 without tokens" in out.stderr
    assert not (tmp_path / "fresh" / "admin.token").exists()


def test_every_request_body_in_the_openapi_page_has_an_example(coordinator):
    spec = httpx.get(coordinator.url + "/openapi.json").json()
    schemas = spec["components"]["schemas"]
    bodies = set()
    for path in spec["paths"].values():
        for op in path.values():
            ref = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
            if ref:
                bodies.add(ref.rsplit("/", 1)[-1])
    assert {"RegisterRequest", "HeartbeatRequest", "JobSpec"} <= bodies
    for name in bodies:
        s = schemas[name]
        has = bool(s.get("examples")) or all(
            p.get("examples") or p.get("description") or "$ref" in p or p.get("default") is not None
            for p in s["properties"].values())
        assert has, f"{name} has no example"
    job_example = schemas["JobSpec"]["examples"][0]
    from shared.schemas import JobSpec

    JobSpec.model_validate(job_example)  # the documented example is itself valid
