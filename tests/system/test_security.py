"""Enrolment as an attacker would try it, against a real coordinator (over HTTPS where it matters)
and real agents: node takeover, claiming a declared name, a rogue node waiting for a job, forged
results, join tokens with limits, the CA pin, and an upgrade from a database without node keys."""

from __future__ import annotations

import http.server
import os
import sqlite3
import ssl
import subprocess
import sys
import threading
import time

import httpx
import pytest

from coordinator.store import SCHEMA_VERSION
from tests.support.harness import REPO, AgentProcess, CoordinatorProcess, node_key, registration, sample_facts, wait_for

FIXTURES = REPO / "tests" / "support" / "fixtures"


def hdr(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tls_coord(tmp_path):
    coord = CoordinatorProcess(tmp_path / "leader", tls=True).start()
    yield coord
    coord.stop()


def enrol(coord, name, facts, *, token=None, key=None, host="127.0.0.1"):
    body = registration(name, host, facts)
    if key is not None:
        body["node_key"] = key
    with coord.http() as h:
        return h.post("/nodes/register", headers=hdr(token or coord.join_token), json=body)


def create_token(coord, **body) -> dict:
    with coord.http() as h:
        r = h.post("/tokens", headers=hdr(coord.admin_token), json=body)
    assert r.status_code == 201, r.text
    return r.json()


def bearer_of(join_string: str) -> str:
    """What an agent sends for a pinned join string: `id:secret`."""
    _, _, token_id, secret = join_string.split(":", 3)
    return f"{token_id}:{secret}"


# ----------------------------------------------------------------------------- node identity


def test_a_join_token_cannot_take_over_an_enrolled_node(tls_coord):
    real = enrol(tls_coord, "mini-1", sample_facts("m-1"))
    assert real.status_code == 200
    node = real.json()
    # The attacker knows the name and the machine id (GET /nodes/{id} shows both) and holds the
    # cluster's join token, but not the node key the real agent made.
    stolen = enrol(tls_coord, "mini-1", sample_facts("m-1"), key="nk_" + "a" * 40, host="evil.example")
    assert stolen.status_code == 409, stolen.text
    assert "node key" in stolen.json()["detail"] and "jupiter nodes delete" in stolen.json()["detail"]
    assert "node_id" not in stolen.json() and "node_token" not in stolen.json()
    with tls_coord.http() as h:  # the real agent's token still works and the node did not move
        assert h.put(f"/nodes/{node['node_id']}/heartbeat", headers=hdr(node["node_token"]), json={}).status_code == 200
    with tls_coord.client() as c:
        assert c.node(node["node_id"]).host == "127.0.0.1"
    # Not with a fresh token either, bound or auto-approve: the key decides.
    tok = create_token(tls_coord, node="mini-1")
    again = enrol(tls_coord, "mini-1", sample_facts("m-1"), token=bearer_of(tok["token"]), key="nk_" + "b" * 40)
    assert again.status_code == 409
    # The real agent, showing its key, keeps its id; an admin delete frees the name for a new key.
    assert enrol(tls_coord, "mini-1", sample_facts("m-1")).json()["node_id"] == node["node_id"]
    with tls_coord.client() as c:
        c.delete_node(node["node_id"])
    fresh = enrol(tls_coord, "mini-1", sample_facts("m-9"), key="nk_" + "c" * 40)
    assert fresh.status_code == 200 and fresh.json()["node_id"] != node["node_id"]


def test_a_declared_name_is_not_claimed_with_an_unbound_token(tmp_path):
    config = tmp_path / "cluster.yaml"
    config.write_text("nodes:\n  - host: studio.local\n    name: studio\n    device_type: mac\n    role: trainer\n")
    coord = CoordinatorProcess(tmp_path / "leader", config=config, tls=True).start()
    try:
        anyone = create_token(coord, auto_approve=True)
        for name, host in (("studio", "127.0.0.1"), ("other-name", "studio.local")):
            r = enrol(coord, name, sample_facts("m-attacker"), token=bearer_of(anyone["token"]), host=host)
            assert r.status_code == 403, r.text
            assert "declared in cluster.yaml" in r.json()["detail"] and "--node" in r.json()["detail"]
        with coord.client() as c:
            [studio] = c.nodes()
            assert (studio.name, studio.status) == ("studio", "down")  # still unclaimed
        bound = create_token(coord, node="studio")
        r = enrol(coord, "studio", sample_facts("m-studio"), token=bearer_of(bound["token"]), host="studio.local")
        assert r.status_code == 200 and r.json()["admitted"] is True
        # A token bound to one name enrols no other.
        other = create_token(coord, node="studio")
        r = enrol(coord, "mini-7", sample_facts("m-7"), token=bearer_of(other["token"]))
        assert r.status_code == 403 and "bound to node 'studio'" in r.json()["detail"]
    finally:
        coord.stop()


# ----------------------------------------------------------------------------- admission


def test_a_rogue_node_waits_pending_gets_no_job_and_cannot_forge_its_result(tls_coord):
    tok = create_token(tls_coord)  # unbound, not auto-approve
    rogue = enrol(tls_coord, "aaa-rogue", sample_facts("m-rogue", memory_gb=1_000_000.0), token=bearer_of(tok["token"]))
    assert rogue.status_code == 200 and rogue.json()["admitted"] is False
    rogue = rogue.json()
    with tls_coord.client() as c:
        job = c.submit({"command": ["python", "-c", "print(1)"], "nodes": 1,
                        "env": {"API_KEY": "sk-do-not-leak-0123456789"}, "pending_timeout_s": 60})
        wait_for(lambda: "pending approval" in (c.job(job.id).pending_reason or ""), timeout=10,
                 what="the job to say why it waits")
        [n] = c.nodes()
        assert n.status == "pending" and not n.admitted
        assert any("jupiter nodes approve" in p for p in n.problems)
        assert c.cluster().nodes_by_status["pending"] == 1
    with tls_coord.http() as h:
        # The rogue asks for work: none, and nothing of the job's env reaches it.
        r = h.post(f"/nodes/{rogue['node_id']}/orders", headers=hdr(rogue["node_token"]), json={"wait_s": 1})
        assert r.status_code == 200 and r.json()["start"] == [] and "sk-do-not-leak" not in r.text
        r = h.put(f"/nodes/{rogue['node_id']}/heartbeat", headers=hdr(rogue["node_token"]), json={})
        assert r.json()["start"] == []
        # It reports the job succeeded with a loss of its choosing: nothing changes.
        forged = {"ranks": [{"job_id": job.id, "rank": 0, "state": "exited", "exit_code": 0}],
                  "output": [{"job_id": job.id, "rank": 0, "seq": 0,
                              "lines": ['JUPITER_PROGRESS {"step": 100, "loss": 0.0001}']}]}
        assert h.post(f"/nodes/{rogue['node_id']}/report", headers=hdr(rogue["node_token"]), json=forged).status_code == 200
    with tls_coord.client() as c:
        j = c.job(job.id)
        assert j.status == "pending" and j.progress == {} and j.loss_history == []
        # Approved, it is schedulable like any other node.
        out = c.approve(rogue["node_id"])
        assert out.status in ("ready", "busy") and out.admitted
        assert [e.kind for e in c.node(rogue["node_id"]).events][0] in ("approved", "back")


def test_join_tokens_are_made_listed_limited_and_revoked_live(tls_coord):
    once = create_token(tls_coord, uses=1, auto_approve=True, description="one node")
    assert once["token"].startswith(f"jupiter1:{tls_coord.ca_pin}:{once['id']}:")
    assert enrol(tls_coord, "t1", sample_facts("m-t1"), token=bearer_of(once["token"])).status_code == 200
    used = enrol(tls_coord, "t2", sample_facts("m-t2"), token=bearer_of(once["token"]))
    assert used.status_code == 401 and "used 1 time" in used.json()["detail"]

    short = create_token(tls_coord, ttl_s=1)
    time.sleep(1.2)
    r = enrol(tls_coord, "t3", sample_facts("m-t3"), token=bearer_of(short["token"]))
    assert r.status_code == 401 and "expired" in r.json()["detail"]

    revoked = create_token(tls_coord)
    with tls_coord.http() as h:
        assert h.delete(f"/tokens/{revoked['id']}", headers=hdr(tls_coord.admin_token)).status_code == 200
        listed = h.get("/tokens", headers=hdr(tls_coord.admin_token))
        # A join token may not list or make tokens.
        assert h.get("/tokens", headers=hdr(bearer_of(revoked["token"]))).status_code == 401
        assert h.post("/tokens", headers=hdr(tls_coord.join_token), json={}).status_code == 403
    r = enrol(tls_coord, "t4", sample_facts("m-t4"), token=bearer_of(revoked["token"]))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    by_id = {t["id"]: t for t in listed.json()}
    assert by_id[once["id"]]["status"] == "used up" and by_id[short["id"]]["status"] == "expired"
    assert by_id[revoked["id"]]["status"] == "revoked" and by_id[once["id"]]["description"] == "one node"
    for t, secret in ((once, once["token"]), (short, short["token"]), (revoked, revoked["token"])):
        assert secret.rsplit(":", 1)[1] not in listed.text and by_id[t["id"]]["token"] is None
    dump = "\n".join(sqlite3.connect(tls_coord.home / "coordinator.db").iterdump())
    assert once["token"].rsplit(":", 1)[1] not in dump  # only digests are stored


def test_token_and_nodes_commands_of_the_cli(tls_coord):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPITER_")}
    env.update(JUPITER_URL=tls_coord.url, JUPITER_TOKEN=tls_coord.admin_token, JUPITER_CA_SHA256=tls_coord.ca_pin,
               JUPITER_HOME=str(tls_coord.home.parent / "elsewhere"), COLUMNS="200")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "shared.cli", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=60)

    made = cli("token", "create", "--ttl", "2h", "--uses", "3")
    assert made.returncode == 0, made.stderr
    join = made.stdout.strip()
    assert join.startswith(f"jupiter1:{tls_coord.ca_pin}:") and "pending until" in made.stderr
    token_id = join.split(":")[2]
    listed = cli("token", "list")
    assert token_id in listed.stdout and "0/3" in listed.stdout and join.rsplit(":", 1)[1] not in listed.stdout
    assert enrol(tls_coord, "cli-node", sample_facts("m-cli"), token=bearer_of(join)).json()["admitted"] is False
    nodes = cli("nodes")
    assert "cli-node" in nodes.stdout and "pending" in nodes.stdout
    approved = cli("nodes", "approve", "cli-node")
    assert approved.returncode == 0 and "approved" in approved.stdout
    assert cli("token", "revoke", token_id).returncode == 0
    assert "revoked" in cli("token", "list").stdout
    assert cli("nodes", "delete", "cli-node").returncode == 0
    assert "cli-node" not in cli("nodes").stdout
    # A wrong pin: the CLI refuses before sending the admin token, naming both fingerprints.
    env["JUPITER_CA_SHA256"] = "ab" * 32
    bad = cli("nodes")
    assert bad.returncode == 1 and tls_coord.ca_pin in bad.stderr and "ab" * 32 in bad.stderr


