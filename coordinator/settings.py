"""Everything the coordinator can be told at start-up, in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from coordinator.httpserver import HEADER_TIMEOUT_S, MAX_CONNECTIONS
from coordinator.joblogs import JOB_LOG_QUOTA_BYTES
from coordinator.ratelimit import AUTH_FAILURES_BURST, REGISTRATIONS_BURST_PER_CLIENT
from coordinator.store import EVENTS_PER_NODE
from shared.tlspin import is_loopback
from shared.paths import DEFAULT_PORT, jupiter_home


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    home: Path = field(default_factory=jupiter_home)
    db_url: str | None = None  # default: SQLite file under home
    config_path: Path | None = None
    heartbeat_interval_s: float = 5.0
    down_after_s: float = 30.0
    liveness_check_s: float = 1.0
    tls: bool | None = None           # True: HTTPS on loopback too; False: refused off loopback
    tls_cert: Path | None = None      # the operator's own certificate (chain) and key, instead of ours
    tls_key: Path | None = None
    allowed_hosts: list[str] = field(default_factory=list)  # extra names clients use (Host header, cert)
    # Bounds (each default is explained where it is defined); tests and benchmarks set their own.
    header_timeout_s: float = HEADER_TIMEOUT_S       # a request head must arrive within this
    max_connections: int = MAX_CONNECTIONS           # connections open at once
    job_log_quota_bytes: int = JOB_LOG_QUOTA_BYTES   # per job; the oldest output goes first
    events_per_node: int = EVENTS_PER_NODE           # the newest are kept
    register_burst: int = REGISTRATIONS_BURST_PER_CLIENT  # registrations at once per client address
    auth_failures_burst: int = AUTH_FAILURES_BURST   # wrong tokens at once per client address
    limit_loopback: bool = False                     # the per-address limits for loopback clients too

    def serves_tls(self) -> bool:
        return bool(self.tls) or self.tls_cert is not None or not is_loopback(self.host)

    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.serves_tls() else 'http'}://{host}:{self.port}"

    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.home / 'coordinator.db'}"


