"""Everything the coordinator can be told at start-up, in one place.

A pydantic-settings model: each field can also be set as JUPITER_<FIELD> (JUPITER_PORT,
JUPITER_HEARTBEAT_INTERVAL_S, ...), and a value given to the constructor (a flag of
`jupiter coordinator`, a test, a benchmark) wins over the environment. An empty variable counts as
unset, as JUPITER_HOME always has, except the two tokens: an empty token given is refused by
auth.load_keyring, never silently replaced by a generated one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from coordinator.artifacts import MAX_BYTES_PER_JOB
from coordinator.files import FILES_MAX_BYTES
from coordinator.httpserver import HEADER_TIMEOUT_S, MAX_CONNECTIONS
from coordinator.joblogs import JOB_LOG_QUOTA_BYTES
from coordinator.ratelimit import AUTH_FAILURES_BURST, REGISTRATIONS_BURST_PER_CLIENT
from coordinator.store import EVENTS_PER_NODE
from shared.paths import DEFAULT_PORT, jupiter_home
from shared.tlspin import is_loopback

# Given (even empty) or not is what matters for these: a token given must be long enough.
TOKEN_FIELDS = frozenset({"token", "join_token"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JUPITER_")

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    home: Path = Field(default_factory=jupiter_home)
    db_url: str | None = None  # default: SQLite file under home
    config_path: Path | None = None
    heartbeat_interval_s: float = 5.0
    down_after_s: float = 30.0
    liveness_check_s: float = 1.0
    tls: bool | None = None           # True: HTTPS on loopback too; False: refused off loopback
    tls_cert: Path | None = None      # the operator's own certificate (chain) and key, instead of ours
    tls_key: Path | None = None
    # Extra names clients use (Host header, cert); JUPITER_ALLOWED_HOSTS is comma-separated.
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Bounds (each default is explained where it is defined); tests and benchmarks set their own.
    header_timeout_s: float = HEADER_TIMEOUT_S       # a request head must arrive within this
    max_connections: int = MAX_CONNECTIONS           # connections open at once
    job_log_quota_bytes: int = JOB_LOG_QUOTA_BYTES   # per job; the oldest output goes first
    artifacts_max_bytes_per_job: int = MAX_BYTES_PER_JOB  # kept files per job; an upload past it is a 413
    events_per_node: int = EVENTS_PER_NODE           # the newest are kept
    files_max_bytes: int = FILES_MAX_BYTES           # one uploaded archive (PUT /files/{sha256})
    register_burst: int = REGISTRATIONS_BURST_PER_CLIENT  # registrations at once per client address
    auth_failures_burst: int = AUTH_FAILURES_BURST   # wrong tokens at once per client address
    limit_loopback: bool = False                     # the per-address limits for loopback clients too
    # JUPITER_TOKEN / JUPITER_JOIN_TOKEN; None: generated once into home (auth.load_keyring).
    token: SecretStr | None = None       # admin
    join_token: SecretStr | None = None  # join, bare or as a pinned join string

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and value == "" and info.field_name not in TOKEN_FIELDS:
            return cls.model_fields[info.field_name].get_default(call_default_factory=True)
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("home")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    def serves_tls(self) -> bool:
        return bool(self.tls) or self.tls_cert is not None or not is_loopback(self.host)

    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.serves_tls() else 'http'}://{host}:{self.port}"

    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.home / 'coordinator.db'}"


