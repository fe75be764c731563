"""Everything the coordinator can be told at start-up, in one place."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

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

    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.home / 'coordinator.db'}"


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
