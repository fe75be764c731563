"""`jupiter coordinator`: run the coordinator daemon.

Registered into the `jupiter` command through the `jupiter.commands` entry point (pyproject.toml),
so shared/cli/ never imports coordinator/. The daemon's own modules are imported when the
command runs, so a client-only machine never loads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from shared.cli import _fail, _logging


class _FromSettings:
    """A flag's default: the coordinator setting of that name (coordinator/settings.py), which is
    JUPITER_<SETTING> when set, else its built-in default. So the flags and the environment agree,
    and a flag given on the command line wins. Read when the command runs or shows --help, not when
    `jupiter` starts: coordinator.settings imports the daemon (about 0.4 s). Typer shows str() of
    this in --help as the default (it would show "(dynamic)" for a plain function)."""

    def __init__(self, field: str):
        self.field = field

    def __call__(self) -> Any:
        from pydantic import ValidationError

        from coordinator.settings import Settings
        from shared.settings import explain

        try:
            return getattr(Settings(), self.field)
        except ValidationError as exc:
            _fail(explain(exc))

    def __str__(self) -> str:
        value = self()
        if isinstance(value, list):
            return ", ".join(value)
        return "" if value is None else str(value)


def _opt(field: str, *decls: str, **kw: Any) -> Any:
    return typer.Option(..., *decls, default_factory=_FromSettings(field), **kw)


def register(app: typer.Typer) -> None:
    """Add `coordinator` to the `jupiter` app (the `jupiter.commands` entry point)."""
    app.command()(coordinator)


def coordinator(
    host: str = _opt("host", help="Address to listen on."),
    port: int = _opt("port", min=1, max=65535),
    db: Optional[str] = _opt("db_url", help="SQLAlchemy URL; default SQLite under $JUPITER_HOME."),
    config: Optional[Path] = _opt("config_path", help="cluster.yaml (default: ./config/cluster.yaml if present)."),
    heartbeat_interval: float = _opt("heartbeat_interval_s", min=0.1, help="Seconds between agent heartbeats."),
    down_after: float = _opt("down_after_s", min=0.5, help="Seconds without a heartbeat before a node is down."),
    # No default shown: typer would print the flag's name for any default of a --x/--no-x pair.
    tls: Optional[bool] = _opt("tls", "--tls/--no-tls", show_default=False, help=(
        "HTTPS on loopback too (--tls). Off loopback HTTPS is always on and --no-tls is refused.")),
    tls_cert: Optional[Path] = _opt("tls_cert", help="Your own server certificate (PEM, chain included) "
                                                     "instead of the coordinator's own CA."),
    tls_key: Optional[Path] = _opt("tls_key", help="The key of --tls-cert (PEM)."),
    allowed_host: list[str] = _opt("allowed_hosts", "--allowed-host", help=(
        "Another name clients reach the coordinator by (a DNS alias, a proxy's name); repeatable. "
        "Requests naming any other host are refused (400). Its own names and addresses are always served.")),
    # Bounds, hidden: the defaults suit a cluster; tests and benchmarks set their own.
    header_timeout: float = _opt("header_timeout_s", min=0.1, hidden=True, help="Seconds to send a request head."),
    max_connections: int = _opt("max_connections", min=1, hidden=True, help="Connections open at once."),
    job_log_quota: int = _opt("job_log_quota_bytes", min=4096, hidden=True, help="Bytes of log kept per job."),
    events_per_node: int = _opt("events_per_node", min=1, hidden=True, help="Events kept per node."),
    register_burst: int = _opt("register_burst", min=1, hidden=True, help="Registrations at once per address."),
    auth_failure_burst: int = _opt("auth_failures_burst", min=1, hidden=True, help="Wrong tokens at once per address."),
    limit_loopback: bool = _opt("limit_loopback", "--limit-loopback", hidden=True,
                                help="Per-address limits for loopback clients too."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the coordinator daemon.

    Each option's default can be set as JUPITER_<SETTING> (docs/api.md, Configuration); an option given wins.
    """
    from coordinator.app import RefusedToStart, serve
    from coordinator.settings import Settings
    from shared.cluster_config import ConfigError

    _logging(verbose)
    if config is None and Path("config/cluster.yaml").exists():
        config = Path("config/cluster.yaml")
    try:
        settings = Settings(host=host, port=port, db_url=db, config_path=config,
                            heartbeat_interval_s=heartbeat_interval, down_after_s=down_after,
                            tls=tls, tls_cert=tls_cert, tls_key=tls_key,
                            allowed_hosts=list(allowed_host), header_timeout_s=header_timeout,
                            max_connections=max_connections, job_log_quota_bytes=job_log_quota,
                            events_per_node=events_per_node, register_burst=register_burst,
                            auth_failures_burst=auth_failure_burst, limit_loopback=limit_loopback)
        serve(settings)
    except (ConfigError, RefusedToStart, ValueError) as exc:
        _fail(str(exc))
