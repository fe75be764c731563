"""Linux: a systemd unit, system-wide when installing as root, per-user otherwise.

The unit is rendered from the template in deploy/systemd/. Each value is quoted for the one
directive it lands in (systemd's rules differ between ExecStart=, Environment= and paths),
so a path with spaces, a "%" or a "$" reaches the agent exactly as given; no shell is involved.
"""

from __future__ import annotations

import os
import pwd
import re
from pathlib import Path
from typing import Literal

from agent.service.config import DEPLOY_DIR, AgentService, agent_argv, agent_environment, has_token_file, token_notes
from agent.service.plan import FileWrite, Plan, Step

Scope = Literal["system", "user"]

TEMPLATE = DEPLOY_DIR / "systemd" / "jupiter-agent.service"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
PATH_TAIL = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")

# Words made only of these need no quotes in ExecStart= (after % and $ are doubled).
_PLAIN_WORD = re.compile(r"^[A-Za-z0-9_@%+=:,./$-]+$")
_PLACEHOLDER = re.compile(r"@([A-Z_]+)@")

USER_BUS_HINT = (
    "`systemctl --user` needs this user's own session (log in as the user over ssh rather "
    "than `sudo -u`), or install as root for a system-wide unit"
)


def default_scope(uid: int) -> Scope:
    return "system" if uid == 0 else "user"


def unit_dir(scope: Scope, home: Path) -> Path:
    if scope == "system":
        return SYSTEM_UNIT_DIR
    xdg = os.environ.get("XDG_CONFIG_HOME")
    # systemd itself only honours an absolute XDG_CONFIG_HOME.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".config"
    return base / "systemd" / "user"


def unit_file_name(unit: str) -> str:
    return f"{unit}.service"


def systemctl(scope: Scope, *args: str) -> tuple[str, ...]:
    return ("systemctl", *(("--user",) if scope == "user" else ()), *args)


# --------------------------------------------------------------------------- quoting


def escape_specifiers(value: str) -> str:
    """systemd expands %n, %h, ... in most settings; %% is a literal percent sign."""
    return value.replace("%", "%%")


def quote_exec_word(word: str) -> str:
    """One argv word for ExecStart=, read back by systemd as exactly `word`.

    systemd expands $VAR / ${VAR} in ExecStart= ($$ is a literal $), then splits on
    whitespace honouring double quotes with C escapes inside them.
    """
    word = word.replace("$", "$$")
    if not _PLAIN_WORD.match(word):
        word = '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escape_specifiers(word)


def exec_start(argv: list[str]) -> str:
    if not argv or not argv[0].startswith("/"):
        # An absolute first word also keeps systemd's prefixes (@ - : + !) from applying.
        raise ValueError(f"ExecStart needs an absolute executable, got {argv[:1]!r}")
    return " ".join(quote_exec_word(w) for w in argv)


def environment_line(key: str, value: str) -> str:
    # Environment= unquotes and C-unescapes like ExecStart= but never expands $.
    assignment = f"{key}={value}".replace("\\", "\\\\").replace('"', '\\"')
    return escape_specifiers(f'Environment="{assignment}"')


def working_directory(path: Path) -> str:
    """WorkingDirectory= takes the rest of the line as the path: no quotes, only specifiers."""
    value = str(path)
    # The unit parser strips surrounding blanks and reads a trailing backslash as a line
    # continuation; neither could be escaped here.
    if value != value.strip() or value.endswith("\\"):
        raise ValueError(f"--state-dir: {value!r} cannot be a systemd WorkingDirectory (trailing blank or backslash)")
    return escape_specifiers(value)


