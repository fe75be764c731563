"""Bounded by construction: deadlines, caps and quotas, against a real coordinator.

Each test of a bound here fails on a coordinator without it: half-sent requests held open for
ever (slowloris), descriptors growing with every connection, new Prometheus series for every
invented method, a job's progress growing with every distinct key a rank prints, logs and node
events growing without end, unlimited registrations and token guesses. One more checks that the
leader's own loopback clients stay exempt from the rate limits; the last ones test the pieces
(token buckets, the log throttle, the tracker, log offsets, the server's connection accounting)
in-process.

The bounds are set low through the coordinator's hidden options (`--header-timeout 2`,
`--job-log-quota`, `--events-per-node`, ...) so each test takes seconds.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import ssl
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from coordinator.joblogs import JobLogs
from coordinator.ratelimit import Buckets, LogThrottle, client_key
from shared.progress_tracker import MAX_EXTRA_KEYS, ProgressTracker
from tests.support.harness import CoordinatorProcess, registration, sample_facts, wait_for

HEADER_TIMEOUT_S = 2.0
LOG_QUOTA = 64 * 1024
EVENTS_PER_NODE = 20
CMD = ["python", "-c", "print('x')"]


def hdr(token: str | None) -> dict:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def coord(tmp_path_factory):
    root = tmp_path_factory.mktemp("limits")
    c = CoordinatorProcess(root / "leader", heartbeat_interval=5.0, down_after=600.0,
                           extra_args=["--header-timeout", str(HEADER_TIMEOUT_S), "--job-log-quota", str(LOG_QUOTA),
                                       "--events-per-node", str(EVENTS_PER_NODE)]).start()
    yield c
    c.stop()


def register(c, name, machine_id, token=None, **kw):
    return httpx.post(c.url + "/nodes/register", headers=hdr(token or c.join_token),
                      json=registration(name, "127.0.0.1", sample_facts(machine_id)), **kw)


def log_lines(c) -> list[str]:
    return c.log_path.read_text(errors="replace").splitlines()


def fds_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _half_open(port: int, count: int, payload: bytes) -> list[socket.socket]:
    socks = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if payload:
            s.sendall(payload)
        socks.append(s)
    return socks


def _closed_by_server(socks: list[socket.socket], by: float) -> int:
    """How many of `socks` the server closed before the monotonic time `by`."""
    closed = 0
    for s in socks:
        s.settimeout(max(0.01, by - time.monotonic()))
        try:
            if s.recv(4096) == b"":
                closed += 1
        except (ConnectionResetError, BrokenPipeError):
            closed += 1
        except (TimeoutError, socket.timeout):
            pass
        finally:
            s.close()
    return closed


def _timed_healthz(url: str, **kw) -> float:
    t = time.monotonic()
    r = httpx.get(url + "/healthz", timeout=5, **kw)
    assert r.status_code == 200
    return time.monotonic() - t


# ----------------------------------------------------------------------------- connections


def test_half_sent_requests_are_cut_at_the_header_deadline_and_healthz_stays_up(coord):
    before = len(log_lines(coord))
    t0 = time.monotonic()
    socks = _half_open(coord.port, 200, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")   # headers never end
    socks += _half_open(coord.port, 200, b"GET /heal")                          # request line never ends
    opened = time.monotonic()
    for _ in range(3):
        assert _timed_healthz(coord.url) < 1.0  # served while 400 half-sent requests hang on
    # Each is closed within the deadline of its own start (+ a margin for a loaded machine).
    closed = _closed_by_server(socks, by=opened + HEADER_TIMEOUT_S + 3.0)
    assert closed == 400, f"only {closed} of 400 half-sent requests were closed within the deadline"
    assert time.monotonic() - t0 < HEADER_TIMEOUT_S + 6
    new = log_lines(coord)[before:]
    about = [ln for ln in new if "request head" in ln]
    assert 1 <= len(about) <= 2, new  # one line for 400 closes, never one each
    assert len(new) <= 5, new


def test_a_trickled_body_is_cut(coord):
    s = socket.create_connection(("127.0.0.1", coord.port), timeout=5)
    s.sendall(b"POST /nodes/register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Content-Length: 100000\r\n\r\n")
    t0 = time.monotonic()
    cut = None
    try:
        while time.monotonic() - t0 < HEADER_TIMEOUT_S + 5:
            s.sendall(b" " * 10)  # 20 bytes a second: alive, and far too slow
            time.sleep(0.5)
    except OSError:
        cut = time.monotonic() - t0
    finally:
        s.close()
    assert cut is not None and cut < HEADER_TIMEOUT_S + 3, cut
    assert _timed_healthz(coord.url) < 1.0


def test_connections_over_the_cap_evict_the_idle_and_fds_stay_bounded(tmp_path):
    cap = 40
    c = CoordinatorProcess(tmp_path / "leader", heartbeat_interval=5.0, down_after=600.0,
                           extra_args=["--max-connections", str(cap), "--header-timeout", "30"]).start()
    try:
        base = fds_of(c.proc.pid)
        socks = _half_open(c.port, 300, b"GET / HTTP/1.1\r\n")  # 300 stalled clients, deadline far off
        time.sleep(0.3)
        for _ in range(3):
            assert _timed_healthz(c.url) < 1.0  # a newcomer gets in: the oldest stalled one goes
        assert fds_of(c.proc.pid) <= base + cap + 5
        for s in socks:
            s.close()
        assert any("connection cap" in ln for ln in log_lines(c))
        assert sum("connection cap" in ln for ln in log_lines(c)) <= 2
    finally:
        c.stop()


def test_a_stalled_tls_handshake_is_cut_at_the_header_deadline(tmp_path):
    c = CoordinatorProcess(tmp_path / "leader", heartbeat_interval=5.0, down_after=600.0, tls=True,
                           extra_args=["--header-timeout", str(HEADER_TIMEOUT_S)]).start()
    try:
        socks = _half_open(c.port, 50, b"")                                 # no ClientHello at all
        socks += _half_open(c.port, 50, b"\x16\x03\x01\x02\x00\x01\x00")   # a ClientHello that never ends
        opened = time.monotonic()
        assert _timed_healthz(c.url, verify=c.verify()) < 1.0
        assert _closed_by_server(socks, by=opened + HEADER_TIMEOUT_S + 3.0) == 100
        # An honest TLS client sending its request slowly but within the deadline is served.
        raw = socket.create_connection(("127.0.0.1", c.port), timeout=5)
        tls = c.verify().wrap_socket(raw, server_hostname="127.0.0.1")
        tls.sendall(b"GET /healthz HTTP/1.1\r\n")
        time.sleep(HEADER_TIMEOUT_S / 2)
        tls.sendall(b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert tls.recv(4096).startswith(b"HTTP/1.1 200")
        tls.close()
    finally:
        c.stop()


# ----------------------------------------------------------------------------- metrics


def _request_series(c) -> set[tuple]:
    """Every (metric, labels) series of the request metrics; a histogram's buckets are one series."""
    text = httpx.get(c.url + "/metrics", headers=hdr(c.admin_token)).text
    out = set()
    for fam in text_string_to_metric_families(text):
        if fam.name.startswith("jupiter_http_request"):
            for sample in fam.samples:
                labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
                out.add((fam.name.removesuffix("_created"), labels))
    return out


