"""`jupiter coordinator`: run the coordinator daemon.

Registered into the `jupiter` command through the `jupiter.commands` entry point (pyproject.toml),
so shared/cli/ never imports coordinator/. The daemon's own modules are imported when the
command runs, so a client-only machine never loads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from shared.cli import _fail, _logging
from shared.paths import DEFAULT_PORT, jupiter_home


def register(app: typer.Typer) -> None:
    """Add `coordinator` to the `jupiter` app (the `jupiter.commands` entry point)."""
    app.command()(coordinator)


def coordinator(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(DEFAULT_PORT, min=1, max=65535),
    db: Optional[str] = typer.Option(None, help="SQLAlchemy URL; default SQLite under $JUPITER_HOME."),
    config: Optional[Path] = typer.Option(None, help="cluster.yaml (default: ./config/cluster.yaml if present)."),
    heartbeat_interval: float = typer.Option(5.0, min=0.1, help="Seconds between agent heartbeats."),
    down_after: float = typer.Option(30.0, min=0.5, help="Seconds without a heartbeat before a node is down."),
    tls: Optional[bool] = typer.Option(None, "--tls/--no-tls", help=(
        "HTTPS on loopback too (--tls). Off loopback HTTPS is always on and --no-tls is refused.")),
    tls_cert: Optional[Path] = typer.Option(None, help="Your own server certificate (PEM, chain included) "
                                                       "instead of the coordinator's own CA."),
    tls_key: Optional[Path] = typer.Option(None, help="The key of --tls-cert (PEM)."),
    allowed_host: list[str] = typer.Option([], "--allowed-host", help=(
        "Another name clients reach the coordinator by (a DNS alias, a proxy's name); repeatable. "
        "Requests naming any other host are refused (400). Its own names and addresses are always served.")),
    # Bounds, hidden: the defaults suit a cluster; tests and benchmarks set their own.
    header_timeout: Optional[float] = typer.Option(None, min=0.1, hidden=True, help="Seconds to send a request head."),
    max_connections: Optional[int] = typer.Option(None, min=1, hidden=True, help="Connections open at once."),
    job_log_quota: Optional[int] = typer.Option(None, min=4096, hidden=True, help="Bytes of log kept per job."),
    events_per_node: Optional[int] = typer.Option(None, min=1, hidden=True, help="Events kept per node."),
    register_burst: Optional[int] = typer.Option(None, min=1, hidden=True, help="Registrations at once per address."),
    auth_failure_burst: Optional[int] = typer.Option(None, min=1, hidden=True, help="Wrong tokens at once per address."),
    limit_loopback: bool = typer.Option(False, "--limit-loopback", hidden=True,
                                        help="Per-address limits for loopback clients too."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the coordinator daemon."""
    from coordinator.app import RefusedToStart, serve
    from coordinator.settings import Settings
    from shared.cluster_config import ConfigError

    _logging(verbose)
    if config is None and Path("config/cluster.yaml").exists():
        config = Path("config/cluster.yaml")
    settings = Settings(host=host, port=port, db_url=db, config_path=config, home=jupiter_home(),
                        heartbeat_interval_s=heartbeat_interval, down_after_s=down_after,
                        tls=tls, tls_cert=tls_cert, tls_key=tls_key, allowed_hosts=list(allowed_host),
                        limit_loopback=limit_loopback,
                        **{k: v for k, v in {"header_timeout_s": header_timeout, "max_connections": max_connections,
                                             "job_log_quota_bytes": job_log_quota, "events_per_node": events_per_node,
                                             "register_burst": register_burst,
                                             "auth_failures_burst": auth_failure_burst}.items() if v is not None})
    try:
        serve(settings)
    except (ConfigError, RefusedToStart, ValueError) as exc:
        _fail(str(exc))
