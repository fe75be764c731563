"""The fabric the fast backends need: RDMA over Thunderbolt 5 (jaccl, jaccl-ring) and MLX with
CUDA on NVIDIA nodes (nccl).

Two uses. `problems`: what blocks the backend cluster.yaml names, each with its fix, for the
problems survey (coordinator/problems.py); nothing when it names another backend, since a Mac
without RDMA is no fault on a ring cluster. `report`: the body of `GET /topology?format=jaccl`,
what `jupiter check` prints whatever the backend: each node's and each cable's RDMA blockers,
the NVIDIA nodes, the device matrices, and which backends a set of nodes can use and which one
Jupiter would pick for them (coordinator/jobs/choice.py, the same choice a job gets at submit):
the nodes asked for, else all live nodes and the notable subsets among them (the largest RDMA
mesh and ring, the NVIDIA nodes with CUDA).

What blocks RDMA on a node or a cable is worked out in coordinator/topology/fabric.py; this module
only words it as problems and answers.
"""

from __future__ import annotations

from collections.abc import Sequence

from coordinator import topology
from coordinator.checks.problem import Problem
from coordinator.jobs import choice
from coordinator.scheduler import Placement, place
from coordinator.topology import fabric
from shared.backends import CUDA_FIX, FASTEST_FIRST, RDMA
from shared.cluster_config import ClusterConfig
from shared.schemas import JobSpec, NetInterface, NodeOut

MAX_NODES = 256  # names `?nodes=` may list, as a job's node_names
# Cable blockers other checks already report in their own words (coordinator/checks/cabling.py).
_REPORTED_ELSEWHERE = {"one_sided", "not_cabled"}


# --------------------------------------------------------------------------- problems


def problems(topo: topology.Topology, nodes: Sequence[NodeOut], backend: str) -> list[Problem]:
    """What keeps `backend` (cluster.yaml's) off the live nodes: for jaccl and jaccl-ring, each
    Mac's RDMA blockers (`jaccl_rdma`), the Thunderbolt ports of each Mac still in an up bridge
    (`jaccl_bridge`), and each cable RDMA cannot use between two Macs otherwise ready
    (`jaccl_link`); for nccl, each NVIDIA node whose MLX has no CUDA (`nccl_cuda`)."""
    if backend in RDMA:
        return _rdma_problems(topo, nodes, backend)
    if backend == "nccl":
        return [Problem(n.name, f"backend nccl: MLX on {n.name} has no CUDA (its device is "
                                f"{n.mlx_device or 'unknown'}), so NCCL cannot use its GPUs", CUDA_FIX, "nccl_cuda")
                for n in _by_name(nodes) if n.status != "down" and n.device_type == "nvidia" and n.mlx_device != "gpu"]
    return []


def _rdma_problems(topo: topology.Topology, nodes: Sequence[NodeOut], backend: str) -> list[Problem]:
    # Only live Macs: a Linux node is no fault of a jaccl cluster, it just takes no jaccl rank.
    macs = [n.id for n in _by_name(nodes) if n.status != "down" and n.device_type == "mac" and n.id in topo.nodes]
    out, blocked = [], set()
    for i in macs:
        for b in fabric.node_blockers(topo, i):
            out.append(Problem(b.node, f"backend {backend}: {b.message}", b.fix, "jaccl_rdma"))
            blocked.add(i)
    bridged: dict[str, list[str]] = {}   # node id -> its bridged interfaces (cabled to a Mac)
    cables = []
    live = set(macs)
    for ln in topo.links:
        if ln.a not in live or ln.b not in live:
            continue
        for b in fabric.link_blockers(topo, ln):
            if b.code == "bridge_on":
                end = ln.a if topo.name(ln.a) == b.node else ln.b
                bridged.setdefault(end, []).append(ln.at(end)[1] or f"Thunderbolt {ln.at(end)[0]}")
            elif b.code not in _REPORTED_ELSEWHERE and not {ln.a, ln.b} & blocked:
                # A cable between two Macs that cannot use RDMA anyway says nothing more.
                cables.append(Problem(b.node, f"backend {backend}: {b.message}", b.fix, "jaccl_link"))
    for i in sorted(bridged, key=topo.key):
        name, found = topo.name(i), sorted(set(bridged[i]))
        ports = ", ".join(found)
        which = (f"Thunderbolt ports {ports} of {name} are" if len(found) > 1
                 else f"Thunderbolt port {ports} of {name} is")
        out.append(Problem(name, f"backend {backend}: {which} in the Thunderbolt Bridge, which is up: RDMA needs the "
                                 "bridge off on the cables it uses",
                           f"on {name}: System Settings > Network > Thunderbolt Bridge, remove {ports} (or turn the "
                           "bridge off), as `mlx.distributed_config --auto-setup` does", "jaccl_bridge"))
    return out + cables


