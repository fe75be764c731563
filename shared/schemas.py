"""The wire format between agents, the coordinator and clients.

Modelled once, here; the coordinator's routes and the agent's loop both use these types, so the
OpenAPI page documents exactly what travels.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from shared.rankenv import RANK_VARS
from shared.status import TERMINAL  # noqa: F401  (re-exported: callers import it from here)
from shared.text import control_char

# A host is a DNS name or an IPv4/IPv6 literal: nothing a shell or a hostfile could misread.
HOST_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
# Node names are for people ("Main MacBook") but never carry control characters or path parts.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._()+-]{0,63}$")


def plain_text(value: str) -> str:
    """Refuse control characters (C0, DEL, C1, bidi overrides): text from nodes is shown to people
    in terminals and pages, where they would be escape sequences or reorder what is shown."""
    found = control_char(value)
    if found:
        raise ValueError(f"contains the control character {found}: only plain text is accepted")
    return value


Host = Annotated[str, StringConstraints(max_length=253), AfterValidator(lambda v: validate_host(v))]
NodeName = Annotated[str, StringConstraints(pattern=NAME_RE.pattern, max_length=64)]
# Plain text: no control characters, no escape sequences (see shared/text.py).
PlainText = AfterValidator(plain_text)
ShortText = Annotated[str, StringConstraints(max_length=256), PlainText]
NodeKey = Annotated[str, StringConstraints(min_length=32, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]

DeviceType = Literal["mac", "nvidia", "cpu"]
Role = Literal["generator", "trainer", "hybrid", "evaluator"]
# The words are shared/status.py's enums; Literal here keeps the OpenAPI page a plain list of strings
# (tests/test_status_words.py checks the two agree).
NodeStatus = Literal["ready", "busy", "draining", "down", "pending"]


class Wire(BaseModel):
    """Base for every wire model: unknown fields are refused so typos surface as 422s, and types
    are strict (`"nodes": true` or `"2"` is a 422, not 1 or 2)."""

    model_config = ConfigDict(extra="forbid", strict=True)


# --------------------------------------------------------------------------- facts (agent -> coordinator)


class MPIInfo(Wire):
    implementation: Literal["openmpi", "mpich"] | None = Field(None, examples=["openmpi"])
    version: ShortText | None = Field(None, examples=["5.0.11"])


class ThunderboltBridge(Wire):
    interface: ShortText | None = Field(None, examples=["bridge0"])
    ips: list[ShortText] = Field(default_factory=list, max_length=32, examples=[["169.254.10.1"]])
    up: bool = False
    members: list[ShortText] = Field(default_factory=list, max_length=32, examples=[["en2", "en3"]])


class ThunderboltPort(Wire):
    port: int = Field(..., ge=0, le=64, description="Receptacle id (the N of 'Thunderbolt N').")
    status: Literal["connected", "disconnected", "unknown"] = "unknown"
    speed_gbps: float | None = Field(None, ge=0, le=1000, description="Negotiated speed; null when no link.")
    interface: ShortText | None = Field(None, examples=["en2"])
    peer_uuid: ShortText | None = Field(None, description="Domain UUID of the host on the other end.")
    peer_name: ShortText | None = None


class ThunderboltInfo(Wire):
    bridge: ThunderboltBridge | None = None
    ports: list[ThunderboltPort] = Field(default_factory=list, max_length=64)
    domain_uuids: list[ShortText] = Field(default_factory=list, max_length=64)
    rdma_enabled: bool | None = Field(None, description="`rdma_ctl status` on macOS 26.2+; null if unknown.")


class NetInterface(Wire):
    name: ShortText
    up: bool = False
    speed_mbps: int | None = Field(None, ge=0)
    ips: list[ShortText] = Field(default_factory=list, max_length=64)


class GPUInfo(Wire):
    name: ShortText
    memory_gb: float | None = Field(None, ge=0)


EXAMPLE_FACTS = {
    "machine_id": "6F1C2D3E-4A5B-5C6D-8E9F-0A1B2C3D4E5F", "hostname": "mac-mini-1.local", "os": "macos",
    "os_version": "macOS 15.1 (24B83)", "device_type": "mac", "chip": "Apple M4 Pro", "memory_gb": 64.0,
    "memory_available_gb": 41.2, "cpu_cores": 14, "python_version": "3.11.7",
    "python_executable": "/Users/you/jupiter/.venv/bin/python", "mlx_version": "0.32.4", "mlx_device": "gpu",
    "mpi": {"implementation": "openmpi", "version": "5.0.11"},
    "thunderbolt": {"bridge": {"interface": "bridge0", "ips": ["169.254.10.1"], "up": True, "members": ["en2", "en3"]},
                    "ports": [{"port": 1, "status": "connected", "speed_gbps": 40.0, "interface": "en2",
                               "peer_uuid": "A7C4E1F0-2B3D-4E5F-8A9B-1C2D3E4F5A6B", "peer_name": "Mac Studio"}],
                    "domain_uuids": ["0E1F2A3B-4C5D-6E7F-8091-A2B3C4D5E6F7"], "rdma_enabled": None},
    "interfaces": [{"name": "en0", "up": True, "speed_mbps": 10000, "ips": ["192.168.1.20"]}],
    "gpus": [], "problems": [], "agent_version": "0.1.0",
}


class NodeFacts(Wire):
    """What a node says about itself. Every value comes from the node, never from cluster.yaml."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_FACTS]})

    machine_id: Annotated[str, StringConstraints(min_length=1, max_length=128), PlainText] = Field(
        ..., description="Stable hardware identity (IOPlatformUUID on macOS, /etc/machine-id on Linux)."
    )
    hostname: ShortText = Field(..., examples=["mac-mini.local"])
    os: Literal["macos", "linux", "other"] = "other"
    os_version: ShortText = Field("", examples=["macOS 15.1 (24B83)"])
    device_type: DeviceType = "cpu"
    chip: ShortText = Field("", examples=["Apple M4 Pro"])
    memory_gb: float = Field(0, ge=0, le=1 << 20)
    memory_available_gb: float = Field(0, ge=0, le=1 << 20)
    cpu_cores: int = Field(0, ge=0, le=1 << 16)
    python_version: ShortText = Field("", examples=["3.11.7"])
    python_executable: ShortText = ""
    mlx_version: ShortText | None = Field(None, examples=["0.32.4"])
    mlx_device: Literal["gpu", "cpu"] | None = Field(None, examples=["gpu"])
    mpi: MPIInfo = Field(default_factory=MPIInfo)
    thunderbolt: ThunderboltInfo = Field(default_factory=ThunderboltInfo)
    interfaces: list[NetInterface] = Field(default_factory=list, max_length=256)
    gpus: list[GPUInfo] = Field(default_factory=list, max_length=64)
    problems: list[Annotated[str, StringConstraints(max_length=1000), PlainText]] = Field(
        default_factory=list, max_length=64, description="Problems the agent found on its own node."
    )
    agent_version: ShortText = ""


