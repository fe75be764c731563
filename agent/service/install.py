"""`jupiter agent install` / `uninstall`: pick the service manager, build the plan.

The CLI calls `plan_install` / `plan_uninstall`, then either prints the plan (`--print`) or
hands it to `apply_plan`. Everything that depends on the machine (home, uid, platform) is a
parameter with the real value as default, so tests never touch ~/Library or /etc/systemd.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from agent.service import launchd, systemd
from agent.service.config import (
    DEFAULT_LABEL,
    DEFAULT_UNIT,
    AgentService,
    validate_dir_option,
    validate_label,
    validate_unit,
)
from agent.service.plan import Manager, Plan
from agent.system import LocalSystem, System

_BY_PLATFORM: dict[str, Manager] = {"Darwin": "launchd", "Linux": "systemd"}


def default_manager(system: System | None = None) -> Manager:
    """launchd on macOS, systemd on Linux; ValueError elsewhere."""
    platform = (system or LocalSystem()).platform()
    try:
        return _BY_PLATFORM[platform]
    except KeyError:
        raise ValueError(f"no supported service manager on {platform}; pass --launchd or --systemd") from None


def plan_install(
    svc: AgentService,
    manager: Manager | None = None,
    *,
    system: System | None = None,
    home: Path | None = None,
    uid: int | None = None,
    target_dir: Path | None = None,
    scope: systemd.Scope | None = None,
    user: str | None = None,
) -> Plan:
    """What installing `svc` would write and run; touches nothing.

    target_dir replaces the standard directory of the service file (~/Library/LaunchAgents,
    /etc/systemd/system or ~/.config/systemd/user). scope and user apply to systemd only.
    """
    manager = manager or default_manager(system)
    home = home or Path.home()
    uid = os.getuid() if uid is None else uid
    if manager == "launchd":
        plan = launchd.install_plan(svc, home=home, uid=uid, target_dir=target_dir)
    else:
        plan = systemd.install_plan(svc, home=home, uid=uid, scope=scope, target_dir=target_dir, user=user)
    return _note_foreign_platform(plan, system)


def plan_uninstall(
    manager: Manager | None = None,
    *,
    label: str = DEFAULT_LABEL,
    unit: str = DEFAULT_UNIT,
    purge_state_dir: Path | str | None = None,
    system: System | None = None,
    home: Path | None = None,
    uid: int | None = None,
    target_dir: Path | None = None,
    scope: systemd.Scope | None = None,
) -> Plan:
    """Stop and unload the agent, remove its service file.

    The state dir (node identity, join token) stays unless purge_state_dir names it; with
    launchd, purging also removes the agent's log files.
    """
    manager = manager or default_manager(system)
    home = home or Path.home()
    uid = os.getuid() if uid is None else uid
    state_dir = None if purge_state_dir is None else _purgeable(purge_state_dir, home)
    if manager == "launchd":
        plan = launchd.uninstall_plan(label=validate_label(label), home=home, uid=uid,
                                      target_dir=target_dir, state_dir=state_dir)
    else:
        plan = systemd.uninstall_plan(unit=validate_unit(unit), home=home, uid=uid, scope=scope,
                                      target_dir=target_dir, state_dir=state_dir)
    return _note_foreign_platform(plan, system)


def _purgeable(path: Path | str, home: Path) -> Path:
    """Refuse to purge a directory whose loss would be far bigger than an agent's state."""
    state_dir = validate_dir_option("--state-dir", path)
    if state_dir in (Path(state_dir.anchor), home.absolute()) or home.absolute().is_relative_to(state_dir):
        raise ValueError(f"--state-dir: refusing to delete {state_dir}; it is not an agent state dir")
    return state_dir


def _note_foreign_platform(plan: Plan, system: System | None) -> Plan:
    """Say so when --print shows a plan for another OS (handy for docs, odd by accident)."""
    platform = (system or LocalSystem()).platform()
    if _BY_PLATFORM.get(platform) == plan.manager:
        return plan
    note = f"{plan.manager} is not this machine's service manager ({platform}); applying this plan will fail"
    return dataclasses.replace(plan, notes=plan.notes + (note,))