def _by_name(nodes: Sequence[NodeOut]) -> list[NodeOut]:
    return sorted(nodes, key=lambda n: (n.name.casefold(), n.name, n.id))


# --------------------------------------------------------------------------- GET /topology?format=jaccl


class UnknownNodes(ValueError):
    """`?nodes=` names a node the coordinator does not know, twice, or too many."""


def parse_names(text: str | None, known: Sequence[str]) -> list[str] | None:
    """The node names of `?nodes=a,b,c` in order, or None when not given."""
    if text is None:
        return None
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise UnknownNodes("nodes: give node names separated by commas")
    if len(names) > MAX_NODES:
        raise UnknownNodes(f"nodes: at most {MAX_NODES} names, {len(names)} given")
    twice = sorted({s for s in names if names.count(s) > 1})
    if twice:
        raise UnknownNodes(f"nodes: {', '.join(twice)} appears more than once")
    known_names = set(known)
    unknown = [s for s in names if s not in known_names]
    if unknown:
        raise UnknownNodes(f"nodes: unknown node(s) {', '.join(unknown)}")
    return names


def report(nodes: Sequence[NodeOut], topo: topology.Topology, config: ClusterConfig,
           interfaces: dict[str, list[NetInterface]], names: list[str] | None = None) -> dict:
    """The answer of GET /topology?format=jaccl. `names` (validated by `parse_names`): these
    nodes in this rank order; else the live, admitted nodes in ring order. `topo` is the whole
    cluster's graph (the survey's)."""
    by_name = {n.name: n for n in nodes}
    if names is not None:
        chosen = [by_name[s] for s in names]
        order = [n.id for n in chosen]
        topo = topology.build(chosen, interfaces)   # the fabric of just these nodes
        groups = [("the nodes asked for", chosen)]
    else:
        live = [n.id for n in nodes if n.status != "down" and n.admitted]
        # A cycle over cables RDMA can use when there is one (any order suits jaccl's mesh,
        # only such a cycle suits jaccl-ring), else the cabled ring order.
        order = (len(live) > 1 and fabric.ring_order_rdma(topo, live, len(live))) or topology.ring_order(topo, live)
        by_id = {n.id: n for n in nodes}
        chosen = [by_id[i] for i in order]
        groups = [("all live nodes", chosen)] + [(label, [by_id[i] for i in ids])
                                                 for label, ids in _subsets(topo, chosen)]
    mesh = topology.jaccl_check(topo, order)
    ring = topology.jaccl_check(topo, order, ring=True)
    return {"nodes": [n.name for n in chosen],
            "jaccl": {"devices": mesh.matrix, "reason": mesh.reason},
            "jaccl_ring": {"devices": ring.matrix, "reason": ring.reason},
            "fabric": fabric.fabric_json(topo),
            "nvidia": [_nvidia(n) for n in _by_name(chosen) if n.device_type == "nvidia"],
            "backend": config.backend,
            "backends": [{"label": label, **backends_for(group, names is not None, config, interfaces)}
                         for label, group in groups] if chosen else []}