# --------------------------------------------------------------------------- registration and heartbeat


class RegisterRequest(Wire):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "mac-mini-1", "host": "mac-mini-1.local", "facts": EXAMPLE_FACTS}]})

    name: NodeName = Field(..., examples=["mac-mini-1"])
    host: Host = Field(..., description="Address other nodes and the coordinator reach this node at.",
                       examples=["mac-mini-1.local"])
    facts: NodeFacts
    node_key: NodeKey = Field(..., description=(
        "The agent's own secret, made at its first enrolment and kept in its state dir. It must be "
        "the same at every later registration of this name: nobody else can take the node over."),
        examples=["nk_3q2m7x0b8Jd1Lz4Vt6Yw9Rk5Hs2Pf8Ce0Ua1Ig7Oe4N"])
    node_token: Annotated[str, StringConstraints(max_length=128)] | None = Field(None, description=(
        "The node token the agent holds now. Only a node enrolled by a Jupiter older than node keys "
        "needs it: showing it once binds the node key to the node."))


class RegisterResponse(Wire):
    node_id: str = Field(..., examples=["n-3f9a1c2b7d"])
    node_token: str = Field(..., description="Secret for this node's heartbeats; shown once.")
    heartbeat_interval_s: float = Field(..., examples=[5.0])
    admitted: bool = Field(True, description="False: the node is pending until an admin approves it "
                                             "(`jupiter nodes approve NAME`); it is sent no work until then.")