def test_invented_methods_and_paths_add_no_metric_series(coord):
    with httpx.Client(base_url=coord.url, timeout=5) as h:
        h.request("JUNK0", "/junk/0")
        h.get("/no/such/path/0")
        before = _request_series(coord)
        for i in range(1, 51):
            h.request(f"JUNK{i}", f"/junk/{os.urandom(6).hex()}")
            h.get(f"/no/such/{os.urandom(6).hex()}")
            h.get(f"/jobs/j-{os.urandom(5).hex()}", headers=hdr(coord.admin_token))
    after = _request_series(coord)
    grown = after - before
    assert not [s for s in after if "JUNK" in str(s) or "/junk/" in str(s) or "/no/such" in str(s)], after
    # Only the /metrics scrape itself and GET /jobs/{job_id} may be new (a count and a latency each).
    assert {dict(labels).get("route") for _, labels in grown} <= {"/metrics", "/jobs/{job_id}"}, grown
    assert len(grown) <= 4, sorted(grown)


# ----------------------------------------------------------------------------- per-job quotas


def _placed_job(c, name):
    node = register(c, name, f"m-{name}").json()
    job = httpx.post(c.url + "/jobs", headers=hdr(c.admin_token),
                     json={"name": name, "command": CMD, "backend": "ring", "node_names": [name]}).json()
    wait_for(lambda: httpx.get(f"{c.url}/jobs/{job['id']}", headers=hdr(c.admin_token)).json()["status"]
             in ("starting", "running"), timeout=15, what="job placed")
    return node, job


