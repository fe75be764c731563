"""A node on the wire: the facts an agent reports about itself, its registration and heartbeats,
and the views of nodes clients read."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.schemas.common import (
    DeviceType,
    Host,
    NodeKey,
    NodeName,
    PlainText,
    Role,
    ShortText,
    Wire,
)
from shared.schemas.ranks import RankAssignment, RankState, StackDumpOrder, StopOrder

# The words are shared/status.py's enums; Literal here keeps the OpenAPI page a plain list of strings
# (tests/unit/test_status_words.py checks the two agree).
NodeStatus = Literal["ready", "busy", "draining", "down", "pending"]


# --------------------------------------------------------------------------- facts (agent -> coordinator)


class MPIInfo(Wire):
    implementation: Literal["openmpi", "mpich"] | None = Field(None, examples=["openmpi"])
    version: ShortText | None = Field(None, examples=["5.0.11"])


class ThunderboltBridge(Wire):
    interface: ShortText | None = Field(None, examples=["bridge0"])
    ips: list[ShortText] = Field(default_factory=list, max_length=32, examples=[["169.254.10.1"]])
    up: bool = False
    members: list[ShortText] = Field(default_factory=list, max_length=32, examples=[["en2", "en3"]])


# An RDMA device as `ibv_devices` names it (rdma_en2): one per Thunderbolt 5 port, renamed at reboot.
RdmaDevice = Annotated[str, StringConstraints(pattern=r"^rdma_[A-Za-z0-9_.-]{1,60}$")]


class ThunderboltPort(Wire):
    port: int = Field(..., ge=0, le=64, description="Receptacle id (the N of 'Thunderbolt N').")
    status: Literal["connected", "disconnected", "unknown"] = "unknown"
    speed_gbps: float | None = Field(None, ge=0, le=1000, description="Negotiated speed; null when no link.")
    max_speed_gbps: float | None = Field(None, ge=0, le=1000, description=(
        "What the port can do ('Up to 120 Gb/s': Thunderbolt 5), when macOS says; it says only for "
        "an empty port."))
    rdma_device: RdmaDevice | None = Field(None, description="This port's RDMA device, when `ibv_devices` lists it.")
    interface: ShortText | None = Field(None, examples=["en2"])
    peer_uuid: ShortText | None = Field(None, description="Domain UUID of the host on the other end.")
    peer_name: ShortText | None = None


class ThunderboltInfo(Wire):
    bridge: ThunderboltBridge | None = None
    ports: list[ThunderboltPort] = Field(default_factory=list, max_length=64)
    domain_uuids: list[ShortText] = Field(default_factory=list, max_length=64)
    rdma_enabled: bool | None = Field(None, description=(
        "`rdma_ctl status` on macOS 26.2+; null if unknown. It says enabled on Thunderbolt 4 Macs too, "
        "where RDMA never works: see rdma_devices and the ports' speeds."))
    rdma_devices: list[RdmaDevice] | None = Field(None, max_length=64, description=(
        "The devices `ibv_devices` lists; null when it was not run or failed."))


class NetInterface(Wire):
    name: ShortText
    up: bool = False
    speed_mbps: int | None = Field(None, ge=0)
    ips: list[ShortText] = Field(default_factory=list, max_length=64)


class GPUInfo(Wire):
    name: ShortText
    memory_gb: float | None = Field(None, ge=0)


class Pressure(Wire):
    """What slows or stops a node while it trains: heat, memory, swap and sleep. Read every
    heartbeat (a few seconds old at most); null where this node's OS does not say."""

    thermal: Literal["nominal", "fair", "serious", "critical"] | None = Field(None, description=(
        "The OS's thermal state: `serious` and `critical` mean it is slowing the chip down."))
    cpu_speed_limit_pct: int | None = Field(None, ge=0, le=100, description=(
        "macOS `CPU_Speed_Limit` (`pmset -g therm`): below 100 the CPU is held back. Intel Macs only."))
    memory: Literal["normal", "warning", "critical"] | None = Field(None, description=(
        "Memory pressure: the kernel's level on macOS, from PSI (/proc/pressure/memory) on Linux."))
    swap_used_gb: float | None = Field(None, ge=0, le=1 << 20)
    swap_total_gb: float | None = Field(None, ge=0, le=1 << 20)
    sleep_after_min: int | None = Field(None, ge=0, le=1 << 20, description=(
        "The system sleep timer in minutes (`pmset -g` sleep); 0 never sleeps."))
    on_battery: bool | None = Field(None, description="Running on battery (macOS keeps a laptop awake only on AC).")
    keep_awake: bool | None = Field(None, description=(
        "Whether the agent holds a keep-awake assertion now (it does while ranks run); null where it cannot."))


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
    mlx_lm_version: ShortText | None = Field(None, examples=["0.32.2"],
                                             description="mlx-lm beside that MLX, if installed (finetune jobs).")
    mpi: MPIInfo = Field(default_factory=MPIInfo)
    thunderbolt: ThunderboltInfo = Field(default_factory=ThunderboltInfo)
    interfaces: list[NetInterface] = Field(default_factory=list, max_length=256)
    gpus: list[GPUInfo] = Field(default_factory=list, max_length=64)
    problems: list[Annotated[str, StringConstraints(max_length=1000), PlainText]] = Field(
        default_factory=list, max_length=64, description="Problems the agent found on its own node."
    )
    agent_version: ShortText = ""
    pressure: Pressure | None = Field(None, description="The live part; every heartbeat carries it too.")


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