# ----------------------------------------------------------------------------- TLS and the pin


def test_two_agents_enrol_over_https_with_only_the_url_and_the_join_string(tls_coord, agents, tmp_path):
    assert tls_coord.url.startswith("https://")
    join = tls_coord.join_string()
    assert join.startswith(f"jupiter1:{tls_coord.ca_pin}:cluster:")
    # Each agent has its own JUPITER_HOME: nothing of the leader's (its CA file) is within reach.
    a = agents(tls_coord, "tls-a")
    b = agents(tls_coord, "tls-b")
    with tls_coord.client() as c:
        wait_for(lambda: sorted(n.name for n in c.nodes() if n.status == "ready") == ["tls-a", "tls-b"],
                 timeout=30, what="both agents ready over HTTPS")
    for ag in (a, b):
        ca = (ag.state_dir / "ca.pem").read_bytes()
        from shared.tlspin import fingerprint

        assert fingerprint(ca) == tls_coord.ca_pin  # pinned, kept for every later connection
        assert (ag.state_dir / "node.key").stat().st_mode & 0o777 == 0o600
    # Plain HTTP is not what the coordinator speaks any more.
    with pytest.raises(httpx.HTTPError):
        httpx.get(tls_coord.url.replace("https://", "http://") + "/healthz", timeout=3)


