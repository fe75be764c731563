"""Problems of single nodes: declared in cluster.yaml but never heard from, declared as
Thunderbolt-connected but cabled to nothing, reporting facts that contradict the declaration,
waiting for approval, or with problems its own agent found.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from coordinator.checks.problem import Problem
from shared.schemas import DeclaredNode, NodeFacts, NodeOut

if TYPE_CHECKING:
    from coordinator.topology.graph import Topology


def _reported(n: NodeOut) -> bool:
    return n.registered_at is not None or n.last_heartbeat is not None


def never_reported(nodes: Sequence[NodeOut]) -> list[Problem]:
    return [Problem(n.name, f"declared in cluster.yaml ({n.declared.host}) but its agent has never reported",
                    f"install and start the agent on {n.declared.host} (jupiter agent install), pointing it at "
                    "this coordinator with the join token, or remove the node from cluster.yaml", "never_reported")
            for n in nodes if n.declared is not None and n.status == "down" and not _reported(n)]


def no_link(topology: Topology, nodes: Sequence[NodeOut]) -> list[Problem]:
    """Declared as Thunderbolt-connected, but cabled to no other node (one-sided cables count:
    they have their own problem). A node that never reported has its own problem instead."""
    linked = {i for ln in topology.links for i in (ln.a, ln.b)}
    return [Problem(n.name, "declared connection_type thunderbolt but has no Thunderbolt link to another node",
                    "cable it to another node with a Thunderbolt 4/5 cable, or set connection_type to ethernet "
                    "or wifi in cluster.yaml", "no_link")
            for n in nodes if n.declared is not None and n.declared.connection_type == "thunderbolt"
            and _reported(n) and n.id not in linked]


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


def declared_mismatch(n: NodeOut, facts: NodeFacts | None) -> list[Problem]:
    return [Problem(n.name, p, "correct cluster.yaml, or check that the right machine registered under this host",
                    "declared_mismatch") for p in declared_problems(n.declared, facts)]


def agent_problems(n: NodeOut, facts: NodeFacts | None) -> list[Problem]:
    """What the agent found on its own node (MPICH only, MLX missing, a probe that failed)."""
    return [Problem(n.name, p, "see the agent's log on that node, fix it there, and the next fact refresh clears it",
                    "agent") for p in (facts.problems if facts else [])]


def pending(n: NodeOut) -> list[Problem]:
    if n.admitted:
        return []
    return [Problem(n.name, "enrolled with a join token that does not admit by itself: pending, it gets no work",
                    f"check its facts (jupiter nodes), then admit it: jupiter nodes approve '{n.name}' "
                    f"(or delete it: jupiter nodes delete '{n.name}')", "pending_approval")]