def _report(c, node, job, seq, lines):
    r = httpx.post(f"{c.url}/nodes/{node['node_id']}/report", headers=hdr(node["node_token"]), timeout=30,
                   json={"output": [{"job_id": job["id"], "rank": 0, "attempt": 0, "seq": seq, "lines": lines}]})
    assert r.status_code == 200, r.text
    return seq + len(lines)


def test_a_progress_key_flood_leaves_progress_bounded(coord):
    node, job = _placed_job(coord, "keyflood")
    seq = 0
    for batch in range(5):  # 3,750 distinct keys, 15 per line (a line is at most 8 KiB)
        lines = []
        for i in range(50):
            keys = {f"k{batch}_{i}_{j}_{'x' * 40}": "v" * 300 for j in range(15)}
            lines.append("JUPITER_PROGRESS " + json.dumps({"step": batch * 50 + i, "loss": 1.0, **keys}))
        seq = _report(coord, node, job, seq, lines)
    seq = _report(coord, node, job, seq, ['JUPITER_PROGRESS {"step": 999, "loss": 0.5, "lr": 0.001}'])
    j = httpx.get(f"{coord.url}/jobs/{job['id']}", headers=hdr(coord.admin_token)).json()
    progress = j["progress"]
    assert progress["step"] == 999 and progress["loss"] == 0.5  # the known keys are always kept
    assert len(progress) <= MAX_EXTRA_KEYS + 7, len(progress)
    assert all(len(k) <= 64 for k in progress) and all(len(str(v)) <= 256 for v in progress.values())
    listing = httpx.get(f"{coord.url}/jobs", headers=hdr(coord.admin_token))
    assert len(listing.content) < 64 * 1024, len(listing.content)
    assert sum(job["id"] in ln and "distinct keys" in ln for ln in log_lines(coord)) == 1
    httpx.post(f"{coord.url}/jobs/{job['id']}/cancel", headers=hdr(coord.admin_token))


def test_a_job_log_over_its_quota_keeps_the_tail_and_offsets_still_work(coord):
    node, job = _placed_job(coord, "logflood")
    url, h = f"{coord.url}/jobs/{job['id']}/logs", hdr(coord.admin_token)
    head = httpx.get(url, headers=h)
    follower = int(head.headers["X-Next-Offset"])  # a `jupiter logs -f` that keeps up
    seq, written = 0, []
    for batch in range(40):  # 40 x 100 lines of ~110 bytes: about 7 x the quota
        lines = [f"line {batch * 100 + i:05d} " + "y" * 100 for i in range(100)]
        seq = _report(coord, node, job, seq, lines)
        written += lines
        r = httpx.get(url, headers=h, params={"offset": follower})
        assert r.status_code == 200
        follower = int(r.headers["X-Next-Offset"])
        assert "[jupiter] earlier output" not in r.text  # it kept up: it missed nothing, no notice
        assert r.text.endswith(f"[0] {lines[-1]}\n")
    log_file = coord.home / "jobs" / f"{job['id']}.log"
    assert log_file.stat().st_size <= LOG_QUOTA
    # From the start (or any offset in the dropped part): the notice, then the newest lines.
    for offset in (0, 1000):
        r = httpx.get(url, headers=h, params={"offset": offset})
        assert r.status_code == 200
        first, *rest = r.text.splitlines()
        m = re.fullmatch(r"\[jupiter\] earlier output \((\d+) bytes\) dropped: .*", first)
        assert m, first
        assert rest[-1] == f"[0] {written[-1]}" and rest[0].startswith("[0] line ")
        assert int(r.headers["X-Next-Offset"]) == follower  # the same end a follower reached
        assert int(m.group(1)) + len("\n".join(rest).encode()) + 1 == follower
    assert sum(job["id"] in ln and "reached its quota" in ln for ln in log_lines(coord)) == 1
    httpx.post(f"{coord.url}/jobs/{job['id']}/cancel", headers=h)


def test_job_log_offsets_across_a_cut(tmp_path):
    logs = JobLogs(tmp_path, quota_bytes=4096)
    logs.append("j", 0, [f"a{i:03d}" + "x" * 90 for i in range(30)])  # ~3 KiB
    data, mid = logs.read("j", 0)
    logs.append("j", 0, [f"b{i:03d}" + "x" * 90 for i in range(30)])  # over: the oldest go
    assert (tmp_path / "j.log").stat().st_size <= 4096
    rest, end = logs.read("j", mid)
    assert rest.startswith(b"[0] b000") or rest.startswith(b"[jupiter] earlier output")
    assert end == logs.size("j") == len(data) + 30 * len(b"[0] b000" + b"x" * 90 + b"\n")
    tail, end2 = logs.read("j", end)
    assert tail == b"" and end2 == end
    whole, end3 = logs.read("j", 0)
    assert whole.startswith(b"[jupiter] earlier output (") and whole.endswith(b"[0] b029" + b"x" * 90 + b"\n")
    assert end3 == end


