"""Placement: which nodes a job runs on, in which rank order, at which addresses and ports.

Pure functions over node views, so the rules are testable without a server. Nomad-style: the
agents fingerprint (facts), the coordinator decides here.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

from coordinator import topology
from coordinator.topology import fabric
from shared.backends import CUDA_FIX, RDMA
from shared.cluster_config import ClusterConfig
from shared.schemas import JobSpec, NetInterface, NodeOut

# Below the ephemeral ranges (Linux 32768-60999, macOS 49152-65535): an outgoing connection's
# local port can never be the one a rank is told to listen on.
PORT_BASE = 20000
PORT_LIMIT = 32000


# Nodes left out of an RDMA placement whose reason is worked out and shown, at most.
EXPLAINED_LEFT_OUT = 4


@dataclass(frozen=True)
class Placement:
    nodes: list[NodeOut]          # rank order: node i holds ranks i*ppn .. i*ppn+ppn-1
    addresses: list[str]          # the address rank traffic uses on each node
    # jaccl, jaccl-ring: the MLX_IBV_DEVICES matrix in rank order (row i, column j: node i's device
    # cabled to node j), read from the nodes' facts now, since device names change at reboot.
    devices: list[list[str | None]] | None = None
    # Nodes that could have run the job but cannot join these over RDMA, each with why: (name, why).
    left_out: tuple[tuple[str, str], ...] = ()

    @property
    def note(self) -> str | None:
        return "left out " + "; ".join(f"{n}: {why}" for n, why in self.left_out) if self.left_out else None


@dataclass(frozen=True)
class Unplaceable:
    reason: str


def rank_address(node: NodeOut, config: ClusterConfig, interfaces: list[NetInterface]) -> str | None:
    """The address ranks on `node` listen on: a forced interface, else the Thunderbolt bridge when
    preferred and up, else the node's host. None when a forced interface is missing."""
    if config.network_interface:
        return _forced_address(config, interfaces)
    bridge = node.thunderbolt.bridge
    if config.use_thunderbolt_bridge and bridge and bridge.up:
        v4 = [ip for ip in bridge.ips if ":" not in ip]
        if v4:
            return v4[0]
    return node.host


def reachable_address(node: NodeOut, config: ClusterConfig, interfaces: list[NetInterface]) -> str | None:
    """An address of `node` that every other node reaches, for a rendezvous all ranks dial (JACCL's
    and NCCL's coordinator): the forced interface's, else the node's host. Never the Thunderbolt
    Bridge's: JACCL needs the bridge off, and a bridge address reaches only the Macs cabled to it."""
    if config.network_interface:
        return _forced_address(config, interfaces)
    return node.host


def _forced_address(config: ClusterConfig, interfaces: list[NetInterface]) -> str | None:
    for iface in interfaces:
        if iface.name == config.network_interface and iface.up:
            v4 = [ip for ip in iface.ips if ":" not in ip]
            if v4:
                return v4[0]
    return None


def _is_ipv6(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]").split("%")[0]).version == 6
    except ValueError:
        return False  # a name


def _why_not(node: NodeOut, spec: JobSpec, backend: str, topo: topology.Topology | None = None) -> str | None:
    """Why `node` cannot take a rank of the job now, or None. `topo` (every node's, for the RDMA
    backends) holds the facts that say whether a Mac can use RDMA at all."""
    why = _why_not_now(node, spec, backend)
    return why if why else _backend_unfit(node, spec, backend, topo)


def _why_not_now(node: NodeOut, spec: JobSpec, backend: str) -> str | None:
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


