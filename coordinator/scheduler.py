"""Placement: which nodes a job runs on, in which rank order, at which addresses and ports.

Pure functions over node views, so the rules are testable without a server. Nomad-style: the
agents fingerprint (facts), the coordinator decides here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from coordinator import topology
from shared.cluster_config import ClusterConfig
from shared.schemas import JobSpec, NetInterface, NodeOut

# Below the ephemeral ranges (Linux 32768-60999, macOS 49152-65535): an outgoing connection's
# local port can never be the one a rank is told to listen on.
PORT_BASE = 20000
PORT_LIMIT = 32000


@dataclass(frozen=True)
class Placement:
    nodes: list[NodeOut]          # rank order: node i holds ranks i*ppn .. i*ppn+ppn-1
    addresses: list[str]          # the address rank traffic uses on each node


@dataclass(frozen=True)
class Unplaceable:
    reason: str


def rank_address(node: NodeOut, config: ClusterConfig, interfaces: list[NetInterface]) -> str | None:
    """The address ranks on `node` listen on: a forced interface, else the Thunderbolt bridge when
    preferred and up, else the node's host. None when a forced interface is missing."""
    if config.network_interface:
        for iface in interfaces:
            if iface.name == config.network_interface and iface.up:
                v4 = [ip for ip in iface.ips if ":" not in ip]
                if v4:
                    return v4[0]
        return None
    bridge = node.thunderbolt.bridge
    if config.use_thunderbolt_bridge and bridge and bridge.up:
        v4 = [ip for ip in bridge.ips if ":" not in ip]
        if v4:
            return v4[0]
    return node.host


def _why_not(node: NodeOut, spec: JobSpec, backend: str) -> str | None:
    if node.status == "down":
        return "down"
    if not node.admitted:
        return "pending approval"
    if node.status == "draining" or node.drained:
        return "draining"
    if node.status == "busy":
        return "busy"
    if spec.roles and node.role not in spec.roles:
        return f"role {node.role} not in {'/'.join(spec.roles)}"
    if spec.min_memory_gb and (node.memory_gb or 0) < spec.min_memory_gb:
        return f"{node.memory_gb or 0:g} GB < {spec.min_memory_gb:g} GB"
    if backend == "mpi" and node.mpi.implementation != "openmpi":
        return "no Open MPI (MLX's MPI backend loads only Open MPI)"
    if spec.finetune is not None and not node.mlx_lm_version:
        return "no mlx-lm for its rank Python (python -m pip install mlx-lm there)"
    return None


def _rotate_to(nodes: list[NodeOut], node_id: str | None) -> list[NodeOut]:
    """The same ring starting at `node_id` (rotation keeps every neighbour pair)."""
    ids = [n.id for n in nodes]
    if node_id not in ids:
        return nodes
    i = ids.index(node_id)
    return nodes[i:] + nodes[:i]


