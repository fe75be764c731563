"""Same state, same answer: dumps what `GET /nodes`, `GET /nodes/{id}` and the OpenAPI document
return for a fixed database, so a change to how the listing is built can be checked byte for byte
against the code before it.

    .venv/bin/python bench/nodes_same.py make DIR [--nodes 1000]   # once: a home with the state
    .venv/bin/python bench/nodes_same.py dump DIR OUT.json         # before and after the change
    .venv/bin/python bench/nodes_same.py compare before.json after.json

`make` registers the registry bench's 1,000 nodes (bench/registry_bench.py: same names, hosts and
facts), then adds what the bench's state lacks so every check and the topology have something to
say: cluster.yaml declarations (one never heard from, one contradicted), Thunderbolt cables
between nodes (rings, a chain, a slow and a one-sided cable, a bridge loop), MPICH, MLX and Python
skew, agent problems, drained, down and pending nodes. `dump` works on a copy of DIR, in-process
(no server, no liveness loop), so the same DIR gives the same bytes every time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ADMIN = "same-admin-" + "a" * 32
JOIN = "same-join-" + "j" * 32
os.environ.update(JUPITER_TOKEN=ADMIN, JUPITER_JOIN_TOKEN=JOIN)

from fastapi.testclient import TestClient

from coordinator.app import create_app
from coordinator.settings import Settings
from coordinator.tokens import CLUSTER_GRANT
from shared.schemas import RegisterRequest
from tests.support.harness import registration, sample_facts

CLUSTER_YAML = """backend: mpi
nodes:
  - {name: node-0000, host: 10-0-0-0.local, device_type: mac, role: hybrid, memory_gb: 24, connection_type: thunderbolt}
  - {name: node-0001, host: 10-0-0-1.local, device_type: mac, role: hybrid, memory_gb: 64, chip: M2}
  - {name: node-0002, host: 10-0-0-2.local, device_type: mac, role: trainer, connection_type: thunderbolt}
  - {name: never-seen, host: never-seen.local, device_type: mac, role: hybrid}
"""


def _port(port: int, peer: str | None, speed: float | None = 40.0, iface: str | None = None) -> dict:
    return {"port": port, "status": "connected", "speed_gbps": speed, "interface": iface or f"en{port + 1}",
            "peer_uuid": peer}


def facts_for(i: int) -> dict:
    """The bench's facts, varied by index so the checks and the topology find something."""
    f = sample_facts(f"machine-{i}")
    if i >= 100:
        return f  # most nodes as the bench registers them
    uuid = f"U{i:04d}"
    ports: list[dict] = []
    if i < 30:  # ten rings of three
        base = i - i % 3
        ports = [_port(1, f"U{base + (i % 3 + 1) % 3:04d}", 40.0, "en2"), _port(2, f"U{base + (i % 3 + 2) % 3:04d}")]
    elif i < 40:  # a chain, one slow cable in it
        ports = [_port(1, f"U{i + 1:04d}", 10.0 if i == 35 else 80.0)] if i < 39 else []
        ports += [_port(2, f"U{i - 1:04d}", 10.0 if i == 36 else 80.0)] if i > 30 else []
    elif i < 44:  # one-sided and stray cables, and a cable to itself
        ports = [_port(1, f"U{i + 50:04d}" if i < 42 else ("ZZZZ" if i == 42 else uuid))]
    members = ["en2", "en3"] if i < 30 else ["en2"]
    f["thunderbolt"] = {"bridge": {"interface": "bridge0", "ips": [f"169.254.0.{i}"], "up": True, "members": members},
                        "ports": ports, "domain_uuids": [uuid], "rdma_enabled": i % 2 == 0}
    f["interfaces"] = [{"name": "en0", "ips": [f"10.1.0.{i}"]}, {"name": "en2", "ips": [f"169.254.1.{i}"]}]
    if i % 7 == 0:
        f["mpi"] = {"implementation": "mpich", "version": "4.2"}
    if i % 11 == 0:
        f["mpi"] = {"implementation": None, "version": None}
    if i % 5 == 0:
        f["mlx_version"] = "0.31.0"
    if i % 13 == 0:
        f["python_version"] = "3.12.1"
    if i % 17 == 0:
        f["problems"] = ["MLX could not be imported: no module named mlx"]
    if i % 9 == 0:
        f["device_type"] = "cpu"
        f["chip"] = ""
    return f


