"""What an installed agent service runs, validated once before any file is rendered.

Both service managers start the same argv with the same environment; only the file format
around them differs. Everything here is checked up front so a bad value surfaces as a
ValueError naming the command-line option, never as a broken plist or unit file.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from shared.paths import jupiter_home
from shared.schemas import NAME_RE, validate_host
from shared.settings import current

# Service-manager files and their templates (deploy/README.md); found beside the package in a checkout.
DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy"
DEFAULT_LABEL = "dev.jupiter.agent"
DEFAULT_UNIT = "jupiter-agent"
# Not "join_token": on the leader the agent's state dir may sit beside the coordinator's own
# generated token files, and installing an agent must never overwrite those.
TOKEN_FILE_NAME = "agent-join-token"

# launchd labels are reverse-DNS; they also become a file name, so no slashes or spaces.
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# A systemd unit stem. '@' is left out on purpose: it would turn the unit into a template.
UNIT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,200}$")
# Tokens are URL-safe base64 in practice; anything with whitespace or quotes is a paste error.
TOKEN_RE = re.compile(r"^[A-Za-z0-9._~+/=:-]{8,512}$")  # ':' for pinned join strings
# Control characters would end a line in a unit file; refuse them in every path we render.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class AgentService:
    """One agent as a service: the values every rendered file is built from."""

    coordinator: str
    name: str
    state_dir: Path
    executable: Path  # the venv's `jupiter` console script, absolute
    host: str | None = None
    join_token: str | None = None  # goes to a 0600 file, never into the service file
    label: str = DEFAULT_LABEL  # launchd Label (and plist file name)
    unit: str = DEFAULT_UNIT  # systemd unit stem (".service" is appended)

    @property
    def bin_dir(self) -> Path:
        return self.executable.parent

    @property
    def token_file(self) -> Path:
        return self.state_dir / TOKEN_FILE_NAME


def agent_service(
    coordinator: str | None = None,
    name: str | None = None,
    *,
    host: str | None = None,
    state_dir: str | os.PathLike | None = None,
    join_token: str | None = None,
    executable: str | os.PathLike | None = None,
    label: str = DEFAULT_LABEL,
    unit: str = DEFAULT_UNIT,
) -> AgentService:
    """Validate the install options and fill in defaults; ValueError names the bad option."""
    return AgentService(
        coordinator=validate_coordinator_url(coordinator or current().url),
        name=validate_node_name(name if name is not None else default_node_name()),
        host=_validate_host_option(host),
        state_dir=validate_dir_option("--state-dir", state_dir if state_dir is not None else default_state_dir()),
        executable=validate_executable(Path(executable) if executable is not None else default_executable()),
        join_token=validate_join_token(join_token),
        label=validate_label(label),
        unit=validate_unit(unit),
    )


# --------------------------------------------------------------------------- defaults


def default_state_dir() -> Path:
    # A subdirectory, so `uninstall --purge` on the leader can never delete the coordinator's
    # database and tokens that live in $JUPITER_HOME itself.
    return jupiter_home() / "agent"


def default_node_name() -> str:
    return socket.gethostname().split(".")[0] or "node"


def default_executable() -> Path:
    # Deliberately not .resolve(): in a venv, bin/python is a symlink to the base interpreter,
    # and following it would leave the venv (and its installed packages) behind.
    return Path(sys.executable).absolute().parent / "jupiter"


# --------------------------------------------------------------------------- validation


def validate_coordinator_url(url: str) -> str:
    """Accept exactly http(s)://host[:port] (a trailing slash is dropped)."""
    problem = f"--coordinator: {url!r} is not a URL of the form http(s)://host[:port]"
    if not isinstance(url, str) or CONTROL_RE.search(url) or not url.isascii() or " " in url:
        raise ValueError(problem)
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError:
        raise ValueError(problem) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(problem)
    if parts.username or parts.password or parts.query or parts.fragment or parts.path not in ("", "/"):
        raise ValueError(problem + " (no credentials, path or query)")
    if port == 0:
        raise ValueError(problem + " (port must be 1-65535)")
    if not _is_ip_literal(parts.hostname):  # HOST_RE wants a leading letter or digit; "::1" has none
        try:
            validate_host(parts.hostname)
        except ValueError as exc:
            raise ValueError(f"--coordinator: {exc}") from None
    # Rebuilt from its parts, so a stray trailing "/", "?" or "#" never reaches the agent.
    return f"{parts.scheme}://{parts.netloc}"


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def validate_node_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name) or name != name.strip():
        raise ValueError(
            f"--name: {name!r} is not a valid node name (1-64 letters, digits, spaces or ._()+-, "
            "starting with a letter or digit)"
        )
    return name


