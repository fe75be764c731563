"""Property-based fuzzing of the live API with schemathesis (docs/api.md#errors: never a 5xx for bad input).

One real coordinator on loopback and no agent. schemathesis reads that coordinator's own
`/openapi.json` and, for every operation, sends schema-valid and schema-violating requests
(its examples, coverage and fuzzing phases) with the admin token. Every response must be no 5xx
and conform to the schema: a documented status code, the documented content type and headers,
a body that validates against the response model; every 4xx is JSON `{"detail": ...}`.

Nothing the fuzzer submits can run. The admin token may register nodes, so the fuzzer does
register some, and an `mpi` job placed on a node at 127.0.0.1 would have the coordinator run its
command through a local mpirun. The fixture's cluster.yaml therefore forces a network interface
that no node has (`network_interface`), which makes every job unplaceable: jobs stay `pending`,
and `test_nothing_was_placed_or_launched` checks that afterwards.

Bounded: a few examples per operation (`JUPITER_FUZZ_EXAMPLES`, default 10), no example database
on disk, a 10 s timeout per request. The long-poll (`POST /nodes/{id}/orders`) has `wait_s`
clamped; the Server-Sent Events stream (`GET /jobs/{id}/events`), which stays open while a job is
pending, is kept out of the fuzzer and checked by `test_events_stream_is_bounded_and_refuses_bad_ids`.

Figures (operations, requests, status codes, failures) are printed when the module ends and
written to `$JUPITER_FUZZ_REPORT` when that is set; `JUPITER_FUZZ_SEED` picks another seed.
"""

from __future__ import annotations

import collections
import json
import os
import sqlite3
import tempfile
import time

import httpx
import pytest

# Hypothesis keeps caches in ./.hypothesis by default, even with no example database: keep them
# out of the work tree (README.md's layout: nothing else at the top level).
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "jupiter-hypothesis"))

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402  (hypothesis comes with schemathesis)
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.harness import CoordinatorProcess, sample_facts, registration  # noqa: E402

MAX_EXAMPLES = int(os.environ.get("JUPITER_FUZZ_EXAMPLES", "10"))
SEED = int(os.environ.get("JUPITER_FUZZ_SEED", "20261201"))
REQUEST_TIMEOUT_S = 10.0
ORDERS_MAX_WAIT_S = 0.2
SSE_PATH = "/jobs/{job_id}/events"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
NO_SUCH_INTERFACE = "jfz-none0"  # no node reports it, so no job can be placed

STATS: dict = {"operations": set(), "requests": 0, "by_status": collections.Counter(), "failures": [],
               "started": None}


