"""The layers hold: shared/ imports nothing from coordinator/ or agent/ (not even lazily inside a
function), and coordinator/ and agent/ never import each other. `make test` runs the same
contracts with lint-imports first ([tool.importlinter] in pyproject.toml); the AST walk here
names every offending import by file and line, with or without import-linter.

The `jupiter` command is composed without breaking them: `coordinator` and `agent` come from the
`jupiter.commands` entry points, and a broken one is named rather than crashing the command."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

REPO = Path(__file__).resolve().parents[2]
# package -> the top-level packages of this repo it must never import
FORBIDDEN = {"shared": {"coordinator", "agent"}, "coordinator": {"agent"}, "agent": {"coordinator"}}


def _imported_modules(tree: ast.AST, module: str, is_package: bool):
    """(line, absolute module name) of every import anywhere in the file, functions included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                parts = module.split(".")
                base = parts if is_package else parts[:-1]
                base = base[:len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield node.lineno, name


def layer_violations() -> list[str]:
    out = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO)
            module = ".".join(rel.with_suffix("").parts)
            is_package = path.name == "__init__.py"
            if is_package:
                module = module.rsplit(".", 1)[0]
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(rel))
            for line, name in _imported_modules(tree, module, is_package):
                if name.split(".")[0] in forbidden:
                    out.append(f"{rel}:{line} imports {name} ({package}/ must not import {name.split('.')[0]}/)")
    return out


def test_no_layer_crosses_another():
    bad = layer_violations()
    assert not bad, "imports across the layers:\n" + "\n".join(bad)


def test_the_walk_sees_lazy_and_relative_imports():
    code = "import json\ndef f():\n    from agent.loop import Agent\n    from ..coordinator import app\n"
    found = list(_imported_modules(ast.parse(code), "shared.cli", False))
    assert (3, "agent.loop") in found and (4, "coordinator") in found


def test_lint_imports_keeps_the_contracts():
    exe = Path(sys.executable).parent / "lint-imports"
    if not exe.exists():
        pytest.fail(f"{exe} is missing: install the test extras (`make venv`, or pip install -e '.[test]')")
    out = subprocess.run([str(exe), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout, out.stdout


# --------------------------------------------------------------------------- the `jupiter` command


def test_entry_points_add_the_daemon_commands_first():
    from shared.cli import add_entry_point_commands

    app = typer.Typer()

    @app.command()
    def version() -> None:
        pass

    assert add_entry_point_commands(app) == []
    assert [c.callback.__name__ for c in app.registered_commands] == ["coordinator", "version"]
    assert [g.name for g in app.registered_groups] == ["agent"]
    assert add_entry_point_commands(app) == []  # once per app
    assert len(app.registered_commands) == 2 and len(app.registered_groups) == 1


def test_a_broken_entry_point_is_named_and_the_others_still_work(monkeypatch):
    from shared.cli import COMMANDS_GROUP, add_entry_point_commands

    real = importlib.metadata.entry_points

    def with_a_broken_one(**kw):
        eps = list(real(**kw))
        if kw.get("group") == COMMANDS_GROUP:
            eps.append(importlib.metadata.EntryPoint("broken", "nowhere_at_all.cli:register", COMMANDS_GROUP))
        return eps

    monkeypatch.setattr(importlib.metadata, "entry_points", with_a_broken_one)
    app = typer.Typer()
    problems = add_entry_point_commands(app)
    assert len(problems) == 1 and "`broken`" in problems[0] and "nowhere_at_all.cli:register" in problems[0]
    assert "ModuleNotFoundError" in problems[0]
    assert [c.callback.__name__ for c in app.registered_commands] == ["coordinator"]


def test_no_entry_points_says_to_reinstall(monkeypatch):
    from shared.cli import add_entry_point_commands

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: [])
    problems = add_entry_point_commands(typer.Typer())
    assert len(problems) == 1 and "reinstall" in problems[0] and "coordinator" in problems[0]


def test_a_client_command_loads_no_daemon_code():
    code = ("import sys\nsys.argv = ['jupiter', 'version']\nfrom shared.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('coordinator', 'agent')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stderr, out.stderr
    assert out.stdout.splitlines()[-1] == "['agent', 'agent.cli', 'coordinator', 'coordinator.cli']", out.stdout


def test_python_m_shared_cli_lists_the_daemons():
    out = subprocess.run([sys.executable, "-m", "shared.cli", "--help"], cwd=REPO, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    assert "Run the coordinator daemon." in out.stdout and "Run an agent, or install it as a service." in out.stdout
    assert out.stdout.index("coordinator") < out.stdout.index("check")