class _Recorder(http.server.BaseHTTPRequestHandler):
    """An impostor coordinator: answers /ca.pem with its own CA and records every request."""

    seen: list[bytes] = []
    ca_pem: bytes = b""

    def _record(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.seen.append(self.requestline.encode() + b"\n" + bytes(self.headers) + body)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self._record()
        if self.path == "/ca.pem":
            self.send_response(200)
            self.send_header("content-length", str(len(self.ca_pem)))
            self.end_headers()
            self.wfile.write(self.ca_pem)
        else:
            self.send_error(404)

    do_POST = do_PUT = do_GET

    def log_message(self, *args):
        pass


def test_an_agent_given_a_wrong_pin_never_sends_the_secret(tls_coord, tmp_path):
    # The impostor has its own CA and a valid-looking certificate for 127.0.0.1.
    from coordinator.tls import ensure_server_tls

    fake = ensure_server_tls(tmp_path / "impostor", ["127.0.0.1", "localhost"])
    assert fake.pin != tls_coord.ca_pin
    _Recorder.seen, _Recorder.ca_pem = [], fake.anchor_pem
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(fake.certfile, fake.keyfile)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    join = tls_coord.join_string()  # the real cluster's string: it pins the real CA
    secret = join.rsplit(":", 1)[1]
    fake_coord = type("C", (), {"url": f"https://127.0.0.1:{server.server_address[1]}", "tls": True,
                                "join_string": lambda self: join, "join_token": None})()
    agent = AgentProcess(fake_coord, "victim", tmp_path / "agents" / "victim").start()
    try:
        wait_for(lambda: "not sending the secret" in agent.log(), timeout=20, what="the pin refusal in the log")
        time.sleep(2)  # it retries with backoff, still without the secret
    finally:
        agent.stop()
        server.shutdown()
    line = next(ln for ln in agent.log().splitlines() if "not sending the secret" in ln)
    assert fake.pin in line and tls_coord.ca_pin in line
    assert len(_Recorder.seen) >= 2  # it did retry
    assert all(req.startswith(b"GET /ca.pem ") for req in _Recorder.seen), _Recorder.seen
    everything = b"".join(_Recorder.seen)
    assert secret.encode() not in everything and b"authorization" not in everything.lower()
    assert not (tmp_path / "agents" / "victim" / "node.json").exists()


def test_plain_http_off_loopback_is_refused_and_https_is_the_default_there(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPITER_")}
    env.update(JUPITER_HOME=str(tmp_path / "h"), JUPITER_TOKEN="adm_" + "x" * 40, JUPITER_JOIN_TOKEN="join_" + "y" * 40)
    from tests.support.harness import free_port

    out = subprocess.run([sys.executable, "-m", "shared.cli", "coordinator", "--host", "0.0.0.0", "--no-tls",
                          "--port", str(free_port()), "--config", str(REPO / "tests" / "support" / "empty.yaml")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "refusing plain HTTP on 0.0.0.0" in out.stderr
    # Bound to every address, it serves HTTPS with a certificate for this machine's names.
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "shared.cli", "coordinator", "--host", "0.0.0.0",
                             "--port", str(port), "--config", str(REPO / "tests" / "support" / "empty.yaml")],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        ca = tmp_path / "h" / "tls" / "ca.pem"
        wait_for(ca.exists, timeout=30, what="the CA")
        from shared.tlspin import context_for

        ctx = context_for(ca.read_bytes())
        for name in ("127.0.0.1", "localhost"):
            wait_for(lambda: httpx.get(f"https://{name}:{port}/healthz", verify=ctx, timeout=2).status_code == 200,
                     timeout=30, what=f"https on {name}")
        assert (tmp_path / "h" / "tls" / "ca.key").stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "h" / "tls" / "server.key").stat().st_mode & 0o777 == 0o600
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_an_agent_refuses_plain_http_to_another_machine(tmp_path):
    # In-process and before any connection: nothing is sent anywhere.
    from agent.loop import Agent, AgentConfig
    from agent.state import SetupError

    ag = Agent(AgentConfig(coordinator="http://10.0.0.7:8470", name="n", host="127.0.0.1",
                           state_dir=tmp_path / "s", python=sys.executable, join_token="join_" + "z" * 40))
    with pytest.raises(SetupError, match="refusing plain HTTP"):
        ag._trust()


# ----------------------------------------------------------------------------- upgrades


def test_a_database_from_before_node_keys_opens_and_its_agent_gets_back_in(tmp_path, agents):
    home = tmp_path / "leader"
    home.mkdir()
    db = sqlite3.connect(home / "coordinator.db")
    db.executescript((FIXTURES / "db" / "v1.sql").read_text())
    db.close()
    coord = CoordinatorProcess(home).start()
    try:
        with coord.client() as c:
            [old] = c.nodes()
            assert (old.id, old.name, old.admitted) == ("n-ea81cce68a", "old-mini", True)
        assert sqlite3.connect(home / "coordinator.db").execute(
            "SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        # Without the node token the old node held, nobody can bind a key to it.
        r = enrol(coord, "old-mini", sample_facts("m-old"), key="nk_" + "q" * 40)
        assert r.status_code == 409
        # The agent enrolled back then: its state dir has node.json (no key yet).
        state = tmp_path / "agents" / "old-mini"
        state.mkdir(parents=True)
        (state / "node.json").write_text('{"coordinator": "%s", "node_id": "n-ea81cce68a", '
                                         '"node_token": "jnt_cvH-NwIhqKNPqpTxBt0FWB-LgkvRbHDGN_U0toHLt7o"}' % coord.url)
        agents(coord, "old-mini")
        with coord.client() as c:
            wait_for(lambda: "re-registered" in [e.kind for e in c.node("n-ea81cce68a").events], timeout=30,
                     what="the old agent registering again with its node token")
            assert c.node("n-ea81cce68a").status == "ready"
            assert [n.id for n in c.nodes()] == ["n-ea81cce68a"]
        key = (state / "node.key").read_text().strip()
        stored = sqlite3.connect(home / "coordinator.db").execute(
            "SELECT key_hash FROM nodes WHERE id='n-ea81cce68a'").fetchone()[0]
        import hashlib

        assert stored == hashlib.sha256(key.encode()).hexdigest()
        assert '"key_bound": true' in (state / "node.json").read_text()
    finally:
        coord.stop()


def test_node_keys_are_required_and_never_echoed(coordinator):
    body = registration("k1", "127.0.0.1", sample_facts("m-k1"))
    del body["node_key"]
    with coordinator.http() as h:
        r = h.post("/nodes/register", headers=hdr(coordinator.join_token), json=body)
        assert r.status_code == 422 and "node_key" in r.text
        r = h.post("/nodes/register", headers=hdr(coordinator.join_token),
                   json=dict(body, node_key="short"))
        assert r.status_code == 422
        ok = h.post("/nodes/register", headers=hdr(coordinator.join_token),
                    json=registration("k1", "127.0.0.1", sample_facts("m-k1")))
        assert ok.status_code == 200
        detail = h.get(f"/nodes/{ok.json()['node_id']}", headers=hdr(coordinator.admin_token)).text
    assert node_key("k1", sample_facts("m-k1")) not in detail


def test_facts_stored_by_an_older_version_are_made_plain_text_by_the_migration(tmp_path):
    db_path = tmp_path / "old.db"
    db = sqlite3.connect(db_path)
    db.executescript((FIXTURES / "db" / "v1.sql").read_text())
    import json as _json

    facts = _json.loads(db.execute("SELECT facts_json FROM nodes WHERE id='n-ea81cce68a'").fetchone()[0])
    facts["chip"] = "Apple M4\x1b]0;pwned\x07 Max\x1b[2J"
    db.execute("UPDATE nodes SET facts_json=? WHERE id='n-ea81cce68a'", (_json.dumps(facts),))
    db.commit()
    db.close()
    from coordinator.registry import Registry
    from coordinator.store import Store
    from shared.cluster_config import load_cluster_config

    store = Store(f"sqlite:///{db_path}")
    try:
        reg = Registry(store, load_cluster_config(None), heartbeat_interval_s=1, down_after_s=30)
        [view] = reg.list_views()  # before the migration cleaned them, these facts failed validation
        assert view.chip == "Apple M4 Max" and view.admitted
    finally:
        store.close()
