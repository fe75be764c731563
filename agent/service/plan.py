"""An install or uninstall as data first, then carried out.

Building a `Plan` touches nothing; `format_plan` shows it (`--print`), `apply_plan` performs it.
Because both read the same object, what `--print` shows is exactly what an install would do.
Every command goes through a `System`, so tests see the exact argv without running launchctl.
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agent.system import LocalSystem, System
from shared.paths import write_secret

Manager = Literal["launchd", "systemd"]


class ServiceError(RuntimeError):
    """A service-manager command failed; the message says which, why, and what to try."""


@dataclass(frozen=True)
class Step:
    argv: tuple[str, ...]
    why: str
    # Run `only_if` first and skip this step unless it exits 0 (e.g. "is it loaded?").
    only_if: tuple[str, ...] | None = None
    # A failed optional step becomes a warning instead of stopping the install.
    must_succeed: bool = True
    # launchd can still be tearing the old job down when bootout returns; bootstrap retries.
    attempts: int = 1
    hint: str = ""  # added to the error when the step fails


@dataclass(frozen=True)
class FileWrite:
    path: Path
    content: bytes
    mode: int = 0o644
    secret: bool = False  # the content is never printed


@dataclass(frozen=True)
class Plan:
    action: Literal["install", "uninstall"]
    manager: Manager
    service_file: Path
    mkdirs: tuple[Path, ...] = ()
    writes: tuple[FileWrite, ...] = ()
    removes: tuple[Path, ...] = ()  # files, or directories removed with their contents
    before: tuple[Step, ...] = ()  # commands run before the file changes
    after: tuple[Step, ...] = ()  # commands run after them
    notes: tuple[str, ...] = ()  # things the user should know, shown by --print and the CLI

    @property
    def steps(self) -> tuple[Step, ...]:
        return self.before + self.after


@dataclass
class Outcome:
    ran: list[tuple[tuple[str, ...], int]] = field(default_factory=list)  # argv and exit code
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- showing


def format_plan(plan: Plan) -> str:
    """The `--print` text: each file as it would be written and each command, in the order
    `apply_plan` would do them."""
    out = [f"# jupiter agent {plan.action} ({plan.manager}): a plan only, nothing has been done"]
    out += [f"# note: {n}" for n in plan.notes]
    out += [_format_step(step) for step in plan.before]
    out += [f"# create directory {d}" for d in plan.mkdirs]
    out += [f"# remove {path}" for path in plan.removes]
    for w in plan.writes:
        header = f"# write {w.path} (mode {w.mode:04o})"
        if w.secret:
            out.append(header + ": the join token, not shown")
        else:
            out += [header + ":", w.content.decode().rstrip("\n"), f"# end of {w.path.name}"]
    out += [_format_step(step) for step in plan.after]
    return "\n".join(out) + "\n"


def _format_step(step: Step) -> str:
    # Shell-quoted for copy and paste only; apply_plan never goes through a shell.
    cmd = shlex.join(step.argv)
    if step.only_if:
        cmd = f"{shlex.join(step.only_if)} >/dev/null 2>&1 && {cmd}"
    elif not step.must_succeed:
        cmd = f"{cmd} || true"
    return f"{cmd}  # {step.why}"


# --------------------------------------------------------------------------- doing


def apply_plan(plan: Plan, system: System | None = None, *, sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Carry the plan out: `before` commands, file changes, `after` commands.

    Raises ServiceError when a required command fails; optional ones add a warning.
    """
    system = system or LocalSystem()
    outcome = Outcome()
    for step in plan.before:
        _run_step(step, system, outcome, sleep)
    for d in plan.mkdirs:
        _mkdir(d)
    for path in plan.removes:
        _remove(path)
    for w in plan.writes:
        _write(w)
    for step in plan.after:
        _run_step(step, system, outcome, sleep)
    return outcome


def _run_step(step: Step, system: System, outcome: Outcome, sleep: Callable[[float], None]) -> None:
    if step.only_if is not None:
        probe = system.run(list(step.only_if), timeout=30)
        if probe is None or probe.returncode != 0:
            return
    result = None
    for attempt in range(max(1, step.attempts)):
        if attempt:
            sleep(1.0)
        result = system.run(list(step.argv), timeout=60)
        outcome.ran.append((step.argv, result.returncode if result else -1))
        if result is not None and result.returncode == 0:
            return
    if result is None:
        problem = f"`{shlex.join(step.argv)}` could not run: {step.argv[0]} is missing on this machine"
    else:
        detail = (result.stderr or result.stdout).strip()
        problem = f"`{shlex.join(step.argv)}` failed (exit {result.returncode})" + (f": {detail}" if detail else "")
    if step.hint:
        problem += f". {step.hint}"
    if step.must_succeed:
        raise ServiceError(problem)
    outcome.warnings.append(problem)


def _mkdir(path: Path) -> None:
    # 0700: the state dir holds the join token and, later, the node token.
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _write(w: FileWrite) -> None:
    if w.secret:
        write_secret(w.path, w.content.decode().strip())
        return
    w.path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed, so a service manager never reads half a file.
    tmp = w.path.with_name(f".{w.path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, w.mode)
    try:
        os.write(fd, w.content)
        os.fchmod(fd, w.mode)  # the umask must not decide what launchd/systemd can read
    finally:
        os.close(fd)
    os.replace(tmp, w.path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