def make(home: Path, count: int) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "cluster.yaml").write_text(CLUSTER_YAML)
    app = create_app(_settings(home))
    reg = app.state.registry
    ids = []
    for i in range(count):
        body = registration(f"node-{i:04d}", f"10-0-{i // 250}-{i % 250}.local", facts_for(i))
        grant = replace(CLUSTER_GRANT, admits=False) if i in (50, 51) else CLUSTER_GRANT  # 50, 51: pending
        row, _, _ = reg.register(RegisterRequest.model_validate(body), grant)
        ids.append(row.id)
    for i in (3, 60, 61):
        reg.set_drained(ids[i], True)
    down = [ids[i] for i in (4, 62, 63, 64)]
    reg.store.mark_down(down, 1_000.0, 30.0, cutoff=float("inf"))
    app.state.store.close()


def _settings(home: Path) -> Settings:
    return Settings(home=home, config_path=home / "cluster.yaml", heartbeat_interval_s=5, down_after_s=3600)


def dump(home: Path, out: Path) -> None:
    copy = home.with_name(home.name + "-copy")  # one fixed path: GET /cluster names the config file
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(home, copy)
    try:
        app = create_app(_settings(copy))
        client = TestClient(app, base_url="http://127.0.0.1")  # no `with`: no lifespan, no liveness sweep
        auth = {"Authorization": f"Bearer {ADMIN}"}
        listing = client.get("/nodes", headers=auth)
        listing.raise_for_status()
        again = client.get("/nodes", headers=auth).content  # from the caches this time
        ids = [n["id"] for n in listing.json()]
        details = {nid: client.get(f"/nodes/{nid}", headers=auth).text for nid in ids[:8] + ids[-3:]}
        result = {"nodes": listing.text, "nodes_again_same": again == listing.content,
                  "content_type": listing.headers.get("content-type"), "details": details,
                  "cluster": client.get("/cluster", headers=auth).text,
                  "missing": client.get("/nodes/n-0000000000", headers=auth).text,
                  "openapi": app.openapi()}
        app.state.store.close()
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"{len(ids)} nodes, {len(listing.content)} bytes; written to {out}")


def compare(before: Path, after: Path) -> int:
    """Which parts differ; for the OpenAPI document, which paths and schemas (another change to
    the app, say to /jobs, shows there without touching the node listing)."""
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    differ = [k for k in sorted(set(a) | set(b)) if k != "openapi" and a.get(k) != b.get(k)]
    oa, ob = a.get("openapi", {}), b.get("openapi", {})
    for part in ("paths", "components"):
        pa, pb = oa.get(part, {}), ob.get(part, {})
        if part == "components":
            pa, pb = pa.get("schemas", {}), pb.get("schemas", {})
        differ += [f"openapi {part} {k}" for k in sorted(set(pa) | set(pb)) if pa.get(k) != pb.get(k)]
    rest = {k: v for k, v in oa.items() if k not in ("paths", "components")}
    if rest != {k: v for k, v in ob.items() if k not in ("paths", "components")}:
        differ.append("openapi (other)")
    print("\n".join(f"differs: {d}" for d in differ) or "identical")
    return 1 if any(not d.startswith("openapi") or "/nodes" in d for d in differ) else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("home", type=Path)
    m.add_argument("--nodes", type=int, default=1000)
    d = sub.add_parser("dump")
    d.add_argument("home", type=Path)
    d.add_argument("out", type=Path)
    c = sub.add_parser("compare", help="exit 1 if the node listing, details, cluster or a /nodes path differ")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = ap.parse_args()
    if args.cmd == "make":
        make(args.home, args.nodes)
    elif args.cmd == "dump":
        dump(args.home, args.out)
    else:
        sys.exit(compare(args.before, args.after))


if __name__ == "__main__":
    main()