def place(spec: JobSpec, backend: str, nodes: list[NodeOut], config: ClusterConfig, busy: set[str],
          interfaces: dict[str, list[NetInterface]], prefer_rank0: str | None = None) -> Placement | Unplaceable:
    """Choose `spec.nodes` eligible nodes, or say why the job must wait. `prefer_rank0` keeps a
    restarted trainer's rank 0 where its checkpoints are, when that node is still eligible."""
    views = []
    for n in nodes:
        if n.id in busy and n.status == "ready":
            n = n.model_copy(update={"status": "busy"})
        views.append(n)
    by_name = {n.name: n for n in views}
    if spec.node_names:
        chosen, waiting = [], []
        for name in spec.node_names:
            node = by_name.get(name)
            if node is None:
                return Unplaceable(f"node {name!r} is not known to the coordinator")
            why = _why_not(node, spec, backend)
            if why:
                waiting.append(f"{name} ({why})")
            chosen.append(node)
        if waiting:
            return Unplaceable("waiting for " + ", ".join(waiting))
    else:
        eligible, skipped = [], []
        for n in views:
            why = _why_not(n, spec, backend)
            (skipped.append(f"{n.name}: {why}") if why else eligible.append(n))
        if len(eligible) < spec.nodes:
            detail = f"; not eligible: {', '.join(skipped)}" if skipped else ""
            return Unplaceable(f"needs {spec.nodes} node(s), {len(eligible)} eligible of {len(views)}{detail}")
        topo = topology.build(eligible, interfaces)
        # Take a cabled stretch of the eligible nodes, then order just those, so the ring can
        # close over a cable between the last rank and the first where one exists.
        stretch = _rotate_to(order_for_ring(eligible, topo), prefer_rank0)[: spec.nodes]
        chosen = _rotate_to(order_for_ring(stretch, topo), prefer_rank0)
    topo = topology.build(chosen, interfaces)
    addresses = []
    for j, n in enumerate(chosen):
        addr = rank_address(n, config, interfaces.get(n.id, []))
        if addr is None:
            return Unplaceable(f"{n.name} has no up interface {config.network_interface!r} (network_interface)")
        bridge = n.thunderbolt.bridge
        if config.use_thunderbolt_bridge and not config.network_interface and not (bridge and bridge.up):
            addr = _link_address(topo, chosen[j - 1], n) or addr
        addresses.append(addr)
    return Placement(nodes=chosen, addresses=addresses)


def reservation(spec: JobSpec, backend: str, nodes: list[NodeOut], config: ClusterConfig,
                interfaces: dict[str, list[NetInterface]]) -> set[str]:
    """The nodes to hold for a job that waits only because nodes are busy: those it could use.

    Without this a wide job could wait for ever behind a stream of narrow ones, each taking the one
    node that just freed. Empty when the job would not fit even with every node idle (down,
    drained, too few of the right kind): holding nodes for it would only stall the others."""
    idle = [n.model_copy(update={"status": "ready"}) if n.status == "busy" else n for n in nodes]
    if not isinstance(place(spec, backend, idle, config, set(), interfaces), Placement):
        return set()
    if spec.node_names:
        return {n.id for n in idle if n.name in spec.node_names}
    return {n.id for n in idle if _why_not(n, spec, backend) is None}


def order_for_ring(nodes: list[NodeOut], topo: topology.Topology) -> list[NodeOut]:
    """A stable rank order in which ring neighbours share a Thunderbolt cable where the topology
    allows it (a cabled cycle, else a cabled path); by name otherwise."""
    by_id = {n.id: n for n in nodes}
    return [by_id[i] for i in topology.ring_order(topo, [n.id for n in nodes])]


def _link_address(topo: topology.Topology, left: NodeOut, node: NodeOut) -> str | None:
    """The address `node` has on its cable from its left ring neighbour, which is where that
    neighbour connects to it (MLX's ring: rank i connects to rank i+1)."""
    if left.id == node.id:
        return None
    la = topology.link_addresses(topo, left.id, node.id)
    if la is None:
        return None
    v4 = [ip for ip in la.b.ips if ":" not in ip]
    return v4[0] if v4 else None


def pick_ports(addresses: list[str], per_node: int, in_use: set[tuple[str, int]],
               rng: random.Random | None = None) -> list[list[int]]:
    """One port per rank, unused on its address by any active job of ours. Each job starts at a
    random point of the range: MLX binds with SO_REUSEPORT, so two coordinators (or anything
    else) handing out the same fixed ports on one machine would pair up strangers' ranks."""
    rng = rng or random.Random()
    span = PORT_LIMIT - PORT_BASE
    start = rng.randrange(span)
    out = []
    for addr in addresses:
        ports, k = [], 0
        while len(ports) < per_node:
            if k >= span:
                raise RuntimeError(f"no free rank port left on {addr}")
            p = PORT_BASE + (start + k) % span
            if (addr, p) not in in_use:
                ports.append(p)
                in_use.add((addr, p))
            k += 1
        out.append(ports)
    return out
