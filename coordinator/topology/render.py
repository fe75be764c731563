"""The Thunderbolt graph for people and tools: the JSON GET /topology answers, and Graphviz
DOT text (`?format=dot`) with slow cables in red and one-sided ones dashed.
"""

from __future__ import annotations

from coordinator.checks.cabling import is_slow
from coordinator.topology.graph import Link, TopoNode, Topology


def to_json(topology: Topology) -> dict:
    """What GET /topology answers."""
    t = topology
    return {
        "nodes": [_node_json(t.nodes[i]) for i in sorted(t.nodes, key=t.key)],
        "links": [_link_json(t, ln) for ln in t.links],
        "strays": [{"node": t.name(s.node), "node_id": s.node, "port": s.port, "interface": s.interface,
                    "peer_uuid": s.peer_uuid, "peer_name": s.peer_name} for s in t.strays],
        "components": [{"kind": c.kind, "nodes": [t.name(i) for i in c.nodes], "ids": list(c.nodes)}
                       for c in t.components],
        "rings": [[t.name(i) for i in r] for r in t.rings],
        "warnings": [p.as_dict() for p in t.warnings],
        "notes": list(t.notes),
    }


def _node_json(n: TopoNode) -> dict:
    return {"id": n.id, "name": n.name, "chip": n.chip, "status": n.status, "rdma_enabled": n.rdma_enabled,
            "bridge": {"interface": n.bridge_interface, "members": list(n.bridge_members),
                       "ips": list(n.bridge_ips), "up": n.bridge_up}}


def _link_json(t: Topology, ln: Link) -> dict:
    return {"a": t.name(ln.a), "a_id": ln.a, "a_port": ln.a_port, "a_interface": ln.a_interface,
            "b": t.name(ln.b), "b_id": ln.b, "b_port": ln.b_port, "b_interface": ln.b_interface,
            "speed_gbps": ln.speed_gbps, "one_sided": ln.one_sided, "slow": is_slow(t, ln)}


def to_dot(topology: Topology) -> str:
    """Graphviz text: nodes labelled name + chip, edges labelled with the speed, one-sided edges
    dashed, slow ones red; cables to hosts outside the cluster end at a dashed grey node."""
    t = topology
    lines = ['graph "jupiter" {', '  graph [label="Jupiter Thunderbolt topology", fontname="Helvetica"];',
             '  node [shape=box, style=rounded, fontname="Helvetica"];', '  edge [fontname="Helvetica"];']
    for i in sorted(t.nodes, key=t.key):
        n = t.nodes[i]
        label = n.name + (f"\n{n.chip}" if n.chip else "")
        lines.append(f"  {_q(i)} [label={_q(label)}];")
    for ln in t.links:
        lines.append(f"  {_q(ln.a)} -- {_q(ln.b)} [{_edge_attrs(t, ln)}];")
    for stray_id, label in sorted({(f"peer:{s.peer_uuid}", s.peer_name or "unknown host") for s in t.strays}):
        lines.append(f"  {_q(stray_id)} [label={_q(label + chr(10) + 'not in cluster')}, "
                     'style="dashed,rounded", color=grey];')
    for s in t.strays:
        lines.append(f"  {_q(s.node)} -- {_q('peer:' + s.peer_uuid)} "
                     f"[taillabel={_q(s.interface or f'TB{s.port}')}, style=dashed, color=grey];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _edge_attrs(t: Topology, ln: Link) -> str:
    attrs = {"label": f"{ln.speed_gbps:g} Gb/s" if ln.speed_gbps is not None else "? Gb/s",
             "taillabel": ln.a_interface or f"TB{ln.a_port}"}
    if ln.b_port is not None:
        attrs["headlabel"] = ln.b_interface or f"TB{ln.b_port}"
    text = ", ".join(f"{k}={_q(v)}" for k, v in attrs.items())
    if ln.one_sided:
        text += ", style=dashed"
    if is_slow(t, ln):
        text += ", color=red, fontcolor=red"
    return text


def _q(text: str) -> str:
    """A DOT quoted string: quotes and backslashes escaped, newlines as DOT's \\n line break."""
    body = text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "\\n")
    return f'"{body}"'
