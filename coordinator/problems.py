"""Every problem Jupiter can see in the cluster, each with its fix, gathered in one place so the
node list, GET /cluster, `jupiter check` and the dashboard all say the same thing.

The checks themselves live in coordinator/checks/; this is the one place that runs them
together, in a fixed order, and caches the result per registry state (`Surveyor`)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from coordinator import topology
from coordinator.checks import backends, config, versions
from coordinator.checks import fabric as fabric_checks
from coordinator.checks import nodes as node_checks
from coordinator.checks import pressure as pressure_checks
from coordinator.checks.problem import Problem
from coordinator.jsonitems import JsonItems
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
    out += backends.node_facts(nodes, backend) + fabric_checks.problems(topo, nodes, backend)
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
        extra += pressure_checks.problems(n)
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
    listing 1,000 nodes stays cheap while heartbeats stream in; each node with its problems, and
    its JSON for GET /nodes, is kept until its view or its problems change. One Surveyor per
    registry (the app owns it), so one registry's problems can never be handed to another."""

    def __init__(self, registry):
        self.registry = registry
        self._lock = threading.Lock()
        self._last: tuple[tuple, topology.Topology, list[Problem], dict[str, tuple[str, ...]]] | None = None
        self._marked: dict[str, tuple[NodeOut, tuple[str, ...], NodeOut]] = {}  # id -> (view, lines, marked view)
        self._json = JsonItems(NodeOut)

    def survey(self) -> Survey:
        # The key first: problems found from a snapshot at least as new as the key they are kept
        # under, so a change during the snapshot is seen by the next call, never lost.
        key = self.registry.state_key()
        nodes, facts = self.registry.snapshot()
        with self._lock:
            last = self._last
        if last is None or last[0] != key:
            interfaces = {nid: f.interfaces for nid, f in facts.items() if f is not None}
            topo, found = gather(nodes, facts, interfaces, self.registry.config)
            last = (key, topo, found, _lines_by_node(found))
            with self._lock:
                self._last = last
        return Survey(self._with_problems(nodes, last[3]), last[1], last[2])

    def nodes_json(self) -> bytes:
        """GET /nodes's body: `survey().nodes` as FastAPI's response model would serialise them,
        each node's bytes reused while it is the same object."""
        return self._json.dump(self.survey().nodes)

    def _with_problems(self, nodes: Sequence[NodeOut], by_node: dict[str, tuple[str, ...]]) -> list[NodeOut]:
        with self._lock:
            known = dict(self._marked)
        out, fresh = [], {}
        for n in nodes:
            lines = by_node.get(n.name, ())
            hit = known.get(n.id)
            if hit is not None and hit[0] is n and hit[1] == lines:
                out.append(hit[2])
                continue
            marked = n.model_copy(update={"problems": list(lines)}) if lines else n
            fresh[n.id] = (n, lines, marked)
            out.append(marked)
        with self._lock:
            self._marked.update(fresh)
            if len(self._marked) > len(nodes):
                listed = {n.id for n in nodes}
                self._marked = {k: v for k, v in self._marked.items() if k in listed}
        return out


def _lines_by_node(problems: Sequence[Problem]) -> dict[str, tuple[str, ...]]:
    """Node name -> the problems that name it, as 'message (fix: ...)' lines."""
    by_node: dict[str, list[str]] = {}
    for p in problems:
        if p.node is not None:
            by_node.setdefault(p.node, []).append(f"{p.message} (fix: {p.fix})")
    return {k: tuple(v) for k, v in by_node.items()}


def with_problems(nodes: Sequence[NodeOut], problems: Sequence[Problem]) -> list[NodeOut]:
    """Each node with the problems that name it, as 'message (fix: ...)' lines."""
    by_node = _lines_by_node(problems)
    return [n.model_copy(update={"problems": list(by_node[n.name])}) if n.name in by_node else n for n in nodes]