def _backend_unfit(node: NodeOut, spec: JobSpec, backend: str, topo: topology.Topology | None) -> str | None:
    """What the node lacks for the backend itself, whether busy or not."""
    if backend in RDMA and topo is not None:
        blockers = fabric.node_blockers(topo, node.id)
        return blockers[0].message if blockers else None
    if backend == "nccl":
        if node.device_type != "nvidia":
            return "not an NVIDIA node (nccl runs on NVIDIA GPUs)"
        if node.mlx_device != "gpu":
            return f"MLX there has no CUDA (fix: {CUDA_FIX})"
        if len(node.gpus) < spec.processes_per_node:
            return f"{len(node.gpus)} GPU(s) for {spec.processes_per_node} processes per node"
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
    rdma = backend in RDMA
    fab = topology.build(views, interfaces) if rdma else None  # every node's facts, for RDMA blockers
    devices, left_out = None, ()
    by_name = {n.name: n for n in views}
    if spec.node_names:
        chosen, waiting = [], []
        for name in spec.node_names:
            node = by_name.get(name)
            if node is None:
                return Unplaceable(f"node {name!r} is not known to the coordinator")
            why = _why_not(node, spec, backend, fab)
            if why:
                waiting.append(f"{name} ({why})")
            chosen.append(node)
        if waiting:
            return Unplaceable("waiting for " + ", ".join(waiting))
        if rdma:  # the order asked for is the rank order: it must be cabled as the backend needs
            check = topology.jaccl_check(fab, [n.id for n in chosen], ring=backend == "jaccl-ring")
            if check.matrix is None:
                return Unplaceable(check.reason or f"{backend} cannot run on {', '.join(spec.node_names)}")
            devices = check.matrix
    else:
        eligible, skipped, unfit = [], [], []
        for n in views:
            why = _why_not(n, spec, backend, fab)
            (skipped.append(f"{n.name}: {why}") if why else eligible.append(n))
            if why and rdma and n.device_type == "mac" and not _why_not_now(n, spec, backend):
                unfit.append((n.name, why))  # a free Mac that RDMA cannot use: worth a word
        if len(eligible) < spec.nodes:
            detail = f"; not eligible: {', '.join(skipped)}" if skipped else ""
            return Unplaceable(f"needs {spec.nodes} node(s), {len(eligible)} eligible of {len(views)}{detail}")
        if rdma:
            got = _rdma_pick(spec.nodes, backend, eligible, fab, prefer_rank0)
            if isinstance(got, Unplaceable):
                return got
            chosen, devices, cabling = got
            left_out = tuple(unfit[:EXPLAINED_LEFT_OUT]) + cabling
        elif backend == "nccl":  # no cables to follow: by name, rank 0 where it was
            chosen = _rotate_to(sorted(eligible, key=lambda n: (n.name, n.id)), prefer_rank0)[: spec.nodes]
        else:
            topo = topology.build(eligible, interfaces)
            # Take a cabled stretch of the eligible nodes, then order just those, so the ring can
            # close over a cable between the last rank and the first where one exists.
            stretch = _rotate_to(order_for_ring(eligible, topo), prefer_rank0)[: spec.nodes]
            chosen = _rotate_to(order_for_ring(stretch, topo), prefer_rank0)
    if rdma or backend == "nccl":
        return _rendezvous_placement(chosen, backend, config, interfaces, devices, left_out)
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


def _rdma_pick(n: int, backend: str, eligible: list[NodeOut], fab: topology.Topology, first: str | None
               ) -> tuple[list[NodeOut], list[list[str | None]], tuple[tuple[str, str], ...]] | Unplaceable:
    """`n` of the eligible Macs in rank order (jaccl: pairwise RDMA-cabled; jaccl-ring: a cycle over
    RDMA cables, in cycle order), their device matrix, and the eligible Macs that could not have
    joined them, each with why."""
    ring = backend == "jaccl-ring"
    find = fabric.ring_order_rdma if ring else fabric.mesh_order
    ids = [x.id for x in eligible]
    order = find(fab, ids, n, first=first) if first in ids else None
    order = order or find(fab, ids, n)
    if not order:
        return Unplaceable(fabric.explain(fab, ids, backend, n))
    check = topology.jaccl_check(fab, order, ring=ring)
    if check.matrix is None:
        return Unplaceable(check.reason or f"no {backend} device matrix for {', '.join(map(fab.name, order))}")
    # Only a node that could not have joined these, over a cable that is there but unusable, is
    # worth a word: the others were simply not needed, or are cabled elsewhere.
    left_out = []
    for other in [i for i in ids if i not in order][:EXPLAINED_LEFT_OUT]:
        why = None if find(fab, [*order, other], n + 1) else _cable_blocker(fab, order, other)
        if why:
            left_out.append((fab.name(other), why))
    by_id = {x.id: x for x in eligible}
    return [by_id[i] for i in order], check.matrix, tuple(left_out)


def _cable_blocker(fab: topology.Topology, order: list[str], other: str) -> str | None:
    """What keeps RDMA off the cable between `other` and the first of `order` it is cabled to."""
    for node_id in order:
        link, found = fabric.pair_link(fab, node_id, other)
        if link is None and found and found[0].code != "not_cabled":
            return found[0].message
    return None


def _rendezvous_placement(chosen: list[NodeOut], backend: str, config: ClusterConfig,
                          interfaces: dict[str, list[NetInterface]], devices: list[list[str | None]] | None,
                          left_out: tuple[tuple[str, str], ...]) -> Placement | Unplaceable:
    """jaccl, jaccl-ring, nccl: every rank dials rank 0's node (the coordinator of MLX_JACCL_COORDINATOR
    or NCCL_HOST_IP), so each node's address is one the whole cluster reaches."""
    addresses = []
    for n in chosen:
        addr = reachable_address(n, config, interfaces.get(n.id, []))
        if addr is None:
            return Unplaceable(f"{n.name} has no up interface {config.network_interface!r} (network_interface)")
        addresses.append(addr)
    if _is_ipv6(addresses[0]):
        return Unplaceable(f"{chosen[0].name}: rank 0's address {addresses[0]} is IPv6, which MLX's {backend} "
                           "coordinator address cannot be; give the node an IPv4 address or a name as its host, "
                           "or set network_interface in cluster.yaml")
    return Placement(nodes=chosen, addresses=addresses, devices=devices, left_out=left_out)


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
    fab = topology.build(idle, interfaces) if backend in RDMA else None
    return {n.id for n in idle if _why_not(n, spec, backend, fab) is None}


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
