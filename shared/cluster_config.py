"""config/cluster.yaml: the declared inventory and cluster-wide defaults (docs/cluster-yaml.md).

Loading never half-succeeds: any problem raises `ConfigError` naming the file, the node and the
field, in words a person can act on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.schemas import DeclaredNode


class ConfigError(ValueError):
    pass


class ClusterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # auto: for each job the fastest backend its nodes support (shared/backends.py FASTEST_FIRST),
    # which is ring, started by the agents without SSH, unless they have RDMA or NVIDIA GPUs.
    backend: Literal["auto", "mpi", "ring", "jaccl", "jaccl-ring", "nccl"] = "auto"
    use_thunderbolt_bridge: bool = True
    network_interface: str | None = None
    sync_every_n_steps: int = Field(1, ge=1, le=100_000)
    gradient_compression: bool = False
    checkpoint_on_failure: bool = True
    auto_restart_failed_nodes: bool = True
    python: str | None = Field(
        None, max_length=1024,
        description="Interpreter mpirun starts on every host for mpi jobs (an absolute path that exists "
                    "on each of them). Default: the coordinator's own. Never taken from a node's report.")
    nodes: list[DeclaredNode] = Field(default_factory=list)

    @field_validator("python")
    @classmethod
    def _absolute_python(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or any(ord(c) < 32 or ord(c) == 127 for c in value)):
            raise ValueError("must be an absolute path such as /Users/you/jupiter/.venv/bin/python "
                             "(mpirun runs it as given on every host)")
        return value


# Fields of the seed's schema that this version of Jupiter stores but does not act on: none at
# the moment. A field added here is reported by `jupiter check` instead of ignored.
NOT_YET_HONOURED: dict[str, str] = {}


def _where(loc: tuple, raw: dict) -> str:
    """Turn a pydantic error location into 'node "Main MacBook" (nodes[0]), field memory_gb'."""
    if len(loc) >= 2 and loc[0] == "nodes" and isinstance(loc[1], int):
        idx = loc[1]
        entry = (raw.get("nodes") or [])[idx] if idx < len(raw.get("nodes") or []) else {}
        label = entry.get("name") or entry.get("host") if isinstance(entry, dict) else None
        node = f'node "{label}" (nodes[{idx}])' if label else f"nodes[{idx}]"
        field = ".".join(str(p) for p in loc[2:]) or "(entry)"
        return f"{node}, field {field}"
    return "field " + ".".join(str(p) for p in loc)


def parse_cluster_config(text: str, source: str = "cluster.yaml") -> ClusterConfig:
    try:
        raw = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of settings, got {type(raw).__name__}")
    try:
        cfg = ClusterConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown field"
            elif err["type"] == "missing":
                msg = "required field is missing"
            elif err["type"] == "value_error":
                msg = msg.removeprefix("Value error, ")
            lines.append(f"{source}: {_where(tuple(err['loc']), raw)}: {msg}")
        raise ConfigError("\n".join(lines)) from None
    seen_hosts: dict[str, int] = {}
    seen_names: dict[str, int] = {}
    for i, node in enumerate(cfg.nodes):
        key = node.host.lower()
        if key in seen_hosts:
            raise ConfigError(f'{source}: node "{node.name}" (nodes[{i}]), field host: duplicate host '
                              f'{node.host!r}, already used by nodes[{seen_hosts[key]}]')
        if node.name in seen_names:
            raise ConfigError(f'{source}: node "{node.name}" (nodes[{i}]), field name: duplicate name, '
                              f"already used by nodes[{seen_names[node.name]}]")
        seen_hosts[key] = i
        seen_names[node.name] = i
    return cfg


def load_cluster_config(path: str | Path | None) -> ClusterConfig:
    """Load and validate; a missing path means an empty cluster with the defaults."""
    if path is None:
        return ClusterConfig()
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    return parse_cluster_config(text, str(p))


def unhonoured_fields(cfg: ClusterConfig) -> list[str]:
    """Settings the user turned on that this version cannot act on yet."""
    return [msg for name, msg in NOT_YET_HONOURED.items() if getattr(cfg, name)]
