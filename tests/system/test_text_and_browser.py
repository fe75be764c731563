"""Text from nodes stays plain text, browsers cannot be turned against the coordinator, and
secrets stay out of argv and out of files others can read.

- Terminal injection: facts holding control characters are refused (422 naming the field), the
  agent's own collectors strip them, and every string a node reported is shown as literal text
  by `jupiter nodes`, `jobs`, `check`, `submit` and `start` (no markup, no escape sequences).
- Browsers: a Host header the coordinator does not serve is refused (DNS rebinding), the docs
  pages carry a Content-Security-Policy and may not be framed, and a `#token=` link never silently
  replaces the dashboard's stored token.
- Secrets: write_secret never follows a leftover or planted temporary file, short tokens in the
  environment are refused at start-up, and `jupiter agent install` takes no token in argv.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import socket
import stat
import subprocess
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from rich.console import Console

from shared.text import plain
from tests.support.harness import PY, REPO, CoordinatorProcess, registration, sample_facts

HOSTILE = "[link=https://evil.example/]Apple M4 Max[/link]"  # printable: valid, but must not become markup
ESCAPES = ["\x1b]0;pwned\x07", "\x1b[2J", "\x1b]8;;https://evil.example\x1b\\", "\x9b2J", "\u202e", "\x07", "\x00"]
# What must never reach a terminal from a node: OSC (title, hyperlink), screen clear, 8-bit CSI.
FORBIDDEN = ("\x1b]", "\x1b[2J", "\x9b", "\x07", "\u202e")


def no_terminal_control(text: str) -> None:
    for seq in FORBIDDEN:
        assert seq not in text, (seq, text)


def strip_sgr(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


# --------------------------------------------------------------------------- the sanitizer


def test_plain_removes_every_escape_sequence_and_control_character():
    text = "".join(ESCAPES) + HOSTILE + "\x1b[31m!\x1b[0m\ttab\nline"
    out = plain(text)
    assert out == HOSTILE + "! tab line"
    assert plain(text, multiline=True) == HOSTILE + "!\ttab\nline"
    assert plain("\x1b[31mred\x1b[0m\x1b]0;t\x07", keep_colour=True) == "\x1b[31mred\x1b[0m"
    assert plain("an unterminated title \x1b]0;pwned") == "an unterminated title "
    assert plain("Apple M4 Pro") == "Apple M4 Pro"


# --------------------------------------------------------------------------- facts refuse control characters


def _facts_with(path: tuple, value: str) -> dict:
    facts = sample_facts("m-hostile")
    facts["gpus"] = [{"name": "NVIDIA RTX A6000", "memory_gb": 48.0}]
    facts["interfaces"] = [{"name": "en0", "up": True, "ips": ["192.168.1.20"]}]
    facts["problems"] = ["fine"]
    facts["thunderbolt"]["ports"][0]["peer_name"] = "Mac Studio"
    target = facts
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return facts


NODE_STRINGS = [
    ("machine_id",), ("hostname",), ("os_version",), ("chip",), ("python_version",), ("python_executable",),
    ("mlx_version",), ("agent_version",), ("mpi", "version"), ("thunderbolt", "bridge", "interface"),
    ("thunderbolt", "bridge", "ips", 0), ("thunderbolt", "bridge", "members", 0),
    ("thunderbolt", "ports", 0, "interface"), ("thunderbolt", "ports", 0, "peer_uuid"),
    ("thunderbolt", "ports", 0, "peer_name"), ("thunderbolt", "domain_uuids", 0), ("interfaces", 0, "name"),
    ("interfaces", 0, "ips", 0), ("gpus", 0, "name"), ("problems", 0),
]


@pytest.mark.parametrize("path", NODE_STRINGS, ids=lambda p: ".".join(map(str, p)))
@pytest.mark.parametrize("escape", ESCAPES, ids=lambda e: f"U+{ord(e[0]):04X}")
def test_every_fact_string_refuses_control_characters(path, escape):
    from shared.schemas import NodeFacts

    with pytest.raises(ValidationError) as info:
        NodeFacts.model_validate(_facts_with(path, "Apple" + escape + "M4"))
    [error] = info.value.errors()
    assert tuple(error["loc"]) == path and "control character" in error["msg"], error


def test_rank_reason_refuses_control_characters():
    from shared.schemas import RankState

    with pytest.raises(ValidationError) as info:
        RankState.model_validate({"job_id": "j-1", "rank": 0, "state": "exited", "reason": "oom\x1b]0;pwned\x07"})
    assert info.value.errors()[0]["loc"] == ("reason",)


def test_the_agents_own_collectors_strip_control_characters(tmp_path):
    """A hostname or a tool's output holding escape sequences must not stop the node registering."""
    from agent.facts import collect
    from shared.schemas import NodeFacts

    (tmp_path / "hostname.txt").write_text("mini\x1b]0;pwned\x07-1\nsecond line\n")
    (tmp_path / "cpuinfo.txt").write_text("model name\t: Evil\x1b[2J CPU\x9b5m @ 3GHz\u202e\n")
    (tmp_path / "os-release.txt").write_text('PRETTY_NAME="Debian\x1b]8;;https://evil.example\x1b\\ 12"\n')
    (tmp_path / "system.json").write_text(json.dumps({
        "platform": "Linux", "cpu_count": 4, "memory": {"total_bytes": 8 << 30, "available_bytes": 4 << 30},
        "interfaces": [{"name": "eth0\x1b[2J", "up": True, "speed_mbps": 1000, "ips": ["10.0.0.2"]}],
        "commands": {"hostname": {"file": "hostname.txt"}},
        "files": {"/proc/cpuinfo": "cpuinfo.txt", "/etc/os-release": "os-release.txt",
                  "/etc/machine-id": "hostname.txt"},
    }))
    from agent.system import RecordedSystem

    facts = collect(RecordedSystem(tmp_path), python="/nonexistent/python", mlx_timeout=1)
    dumped = json.dumps(facts.model_dump(mode="json"), ensure_ascii=False)
    no_terminal_control(dumped)
    assert "\x1b" not in dumped
    assert facts.hostname == "mini-1"
    assert facts.chip.startswith("Evil CPU") and facts.interfaces[0].name == "eth0"
    NodeFacts.model_validate(facts.model_dump(mode="json"))  # what the coordinator will check