class RankState(Wire):
    """What an agent knows of one rank it runs."""

    job_id: Annotated[str, StringConstraints(max_length=64), PlainText]
    rank: int = Field(..., ge=0, le=4096)
    attempt: int = Field(0, ge=0, le=1000)
    state: Literal["starting", "running", "exited"]
    pid: int | None = Field(None, ge=0, le=2**31)
    exit_code: int | None = Field(None, ge=-(2**31), le=2**32, description="Negative: killed by that signal.")
    reason: ShortText | None = None


class RankAssignment(Wire):
    """A rank the coordinator asks an agent to start."""

    job_id: str
    rank: int
    local_rank: int = 0
    attempt: int = 0
    world_size: int
    command: list[str]
    env: dict[str, str] = Field(default_factory=dict)
    secret_env: dict[str, str] = Field(default_factory=dict, description="The job's secret_env (never logged).")
    backend: str = "ring"
    hostfile: list[list[str]] | None = Field(None, description="Ring hostfile (docs/hostfiles.md#ring).")
    start_timeout_s: float = 60.0
    stop_grace_s: float = Field(5.0, description="Seconds between TERM and KILL when stopping (a trainer "
                                                 "saves its checkpoint in between).")


class HeartbeatRequest(Wire):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"instance": "5f0c9a1e2b3d4c6e", "memory_available_gb": 40.8,
         "ranks": [{"job_id": "j-0a1b2c3d4e", "rank": 1, "state": "running", "pid": 4242}]}]})

    instance: Annotated[str, StringConstraints(max_length=64), PlainText] | None = Field(
        None, description="Random per agent process: a new value means the agent restarted, so "
                          "ranks it ran before and no longer lists are gone.")
    facts: NodeFacts | None = Field(None, description="Full facts, sent at start and whenever they change.")
    memory_available_gb: float | None = Field(None, ge=0, le=1 << 20)
    thunderbolt: ThunderboltInfo | None = Field(None, description="Cheap link status, every heartbeat.")
    ranks: list[RankState] = Field(default_factory=list, max_length=4096)


class StopOrder(Wire):
    job_id: str
    attempt: int | None = Field(None, description="Stop only the ranks of this attempt; null: all of the job's.")
    reason: str = ""


class HeartbeatResponse(Wire):
    heartbeat_interval_s: float
    start: list[RankAssignment] = Field(default_factory=list)
    stop: list[StopOrder] = Field(default_factory=list)


# --------------------------------------------------------------------------- what clients read


class DeclaredNode(Wire):
    """A node as cluster.yaml declares it (docs/cluster-yaml.md#nodes)."""

    host: Host
    name: NodeName
    device_type: DeviceType
    memory_gb: float | None = Field(None, ge=0)
    chip: ShortText | None = None
    role: Role
    connection_type: Literal["thunderbolt", "ethernet", "wifi"] = "ethernet"
    ssh_user: ShortText | None = None
    ssh_port: int = Field(22, ge=1, le=65535)
    can_generate: bool = True
    can_train: bool = True


