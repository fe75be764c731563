"""Every problem Jupiter can see in the cluster, each with its fix, gathered in one place so the
node list, GET /cluster, `jupiter check` and the dashboard all say the same thing.

The checks themselves live in coordinator/checks/; this is the one place that runs them
together, in a fixed order, and caches the result per registry state (`Surveyor`)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from dataclasses import dataclass

from coordinator import topology
from coordinator.checks import backends, config, nodes as node_checks, versions
from coordinator.checks.problem import Problem
from shared.cluster_config import ClusterConfig
from shared.schemas import NodeFacts, NodeOut


def combine(topo: topology.Topology, nodes: Sequence[NodeOut], *, backend: str,
            extra: Iterable[Problem] = ()) -> list[Problem]:
    """Everything a person should fix, each with its fix: the cabling warnings of `topo`, then
    what the nodes' facts and declarations show, then `extra` (e.g. the registry's
    declared-vs-reported checks), each (node, message) once. `backend` is the one jobs will use
    (cluster.yaml's default)."""
    out = list(topo.warnings)
    out += node_checks.never_reported(nodes) + node_checks.no_link(topo, nodes)
    out += versions.mlx_skew(nodes) + versions.python_skew(nodes)
    out += backends.node_facts(nodes, backend)
    out += list(extra)
    seen, unique = set(), []
    for p in out:
        if (p.node, p.message) not in seen:
            seen.add((p.node, p.message))
            unique.append(p)
    return unique


def gather(nodes: Sequence[NodeOut], facts: dict[str, NodeFacts | None], interfaces: dict, cfg: ClusterConfig,
           ) -> tuple[topology.Topology, list[Problem]]:
    """The cabling of `nodes` and every problem in the cluster, in the order people read them."""
    topo = topology.build(nodes, interfaces)
    extra: list[Problem] = []
    for n in nodes:
        f = facts.get(n.id)
        extra += node_checks.agent_problems(n, f) + node_checks.declared_mismatch(n, f) + node_checks.pending(n)
    extra += backends.transport(cfg.backend, [n for n in nodes if n.status != "down"]) + config.unhonoured(cfg)
    return topo, combine(topo, nodes, backend=cfg.backend, extra=extra)


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
