"""The dashboard at GET /: its files, and the page itself in headless Chromium against a live cluster.

The browser tests drive Chromium with Playwright (the `playwright` package) and only ever load
http://127.0.0.1 URLs. The Chromium is the Debian package `chromium` (`make system-deps` installs
it as root), never one `playwright install` downloads; without it the browser tests skip and say so.

The cluster is real: a coordinator, two agents (a1, a2) and a two-rank job on them that reports
progress. Beside them, four Mac Studios registered through the API with the facts of
tests/support/fixtures/clusters/ring4.json (heartbeating from this process; they are never given work)
give the topology graph and the problem list something to show.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

from coordinator.dashboard.routes import GENERATED
from tests.support.harness import REPO, AgentProcess, CoordinatorProcess, wait_for, registration

DASHBOARD = REPO / "coordinator" / "dashboard"
ALLSUM = str(REPO / "tests" / "support" / "ranks" / "allsum.py")
RING4 = REPO / "tests" / "support" / "fixtures" / "clusters" / "ring4.json"
ARTIFACTS = REPO / "tests" / "artifacts"


# --------------------------------------------------------------------------- the files

def test_page_and_its_files_are_open_and_load_nothing_from_elsewhere(coordinator):
    page = httpx.get(coordinator.url + "/", timeout=5)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    for src in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert src.startswith(("/static/", "/docs", "#", "data:")), src
    assert re.findall(r"<script[^>]*>", page.text) == ['<script type="module" src="/static/main.js">']
    # The entry module and every module it imports, served as JavaScript (a browser runs a module
    # only then); each import names a file of this folder, and every .js shipped is one of them.
    modules: dict[str, str] = {}
    todo = ["main.js"]
    while todo:
        name = todo.pop()
        if name in modules:
            continue
        js = httpx.get(coordinator.url + "/static/" + name, timeout=5)
        assert js.status_code == 200, name
        assert js.headers["content-type"].startswith("text/javascript"), (name, js.headers["content-type"])
        assert "import(" not in js.text, name
        modules[name] = js.text
        for spec in re.findall(r"""\b(?:from|import)\s*['"]([^'"]+)['"]""", js.text):
            assert re.fullmatch(r"\./[a-z]+\.js", spec), (name, spec)
            todo.append(spec[2:])
    assert set(modules) == {p.name for p in DASHBOARD.glob("*.js")} | set(GENERATED), sorted(modules)
    css = httpx.get(coordinator.url + "/static/dashboard.css", timeout=5)
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    for text in (page.text, *modules.values(), css.text):
        # Nothing from the internet: the only URL is the SVG namespace, which is a name, not a fetch.
        assert re.findall(r"https?://[^\s'\"`)]+", text.replace("http://www.w3.org/2000/svg", "")) == []
        assert "@import" not in text
    # Only the page's own files; no path reaches the filesystem.
    for bad in ("/static/routes.py", "/static/index.html", "/static/..%2Froutes.py", "/static/%2e%2e/app.py"):
        r = httpx.get(coordinator.url + bad, timeout=5)
        assert r.status_code == 404 and "detail" in r.json(), (bad, r.status_code)
    # The API stays closed: the page is open, the data is not.
    assert httpx.get(coordinator.url + "/nodes", timeout=5).status_code == 401
    assert "/" not in httpx.get(coordinator.url + "/openapi.json", timeout=5).json()["paths"]


def test_the_docs_pages_load_only_the_coordinators_own_files(coordinator):
    for page in ("/docs", "/redoc"):
        html = httpx.get(coordinator.url + page, timeout=5)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        refs = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", html.text)
        refs = [a or b for a, b in refs]
        assert refs and all(r.startswith("/") for r in refs), (page, refs)
        for ref in refs:
            assert httpx.get(coordinator.url + ref, timeout=5).status_code == 200, ref


def test_the_static_files_ship_with_the_package():
    import fnmatch
    import tomllib

    with open(REPO / "pyproject.toml", "rb") as f:
        setuptools = tomllib.load(f)["tool"]["setuptools"]
    globs = setuptools["package-data"]["*"]
    for ext in ("*.html", "*.js", "*.css"):
        assert ext in globs, f"{ext} missing from [tool.setuptools.package-data]"
    # Every file the dashboard serves matches one of them, in a package setuptools finds.
    served = sorted(p.name for p in DASHBOARD.iterdir() if p.is_file() and p.suffix != ".py")
    assert {"index.html", "main.js", "dashboard.css"} <= set(served), served
    assert all(any(fnmatch.fnmatch(name, g) for g in globs) for name in served), (served, globs)
    assert any(fnmatch.fnmatch("coordinator.dashboard", pattern)
               for pattern in setuptools["packages"]["find"]["include"]), setuptools["packages"]
    assert (DASHBOARD / "__init__.py").exists()


# --------------------------------------------------------------------------- a browser

def chromium_binary() -> str | None:
    for cand in (os.environ.get("JUPITER_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium",
                 shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


class Browser:
    """Headless Chromium driven by Playwright: one page, its script errors and Content-Security-Policy
    refusals collected, and every URL it requests. The Chromium is the one given (Debian's), never
    one Playwright downloads."""

    def __init__(self, binary: str, width: int = 1400, height: int = 1000):
        self.binary = binary
        self.width, self.height = width, height
        self.requests: list[str] = []
        self._problems: list[str] = []
        self._playwright = self._browser = self.page = None

    def attach(self) -> Browser:
        self._playwright = sync_playwright().start()
        try:
            self._browser = self._playwright.chromium.launch(executable_path=self.binary, args=["--no-sandbox"])
            self.page = self._browser.new_page(viewport={"width": self.width, "height": self.height},
                                               device_scale_factor=1, locale="en-US")
        except Exception:
            self.close()
            raise
        self.page.set_default_timeout(15_000)
        self.page.on("pageerror", lambda exc: self._problems.append(f"{exc.name}: {exc.message}\n{exc.stack}"[:500]))
        self.page.on("console", self._console)
        self.page.on("request", lambda request: self.requests.append(request.url))
        return self

    def _console(self, msg) -> None:
        # A refusal by the page's policy, or a module the browser would not run (wrong MIME type,
        # missing file): both leave the page half-working without throwing in it.
        if "Content Security Policy" in msg.text or "module script" in msg.text:
            self._problems.append(msg.text)

    def goto(self, url: str) -> None:
        assert url.startswith(("http://127.0.0.1:", "about:blank")), url  # nothing beyond this machine
        self.page.goto(url, wait_until="load")

    def js(self, expression: str):
        return self.page.evaluate(expression)

    def wait_js(self, expression: str, timeout: float = 15, what: str | None = None):
        # Polled from here, not page.wait_for_function: that evaluates a string inside the page,
        # which a page whose policy forbids eval (the dashboard, the docs) refuses.
        return wait_for(lambda: self.js(expression), timeout=timeout, every=0.1, what=what or expression)

    def click(self, selector: str) -> None:
        """A real mouse click (press, then release 80 ms later) in the middle of the element."""
        self.page.click(selector, delay=80)

    def screenshot(self, path: Path) -> None:
        self.js("window.scrollTo(0, 0); new Promise(r => requestAnimationFrame(() => r(true)))")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=path, full_page=True)

    def problems(self) -> list[str]:
        """Script exceptions and Content-Security-Policy refusals seen so far."""
        self.js("true")  # events reach Python only while it talks to the browser: collect those pending
        return list(self._problems)

    def close(self) -> None:
        try:
            if self._browser is not None:
                self._browser.close()
        finally:
            if self._playwright is not None:
                self._playwright.stop()
            self._playwright = self._browser = self.page = None


# --------------------------------------------------------------------------- cluster scenery

class FakeMacs:
    """Four Mac Studios from tests/support/fixtures/clusters/ring4.json, registered through the API and kept
    alive by heartbeats from a thread; studio-2 no longer sees its cable to studio-3 (one-sided)."""

    def __init__(self, coord: CoordinatorProcess, every_s: float):
        self.coord, self.every_s = coord, every_s
        self.nodes: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    @staticmethod
    def facts(node: dict, drop_peer: str | None = None) -> dict:
        tb = json.loads(json.dumps(node["thunderbolt"]))
        for port in tb["ports"]:
            if drop_peer and port.get("peer_uuid") == drop_peer:
                port.update(status="disconnected", speed_gbps=None, peer_uuid=None, peer_name=None)
        return {
            "machine_id": "dash-" + node["id"], "hostname": node["host"], "os": "macos",
            "os_version": node["os_version"], "device_type": node["device_type"], "chip": node["chip"],
            "memory_gb": node["memory_gb"], "memory_available_gb": node["memory_available_gb"],
            "cpu_cores": node["cpu_cores"], "python_version": node["python_version"],
            "python_executable": "/Users/you/jupiter/.venv/bin/python", "mlx_version": node["mlx_version"],
            "mlx_device": node["mlx_device"], "mpi": node["mpi"], "thunderbolt": tb,
            "interfaces": node.get("interfaces", []), "agent_version": node["agent_version"]}

    def start(self) -> "FakeMacs":
        cluster = json.loads(RING4.read_text())
        by_name = {n["name"]: n for n in cluster}
        studio3_uuids = set(by_name["studio-3"]["thunderbolt"]["domain_uuids"])
        to_3 = next(p["peer_uuid"] for p in by_name["studio-2"]["thunderbolt"]["ports"]
                    if p.get("peer_uuid") in studio3_uuids)
        with httpx.Client(base_url=self.coord.url, timeout=10,
                          headers={"Authorization": f"Bearer {self.coord.join_token}"}) as c:
            for node in cluster:
                facts = self.facts(node, drop_peer=to_3 if node["name"] == "studio-2" else None)
                r = c.post("/nodes/register", json=registration(node["name"], node["host"], facts))
                r.raise_for_status()
                self.nodes.append((r.json()["node_id"], r.json()["node_token"]))
        self._thread.start()
        return self

    def _beat(self) -> None:
        with httpx.Client(base_url=self.coord.url, timeout=5) as c:
            while not self._stop.wait(self.every_s):
                for node_id, token in self.nodes:
                    try:
                        c.put(f"/nodes/{node_id}/heartbeat", json={"instance": "dashboard-test", "ranks": []},
                              headers={"Authorization": f"Bearer {token}"})
                    except httpx.HTTPError:
                        pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def start_scenery(root: Path):
    """A coordinator, agents a1 and a2, and the fake Studios."""
    coord = CoordinatorProcess(root / "leader", heartbeat_interval=1.0, down_after=6.0).start()
    agents = [AgentProcess(coord, f"a{i}", root / "agents" / f"a{i}").start() for i in (1, 2)]
    macs = FakeMacs(coord, every_s=1.0).start()
    with coord.client() as c:
        wait_for(lambda: {"a1", "a2"} <= {n.name for n in c.nodes() if n.status == "ready"}, timeout=60,
                 what="agents ready")
    return coord, agents, macs


def submit_progress_job(coord: CoordinatorProcess, steps: int = 1500):
    """A two-rank job on a1 and a2 that reports `steps` steps of progress, 20 ms apart."""
    with coord.client() as c:
        return c.submit({"name": "allsum-progress", "nodes": 2, "node_names": ["a1", "a2"], "backend": "ring",
                         "command": ["python", ALLSUM, "--progress", str(steps), "--sleep", "30"]})


def stop_scenery(coord, agents, macs) -> None:
    macs.stop()
    for a in agents:
        a.stop()
    coord.stop()


# --------------------------------------------------------------------------- the page in a browser

NODE_ROWS = """JSON.stringify([...document.querySelectorAll('#nodes-body tr.node')].map(r =>
  [r.dataset.node, r.querySelector('td.status').textContent.trim()]))"""


def job_step(browser: Browser, job_id: str):
    return browser.js(f"""(() => {{ const c = document.querySelector('tr[data-job="{job_id}"] .progress-cell');
        return c ? Number(c.dataset.step) : null; }})()""")


@pytest.fixture
def browser(tmp_path):
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium: install the Debian package `chromium` (make system-deps does it as root) "
                    "or point JUPITER_CHROMIUM at a Chromium binary")
    b = Browser(binary)
    try:
        yield b.attach()
    finally:
        b.close()


def test_dashboard_live_in_chromium(tmp_path, browser):
    coord, agents, macs = start_scenery(tmp_path)
    try:
        url = coord.url + "/"

        # A wrong token in the fragment: the page asks again, says why, and keeps nothing.
        browser.goto(url + "#token=not-a-token")
        browser.wait_js("!document.querySelector('#login').hidden && "
                        "document.querySelector('#login-error').textContent.includes('401')", what="login with error")
        assert "token" not in browser.js("location.href")
        assert browser.js("localStorage.getItem('jupiter.adminToken')") is None
        browser.screenshot(ARTIFACTS / "dashboard-login.png")

        # The join token is a token, but not the one for people: refused with 403, said so.
        browser.js(f"document.querySelector('#login-token').value = {json.dumps(coord.join_token)};"
                   "document.querySelector('#login-form').requestSubmit(); true")
        browser.wait_js("document.querySelector('#login-error').textContent.includes('403')", what="403 for the join token")
        assert browser.js("localStorage.getItem('jupiter.adminToken')") is None

        # The right token through the form.
        browser.js(f"document.querySelector('#login-token').value = {json.dumps(coord.admin_token)};"
                   "document.querySelector('#login-form').requestSubmit(); true")
        browser.wait_js("document.querySelector('#login').hidden && !document.querySelector('#main').hidden",
                        what="dashboard after login")
        assert browser.js("localStorage.getItem('jupiter.adminToken')") == coord.admin_token

        # A fresh load with #token=...: moved to localStorage, gone from the address bar.
        browser.js("localStorage.clear(); true")
        browser.goto("about:blank")
        browser.goto(url + f"#token={coord.admin_token}")
        rows = json.loads(browser.wait_js(
            f"(() => {{ const r = {NODE_ROWS}; return r.includes('\"a1\",\"ready\"') && r.includes('\"a2\",\"ready\"') && r; }})()",
            what="a1 and a2 ready in the nodes table"))
        assert ["a1", "ready"] in rows and ["a2", "ready"] in rows, rows
        assert {"studio-1", "studio-2", "studio-3", "studio-4"} <= {name for name, _ in rows}, rows
        assert browser.js("location.hash") == "" and "token" not in browser.js("location.href")
        assert browser.js("localStorage.getItem('jupiter.adminToken')") == coord.admin_token

        # A job submitted now shows up, its nodes turn busy, and its progress moves on while we watch.
        job = submit_progress_job(coord)
        browser.wait_js(f"!!document.querySelector('tr[data-job=\"{job.id}\"]')", what="the new job in the table")
        browser.wait_js(f"(() => {{ const r = {NODE_ROWS}; return r.includes('\"a1\",\"busy\"') && r.includes('\"a2\",\"busy\"'); }})()",
                        what="a1 and a2 busy")
        browser.wait_js(f"document.querySelector('tr[data-job=\"{job.id}\"] .pill').textContent === 'running'",
                        what="the job running")
        first = wait_for(lambda: job_step(browser, job.id), timeout=10, what="a progress value in the jobs table")
        assert first and first >= 20, first
        later = wait_for(lambda: (s := job_step(browser, job.id)) and s > first and s, timeout=10,
                         what=f"progress beyond {first}")
        assert later > first
        assert browser.js(f"document.querySelector('tr[data-job=\"{job.id}\"] td.loss').textContent") != "—"

        # The topology: every node drawn, links labelled with their speed, the slow one red, one dashed.
        topo = json.loads(browser.wait_js("""(() => { const e = [...document.querySelectorAll('#topo path.edge:not(.stray)')];
            return e.length >= 3 && JSON.stringify({nodes: [...document.querySelectorAll('#topo g.node:not(.stray)')]
              .map(g => g.dataset.node), edges: e.length,
              slow: document.querySelectorAll('#topo path.edge.slow').length,
              dashed: document.querySelectorAll('#topo path.edge.one-sided').length,
              labels: [...document.querySelectorAll('#topo .edge-label text')].map(t => t.textContent)}); })()""",
                                          what="topology edges"))
        assert {"a1", "a2", "studio-1", "studio-4"} <= set(topo["nodes"]), topo
        assert topo["slow"] >= 1 and topo["dashed"] >= 1, topo
        assert all(label.endswith("Gb/s") for label in topo["labels"]) and "20 Gb/s" in topo["labels"], topo

        # Problems from /cluster, each with its fix; a node's own problems unfold in its row.
        browser.wait_js("document.querySelectorAll('#problems li .p-fix').length > 0", what="problems with fixes")
        browser.click('tr[data-node="studio-2"] .probs-btn')
        unfolded = browser.wait_js("(() => { const li = [...document.querySelectorAll('#nodes-body tr.problem-row li')];"
                                   " return li.length && li.map(x => x.textContent); })()", what="studio-2's problems")
        assert any("studio-3" in text for text in unfolded), unfolded

        # The job's detail: live loss chart and log over the event stream.
        browser.click(f'tr[data-job="{job.id}"] td.name-cell')
        browser.wait_js("document.querySelector('#jd-stream').dataset.state === 'live'", what="event stream live")
        n0 = browser.wait_js("(() => { const p = document.querySelector('#jd-chart polyline.curve');"
                             " return p && p.getAttribute('points').split(' ').length; })()", what="loss curve")
        wait_for(lambda: browser.js("document.querySelector('#jd-chart polyline.curve')"
                                    ".getAttribute('points').split(' ').length") > n0, timeout=10,
                 what="the loss curve growing")
        browser.wait_js("document.querySelector('#jd-log').textContent.includes('[0] rank 0 of 2')"
                        " && document.querySelector('#jd-log').textContent.includes('[1] rank 1 of 2')",
                        what="both ranks in the log")
        assert browser.js("location.hash") == f"#job={job.id}"
        # Progress lines are left out of the log (and counted) until asked for.
        assert "JUPITER_PROGRESS" not in browser.js("document.querySelector('#jd-log').textContent")
        browser.wait_js("document.querySelector('#jd-progress-count').textContent.includes('hidden')",
                        what="hidden progress lines counted")
        time.sleep(0.6)  # let the last batch of events paint
        browser.screenshot(ARTIFACTS / "dashboard.png")

        # Cancel takes two clicks and ends the job.
        browser.click("#jd-cancel")
        assert browser.js("document.querySelector('#jd-cancel').textContent").startswith("Click again")
        assert coord.client().job(job.id).status == "running"
        browser.click("#jd-cancel")
        browser.wait_js("document.querySelector('#jd-status').textContent === 'cancelled'"
                        " && document.querySelector('#jd-stream').dataset.state === 'ended'", what="cancelled in page")
        assert coord.client().job(job.id).status == "cancelled"

        # Asked for, the progress lines come back: the stream is read again from the start.
        browser.js("document.querySelector('#jd-show-progress').click(); true")
        browser.wait_js("document.querySelector('#jd-log').textContent.includes('[0] JUPITER_PROGRESS')"
                        " && document.querySelector('#jd-stream').dataset.state === 'ended'", what="progress lines shown")
        assert browser.problems() == []

        # Forget token: back to the prompt, nothing kept.
        browser.js("document.querySelector('#forget-token').click(); true")
        browser.wait_js("!document.querySelector('#login').hidden", what="login after forget")
        assert browser.js("localStorage.getItem('jupiter.adminToken')") is None

        # Coordinator gone: the page says so and keeps the last data greyed out.
        browser.goto(url + f"#token={coord.admin_token}")
        browser.wait_js("document.querySelectorAll('#nodes-body tr.node').length >= 6", what="nodes again")
        coord.stop()
        browser.wait_js("document.querySelector('#banner').textContent.includes('Cannot reach the coordinator')"
                        " && document.querySelector('#main').classList.contains('stale')", timeout=10,
                        what="unreachable banner")
        assert browser.js("document.querySelector('#conn').dataset.state") == "down"
        browser.screenshot(ARTIFACTS / "dashboard-unreachable.png")
    finally:
        stop_scenery(coord, agents, macs)


def test_the_api_docs_page_works_with_no_internet(coordinator, browser):
    """/docs is Swagger UI served by the coordinator itself: every operation is listed, one can be
    tried from the page, and nothing is fetched from anywhere but the coordinator."""
    browser.goto(coordinator.url + "/docs")
    operations = sum(len(ops) for ops in httpx.get(coordinator.url + "/openapi.json", timeout=5).json()["paths"].values())
    browser.wait_js(f"document.querySelectorAll('.opblock').length === {operations}", what="every operation listed")
    assert "Jupiter coordinator" in browser.js("document.querySelector('.info .title').textContent")
    # Try GET /healthz from the page, as a user would: open it, "Try it out", "Execute".
    browser.js("""(() => { const op = [...document.querySelectorAll('.opblock')].find(
        o => o.querySelector('.opblock-summary-path').textContent.trim() === '/healthz');
        op.querySelector('.opblock-summary-control').click(); return true; })()""")
    browser.wait_js("!!document.querySelector('.opblock.is-open .try-out__btn')", what="operation opened")
    browser.js("document.querySelector('.opblock.is-open .try-out__btn').click(); true")
    browser.wait_js("!!document.querySelector('.opblock.is-open .execute')", what="execute button")
    browser.js("document.querySelector('.opblock.is-open .execute').click(); true")
    browser.wait_js("(document.querySelector('.opblock.is-open .live-responses-table tr.response .response-col_status')"
                    " || {}).textContent?.trim() === '200'", what="the 200 shown in the page")
    body = browser.js("document.querySelector('.opblock.is-open .live-responses-table tr.response code').textContent")
    assert json.loads(body)["status"] == "ok"
    fetched = browser.requests
    assert fetched and all(u.startswith(coordinator.url + "/") or u.startswith("data:") for u in fetched), fetched
    assert browser.problems() == []


# --------------------------------------------------------------------------- stragglers and stalls

# Rank 1 reports three times rank 0's step time for the same share: a straggler once it has done so
# three times in a row (coordinator/stragglers.py).
STRAGGLING = """
import json, os, time
rank = int(os.environ["MLX_RANK"])
for step in range(1, 100_000):
    rec = {"step": step, "step_time_s": 0.3 if rank == 1 else 0.1, "share": 0.5}
    if rank == 0:
        rec["loss"] = 1.0 / step
    print("JUPITER_PROGRESS " + json.dumps(rec), flush=True)
    time.sleep(0.2)
"""


def test_dashboard_marks_a_straggler_a_stalled_job_and_warnings(tmp_path, browser):
    coord = CoordinatorProcess(tmp_path / "leader", heartbeat_interval=1.0, down_after=10.0).start()
    agents = [AgentProcess(coord, f"a{i}", tmp_path / "agents" / f"a{i}").start() for i in (1, 2)]
    try:
        with coord.client() as c:
            wait_for(lambda: sorted(n.name for n in c.nodes() if n.status == "ready") == ["a1", "a2"],
                     timeout=60, what="agents ready")
            job = c.submit({"name": "straggling", "nodes": 2, "node_names": ["a1", "a2"], "backend": "ring",
                            "command": ["python", "-c", STRAGGLING]})
            wait_for(lambda: c.job(job.id).stragglers, timeout=60, what="a straggler in the API")
        browser.goto(coord.url + f"/#token={coord.admin_token}")
        row = f'tr[data-job="{job.id}"]'
        browser.wait_js(f"!!document.querySelector('{row} .badge.straggler')", what="the straggler mark in the list")
        assert browser.js(f"document.querySelector('{row} .badge.straggler').textContent") == "straggler"
        assert "rank 1 on a2" in browser.js(f"document.querySelector('{row} .badge.straggler').title")

        # The job view: each rank's step, s/step and share, rank 1 marked with its likely cause.
        browser.click(f"{row} td.name-cell")
        browser.wait_js("document.querySelector('#jd-stream').dataset.state === 'live'", what="event stream live")
        ranks = json.loads(browser.wait_js("""(() => {
            const rows = [...document.querySelectorAll('#jd-ranks tbody tr')];
            return rows.length === 2 && JSON.stringify(rows.map(r => ({rank: r.dataset.rank,
              slow: r.classList.contains('straggler'),
              cells: [...r.querySelectorAll('td')].map(td => td.textContent)})));
            })()""", what="the ranks table"))
        assert [r["rank"] for r in ranks] == ["0", "1"] and [r["slow"] for r in ranks] == [False, True], ranks
        assert ranks[0]["cells"][1:5] == ["a1", ranks[0]["cells"][2], "0.1", "0.5"], ranks
        assert ranks[1]["cells"][1] == "a2" and ranks[1]["cells"][3:5] == ["0.3", "0.5"], ranks
        # the cause as this Linux node's pressure facts give it (usually none: another process)
        assert "% slower" in ranks[1]["cells"][5], ranks
        assert any(w in ranks[1]["cells"][5] for w in ("another process", "thermal", "memory", "swapping")), ranks
        assert browser.js("document.querySelector('#jd-flags .badge.straggler') !== null")
        assert browser.js("document.querySelector('#jd-warnings').hidden")
        browser.screenshot(ARTIFACTS / "dashboard-straggler.png")

        # A stalled job and a warning, as GET /jobs would give them (the answer is changed on its way).
        def stalled(route):
            answer = route.fetch()
            jobs = answer.json()
            for j in jobs:
                if j["id"] == job.id:
                    j.update(status="failed", stalled=True, warnings=["rank 1 on a2 is stopped (process state T)"])
            route.fulfill(response=answer, json=jobs)

        browser.page.route("**/jobs?limit=*", stalled)
        browser.wait_js(f"document.querySelector('{row} .badge.stalled')?.textContent === 'stalled'"
                        f" && document.querySelector('{row} .pill').textContent === 'failed'",
                        what="stalled in the list")
        browser.wait_js("document.querySelector('#jd-flags .badge.stalled') !== null"
                        " && !document.querySelector('#jd-warnings').hidden",
                        what="stalled and the warning in the job view")
        assert browser.js("document.querySelector('#jd-warnings').textContent") == \
            "rank 1 on a2 is stopped (process state T)"
        browser.page.unroute("**/jobs?limit=*")
        assert browser.problems() == []
        with coord.client() as c:
            c.cancel(job.id)
    finally:
        for a in agents:
            a.stop()
        coord.stop()