class HeartbeatRequest(Wire):
    """Liveness and facts, nothing else: rank states and output go up in reports
    (POST /nodes/{id}/report), orders come down the long-poll (POST /nodes/{id}/orders)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"instance": "5f0c9a1e2b3d4c6e", "memory_available_gb": 40.8}]})

    instance: Annotated[str, StringConstraints(max_length=64), PlainText] | None = Field(
        None, description="Random per agent process: a new value means the agent restarted.")
    facts: NodeFacts | None = Field(None, description="Full facts, sent at start and whenever they change.")
    memory_available_gb: float | None = Field(None, ge=0, le=1 << 20)
    thunderbolt: ThunderboltInfo | None = Field(None, description="Cheap link status, every heartbeat.")
    pressure: Pressure | None = Field(None, description="Heat, memory, swap and sleep, every heartbeat.")
    ranks: list[RankState] = Field(default_factory=list, max_length=4096, description=(
        "Only from agents of earlier versions, which listed their ranks here: read once, after such an "
        "agent restarted, to find the ranks it lost. Current agents send a complete report instead."))


class HeartbeatResponse(Wire):
    """The answer to a heartbeat (empty orders) and to the orders long-poll."""

    heartbeat_interval_s: float
    start: list[RankAssignment] = Field(default_factory=list)
    stop: list[StopOrder] = Field(default_factory=list)
    dump_stacks: list[StackDumpOrder] = Field(default_factory=list)


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
    mlx_lm_version: str | None = None
    mpi: MPIInfo
    thunderbolt: ThunderboltInfo
    gpus: list[GPUInfo] = Field(default_factory=list, description="NVIDIA GPUs (nvidia-smi).")
    declared: DeclaredNode | None
    problems: list[str]
    last_heartbeat: datetime | None
    registered_at: datetime | None
    agent_version: str | None
    drained: bool = False
    admitted: bool = Field(True, description="False while the node waits for an admin's approval (status pending).")
    pressure: Pressure | None = Field(None, description=(
        "From the node's latest heartbeat; null until one has come since the coordinator started."))


class EventOut(BaseModel):
    at: datetime
    kind: str = Field(..., examples=["registered", "down", "back", "drained", "undrained", "deleted"])
    message: str


class NodeDetail(NodeOut):
    events: list[EventOut]
    facts: NodeFacts | None = None
