"""The "fabric" section of `jupiter check`: what the fast backends need and what stands in their
way, node by node and cable by cable, and which backend Jupiter would pick for the live nodes
and for the notable sets among them (the largest RDMA mesh and ring, the NVIDIA nodes with CUDA).

Everything here is the coordinator's answer to `GET /topology?format=jaccl` (the blockers, their
fixes, the backends each set of nodes can use, the pick and why): this module only fetches and
prints it, so the CLI and the API never disagree. Shown whatever cluster.yaml's backend is, as
information; the blockers count against the exit code only through the problems the coordinator
raises when cluster.yaml names jaccl, jaccl-ring or nccl.
"""

from __future__ import annotations

from rich.console import Console

from shared.backends import FASTEST_FIRST, RDMA
from shared.client import ApiError, Client
from shared.schemas import NodeOut
from shared.text import markup


def fetch(c: Client) -> dict | None:
    """The coordinator's fabric answer, or None from one too old to give it."""
    try:
        return c.request("GET", "/topology", params={"format": "jaccl"}).json()
    except ApiError:
        return None


def relevant(nodes: list[NodeOut]) -> bool:
    """Whether the section has anything to say: a Mac with Thunderbolt facts, or an NVIDIA node."""
    return any(n.device_type == "nvidia" or (n.device_type == "mac" and (
        n.thunderbolt.ports or n.thunderbolt.rdma_enabled is not None)) for n in nodes)


def render_fabric(fabric: dict, console: Console) -> None:
    configured = fabric.get("backend") or "auto"
    rdma_mark = "[red]x[/]" if configured in RDMA else "[yellow]![/]"
    say = _printer(console)
    say(f"[bold]fabric[/] (backend in cluster.yaml: {markup(configured)})")
    macs = [n for n in fabric.get("fabric", {}).get("nodes", [])
            if not any(b["code"] == "not_mac" for b in n["blockers"])]
    mac_ids = {n["id"] for n in macs}
    for n in macs:
        verdict = "[green]RDMA ok[/]" if n["rdma_ready"] else "[yellow]no RDMA[/]"
        say(f" {markup(n['name'])}: {markup(_node_facts(n))}: {verdict}")
        _blockers(say, n["blockers"], rdma_mark)
    blocked = {n["id"]: n["name"] for n in macs if not n["rdma_ready"]}
    for c in fabric.get("fabric", {}).get("cables", []):
        if c["a_id"] not in mac_ids or c["b_id"] not in mac_ids:
            continue
        speed = f"{c['speed_gbps']:g} Gb/s" if c.get("speed_gbps") else "speed unknown"
        devices = f"{c.get('a_device') or 'no device'} - {c.get('b_device') or 'no device'}"
        ends = [blocked[i] for i in (c["a_id"], c["b_id"]) if i in blocked]
        if ends:  # what a blocked Mac's cables lack follows from its own blockers, said above
            verdict = f"[yellow]not for RDMA[/] ({markup(' and '.join(ends))}: see above)"
        else:
            verdict = "[green]RDMA ok[/]" if c["rdma_ready"] else "[yellow]not for RDMA[/]"
        say(f" cable {markup(c['cable'])}: {markup(speed)}, {markup(devices)}: {verdict}")
        if not ends:
            _blockers(say, c["blockers"], rdma_mark)
    nccl_mark = "[red]x[/]" if configured == "nccl" else "[yellow]![/]"
    for g in fabric.get("nvidia", []):
        mlx = f"MLX {g['mlx_version']} on {g['mlx_device'] or '?'}" if g.get("mlx_version") else "no MLX"
        verdict = "[green]nccl ok[/]" if g["nccl_ready"] else "[yellow]no nccl[/]"
        say(f" {markup(g['name'])}: NVIDIA, {len(g['gpus'])} GPU(s), {markup(mlx)}: {verdict}")
        _blockers(say, g["blockers"], nccl_mark)
    said: set[tuple[str, str]] = set()   # (backend, why not) already printed for an earlier set of nodes
    for entry in fabric.get("backends", []):
        _backends(say, entry, said)


def _node_facts(n: dict) -> str:
    """macOS, rdma_ctl, Thunderbolt 5 ports, RDMA devices and bridge, in one line."""
    rdma = {True: "enabled", False: "disabled"}.get(n["rdma_enabled"], "unknown")
    tb5 = n["thunderbolt5_ports"]
    ports = f"Thunderbolt 5 port(s) {', '.join(map(str, tb5))}" if tb5 else "no Thunderbolt 5 port"
    devs = n["rdma_devices"]
    devices = ("RDMA devices not reported" if devs is None
               else f"RDMA devices {', '.join(devs)}" if devs else "no RDMA device")
    b = n.get("bridge") or {}
    if not b.get("interface"):
        bridge = "no bridge"
    elif b.get("up"):
        bridge = f"{b['interface']} up" + (f" ({', '.join(b['members'])})" if b.get("members") else "")
    else:
        bridge = f"{b['interface']} down"
    return f"{n['os_version'] or 'macOS unknown'}, rdma_ctl {rdma}, {ports}, {devices}, {bridge}"


def _blockers(say, blockers: list[dict], mark: str) -> None:
    for b in blockers:
        say(f"   {mark} {markup(b['message'], multiline=True)}\n       fix: {markup(b['fix'], multiline=True)}")


def _backends(say, entry: dict, said: set[tuple[str, str]]) -> None:
    """One set of nodes (headed by its label: all live nodes, the largest RDMA mesh, ...): the
    backends it can use, why not the others, and the pick. A reason an earlier set already gave
    for the same backend is not printed again, and backends with the same reason share a line."""
    names = entry["nodes"]
    these = f"these {len(names)} nodes" if len(names) != 1 else "this node"
    usable = [b for b in FASTEST_FIRST if entry["usable"].get(b, "") is None]
    label = f"{markup(entry['label'])}: " if entry.get("label") else ""
    say(f" {label}backends {these} can use ({markup(', '.join(names))}): "
        + (markup(", ".join(usable)) if usable else "none"))
    reasons: dict[str, list[str]] = {}   # why not -> the backends it keeps off, fastest first
    for b in FASTEST_FIRST:
        why = entry["usable"].get(b)
        if why and (b, why) not in said:
            said.add((b, why))
            reasons.setdefault(why, []).append(b)
    for why, which in reasons.items():
        say(f"   {', '.join(which)}: {markup(why, multiline=True)}")
    pick = entry.get("pick")
    if pick:
        cannot = f"; but {markup(pick)} cannot run on all of them (above)" if entry["usable"].get(pick) else ""
        say(f" Jupiter would pick [bold]{markup(pick)}[/] for {these}: {markup(entry['why'])}{cannot}")
        if entry.get("fastest") and entry["fastest"] != pick:
            say(f"   (with backend auto in cluster.yaml it would pick {markup(entry['fastest'])}: "
                f"{markup(entry['fastest_why'])})")


def _printer(console: Console):
    def say(text: str) -> None:
        console.print(text, highlight=False, soft_wrap=True)
    return say
