"""macOS: a per-user LaunchAgent in ~/Library/LaunchAgents, loaded into the gui/<uid> domain.

The plist is a Python dict serialised by plistlib, never XML assembled from strings, so no
value (a name with "&", a path with "<") can change its structure.
"""

from __future__ import annotations

import plistlib
from pathlib import Path
from typing import Any

from agent.service.config import AgentService, agent_argv, agent_environment, has_token_file, token_notes
from agent.service.plan import FileWrite, Plan, Step

# Homebrew on Apple Silicon lives in /opt/homebrew, on Intel in /usr/local; launchd's own
# default PATH has neither.
PATH_TAIL = ("/opt/homebrew/bin", "/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin")
LAUNCHCTL = "launchctl"

GUI_DOMAIN_HINT = (
    "The gui/<uid> domain exists only while the user is logged in at the Mac's screen; on a "
    "headless Mac turn on automatic login for this user, then install again"
)


def plist_path(home: Path, label: str) -> Path:
    return home / "Library" / "LaunchAgents" / f"{label}.plist"


def log_paths(home: Path, label: str) -> tuple[Path, Path]:
    # ~/Library/Logs is where Console.app looks, so the agent's logs show up there.
    logs = home / "Library" / "Logs" / "jupiter"
    return logs / f"{label}.log", logs / f"{label}.err.log"


def domain(uid: int) -> str:
    return f"gui/{uid}"


def service_target(uid: int, label: str) -> str:
    return f"{domain(uid)}/{label}"


def build_plist(svc: AgentService, home: Path, *, with_token_file: bool | None = None) -> dict[str, Any]:
    """The LaunchAgent definition; the join token itself is referenced by path only."""
    if with_token_file is None:
        with_token_file = has_token_file(svc)
    out_log, err_log = log_paths(home, svc.label)
    return {
        "Label": svc.label,
        "ProgramArguments": agent_argv(svc),
        "EnvironmentVariables": agent_environment(svc, PATH_TAIL, with_token_file=with_token_file),
        "WorkingDirectory": str(svc.state_dir),
        "RunAtLoad": True,
        # Always relaunch, like systemd's Restart=always: the agent is meant to be up whenever
        # the user is logged in; ThrottleInterval keeps a crash loop to one try per 10 s.
        "KeepAlive": True,
        "ThrottleInterval": 10,
        # Unset, launchd applies "light resource limits" (throttled CPU and I/O) to agents.
        # Training ranks are children of this job and inherit its class, so ask for the
        # app-level treatment: no throttling.
        "ProcessType": "Interactive",
        # On stop, launchd sends SIGTERM and waits this long before SIGKILL; the agent uses
        # the time to stop its ranks and tell the coordinator.
        "ExitTimeOut": 30,
        "StandardOutPath": str(out_log),
        "StandardErrorPath": str(err_log),
    }


def render_plist(plist: dict[str, Any]) -> bytes:
    return plistlib.dumps(plist, fmt=plistlib.FMT_XML, sort_keys=True)


def install_plan(svc: AgentService, *, home: Path, uid: int, target_dir: Path | None = None) -> Plan:
    path = (target_dir / f"{svc.label}.plist") if target_dir else plist_path(home, svc.label)
    with_token = has_token_file(svc)
    out_log, err_log = log_paths(home, svc.label)
    writes = []
    if svc.join_token is not None:
        writes.append(FileWrite(svc.token_file, svc.join_token.encode(), mode=0o600, secret=True))
    writes.append(FileWrite(path, render_plist(build_plist(svc, home, with_token_file=with_token))))
    return Plan(
        action="install",
        manager="launchd",
        service_file=path,
        # launchd opens the log files itself but does not create missing directories.
        mkdirs=tuple(dict.fromkeys([svc.state_dir, path.parent, out_log.parent, err_log.parent])),
        writes=tuple(writes),
        after=load_steps(uid, svc.label, path),
        notes=token_notes(svc, with_token),
    )


def load_steps(uid: int, label: str, path: Path) -> tuple[Step, ...]:
    target = service_target(uid, label)
    loaded = (LAUNCHCTL, "print", target)
    return (
        # launchd keeps the plist it read at load time; a re-install takes effect only after
        # the old definition is booted out.
        Step((LAUNCHCTL, "bootout", target), "unload the copy already loaded, if any", only_if=loaded),
        # A `launchctl disable` (or an earlier uninstall by hand) persists in launchd's
        # database and makes bootstrap fail; enable clears it and is harmless otherwise.
        Step((LAUNCHCTL, "enable", target), "clear any persisted 'disabled' override"),
        Step((LAUNCHCTL, "bootstrap", domain(uid), str(path)), "load the agent; RunAtLoad starts it",
             attempts=5, hint=GUI_DOMAIN_HINT),
        # Without -k: starts the job if RunAtLoad has not yet, never kills a fresh one.
        Step((LAUNCHCTL, "kickstart", target), "make sure it is running now"),
    )


def uninstall_plan(*, label: str, home: Path, uid: int, target_dir: Path | None = None,
                   state_dir: Path | None = None) -> Plan:
    path = (target_dir / f"{label}.plist") if target_dir else plist_path(home, label)
    target = service_target(uid, label)
    removes: list[Path] = [path]
    if state_dir is not None:
        removes += [*log_paths(home, label), state_dir]
    return Plan(
        action="uninstall",
        manager="launchd",
        service_file=path,
        # bootout alone, no `launchctl disable`: a disabled override outlives the plist and
        # would silently block the next install or a hand-made bootstrap.
        before=(Step((LAUNCHCTL, "bootout", target), "stop the agent and unload it",
                     only_if=(LAUNCHCTL, "print", target)),),
        removes=tuple(removes),
    )