class NodeOut(BaseModel):
    id: str
    name: str
    host: str
    status: NodeStatus
    role: Role
    device_type: DeviceType | None
    chip: str | None
    memory_gb: float | None
    memory_available_gb: float | None
    cpu_cores: int | None
    os_version: str | None
    python_version: str | None
    mlx_version: str | None
    mlx_device: Literal["gpu", "cpu"] | None
    mpi: MPIInfo
    thunderbolt: ThunderboltInfo
    declared: DeclaredNode | None
    problems: list[str]
    last_heartbeat: datetime | None
    registered_at: datetime | None
    agent_version: str | None
    drained: bool = False
    admitted: bool = Field(True, description="False while the node waits for an admin's approval (status pending).")


class EventOut(BaseModel):
    at: datetime
    kind: str = Field(..., examples=["registered", "down", "back", "drained", "undrained", "deleted"])
    message: str


class NodeDetail(NodeOut):
    events: list[EventOut]
    facts: NodeFacts | None = None


class ProblemOut(BaseModel):
    node: str | None = Field(None, description="The node it concerns; null for the cluster as a whole.")
    kind: str = Field(..., examples=["bridge_loop", "slow_link", "mpich", "never_reported"])
    message: str
    fix: str


class ClusterSummary(BaseModel):
    nodes: int
    nodes_by_status: dict[str, int]
    memory_gb: float
    memory_available_gb: float
    problems: list[str] = Field(..., description="Every problem as one line: 'node: message (fix: ...)'.")
    issues: list[ProblemOut] = Field(default_factory=list, description="The same problems, structured.")
    config_path: str | None = None
    backend: str = "mpi"


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


class ErrorOut(BaseModel):
    detail: str | list | dict