def test_node_events_are_capped_per_node(coord):
    node = register(coord, "flappy", "m-flappy").json()
    h = hdr(coord.admin_token)
    with httpx.Client(base_url=coord.url, headers=h, timeout=10) as c:
        for i in range(40):  # 80 events
            assert c.post(f"/nodes/{node['node_id']}/drain").status_code == 200
            assert c.post(f"/nodes/{node['node_id']}/undrain").status_code == 200
        events = c.get(f"/nodes/{node['node_id']}").json()["events"]
    assert events[0]["kind"] == "undrained"  # the newest are the ones kept
    db = sqlite3.connect(f"file:{coord.home / 'coordinator.db'}?mode=ro", uri=True)
    try:
        (stored,) = db.execute("SELECT COUNT(*) FROM events WHERE node_id = ?", (node["node_id"],)).fetchone()
    finally:
        db.close()
    assert stored <= EVENTS_PER_NODE + 19, stored  # pruned every 20th event


# ----------------------------------------------------------------------------- rate limits


def test_registrations_are_rate_limited_with_retry_after(tmp_path):
    c = CoordinatorProcess(tmp_path / "leader", heartbeat_interval=5.0, down_after=600.0,
                           extra_args=["--register-burst", "5", "--limit-loopback"]).start()
    try:
        codes = [register(c, f"r{i}", f"m-r{i}").status_code for i in range(8)]
        assert codes[:5] == [200] * 5 and codes[5:] == [429] * 3, codes
        r = register(c, "r9", "m-r9")
        assert r.status_code == 429 and r.json()["detail"] and int(r.headers["Retry-After"]) >= 1
        # A request without a valid join token is refused as before and uses up nobody's allowance.
        assert register(c, "r10", "m-r10", token="wrong").status_code == 401
    finally:
        c.stop()


def test_loopback_clients_are_not_limited_by_default(coord):
    """The leader's own clients (its agent, tests, benchmarks) are exempt unless --limit-loopback."""
    codes = {register(coord, f"lb{i}", f"m-lb{i}").status_code for i in range(30)}
    assert codes == {200}
    codes = {httpx.get(coord.url + "/nodes", headers=hdr(f"guess-{i}")).status_code for i in range(30)}
    assert codes == {401}