def _validate_host_option(host: str | None) -> str | None:
    if host is None:
        return None
    try:
        return validate_host(host)
    except ValueError as exc:
        raise ValueError(f"--host: {exc}") from None


def validate_dir_option(option: str, value: str | os.PathLike) -> Path:
    path = Path(value).expanduser()
    if CONTROL_RE.search(str(path)):
        raise ValueError(f"{option}: {str(path)!r} contains control characters")
    # Service managers start the agent from their own working directory, so a relative
    # path must be pinned to where the user typed it.
    return path.absolute()


def validate_executable(path: Path) -> Path:
    path = validate_dir_option("--executable", path)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ValueError(
            f"--executable: {str(path)!r} is not an executable file; install Jupiter into a venv "
            "(`make venv`) or pass the path of its `jupiter` script"
        )
    return path


def validate_join_token(token: str | None) -> str | None:
    if token is None:
        return None
    if not TOKEN_RE.match(token):
        raise ValueError("join token (--join-token-stdin, --join-token-file or JUPITER_JOIN_TOKEN): not a valid "
                         "token (8-512 URL-safe characters, no spaces)")
    return token


def validate_label(label: str) -> str:
    if not isinstance(label, str) or not LABEL_RE.match(label) or ".." in label:
        raise ValueError(f"--label: {label!r} is not a valid launchd label (reverse DNS, e.g. {DEFAULT_LABEL})")
    return label


def validate_unit(unit: str) -> str:
    stem = unit.removesuffix(".service") if isinstance(unit, str) else unit
    if not isinstance(stem, str) or not UNIT_RE.match(stem):
        raise ValueError(f"--unit: {unit!r} is not a valid systemd unit name (e.g. {DEFAULT_UNIT})")
    return stem


# --------------------------------------------------------------------------- what runs


def agent_argv(svc: AgentService) -> list[str]:
    """The foreground agent command that the service manager keeps running."""
    argv = [str(svc.executable), "agent", "--coordinator", svc.coordinator, "--name", svc.name]
    if svc.host:
        argv += ["--host", svc.host]
    return argv + ["--state-dir", str(svc.state_dir)]


def agent_environment(svc: AgentService, path_tail: tuple[str, ...], *, with_token_file: bool) -> dict[str, str]:
    """Environment for the agent: the venv first on PATH, the coordinator, the token's file.

    Service managers start jobs with a minimal PATH; putting the venv's bin first makes the
    ranks' `python`, `mpirun` and `mlx.launch` the ones installed beside this `jupiter`.
    """
    env = {
        "PATH": ":".join([str(svc.bin_dir), *(p for p in path_tail if p != str(svc.bin_dir))]),
        "JUPITER_URL": svc.coordinator,
        # Without a terminal Python block-buffers stdout; logs would arrive minutes late.
        "PYTHONUNBUFFERED": "1",
    }
    if with_token_file:
        env["JUPITER_JOIN_TOKEN_FILE"] = str(svc.token_file)
    return env


def has_token_file(svc: AgentService) -> bool:
    """True when the service should point at a token file: a new token, or one already saved."""
    return svc.join_token is not None or svc.token_file.is_file()


def token_notes(svc: AgentService, with_token_file: bool) -> tuple[str, ...]:
    if with_token_file:
        return ()
    return (f"no join token given and none saved at {svc.token_file}: the agent will have to find "
            "one itself (JUPITER_JOIN_TOKEN, or the leader's own token file)",)