def _subsets(topo: topology.Topology, live: Sequence[NodeOut]) -> list[tuple[str, list[str]]]:
    """The notable subsets of the live, admitted nodes, each only when it leaves some of them
    out: the most RDMA can join in a full mesh (jaccl), the most in a cycle when that is more
    (jaccl-ring; a mesh is a cycle too, so one no larger says nothing new), and the NVIDIA nodes
    whose MLX has CUDA (nccl). Labels and node ids."""
    ids = [n.id for n in live]
    mesh = fabric.largest(topo, ids, "jaccl") or []
    ring = fabric.largest(topo, ids, "jaccl-ring") or []
    cuda = [n.id for n in _by_name(live) if n.device_type == "nvidia" and n.mlx_device == "gpu"]
    found = [("largest RDMA mesh", mesh, len(mesh) >= 2), ("largest RDMA ring", ring, len(ring) > max(len(mesh), 2)),
             ("NVIDIA nodes with CUDA", cuda, bool(cuda))]
    return [(label, group) for label, group, notable in found if notable and len(group) < len(ids)]


def _nvidia(n: NodeOut) -> dict:
    cuda = n.mlx_device == "gpu"
    blockers = [] if cuda else [{"code": "no_cuda", "message": f"MLX on {n.name} has no CUDA (its device is "
                                 f"{n.mlx_device or 'unknown'}): nccl cannot use its GPUs", "fix": CUDA_FIX}]
    return {"id": n.id, "name": n.name, "status": n.status, "gpus": [g.model_dump(mode="json") for g in n.gpus],
            "mlx_version": n.mlx_version, "mlx_device": n.mlx_device, "nccl_ready": cuda, "blockers": blockers}


def backends_for(chosen: Sequence[NodeOut], ordered: bool, config: ClusterConfig,
                 interfaces: dict[str, list[NetInterface]]) -> dict:
    """Which backends a job on exactly `chosen` could use (null, or why not), the one Jupiter
    would pick for a job naming none (cluster.yaml's unless it is `auto`), and the fastest they
    support. `ordered`: `chosen` is the rank order asked for (jaccl-ring must follow it); else
    the scheduler orders them. Judged as if every one of them were up and idle: this is about
    what the nodes are and how they are cabled, not what they are doing."""
    out: dict = {"nodes": [n.name for n in chosen], "usable": {}, "pick": None, "why": None,
                 "fastest": None, "fastest_why": None}
    pending = [n.name for n in chosen if not n.admitted]
    if pending:
        out["usable"] = {b: f"not yet approved: {', '.join(pending)}" for b in FASTEST_FIRST}
        return out
    if len(chosen) > MAX_NODES:  # a job's limit, and each backend's search is bounded for it
        out["usable"] = {b: f"more than {MAX_NODES} nodes: ask about some of them (?nodes=a,b,...)"
                         for b in FASTEST_FIRST}
        return out
    idle = [n.model_copy(update={"status": "ready", "drained": False}) for n in chosen]
    topo = topology.build(idle, interfaces)
    spec = JobSpec(command=["python", "-c", "pass"], nodes=len(idle),
                   node_names=[n.name for n in idle] if ordered else None)
    for backend in FASTEST_FIRST:
        # The scheduler's own answer (choice.py's quick ones say less: "no node has RDMA enabled").
        if backend == "nccl" and not any(n.device_type == "nvidia" for n in idle):
            out["usable"][backend] = "none of these nodes is an NVIDIA node"
            continue
        got = place(spec, backend, idle, config, set(), interfaces)
        why = None if isinstance(got, Placement) else got.reason
        if why and backend in RDMA and not ordered:
            # The scheduler lists every node it ruled out; explain names the first few blockers.
            why = fabric.explain(topo, [n.id for n in idle], backend, len(idle)) or why
        out["usable"][backend] = why
    out["fastest"], out["fastest_why"] = choice.choose(spec, "auto", idle, config, interfaces)
    if config.backend == "auto":
        out["pick"], out["why"] = out["fastest"], out["fastest_why"]
    else:
        out["pick"], out["why"] = choice.choose(spec, config.backend, idle, config, interfaces)
    return out
