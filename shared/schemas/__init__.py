"""The wire format between agents, the coordinator and clients.

Modelled once, here; the coordinator's routes and the agent's loop both use these types, so the
OpenAPI page documents exactly what travels. One module per concern: `common` (the strict base,
hosts, names, plain text, errors), `nodes` (facts, registration, heartbeats, node views), `ranks`
(assignments, stop orders, rank states and output), `jobs`, `tokens` (join tokens) and `cluster`
(summary, problems, health). Import from `shared.schemas`: every public name is here.
"""

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
from shared.status import TERMINAL  # callers import it from here too

__all__ = [
    "ENV_KEY_RE", "EXAMPLE_FACTS", "HOST_RE", "NAME_RE", "RESERVED_ENV", "TERMINAL", "Arg", "AttemptOut",
    "Backend", "ClusterSummary", "DeclaredNode", "DeviceType", "EnvValue", "ErrorOut", "EventOut", "GPUInfo",
    "Health", "HeartbeatRequest", "HeartbeatResponse", "Host", "JobDetail", "JobOut", "JobSpec", "JobStatus",
    "LossPoint", "MPIInfo", "NetInterface", "NodeDetail", "NodeFacts", "NodeKey", "NodeName", "NodeOut",
    "NodeStatus", "OrdersRequest", "PlainText", "ProblemOut", "RankAssignment", "RankOut", "RankOutput",
    "RankReport", "RankReportAck", "RankState", "RegisterRequest", "RegisterResponse", "Role", "ShortText",
    "StopOrder", "ThunderboltBridge", "ThunderboltInfo", "ThunderboltPort", "TokenCreate", "TokenOut", "Wire",
    "plain_text", "validate_host",
]
