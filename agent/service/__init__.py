"""Install the agent as an OS service: a launchd LaunchAgent on macOS, a systemd unit on Linux.

Typical use (this is what `jupiter agent install` does):

    svc = agent_service(coordinator, name, host=host, state_dir=state_dir, join_token=token)
    plan = plan_install(svc, manager)          # manager None: launchd on macOS, systemd on Linux
    print(format_plan(plan)) if print_only else apply_plan(plan)

and for `jupiter agent uninstall`: `apply_plan(plan_uninstall(manager))`.
"""

from agent.service.config import (
    DEFAULT_LABEL,
    DEFAULT_UNIT,
    AgentService,
    agent_argv,
    agent_service,
    default_state_dir,
)
from agent.service.install import default_manager, plan_install, plan_uninstall
from agent.service.plan import FileWrite, Manager, Outcome, Plan, ServiceError, Step, apply_plan, format_plan

__all__ = [
    "DEFAULT_LABEL",
    "DEFAULT_UNIT",
    "AgentService",
    "FileWrite",
    "Manager",
    "Outcome",
    "Plan",
    "ServiceError",
    "Step",
    "agent_argv",
    "agent_service",
    "apply_plan",
    "default_manager",
    "default_state_dir",
    "format_plan",
    "plan_install",
    "plan_uninstall",
]