@pytest.fixture(scope="module")
def fuzz_coordinator(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    config = root / "cluster.yaml"
    config.write_text(f'backend: "ring"\nnetwork_interface: "{NO_SUCH_INTERFACE}"\n'
                      "auto_restart_failed_nodes: false\nnodes: []\n")
    coord = CoordinatorProcess(root / "leader", config=config, heartbeat_interval=5.0, down_after=600.0).start()
    # Some real state, so list and detail responses carry real objects to validate.
    r = httpx.post(coord.url + "/nodes/register", headers={"Authorization": f"Bearer {coord.join_token}"},
                   json=registration("fuzz-node", "127.0.0.1", sample_facts("m-fuzz")))
    assert r.status_code == 200, r.text
    r = httpx.post(coord.url + "/jobs", headers={"Authorization": f"Bearer {coord.admin_token}"},
                   json={"name": "fuzz-pending", "command": ["python", "-c", "print('x')"], "nodes": 1})
    assert r.status_code == 201, r.text
    STATS["started"] = time.monotonic()
    yield coord
    coord.stop()
    _report(coord)


def _report(coord) -> None:
    took = time.monotonic() - (STATS["started"] or time.monotonic())
    figures = {
        "operations": len(STATS["operations"]),
        "requests": STATS["requests"],
        "by_status": dict(sorted((str(k), v) for k, v in STATS["by_status"].items())),
        "failing_requests": len(STATS["failures"]),
        "failure_samples": STATS["failures"][:10],
        "max_examples_per_operation": MAX_EXAMPLES,
        "seed": SEED,
        "seconds": round(took, 1),
    }
    print("\nfuzz figures: " + json.dumps(figures))
    out = os.environ.get("JUPITER_FUZZ_REPORT")
    if out:
        with open(out, "w") as f:
            json.dump(figures, f, indent=2)


@pytest.fixture(scope="module")
def live_spec(fuzz_coordinator) -> dict:
    return httpx.get(fuzz_coordinator.url + "/openapi.json", timeout=REQUEST_TIMEOUT_S).json()


@pytest.fixture(scope="module")
def api_schema(fuzz_coordinator):
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "base-url": fuzz_coordinator.url,
        "headers": {"Authorization": f"Bearer {fuzz_coordinator.admin_token}"},
        "request-timeout": REQUEST_TIMEOUT_S,
        # No .hypothesis/ folder in the repo.
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
        "phases": {"stateful": {"enabled": False}},
    })
    return schemathesis.openapi.from_url(fuzz_coordinator.url + "/openapi.json", config=config,
                                         timeout=REQUEST_TIMEOUT_S)


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request):
    """schemathesis 4.32's lazy loader reads and relabels `request.node._nodeid`, which pytest 9.2's
    nodes no longer have (they keep `_id` behind the `nodeid` property). Giving the attribute back
    lets the documented `from_fixture` API run; it only changes the labels of subtests."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("api_schema").exclude(path=SSE_PATH, method="GET")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_no_5xx_and_every_response_conforms(case):
    if case.operation.path == "/nodes/{node_id}/orders" and isinstance(case.body, dict):
        # The long-poll must not hold the run: a missing wait_s means 20 s, so set it too.
        wait = case.body.get("wait_s", 20)
        if isinstance(wait, (int, float)) and not isinstance(wait, bool) and wait > ORDERS_MAX_WAIT_S:
            case.body["wait_s"] = ORDERS_MAX_WAIT_S
    label = f"{case.operation.method.upper()} {case.operation.path}"
    STATS["operations"].add(label)
    response = case.call(timeout=REQUEST_TIMEOUT_S)
    STATS["requests"] += 1
    STATS["by_status"][response.status_code] += 1
    try:
        case.validate_response(response, checks=CHECKS)
        if response.status_code >= 400:
            assert "Traceback" not in response.text, response.text
            body = response.json()
            assert isinstance(body, dict) and "detail" in body, response.text
    except BaseException as exc:  # schemathesis raises an exception group
        STATS["failures"].append(f"{label} -> {response.status_code}: {str(exc)[:300]}")
        raise


def test_events_stream_is_bounded_and_refuses_bad_ids(fuzz_coordinator):
    """The SSE route, kept out of the fuzzer: bad and unknown ids answer at once; a pending job's
    stream opens with its status and is closed by the client."""
    c = fuzz_coordinator
    h = {"Authorization": f"Bearer {c.admin_token}"}
    for bad in ("j-0000000000", "..%2f..%2fetc%2fpasswd", "j-" + "f" * 500, "%00", "j-0a1b2c3d4e%0a"):
        r = httpx.get(f"{c.url}/jobs/{bad}/events", headers=h, timeout=5)
        assert r.status_code in (404, 422), (bad, r.status_code, r.text)
        assert "detail" in r.json()
    job = httpx.post(c.url + "/jobs", headers=h, timeout=5,
                     json={"name": "sse-pending", "command": ["python", "-c", "print('x')"]}).json()
    with httpx.stream("GET", f"{c.url}/jobs/{job['id']}/events", headers=h, timeout=5) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        assert next(lines) == "event: status"
        assert json.loads(next(lines).removeprefix("data: "))["status"] == "pending"
    httpx.post(f"{c.url}/jobs/{job['id']}/cancel", headers=h, timeout=5)


def test_nothing_was_placed_or_launched(fuzz_coordinator):
    """The guard held: no job the fuzzer submitted was placed on a node or launched."""
    db = sqlite3.connect(fuzz_coordinator.home / "coordinator.db")
    try:
        placed = db.execute("SELECT COUNT(*) FROM jobs WHERE placed_at IS NOT NULL OR started_at IS NOT NULL"
                            " OR status IN ('starting', 'running', 'succeeded')").fetchone()[0]
        ranks = db.execute("SELECT COUNT(*) FROM ranks").fetchone()[0]
        jobs = db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    finally:
        db.close()
    assert jobs >= 1 and placed == 0 and ranks == 0, (jobs, placed, ranks)
    assert not (fuzz_coordinator.home / "mpi").exists()


def test_coordinator_logged_no_traceback(fuzz_coordinator, live_spec):
    """Every request above was answered by a route or a validation error, none by the crash handler.
    Run alone, the fuzzer sent nothing, so first every operation with something to get wrong gets
    a fixed set of bad ids (and well-formed unknown ones), bad query values and bad bodies."""
    c = fuzz_coordinator
    ids = ["j-0000000000", "n-0000000000", "t-0000000000", "..%2f..%2fetc%2fpasswd", "%00", "x" * 300]
    bodies = [b"{not json", b"[]", b"null", b'{"surprise": 1}', b"[" * 5000 + b"]" * 5000]
    answered = collections.Counter()
    with httpx.Client(base_url=c.url, headers={"Authorization": f"Bearer {c.admin_token}"}, timeout=REQUEST_TIMEOUT_S,
                      limits=httpx.Limits(max_keepalive_connections=0)) as h:  # a crash may drop the connection
        for path, ops in live_spec["paths"].items():
            for method, op in ops.items():
                params = op.get("parameters", [])
                names = {p["in"]: [q["name"] for q in params if q["in"] == p["in"]] for p in params}
                if not (names or "requestBody" in op):
                    continue  # nothing to get wrong: a valid request, with effects of its own
                for value in ids if names.get("path") else [None]:
                    url = path
                    for name in names.get("path", []):
                        url = url.replace("{" + name + "}", value)
                    bad_query = {name: "../../etc/passwd" for name in names.get("query", [])}
                    for query in [{}, bad_query] if bad_query else [{}]:
                        for body in bodies if "requestBody" in op else [None]:
                            r = h.request(method.upper(), url, params=query, content=body,
                                          headers={"content-type": "application/json"} if body else {})
                            answered[r.status_code] += 1
    log = fuzz_coordinator.log_path.read_text(errors="replace")
    assert "internal error on" not in log and "Traceback" not in log, log[-4000:]
    assert answered and max(answered) < 500, answered


# ----------------------------------------------------------------------------- schema gaps found
# The fuzzer found these answers undocumented (docs/reliability.md, bug 6); these keep them documented.


def test_schema_documents_400_and_413_on_every_operation_with_a_body(live_spec):
    missing = [f"{m.upper()} {p}: {code}" for p, ops in live_spec["paths"].items() for m, op in ops.items()
               if "requestBody" in op for code in ("400", "413") if code not in op["responses"]]
    assert not missing, missing


def test_plain_text_routes_document_json_errors(live_spec):
    wrong = [f"GET {p} {code}: {sorted(r.get('content', {}))}"
             for p in ("/jobs/{job_id}/hostfile", "/jobs/{job_id}/logs")
             for code, r in live_spec["paths"][p]["get"]["responses"].items()
             if code.startswith("4") and "application/json" not in r.get("content", {})]
    assert not wrong, wrong