def validate_host(value: str, what: str = "host") -> str:
    """Raise ValueError unless `value` is safe to use as a host in argv and hostfiles:
    an IPv4/IPv6 literal, or a DNS-style name that no shell or hostfile reader can misread."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        ip = None
    if ip is not None:
        if ip.is_unspecified or ip.is_multicast:
            raise ValueError(f"invalid {what} {value!r}: {'an unspecified' if ip.is_unspecified else 'a multicast'} "
                             f"address names no machine; use the node's own address")
        # fullmatch: no trailing newline either; a scope id (fe80::1%en0) is otherwise free text
        if re.fullmatch(r"[0-9A-Za-z:.%_-]+", value):
            return value
    # fullmatch: with match, `$` would also accept a trailing newline ("mini\n")
    if not isinstance(value, str) or not HOST_RE.fullmatch(value) or ".." in value or ":" in value:
        raise ValueError(f"invalid {what} {value!r}: use a DNS name or an IP address")
    if re.fullmatch(r"[0-9.]+", value):  # "0", "127.1", "10.1.2": resolvers read them as IPv4 addresses
        raise ValueError(f"invalid {what} {value!r}: all digits, which resolvers take for a shortened IPv4 "
                         f"address; write the address in full or use a name")
    return value



# --------------------------------------------------------------------------- jobs

ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Set by Jupiter for every rank; a job may not override them.
RESERVED_ENV = ("MLX_RANK", "MLX_HOSTFILE", "MLX_MPI_LIBNAME", *sorted(RANK_VARS))
JobStatus = Literal["pending", "starting", "running", "succeeded", "failed", "cancelled"]
Backend = Literal["ring", "mpi", "jaccl"]
Arg = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[^\x00]*$")]
EnvValue = Annotated[str, StringConstraints(max_length=8192, pattern=r"^[^\x00]*$")]


class JobSpec(Wire):
    """A job request (docs/jobs.md). Give `command` (an argv list, never a shell string) or `domain`
    (the built-in trainer)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "demo", "command": ["python", "train.py", "--lr", "3e-4"], "nodes": 2, "node_names": None,
         "processes_per_node": 1, "backend": "ring", "env": {"SEED": "1"}, "roles": ["trainer", "hybrid"],
         "min_memory_gb": 0, "timeout_s": None, "idempotency_key": "demo-2026-12-01"}]})

    name: NodeName = Field("job", examples=["demo"])
    command: list[Arg] | None = Field(None, min_length=1, max_length=1024,
                                      examples=[["python", "-c", "print('hello from a rank')"]])
    domain: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = Field(
        None, description="Built-in trainer on config/domains/<domain>.yaml instead of a command.")
    epochs: int | None = Field(None, ge=1, le=10_000)
    preset: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,32}$")] | None = Field(
        None, description="Model size for the built-in trainer: micro, tiny, small, base, 1b.")
    steps: int | None = Field(None, ge=1, le=10_000_000, description="Built-in trainer: stop after this many steps.")
    nodes: int = Field(1, ge=1, le=256, description="How many nodes to place the job on.")
    node_names: list[NodeName] | None = Field(None, max_length=256,
                                              description="Exactly these nodes, in this rank order.")
    processes_per_node: int = Field(1, ge=1, le=64)
    backend: Backend | None = Field(None, description="Default: cluster.yaml's backend.")
    env: dict[Annotated[str, StringConstraints(pattern=ENV_KEY_RE.pattern)], EnvValue] = Field(
        default_factory=dict, max_length=256, examples=[{"KEY": "value"}])
    secret_env: dict[Annotated[str, StringConstraints(pattern=ENV_KEY_RE.pattern)], EnvValue] = Field(
        default_factory=dict, max_length=256, examples=[{"API_KEY": "..."}],
        description="Like env, but never shown back: no API answer, log or page carries its values.")
    roles: list[Role] | None = Field(None, max_length=4, description="Eligible node roles; null: any.")
    min_memory_gb: float = Field(0, ge=0, le=1 << 20)
    timeout_s: float | None = Field(None, gt=0, le=30 * 86400, description="Fail the job after this long running.")
    pending_timeout_s: float | None = Field(None, gt=0, le=30 * 86400,
                                            description="Fail the job if it cannot be placed within this long.")
    start_timeout_s: float = Field(60, gt=0, le=3600, description="All ranks must start within this long.")
    max_restarts: int | None = Field(None, ge=0, le=20, description=(
        "Relaunch after a failed rank or node, on the remaining eligible nodes. Default: 2 for the "
        "built-in trainer when cluster.yaml has auto_restart_failed_nodes, else 0."))
    idempotency_key: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,128}$")] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "JobSpec":
        if (self.command is None) == (self.domain is None):
            raise ValueError("give exactly one of command (an argv list) or domain (the built-in trainer)")
        if self.command is not None and (self.epochs or self.preset or self.steps):
            raise ValueError("epochs, preset and steps are for the built-in trainer (domain), not a command")
        for field_name, values in (("env", self.env), ("secret_env", self.secret_env)):
            bad = sorted(k for k in values if k in RESERVED_ENV)
            if bad:
                raise ValueError(f"{field_name}: {', '.join(bad)} is set by Jupiter for every rank and cannot be "
                                 f"overridden")
        both = sorted(set(self.env) & set(self.secret_env))
        if both:
            raise ValueError(f"secret_env: {', '.join(both)} is also in env; give each name in one of them")
        if self.node_names is not None:
            if len(set(self.node_names)) != len(self.node_names):
                raise ValueError("node_names: a node may appear only once")
            if "nodes" not in self.model_fields_set:
                self.nodes = len(self.node_names)
            elif self.nodes != len(self.node_names):
                raise ValueError(f"nodes is {self.nodes} but node_names lists {len(self.node_names)}")
        if self.nodes * self.processes_per_node > 4096:
            raise ValueError("nodes x processes_per_node is over 4096 ranks")
        return self


class AttemptOut(BaseModel):
    attempt: int
    nodes: list[str]
    started_at: datetime | None
    ended_at: datetime | None
    error: str | None


class LossPoint(BaseModel):
    step: int | None
    loss: float


