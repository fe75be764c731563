"""The wire format between agents, the coordinator and clients.

Modelled once, here; the coordinator's routes and the agent's loop both use these types, so the
OpenAPI page documents exactly what travels. One module per concern: `common` (the strict base,
hosts, names, plain text, errors), `nodes` (facts, registration, heartbeats, node views), `ranks`
(assignments, stop orders, rank states and output), `jobs`, `tokens` (join tokens) and `cluster`
(summary, problems, health). Import from `shared.schemas`: every public name is here.

The submodules load on first use of one of their names (`__getattr__` below): building pydantic
models costs memory, and the agent, which runs on every node for months, needs only `nodes` and
`ranks` (docs/benchmarks.md, "Idle agent"). `from shared.schemas import X` works as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Each public name and the submodule that defines it.
_WHERE = {
    "artifacts": ("ArtifactGlobs", "ArtifactOut"),
    "cluster": ("ClusterSummary", "Health", "ProblemOut"),
    "common": ("HOST_RE", "NAME_RE", "DeviceType", "ErrorOut", "Host", "NodeKey", "NodeName", "PlainText", "Role",
               "ShortText", "Wire", "plain_text", "validate_host"),
    "jobs": ("ENV_KEY_RE", "RESERVED_ENV", "Arg", "AttemptOut", "Backend", "EnvValue", "JobDetail", "JobOut",
             "JobSpec", "JobStatus", "LossPoint", "RankOut", "RankProgress", "Straggler"),
    "nodes": ("EXAMPLE_FACTS", "DeclaredNode", "EventOut", "GPUInfo", "HeartbeatRequest", "HeartbeatResponse",
              "MPIInfo", "NetInterface", "NodeDetail", "NodeFacts", "NodeOut", "NodeStatus", "Pressure",
              "RegisterRequest", "RegisterResponse", "ThunderboltBridge", "ThunderboltInfo", "ThunderboltPort"),
    "ranks": ("OrdersRequest", "RankAssignment", "RankOutput", "RankReport", "RankReportAck", "RankState",
              "StackDumpOrder", "StopOrder"),
    "tokens": ("TokenCreate", "TokenOut"),
}
_MODULE_OF = {name: f"shared.schemas.{mod}" for mod, names in _WHERE.items() for name in names}
_MODULE_OF["TERMINAL"] = "shared.status"  # callers import it from here too

__all__ = [
    "ENV_KEY_RE", "EXAMPLE_FACTS", "HOST_RE", "NAME_RE", "RESERVED_ENV", "TERMINAL", "Arg", "ArtifactGlobs",
    "ArtifactOut", "AttemptOut", "Backend", "ClusterSummary", "DeclaredNode", "DeviceType", "EnvValue", "ErrorOut",
    "EventOut", "GPUInfo",
    "Health", "HeartbeatRequest", "HeartbeatResponse", "Host", "JobDetail", "JobOut", "JobSpec", "JobStatus",
    "LossPoint", "MPIInfo", "NetInterface", "NodeDetail", "NodeFacts", "NodeKey", "NodeName", "NodeOut",
    "NodeStatus", "OrdersRequest", "PlainText", "Pressure", "ProblemOut", "RankAssignment", "RankOut", "RankOutput",
    "RankProgress", "RankReport", "RankReportAck", "RankState", "RegisterRequest", "RegisterResponse", "Role", "ShortText",
    "StackDumpOrder", "StopOrder", "Straggler", "ThunderboltBridge", "ThunderboltInfo", "ThunderboltPort", "TokenCreate", "TokenOut", "Wire",
    "plain_text", "validate_host",
]


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once found, a plain module attribute: no second lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and editors see; at run time the names come from __getattr__
    from shared.schemas.artifacts import ArtifactGlobs, ArtifactOut
    from shared.schemas.cluster import ClusterSummary, Health, ProblemOut
    from shared.schemas.common import (
        HOST_RE,
        NAME_RE,
        DeviceType,
        ErrorOut,
        Host,
        NodeKey,
        NodeName,
        PlainText,
        Role,
        ShortText,
        Wire,
        plain_text,
        validate_host,
    )
    from shared.schemas.jobs import (
        ENV_KEY_RE,
        RESERVED_ENV,
        Arg,
        AttemptOut,
        Backend,
        EnvValue,
        JobDetail,
        JobOut,
        JobSpec,
        JobStatus,
        LossPoint,
        RankOut,
    )
    from shared.schemas.nodes import (
        EXAMPLE_FACTS,
        DeclaredNode,
        EventOut,
        GPUInfo,
        HeartbeatRequest,
        HeartbeatResponse,
        MPIInfo,
        NetInterface,
        NodeDetail,
        NodeFacts,
        NodeOut,
        NodeStatus,
        Pressure,
        RegisterRequest,
        RegisterResponse,
        ThunderboltBridge,
        ThunderboltInfo,
        ThunderboltPort,
    )
    from shared.schemas.ranks import (
        OrdersRequest,
        RankAssignment,
        RankOutput,
        RankReport,
        RankReportAck,
        RankState,
        StopOrder,
    )
    from shared.schemas.tokens import TokenCreate, TokenOut
    from shared.status import TERMINAL