# --------------------------------------------------------------------------- over HTTP, and `jupiter nodes`


def test_register_with_control_characters_is_a_422_naming_the_field(coordinator):
    body = registration("mini-1", "127.0.0.1", sample_facts("m-1", chip=HOSTILE + "\x1b]0;pwned\x07\x1b[2J"))
    r = httpx.post(coordinator.url + "/nodes/register", json=body,
                   headers={"Authorization": f"Bearer {coordinator.join_token}"})
    assert r.status_code == 422, r.text
    [error] = r.json()["detail"]
    assert error["loc"] == ["body", "facts", "chip"] and "control character U+001B" in error["msg"], error
    assert "pwned" not in r.text  # the input is not echoed back either


def _jupiter(coord: CoordinatorProcess, *args: str) -> subprocess.CompletedProcess:
    """The real CLI as a user runs it, on a terminal that would obey escape sequences."""
    env = dict(os.environ, JUPITER_URL=coord.url, JUPITER_TOKEN=coord.admin_token, COLUMNS="200",
               TERM="xterm-256color", FORCE_COLOR="1", TTY_COMPATIBLE="1")
    env.pop("NO_COLOR", None)
    return subprocess.run([PY, "-m", "shared.cli", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)


def test_jupiter_nodes_shows_a_nodes_markup_as_literal_text(coordinator):
    facts = sample_facts("m-1", chip=HOSTILE, mpi={"implementation": "openmpi", "version": "[blink]5[/blink]"})
    r = httpx.post(coordinator.url + "/nodes/register", json=registration("mini-1", "127.0.0.1", facts),
                   headers={"Authorization": f"Bearer {coordinator.join_token}"})
    assert r.status_code == 200, r.text
    with coordinator.client() as c:
        assert c.nodes()[0].chip == HOSTILE  # stored and served as it came: it is printable text
    out = _jupiter(coordinator, "nodes")
    assert out.returncode == 0, out.stderr
    assert "\x1b[" in out.stdout  # the terminal is forced: colours are on, so markup would have been too
    no_terminal_control(out.stdout)
    shown = strip_sgr(out.stdout)
    assert HOSTILE in shown and "[blink]5[/blink]" in shown, shown


# --------------------------------------------------------------------------- the CLI's renderers


def _forced_console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, color_system="truecolor", width=400), buf


def _node_out(**over):
    from shared.schemas import NodeOut

    base = {"id": "n-1", "name": "mini-1", "host": "127.0.0.1", "status": "ready", "role": "hybrid",
            "device_type": "mac", "chip": HOSTILE, "memory_gb": 24.0, "memory_available_gb": 12.0, "cpu_cores": 10,
            "os_version": "macOS", "python_version": "3.11", "mlx_version": "[link=https://evil.example/]0.1[/link]",
            "mlx_device": "gpu", "mpi": {"implementation": "openmpi", "version": "5"}, "thunderbolt": {},
            "declared": None, "problems": [], "last_heartbeat": None, "registered_at": None, "agent_version": "0.1.0"}
    base.update(over)
    return NodeOut.model_validate(base)