def test_wrong_tokens_are_limited_per_address(tmp_path):
    c = CoordinatorProcess(tmp_path / "leader", heartbeat_interval=5.0, down_after=600.0,
                           extra_args=["--auth-failure-burst", "5", "--limit-loopback"]).start()
    try:
        with httpx.Client(base_url=c.url, timeout=5) as h:
            codes = [h.get("/nodes", headers=hdr(f"guess-{i}")).status_code for i in range(7)]
            assert codes[:5] == [401] * 5 and codes[5:] == [429] * 2, codes
            # The address is locked out: even the right token is not looked at, until Retry-After.
            r = h.get("/nodes", headers=hdr(c.admin_token))
            assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
            # A missing token is not a guess and is answered as before.
            assert h.get("/nodes").status_code in (401, 429)
        # Another address (127.0.0.2 is loopback too, on Linux) is not affected.
        try:
            other = httpx.Client(base_url=c.url, timeout=5, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
            r = other.get("/nodes", headers=hdr(c.admin_token))
        except httpx.ConnectError:
            pytest.skip("no second loopback address here (127.0.0.2)")
        assert r.status_code == 200
        other.close()
        time.sleep(6.5)  # one more try every 6 s
        with httpx.Client(base_url=c.url, timeout=5) as h:
            assert h.get("/nodes", headers=hdr(c.admin_token)).status_code == 200
        assert sum("wrong tokens" in ln for ln in log_lines(c)) == 1
    finally:
        c.stop()


# ----------------------------------------------------------------------------- pure units


def test_buckets_refill_and_report_the_wait():
    now = [0.0]
    b = Buckets(3, 60, clock=lambda: now[0])
    assert [b.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take("a") == pytest.approx(1.0)
    assert b.take("b") == 0.0  # another key has its own bucket
    now[0] += 1.0
    assert b.take("a") == 0.0 and b.take("a") > 0
    assert b.charge("c") == 0.0 and b.charge("c") == 0.0 and b.charge("c") == pytest.approx(1.0)
    assert b.wait("c") == pytest.approx(1.0)
    small = Buckets(1, 60, clock=lambda: now[0], max_keys=10)
    for i in range(100):
        small.take(f"k{i}")
    assert len(small) == 10


def test_ipv6_clients_are_limited_per_64():
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert client_key("::ffff:10.0.0.1") == "10.0.0.1"
    assert client_key(None) == "unknown"


def test_log_throttle_says_how_many_in_one_line(caplog):
    now = [0.0]
    import logging

    t = LogThrottle(logging.getLogger("t"), 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t"):
        for _ in range(1000):
            t.hit("x", "closed something")
        now[0] = 11.0
        t.flush()
    assert len(caplog.records) == 2
    assert "999 in the last 11 s" in caplog.records[1].getMessage()


def test_progress_tracker_keeps_the_first_keys():
    t = ProgressTracker()
    for i in range(1000):
        t.feed(0, {"step": i, f"key{i}": i})
    assert len(t.latest) == MAX_EXTRA_KEYS + 1 and "key0" in t.latest and "key999" not in t.latest
    restored = ProgressTracker.from_dict(json.loads(json.dumps(t.to_dict())))
    assert restored.latest == t.latest


# ----------------------------------------------------------------------------- the server in-process


async def _ok_app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b"x" * (32 << 20) if scope["path"] == "/big" else b"ok"
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _InProcessServer:
    """httpserver's uvicorn in a thread of the test process, so its accounting can be looked at."""

    def __init__(self, **kw):
        import threading

        import uvicorn

        from coordinator import httpserver
        from tests.support.harness import free_port

        self.port = free_port()
        self.config, self.shared = httpserver.make_config(_ok_app, host="127.0.0.1", port=self.port,
                                                          lifespan="off", **kw)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=10, what="server up")
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


def _self_signed(folder):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return str(folder / "cert.pem"), str(folder / "key.pem")


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_every_way_a_connection_ends_gives_its_slot_back(tmp_path, tls):
    """However a connection ends (served, closed, reset, stalled, evicted, a TLS handshake cut
    short), the server stops counting it, so the cap never fills with ghosts."""
    ssl_kw = dict(zip(("ssl_certfile", "ssl_keyfile"), _self_signed(tmp_path))) if tls else {}
    with _InProcessServer(header_timeout_s=2.0, max_connections=8, **ssl_kw) as srv:
        port, shared = srv.port, srv.shared
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        verify = ssl.create_default_context(cafile=ssl_kw["ssl_certfile"]) if tls else True
        with httpx.Client(verify=verify, timeout=5) as h:
            assert [h.get(url + "/").text for _ in range(3)] == ["ok"] * 3  # kept alive, then closed
        for how in ("fin", "rst", "partial-fin", "partial-rst"):
            for _ in range(5):
                s = socket.create_connection(("127.0.0.1", port))
                if how.startswith("partial"):
                    s.sendall(b"\x16\x03\x01\x02\x00\x01\x00" if tls else b"GET / HT")
                if how.endswith("rst"):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                time.sleep(0.01)
                s.close()
        # Given back at once, not at the head deadline (2 s).
        wait_for(lambda: len(shared.open) == 0, timeout=1.0, what=f"slots back ({len(shared.open)} held)")
        stalled = _half_open(port, 20, b"")  # over the cap of 8: the oldest are evicted
        with httpx.Client(verify=verify, timeout=5) as h:
            assert h.get(url + "/").text == "ok"
        wait_for(lambda: len(shared.open) == 0 and not shared.waiting, timeout=5,
                 what=f"every slot back (open {len(shared.open)}, waiting {len(shared.waiting)})")
        assert shared.counts.get("evict", 0) >= 12 and shared.counts.get("head", 0) >= 1
        for s in stalled:
            s.close()


def test_a_client_that_never_reads_its_answer_is_cut():
    """A slow-read attack: ask for a large answer and read none of it."""
    with _InProcessServer(write_timeout_s=1.0) as srv:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", srv.port))
        s.sendall(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        wait_for(lambda: srv.shared.counts.get("write", 0) == 1 and not srv.shared.open, timeout=5,
                 what="the unread connection cut")
        s.close()
