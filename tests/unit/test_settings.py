"""JUPITER_* variables through pydantic-settings (shared/settings.py, coordinator/settings.py), in process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from coordinator import app as coordinator_app
from coordinator.auth import load_keyring
from coordinator.cli import register
from coordinator.settings import Settings
from shared.client import default_admin_token, default_url
from shared.paths import DEFAULT_PORT, DEFAULT_URL, jupiter_home

LONG = "t" * 40


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """None of the runner's own JUPITER_* variables, and a HOME of our own."""
    for name in list(os.environ):
        if name.startswith("JUPITER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.chdir(tmp_path)  # no ./config/cluster.yaml


def run_coordinator_command(monkeypatch, *args: str) -> Settings:
    """`jupiter coordinator ARGS` with the daemon left out: the Settings it would serve with."""
    seen: list[Settings] = []
    monkeypatch.setattr(coordinator_app, "serve", seen.append)
    cli = typer.Typer()
    register(cli)
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return seen[0]


def test_jupiter_port_sets_the_coordinator_default_and_an_explicit_value_wins(monkeypatch):
    assert Settings().port == DEFAULT_PORT
    monkeypatch.setenv("JUPITER_PORT", "9123")
    monkeypatch.setenv("JUPITER_HEARTBEAT_INTERVAL_S", "2.5")
    assert Settings().port == 9123 and Settings().heartbeat_interval_s == 2.5
    assert Settings(port=9200).port == 9200
    # The flags take their defaults from the same settings; a flag given wins.
    assert run_coordinator_command(monkeypatch).port == 9123
    given = run_coordinator_command(monkeypatch, "--port", "9300", "--heartbeat-interval", "1")
    assert (given.port, given.heartbeat_interval_s) == (9300, 1.0)


def test_coordinator_settings_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("JUPITER_ALLOWED_HOSTS", "a.example, b.example")
    monkeypatch.setenv("JUPITER_HOST", "")  # empty: unset
    monkeypatch.setenv("JUPITER_HOME", str(tmp_path / "h"))
    s = Settings()
    assert s.allowed_hosts == ["a.example", "b.example"] and s.host == "127.0.0.1" and s.home == tmp_path / "h"
    assert Settings(allowed_hosts=["c.example"]).allowed_hosts == ["c.example"]


def test_jupiter_home_sets_jupiter_home(monkeypatch, tmp_path):
    assert jupiter_home() == tmp_path / "user" / ".jupiter"
    monkeypatch.setenv("JUPITER_HOME", str(tmp_path / "elsewhere"))
    assert jupiter_home() == tmp_path / "elsewhere"
    monkeypatch.setenv("JUPITER_HOME", "~/other")
    assert jupiter_home() == tmp_path / "user" / "other"
    monkeypatch.setenv("JUPITER_HOME", "")
    assert jupiter_home() == tmp_path / "user" / ".jupiter"


def test_empty_jupiter_url_falls_back_to_the_default(monkeypatch):
    monkeypatch.setenv("JUPITER_URL", "")
    assert default_url() == DEFAULT_URL
    monkeypatch.setenv("JUPITER_URL", "https://leader.example:8470")
    assert default_url() == "https://leader.example:8470"


def test_admin_token_from_the_environment_else_the_leaders_file(monkeypatch, tmp_path):
    monkeypatch.setenv("JUPITER_HOME", str(tmp_path / "h"))
    assert default_admin_token() is None
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "admin.token").write_text("from-file\n")
    assert default_admin_token() == "from-file"
    monkeypatch.setenv("JUPITER_TOKEN", "")
    assert default_admin_token() == "from-file"
    monkeypatch.setenv("JUPITER_TOKEN", LONG)
    assert default_admin_token() == LONG


@pytest.mark.parametrize("value", ["short", ""])
def test_a_short_jupiter_token_is_still_refused(monkeypatch, tmp_path, value):
    monkeypatch.setenv("JUPITER_TOKEN", value)
    with pytest.raises(ValueError, match=f"JUPITER_TOKEN is {len(value)} characters long; a token needs at least 32"):
        load_keyring(Settings(home=tmp_path / "h"))
    monkeypatch.setenv("JUPITER_TOKEN", LONG)
    keys = load_keyring(Settings(home=tmp_path / "h"))
    assert keys.admin_from_env and not keys.join_from_env and keys.is_admin(LONG)


def test_the_join_token_is_found_in_order(monkeypatch, tmp_path):
    from agent.state import find_join_token

    monkeypatch.setenv("JUPITER_HOME", str(tmp_path / "h"))
    assert find_join_token() is None
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "join.token").write_text("leader\n")
    assert find_join_token() == "leader"
    (tmp_path / "file").write_text("from-file\n")
    monkeypatch.setenv("JUPITER_JOIN_TOKEN_FILE", str(tmp_path / "file"))
    assert find_join_token() == "from-file"
    monkeypatch.setenv("JUPITER_JOIN_TOKEN", "from-env")
    assert find_join_token() == "from-env"


def test_a_bad_variable_is_named_without_its_value(monkeypatch):
    monkeypatch.setenv("JUPITER_PORT", "eighty")
    cli = typer.Typer()
    register(cli)
    result = CliRunner().invoke(cli, [])
    assert result.exit_code == 1 and "JUPITER_PORT" in result.output and "eighty" not in result.output


def test_tokens_never_show_in_the_settings_repr(monkeypatch):
    monkeypatch.setenv("JUPITER_TOKEN", LONG)
    assert LONG not in repr(Settings()) and isinstance(Settings().home, Path)
