"""Property-based fuzzing of the live API with schemathesis (SPEC §3: never a 5xx for bad input).

One real coordinator on loopback, no agents: every job the fuzzer submits stays `pending` and
nothing runs. schemathesis reads the coordinator's own `/openapi.json` and, for every operation,
sends schema-valid and schema-violating requests with the admin token. Each response must be
no 5xx and must conform to the schema: a declared status code, the declared content type and
headers, a body that validates against the response model.

Bounded: a few examples per operation, no shrinking database on disk, a 10 s timeout per request;
the long-poll (`POST /nodes/{id}/orders`) has its `wait_s` clamped, and the Server-Sent Events
stream (`GET /jobs/{id}/events`), which stays open while a job is pending, is left to
`test_events_stream_is_bounded_and_refuses_bad_ids` below.

Figures (operations, requests sent, status codes seen, failures) are printed at the end of the
module and written to `$JUPITER_FUZZ_REPORT` when that is set. `JUPITER_FUZZ_EXAMPLES` and
`JUPITER_FUZZ_SEED` change the bounds and the seed for a longer or different run.
"""

from __future__ import annotations

import collections
import json
import os
import time

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402  (hypothesis comes with schemathesis)
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.harness import CoordinatorProcess, sample_facts  # noqa: E402

MAX_EXAMPLES = int(os.environ.get("JUPITER_FUZZ_EXAMPLES", "10"))
SEED = int(os.environ.get("JUPITER_FUZZ_SEED", "20261201"))
REQUEST_TIMEOUT_S = 10.0
ORDERS_MAX_WAIT_S = 0.2
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]

STATS = {"operations": set(), "requests": 0, "by_status": collections.Counter(), "failures": [],
         "started": None}


@pytest.fixture(scope="module")
def fuzz_coordinator(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    coord = CoordinatorProcess(root / "leader", heartbeat_interval=5.0, down_after=600.0).start()
    admin = {"Authorization": f"Bearer {coord.admin_token}"}
    # Some real state, so list and detail responses carry real objects to validate.
    r = httpx.post(coord.url + "/nodes/register", headers={"Authorization": f"Bearer {coord.join_token}"},
                   json={"name": "fuzz-node", "host": "127.0.0.1", "facts": sample_facts("m-fuzz")})
    assert r.status_code == 200, r.text
    r = httpx.post(coord.url + "/jobs", headers=admin,
                   json={"name": "fuzz-pending", "command": ["python", "-c", "print('x')"], "nodes": 2})
    assert r.status_code == 201, r.text
    STATS["started"] = time.monotonic()
    yield coord
    coord.stop()
    _report(coord)


def _report(coord) -> None:
    took = time.monotonic() - (STATS["started"] or time.monotonic())
    log = coord.log_path.read_text(errors="replace") if coord.log_path.exists() else ""
    figures = {
        "operations": len(STATS["operations"]),
        "requests": STATS["requests"],
        "by_status": dict(sorted((str(k), v) for k, v in STATS["by_status"].items())),
        "failures": len(STATS["failures"]),
        "failure_samples": STATS["failures"][:10],
        "tracebacks_in_coordinator_log": log.count("Traceback"),
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
def api_schema(fuzz_coordinator):
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "base-url": fuzz_coordinator.url,
        "headers": {"Authorization": f"Bearer {fuzz_coordinator.admin_token}"},
        "request-timeout": REQUEST_TIMEOUT_S,
        # No .hypothesis/ folder in the repo; examples, coverage and fuzzing phases all run.
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none", "deterministic": False},
        "phases": {"stateful": {"enabled": False}},
    })
    return schemathesis.openapi.from_url(fuzz_coordinator.url + "/openapi.json", config=config,
                                         timeout=REQUEST_TIMEOUT_S)


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request):
    """schemathesis 4.32's lazy loader reads and relabels `request.node._nodeid`, which pytest 9.2's
    nodes no longer have (they keep `_id` behind the `nodeid` property). Giving it the attribute
    back lets the documented `from_fixture` API run; it only changes the labels of subtests."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("api_schema").exclude(path="/jobs/{job_id}/events", method="GET")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_no_5xx_and_every_response_conforms(case):
    if case.path == "/nodes/{node_id}/orders" and isinstance(case.body, dict):
        wait = case.body.get("wait_s")
        if isinstance(wait, (int, float)) and not isinstance(wait, bool) and wait > ORDERS_MAX_WAIT_S:
            case.body["wait_s"] = ORDERS_MAX_WAIT_S  # the long-poll must not hold the run
    STATS["operations"].add(f"{case.method} {case.path}")
    response = case.call(timeout=REQUEST_TIMEOUT_S)
    STATS["requests"] += 1
    STATS["by_status"][response.status_code] += 1
    try:
        case.validate_response(response, checks=CHECKS)
    except Exception as exc:
        STATS["failures"].append(f"{case.method} {case.path} -> {response.status_code}: {str(exc)[:300]}")
        raise
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict) and "detail" in body, response.text
        assert "Traceback" not in response.text


def test_events_stream_is_bounded_and_refuses_bad_ids(fuzz_coordinator):
    """The SSE route, kept out of the fuzzer: bad and unknown ids answer at once; a pending job's
    stream opens with its status and is closed by the client."""
    c = fuzz_coordinator
    h = {"Authorization": f"Bearer {c.admin_token}"}
    for bad in ("j-0000000000", "..%2f..%2fetc%2fpasswd", "j-" + "f" * 500, "%00"):
        r = httpx.get(f"{c.url}/jobs/{bad}/events", headers=h, timeout=5)
        assert r.status_code in (404, 422), (bad, r.status_code, r.text)
        assert "detail" in r.json()
    pending = httpx.get(c.url + "/jobs?status=pending", headers=h).json()
    assert pending, "the fixture's pending job is gone"
    with httpx.stream("GET", f"{c.url}/jobs/{pending[-1]['id']}/events", headers=h, timeout=5) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        first = next(r.iter_lines())
        assert first == "event: status"


def test_coordinator_logged_no_traceback(fuzz_coordinator):
    """Every request above was answered by a route or a validation error, none by the crash handler."""
    log = fuzz_coordinator.log_path.read_text(errors="replace") if fuzz_coordinator.log_path.exists() else ""
    assert "internal error on" not in log and "Traceback" not in log, log[-4000:]