def render_template(template: str, values: dict[str, str]) -> str:
    """Fill @NAME@ placeholders in one pass (a value is never re-scanned for placeholders).

    Lines starting with "##" describe the template itself and are left out; so is a line
    holding only a placeholder whose value is empty, so optional directives leave no gaps.
    """
    body = "\n".join(line for line in template.splitlines() if not line.startswith("##"))
    missing = sorted(set(_PLACEHOLDER.findall(body)) - set(values))
    if missing:
        raise ValueError(f"unit template has placeholders without a value: {', '.join(missing)}")
    lines = []
    for line in template.splitlines():
        if line.startswith("##"):
            continue
        rendered = _PLACEHOLDER.sub(lambda m: values[m.group(1)], line)
        if rendered == "" and _PLACEHOLDER.fullmatch(line.strip()):
            continue
        lines.append(rendered)
    return "\n".join(lines) + "\n"


def render_unit(svc: AgentService, scope: Scope, *, with_token_file: bool | None = None,
                template: Path = TEMPLATE) -> str:
    if with_token_file is None:
        with_token_file = has_token_file(svc)
    env = agent_environment(svc, PATH_TAIL, with_token_file=with_token_file)
    return render_template(template.read_text(), {
        "NODE_NAME": escape_specifiers(svc.name),
        "UNIT_NAME": escape_specifiers(svc.unit),
        "JOURNAL_SCOPE": "" if scope == "system" else "--user ",
        "EXEC_START": exec_start(agent_argv(svc)),
        "WORKING_DIRECTORY": working_directory(svc.state_dir),
        "ENVIRONMENT": "\n".join(environment_line(k, v) for k, v in env.items()),
        # multi-user.target is reached at boot; a user manager's default.target at its start
        # (at boot too, once lingering is on).
        "WANTED_BY": "multi-user.target" if scope == "system" else "default.target",
    })


# --------------------------------------------------------------------------- plans


def install_plan(svc: AgentService, *, home: Path, uid: int, scope: Scope | None = None,
                 target_dir: Path | None = None, user: str | None = None) -> Plan:
    scope = scope or default_scope(uid)
    path = (target_dir or unit_dir(scope, home)) / unit_file_name(svc.unit)
    with_token = has_token_file(svc)
    unit = unit_file_name(svc.unit)
    writes = []
    if svc.join_token is not None:
        writes.append(FileWrite(svc.token_file, svc.join_token.encode(), mode=0o600, secret=True))
    writes.append(FileWrite(path, render_unit(svc, scope, with_token_file=with_token).encode()))
    hint = USER_BUS_HINT if scope == "user" else ""
    steps = [
        Step(systemctl(scope, "daemon-reload"), "make systemd read the new unit file", hint=hint),
        Step(systemctl(scope, "enable", unit), "start it at every boot", hint=hint),
        # Not `enable --now`: that leaves an agent that is already running on its old
        # settings. restart starts a stopped unit and restarts a running one.
        Step(systemctl(scope, "restart", unit), "start it now (restart if it was running)", hint=hint),
    ]
    if scope == "user":
        # Without lingering, a user's services stop at logout and start only at login.
        steps.append(Step(("loginctl", "enable-linger", user or _user_name(uid)),
                          "run this user's services from boot, without a login", must_succeed=False))
    return Plan(
        action="install",
        manager="systemd",
        service_file=path,
        mkdirs=tuple(dict.fromkeys([svc.state_dir, path.parent])),
        writes=tuple(writes),
        after=tuple(steps),
        notes=token_notes(svc, with_token),
    )


def uninstall_plan(*, unit: str, home: Path, uid: int, scope: Scope | None = None,
                   target_dir: Path | None = None, state_dir: Path | None = None) -> Plan:
    scope = scope or default_scope(uid)
    name = unit_file_name(unit)
    path = (target_dir or unit_dir(scope, home)) / name
    return Plan(
        action="uninstall",
        manager="systemd",
        service_file=path,
        before=(Step(systemctl(scope, "disable", "--now", name), "stop the agent and drop it from boot",
                     only_if=systemctl(scope, "cat", name)),),
        removes=(path,) + ((state_dir,) if state_dir is not None else ()),
        after=(Step(systemctl(scope, "daemon-reload"), "forget the removed unit"),),
    )


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
