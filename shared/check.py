"""`jupiter check`: the configuration first (cluster.yaml and every domain), then the live cluster
as the coordinator sees it: declared beside reported, links, memory, the fabric the fast backends
need (shared/check_fabric.py), and every problem with its fix. Still useful with no coordinator
running: the static checks stand on their own."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from shared import check_fabric
from shared.client import ApiError, Client
from shared.cluster_config import ClusterConfig, ConfigError, load_cluster_config, unhonoured_fields
from shared.schemas import NodeOut
from shared.status import TERMINAL
from shared.text import cell, markup

# Problems that stop jobs on the configured backend from running at all (exit non-zero).
# The jaccl_* and nccl_cuda kinds come only when cluster.yaml names that backend.
BLOCKING_KINDS = {"mpich", "no_mpi", "bridge_loop", "jaccl_rdma", "jaccl_bridge", "jaccl_link", "nccl_cuda"}


@dataclass
class CheckReport:
    config_path: str
    config_ok: bool = False
    config: ClusterConfig | None = None
    domains: dict = field(default_factory=dict)            # name -> {"ok", "summary", "problems"}
    coordinator: str | None = None
    reachable: bool = False
    cluster: dict | None = None
    nodes: list[NodeOut] = field(default_factory=list)
    topology: dict | None = None
    fabric: dict | None = None                             # GET /topology?format=jaccl (shared/check_fabric.py)
    problems: list[dict] = field(default_factory=list)     # {node, kind, message, fix, blocking}

    @property
    def exit_code(self) -> int:
        return 1 if (not self.config_ok or any(p["blocking"] for p in self.problems)) else 0

    def to_json(self) -> dict:
        return {"config": self.config_path, "config_ok": self.config_ok, "domains": self.domains,
                "coordinator": self.coordinator, "reachable": self.reachable, "cluster": self.cluster,
                "nodes": [n.model_dump(mode="json") for n in self.nodes], "topology": self.topology,
                "fabric": self.fabric, "problems": self.problems, "exit_code": self.exit_code}


def _problem(node, kind, message, fix, blocking=None) -> dict:
    return {"node": node, "kind": kind, "message": message, "fix": fix,
            "blocking": kind in BLOCKING_KINDS if blocking is None else blocking}


def run_check(config_path: Path, url: str, token: str | None) -> CheckReport:
    report = CheckReport(config_path=str(config_path), coordinator=url)
    try:
        report.config = load_cluster_config(config_path)
        report.config_ok = True
    except ConfigError as exc:
        report.problems.append(_problem(None, "config", str(exc), f"edit {config_path}", blocking=True))
    if report.config is not None:
        for msg in unhonoured_fields(report.config):
            report.problems.append(_problem(None, "config", f"cluster.yaml: {msg}", "set it to false until supported"))
        py = report.config.python
        if py and not (os.path.isfile(py) and os.access(py, os.X_OK)):
            report.problems.append(_problem(None, "config", f"cluster.yaml: python {py} is not an executable file "
                                            "on this machine; mpi jobs run it on every host",
                                            f"install Jupiter's venv at that path, or fix python in {config_path}",
                                            blocking=False))
    _check_domains(report)
    try:
        with Client(url, token) as c:
            report.cluster = c.cluster().model_dump(mode="json")
            report.nodes = c.nodes()
            report.topology = c.request("GET", "/topology").json()
            report.fabric = check_fabric.fetch(c)
        report.reachable = True
        seen = {p["message"] for p in report.problems}
        for issue in report.cluster["issues"]:
            if issue["message"] not in seen:
                report.problems.append(_problem(issue["node"], issue["kind"], issue["message"], issue["fix"]))
    except httpx.TransportError:
        report.problems.append(_problem(None, "unreachable", f"coordinator at {url} is unreachable: only static "
                                        "checks were made", "start it (jupiter coordinator) or set JUPITER_URL",
                                        blocking=False))
    except ApiError as exc:
        report.problems.append(_problem(None, "refused", f"coordinator at {url} refused: {exc}",
                                        "set JUPITER_TOKEN to the admin token", blocking=False))
    return report


def _check_domains(report: CheckReport) -> None:
    try:
        from shared import domains
    except ImportError:  # pragma: no cover - domains ship with the trainer
        return
    for name, result in domains.validate_all().items():
        if isinstance(result, ConfigError):
            report.domains[name] = {"ok": False, "summary": str(result), "problems": [str(result)]}
            report.problems.append(_problem(None, "domain", str(result), f"fix config/domains/{name}.yaml"))
            continue
        report.domains[name] = {"ok": result.usable, "summary": result.summary(), "problems": result.problems}
        for p in result.problems:
            report.problems.append(_problem(None, "domain", f"domain {name}: {p}",
                                            "add local copies of the data (a path source) to train offline"
                                            if "offline" in p else f"fix the source in config/domains/{name}.yaml",
                                            blocking=False))


def _links(node: NodeOut, topology: dict | None) -> str:
    if not topology:
        return "-"
    parts = []
    for ln in topology.get("links", []):
        if node.id in (ln["a_id"], ln["b_id"]):
            other = ln["b"] if ln["a_id"] == node.id else ln["a"]
            speed = f"{ln['speed_gbps']:g}G" if ln.get("speed_gbps") else "?"
            parts.append(f"{other} {speed}" + (" (one side)" if ln.get("one_sided") else ""))
    return ", ".join(parts) or "none"


def render(report: CheckReport, console: Console) -> None:
    ok = "[green]valid[/]" if report.config_ok else "[red]invalid[/]"
    # Everything below but our own words is data (node facts, file names): plain text, never markup.
    console.print(f"[bold]config[/] {markup(report.config_path)}: {ok}"
                  + (f", backend {markup(report.config.backend)}, {len(report.config.nodes)} declared node(s)"
                     + (f", mpi ranks run {markup(report.config.python)}" if report.config.python else "")
                     if report.config else ""))
    for name, d in sorted(report.domains.items()):
        if d["ok"]:
            console.print(f"[bold]domain[/] {markup(name)}: [green]ok[/] - {markup(d['summary'])}", highlight=False)
        else:
            console.print(f"[bold]domain[/] {markup(name)}: [yellow]no usable data[/] ({len(d['problems'])} source "
                          "problem(s) below)", highlight=False)
    if report.reachable:
        t = Table(title=f"Cluster at {markup(report.coordinator)}", title_justify="left")
        for col in ("name", "host", "status", "declared", "type", "chip", "RAM GB", "role", "MLX", "MPI", "links"):
            t.add_column(col, overflow="fold")
        colours = {"ready": "green", "busy": "cyan", "draining": "yellow", "down": "red"}
        for n in report.nodes:
            d = n.declared
            declared = f"{d.host} {d.chip or ''} {d.memory_gb or ''}GB".strip() if d else "-"
            mpi = f"{n.mpi.implementation} {n.mpi.version or ''}".strip() if n.mpi.implementation else "-"
            t.add_row(cell(n.name), cell(n.host), f"[{colours.get(n.status, 'white')}]{n.status}[/]", cell(declared),
                      n.device_type or "-", cell(n.chip), f"{n.memory_gb:g}" if n.memory_gb else "-", n.role,
                      cell(f"{n.mlx_version} ({n.mlx_device})" if n.mlx_version else "-"), cell(mpi),
                      cell(_links(n, report.topology)))
        console.print(t)
        c = report.cluster
        console.print(f"memory: {c['memory_gb']:g} GB total, {c['memory_available_gb']:g} GB available on live "
                      "nodes; " + markup(", ".join(f"{k} {v}" for k, v in c["nodes_by_status"].items())))
        comps = [f"{x['kind']}: {' - '.join(x['nodes'])}" for x in (report.topology or {}).get("components", [])
                 if x["kind"] != "single"]
        if comps:
            console.print("thunderbolt: " + markup("; ".join(comps)), highlight=False)
        if report.fabric and check_fabric.relevant(report.nodes):
            check_fabric.render_fabric(report.fabric, console)
    if report.problems:
        console.print("[bold]problems[/]")
        for p in report.problems:
            mark = "[red]x[/]" if p["blocking"] else "[yellow]![/]"
            who = f"{p['node']}: " if p["node"] else ""
            console.print(f" {mark} {markup(who)}{markup(p['message'], multiline=True)}\n"
                          f"     fix: {markup(p['fix'], multiline=True)}",
                          highlight=False, soft_wrap=True)
    else:
        console.print("[green]no problems found[/]")


# ---------------------------------------------------------------------------- --links


def _negotiated(topology: dict | None, a: str, b: str) -> float | None:
    speeds = [ln["speed_gbps"] for ln in (topology or {}).get("links", [])
              if {ln["a"], ln["b"]} == {a, b} and ln.get("speed_gbps")]
    return max(speeds) if speeds else None


def run_links(c: Client, report: CheckReport, *, mpi: bool, mbytes: int = 64, timeout_s: float = 300) -> list[dict]:
    """A short job across every ready node measuring each ring neighbour pair. Returns one row
    per link: from, to, latency_us, gbps, negotiated_gbps, verdict."""
    import time

    from shared.linkprobe import PROBE_MODULE, parse

    ready = [n.name for n in report.nodes if n.status == "ready"]
    if len(ready) < 2:
        raise RuntimeError(f"--links needs at least 2 ready nodes, {len(ready)} ready")
    cmd = ["python", "-m", PROBE_MODULE, "--mbytes", str(mbytes)] + (["--mpi"] if mpi else [])
    job = c.submit({"name": "check-links", "command": cmd, "node_names": ready,
                    "backend": "mpi" if mpi else "ring", "timeout_s": timeout_s, "start_timeout_s": 60})
    deadline = time.monotonic() + timeout_s + 60
    while (done := c.job(job.id)).status not in TERMINAL:
        if time.monotonic() > deadline:
            c.cancel(job.id)
            raise RuntimeError(f"link probe {job.id} did not finish in time")
        time.sleep(0.3)
    if done.status != "succeeded":
        raise RuntimeError(f"link probe {job.id} {done.status}: {done.error}")
    text, _ = c.logs(job.id)
    rows = []
    for line in text.splitlines():
        rec = parse(line)
        if rec is None:
            continue
        a, b = done.nodes[rec["rank"]], done.nodes[rec["to"]]
        neg = _negotiated(report.topology, a, b)
        verdict = "ok"
        if neg and rec["gbps"] < 0.25 * neg:
            verdict = f"only {rec['gbps'] / neg:.0%} of the negotiated {neg:g} Gb/s"
        if rec["gbps"] < 1.5 and (neg or 0) >= 10:
            verdict = "at Ethernet speed: traffic is not using the Thunderbolt link"
        rows.append({"from": a, "to": b, "latency_us": rec["latency_us"], "gbps": rec["gbps"],
                     "negotiated_gbps": neg, "verdict": verdict})
    return sorted(rows, key=lambda r: (r["from"], r["to"]))


def render_links(rows: list[dict], console: Console) -> None:
    t = Table(title="Links measured (ring neighbours)", title_justify="left")
    for col in ("from", "to", "latency", "measured", "negotiated", "verdict"):
        t.add_column(col)
    for r in rows:
        neg = f"{r['negotiated_gbps']:g} Gb/s" if r["negotiated_gbps"] else "no Thunderbolt link"
        colour = "green" if r["verdict"] == "ok" else "yellow"
        t.add_row(cell(r["from"]), cell(r["to"]), f"{r['latency_us']:.0f} us", f"{r['gbps']:.2f} Gb/s", neg,
                  f"[{colour}]{markup(r['verdict'])}[/]")
    console.print(t)