def test_tables_render_node_and_job_text_literally():
    from shared.cli import job_table, node_table
    from shared.schemas import JobOut

    # Old rows in a database, or a coordinator of another version, may still carry escapes.
    job = JobOut.model_validate({
        "id": "j-1", "name": "job", "status": "failed", "backend": "ring", "world_size": 1, "nodes": ["mini-1"],
        "command": ["python"], "env": {}, "created_at": "2026-01-01T00:00:00Z", "started_at": None,
        "ended_at": None, "exit_code": 1, "error": "rank 0 on mini-1: " + HOSTILE + "".join(ESCAPES)})
    console, buf = _forced_console()
    console.print(node_table([_node_out()]))
    console.print(job_table([job]))
    out = buf.getvalue()
    no_terminal_control(out)
    shown = strip_sgr(out)
    assert shown.count(HOSTILE) == 2 and "[link=https://evil.example/]0.1[/link]" in shown, shown


def test_check_renders_node_text_and_problems_literally():
    from shared.check import CheckReport, render

    report = CheckReport(config_path="cluster.yaml", config_ok=True, reachable=True, coordinator="http://x",
                         cluster={"memory_gb": 24, "memory_available_gb": 12, "nodes_by_status": {"ready": 1}},
                         nodes=[_node_out()], topology={"links": [], "components": []},
                         problems=[{"node": "mini-1", "kind": "slow_link", "message": HOSTILE + "\x1b]0;pwned\x07",
                                    "fix": "[link=https://evil.example/]fix[/link]\x1b[2J", "blocking": False}])
    console, buf = _forced_console()
    render(report, console)
    out = buf.getvalue()
    no_terminal_control(out)
    shown = strip_sgr(out)
    assert shown.count(HOSTILE) == 2 and "[link=https://evil.example/]fix[/link]" in shown, shown


class _Events:
    def __init__(self, events):
        self._events = events

    def events(self, job_id):
        yield from self._events


def test_followed_logs_keep_colours_but_no_markup_or_other_sequences(monkeypatch):
    """A rank's output may be coloured; it is never markup, and nothing else reaches the terminal."""
    from shared.cli import jobs as cli

    console, buf = _forced_console()
    monkeypatch.setattr(cli, "console", console)
    monkeypatch.setattr(cli, "err", console)
    line = "[0] \x1b[31mred\x1b[0m " + HOSTILE + "".join(ESCAPES)
    events = [("status", {"status": "pending", "pending_reason": HOSTILE}), ("log", line),
              ("end", {"status": "failed", "exit_code": 3, "error": HOSTILE + "\x1b]0;pwned\x07"})]
    assert cli.follow(_Events(events), "j-1") == 3
    out = buf.getvalue()
    no_terminal_control(out)
    assert re.search(r"\x1b\[[0-9;]*31[0-9;]*mred", out), repr(out)  # the rank's red survives
    assert strip_sgr(out).count(HOSTILE) == 3, repr(out)


def test_training_progress_shows_logs_and_errors_literally(monkeypatch):
    from shared.cli import training as cli

    console, buf = _forced_console()
    monkeypatch.setattr(cli, "err", console)
    events = [("status", {"status": "pending", "pending_reason": HOSTILE + "\x1b]0;pwned\x07"}),
              ("log", "[0] [train] Error " + HOSTILE + "".join(ESCAPES)),
              ("progress", {"step": 1, "total_steps": 2, "loss": 1.0, "checkpoint": HOSTILE + "\x1b[2J"}),
              ("end", {"status": "succeeded"})]
    assert cli.follow_training(_Events(events), "j-1") == 0
    out = buf.getvalue()
    no_terminal_control(out)
    assert strip_sgr(out).count(HOSTILE) == 3, repr(out)


# --------------------------------------------------------------------------- Host allowlist


def test_host_of_reads_names_ports_and_ipv6_literals():
    from coordinator.browser import host_of

    assert host_of("LocalHost:8470") == "localhost"
    assert host_of("127.0.0.1:8470") == "127.0.0.1"
    assert host_of("[::1]:8470") == "::1" and host_of("[0:0::1]") == "::1"
    assert host_of("mini.local.") == "mini.local"
    assert host_of("evil.example") == "evil.example"