class JobOut(BaseModel):
    id: str
    name: str
    status: JobStatus
    backend: str
    world_size: int
    nodes: list[str] = Field(..., description="Node names in rank order (empty while pending).")
    command: list[str]
    env: dict[str, str] | None = Field(None, description="The job's env; in the job itself (GET /jobs/{id}), "
                                                          "left out of lists. secret_env is never shown.")
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    exit_code: int | None
    error: str | None = Field(None, description="A sentence: which rank on which node, and why.")
    pending_reason: str | None = None
    progress: dict = Field(default_factory=dict, description="Latest JUPITER_PROGRESS values.")
    loss_history: list[LossPoint] = Field(default_factory=list)
    idempotency_key: str | None = None
    attempt: int = Field(0, description="0 for the first run; n after n automatic restarts.")
    attempts: list[AttemptOut] = Field(default_factory=list, description="Earlier attempts that failed.")


class RankOut(BaseModel):
    rank: int
    node: str
    state: str
    exit_code: int | None
    reason: str | None


class JobDetail(JobOut):
    ranks: list[RankOut] = Field(default_factory=list)


class RankOutput(Wire):
    """Lines a rank printed, numbered so a resend after a lost answer is not stored twice.
    The lines are the rank's own output and may hold colour codes: readers show them through
    shared.text, never raw."""

    job_id: Annotated[str, StringConstraints(max_length=64), PlainText]
    rank: int = Field(..., ge=0, le=4096)
    attempt: int = Field(0, ge=0, le=1000)
    seq: int = Field(..., ge=0, le=2**53, description="Number of the first line in `lines` (0-based, per rank).")
    lines: list[Annotated[str, StringConstraints(max_length=65536)]] = Field(default_factory=list, max_length=10_000)


class RankReport(Wire):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"ranks": [{"job_id": "j-0a1b2c3d4e", "rank": 0, "state": "exited", "exit_code": 0}],
         "output": [{"job_id": "j-0a1b2c3d4e", "rank": 0, "seq": 0,
                     "lines": ['JUPITER_PROGRESS {"step": 1, "loss": 2.5}', "done"]}]}]})

    ranks: list[RankState] = Field(default_factory=list, max_length=4096)
    output: list[RankOutput] = Field(default_factory=list, max_length=4096)


class RankReportAck(Wire):
    acked: dict[str, int] = Field(default_factory=dict, description="'job_id/attempt/rank' -> lines stored so far.")


class OrdersRequest(Wire):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"ranks": [{"job_id": "j-0a1b2c3d4e", "rank": 1, "state": "running", "pid": 4242}], "wait_s": 20}]})

    ranks: list[RankState] = Field(default_factory=list, max_length=4096)
    wait_s: float = Field(20, ge=0, le=60)


# --------------------------------------------------------------------------- join tokens


class TokenCreate(Wire):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"ttl_s": 86400, "uses": 1, "node": "mac-mini-2", "auto_approve": False, "description": "for the new mini"}]})

    ttl_s: float | None = Field(86400, gt=0, le=366 * 86400, description="Seconds until it expires; null: never.")
    uses: int | None = Field(None, ge=1, le=10_000, description="How many nodes may enrol with it; null: any number.")
    node: NodeName | None = Field(None, description="Only this node name may enrol with it, and is admitted at once.")
    auto_approve: bool = Field(False, description="Nodes enrolled with it are admitted at once (not pending).")
    description: Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")] = ""


class TokenOut(BaseModel):
    id: str = Field(..., examples=["k3x9q2"])
    description: str = ""
    created_at: datetime
    expires_at: datetime | None
    uses: int
    max_uses: int | None
    node: str | None
    auto_approve: bool
    status: Literal["usable", "expired", "used up", "revoked"]
    token: str | None = Field(None, description="The join string (CA pin, id and secret): in the answer to "
                                                "POST /tokens only, never again.")