def test_requests_for_another_host_are_refused(start_coordinator):
    coord = start_coordinator(extra_args=["--allowed-host", "jupiter.example"])
    port = coord.port
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "[::2]"):
        r = httpx.get(coord.url + "/healthz", headers={"Host": host}, timeout=5)
        assert r.status_code == 400, (host, r.status_code)
        detail = r.json()["detail"]
        assert "--allowed-host" in detail and host.split(":")[0].strip("[]") in detail, detail
        assert r.headers["x-frame-options"] == "DENY"
    # The admin token does not help: the refusal comes before anything else.
    r = httpx.get(coord.url + "/nodes", headers={"Host": "evil.example",
                                                 "Authorization": f"Bearer {coord.admin_token}"})
    assert r.status_code == 400
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}", "LOCALHOST.",
                 f"jupiter.example:{port}"):
        r = httpx.get(coord.url + "/healthz", headers={"Host": host}, timeout=5)
        assert r.status_code == 200, (host, r.status_code, r.text)
    with coord.client() as c:  # the ordinary clients (Host 127.0.0.1:port) are unaffected
        assert c.nodes() == []
    # HTTP/1.0 without a Host header (old health probes): no browser sends that, so it passes.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


# --------------------------------------------------------------------------- docs pages


def test_docs_pages_have_a_csp_and_cannot_be_framed(coordinator):
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        r = httpx.get(coordinator.url + path, timeout=5)
        assert r.status_code == 200, path
        h = r.headers
        assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff", path
        assert h["referrer-policy"] == "no-referrer", path
        csp = h["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp, (path, csp)
        script_src = re.search(r"script-src([^;]*)", csp)
        if path == "/openapi.json":
            assert script_src is None, csp  # nothing runs from JSON
            continue
        assert "'unsafe-inline'" not in script_src.group(1) and "'unsafe-eval'" not in script_src.group(1), csp
        # Every inline script of the page is allowed by its hash, and nothing else is inline.
        for body in re.findall(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", r.text, re.S):
            digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in script_src.group(1), (path, csp)
    # The dashboard keeps its own, stricter policy.
    page = httpx.get(coordinator.url + "/", timeout=5).headers["content-security-policy"]
    assert "script-src 'self';" in page


def test_redoc_works_under_its_policy(coordinator):
    """ReDoc renders every operation with the policy on; the one thing it is refused is its
    footer logo from a CDN, which it would otherwise fetch from the internet."""
    from tests.system.test_dashboard import Browser, chromium_binary

    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium: install the Debian package `chromium`")
    browser = Browser(binary).attach()
    try:
        browser.goto(coordinator.url + "/redoc")
        browser.wait_js("document.body.innerText.includes('Jupiter coordinator') && "
                        "document.body.innerText.includes('/healthz')", what="ReDoc rendered")
        problems = browser.problems()
        assert all("Content Security Policy" in p and "https://cdn.redoc.ly/" in p for p in problems), problems
    finally:
        browser.close()


# --------------------------------------------------------------------------- dashboard #token=


def test_a_token_link_never_silently_replaces_the_stored_token(coordinator):
    from tests.system.test_dashboard import Browser, chromium_binary

    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium: install the Debian package `chromium`")
    browser = Browser(binary).attach()
    try:
        url = coordinator.url + "/"
        browser.goto(url + f"#token={coordinator.admin_token}")  # nothing stored yet: kept
        browser.wait_js("document.querySelector('#login').hidden && !document.querySelector('#main').hidden",
                        what="dashboard connected")
        stored = "localStorage.getItem('jupiter.adminToken')"
        assert browser.js(stored) == coordinator.admin_token
        offer = "!document.querySelector('#token-offer').hidden"
        assert browser.js(offer) is False

        # A link with another token: the stored one stays in use; the page asks.
        other = "adm_" + "9" * 40
        browser.goto(url + f"#token={other}")
        browser.wait_js(offer, what="the offer of the link's token")
        assert browser.js(stored) == coordinator.admin_token
        assert "token" not in browser.js("location.href")
        browser.js("document.querySelector('#token-offer-keep').click(); true")
        assert browser.js(offer) is False and browser.js(stored) == coordinator.admin_token

        # "Use the link's token" with a token the coordinator refuses: said so, nothing replaced.
        browser.js(f"location.hash = 'token={other}'; true")
        browser.wait_js(offer, what="the offer again")
        browser.js("document.querySelector('#token-offer-use').click(); true")
        browser.wait_js("!document.querySelector('#token-offer-error').hidden", what="refusal shown")
        assert browser.js(stored) == coordinator.admin_token
        assert browser.js("document.querySelector('#main').hidden") is False

        # A stale stored token and a link with the right one (after a rotation): the stored one is
        # refused, and the link's token waits in the login form for the user to press Connect.
        browser.goto("about:blank")
        browser.goto(url)
        browser.js("localStorage.setItem('jupiter.adminToken', 'adm_stale_' + 'x'.repeat(40)); true")
        browser.goto("about:blank")
        browser.goto(url + f"#token={coordinator.admin_token}")
        browser.wait_js("!document.querySelector('#login').hidden && "
                        "document.querySelector('#login-error').textContent.includes('filled in')",
                        what="login with the link's token filled in")
        assert browser.js(stored) is None  # the stale one is gone; the link's is not stored yet
        browser.js("document.querySelector('#login-form').requestSubmit(); true")
        browser.wait_js(f"{stored} === {json.dumps(coordinator.admin_token)} && "
                        "!document.querySelector('#main').hidden", what="the link's token in use")
        assert browser.problems() == []
    finally:
        browser.close()


# --------------------------------------------------------------------------- secrets


def test_write_secret_ignores_a_leftover_tmp_file_and_a_planted_symlink(tmp_path):
    from shared.paths import write_secret

    target = tmp_path / "admin.token"
    leftover = tmp_path / "admin.token.tmp"
    leftover.write_text("old")
    leftover.chmod(0o644)
    write_secret(target, "s3cret")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_text() == "s3cret\n"

    victim = tmp_path / "victim"
    victim.write_text("untouched")
    victim.chmod(0o644)
    join = tmp_path / "join.token"
    (tmp_path / "join.token.tmp").symlink_to(victim)
    write_secret(join, "another")
    assert victim.read_text() == "untouched" and stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert stat.S_IMODE(join.lstat().st_mode) == 0o600 and not join.is_symlink()
    # A symlink at the destination itself is replaced, not written through.
    (tmp_path / "node.token").symlink_to(victim)
    write_secret(tmp_path / "node.token", "third")
    assert victim.read_text() == "untouched" and not (tmp_path / "node.token").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp file left


@pytest.mark.parametrize("var", ["JUPITER_TOKEN", "JUPITER_JOIN_TOKEN"])
def test_short_tokens_in_the_environment_are_refused_at_start(tmp_path, var):
    coord = CoordinatorProcess(tmp_path / "leader")
    env = coord.env()
    env[var] = "short-but-not-empty"
    out = subprocess.run(coord.argv(), cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    assert var in out.stderr and "at least 32" in out.stderr, out.stderr
    assert "short-but-not-empty" not in out.stderr + out.stdout


def _install(home: Path, *args: str, stdin: str | None = None, **env_over) -> subprocess.CompletedProcess:
    env = dict(os.environ, HOME=str(home), JUPITER_HOME=str(home / ".jupiter"), **env_over)
    if "JUPITER_JOIN_TOKEN" not in env_over:
        env.pop("JUPITER_JOIN_TOKEN", None)
    argv = [PY, "-m", "shared.cli", "agent", "install", "--systemd", "--print", "--coordinator",
            "http://leader.local:8470", "--name", "gpu-box", *args]
    return subprocess.run(argv, cwd=REPO, env=env, input=stdin, capture_output=True, text=True, timeout=60)


def test_agent_install_takes_the_join_token_from_stdin_a_file_or_the_environment(tmp_path):
    token = "join_" + "7" * 40
    refused = _install(tmp_path, "--join-token", token)
    assert refused.returncode != 0
    assert "--join-token-stdin" in refused.stderr and "--join-token-file" in refused.stderr, refused.stderr
    assert token not in refused.stderr + refused.stdout

    tfile = tmp_path / "join.token"
    tfile.write_text(token + "\n")
    for args, stdin, env in ((["--join-token-stdin"], token + "\n", {}), (["--join-token-file", str(tfile)], None, {}),
                             ([], None, {"JUPITER_JOIN_TOKEN": token})):
        out = _install(tmp_path, *args, stdin=stdin, **env)
        assert out.returncode == 0, (args, out.stderr)
        assert "agent-join-token (mode 0600): the join token, not shown" in out.stdout, out.stdout
        assert token not in out.stdout and token not in out.stderr
    empty = _install(tmp_path, "--join-token-stdin", stdin="")
    assert empty.returncode != 0 and "standard input" in empty.stderr
    assert (tmp_path / ".jupiter").exists() is False  # --print wrote nothing
