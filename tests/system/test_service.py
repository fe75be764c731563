"""`jupiter agent install` / `uninstall`: the files written and the commands run.

Every test works in tmp_path with HOME pointed there and service files sent to explicit
directories; launchctl and systemctl are never run, a FakeSystem records what would have been.
"""

from __future__ import annotations

import configparser
import os
import plistlib
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.service import (
    AgentService,
    ServiceError,
    agent_argv,
    agent_service,
    apply_plan,
    default_manager,
    format_plan,
    plan_install,
    plan_uninstall,
)
from agent.service import launchd, systemd
from agent.service.samples import SAMPLES
from agent.system import CommandResult, InterfaceReading, MemoryReading

UID = 501
TOKEN = "join-abcdefghijklmnop"
VENV_JUPITER = Path(sys.executable).absolute().parent / "jupiter"


class FakeSystem:
    """The System seam with scripted answers; every argv is kept in `calls`.

    `answers` maps an argv tuple to a result, or to a list of results given out in turn.
    Anything not scripted succeeds with exit 0.
    """

    def __init__(self, platform: str = "Darwin", answers: dict | None = None):
        self._platform = platform
        self.answers = dict(answers or {})
        self.calls: list[list[str]] = []

    def platform(self) -> str:
        return self._platform

    def run(self, argv: list[str], timeout: float = 10.0) -> CommandResult | None:
        self.calls.append(list(argv))
        answer = self.answers.get(tuple(argv), CommandResult(0, ""))
        if isinstance(answer, list):
            return answer.pop(0) if len(answer) > 1 else answer[0]
        return answer

    def read_text(self, path: str) -> str | None:
        return None

    def listdir(self, path: str) -> list[str]:
        return []

    def memory(self) -> MemoryReading:
        return MemoryReading(0, 0)

    def cpu_count(self) -> int:
        return 1

    def interfaces(self) -> list[InterfaceReading]:
        return []


NOT_LOADED = CommandResult(113, "", 'Could not find service "dev.jupiter.agent" in domain for user gui: 501')


@pytest.fixture(autouse=True)
def fake_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("JUPITER_HOME", str(home / ".jupiter"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("JUPITER_URL", raising=False)
    return home


@pytest.fixture
def svc(fake_home) -> AgentService:
    # The real console script of this venv, so "ProgramArguments[0] exists" means something.
    assert VENV_JUPITER.is_file(), "tests run from the project's venv"
    return agent_service("http://leader.local:8470", "Mac mini 1", host="10.0.0.2",
                         state_dir=fake_home / "state", join_token=TOKEN)


def launchctl_target(label: str = "dev.jupiter.agent") -> str:
    return f"gui/{UID}/{label}"


def no_sleep(_seconds: float) -> None:
    pass


# --------------------------------------------------------------------------- launchd: the plist


def test_plist_round_trips_and_has_what_launchd_needs(svc, fake_home):
    plist = launchd.build_plist(svc, fake_home)
    assert plistlib.loads(launchd.render_plist(plist)) == plist

    assert plist["Label"] == "dev.jupiter.agent"
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] is True
    assert plist["ProcessType"] == "Interactive"
    assert plist["WorkingDirectory"] == str(svc.state_dir)
    assert plist["ProgramArguments"] == [
        str(VENV_JUPITER), "agent", "--coordinator", "http://leader.local:8470", "--name", "Mac mini 1",
        "--host", "10.0.0.2", "--state-dir", str(fake_home / "state"),
    ]
    program = Path(plist["ProgramArguments"][0])
    assert program.is_absolute() and program.is_file() and os.access(program, os.X_OK)

    env = plist["EnvironmentVariables"]
    assert env["PATH"].split(":")[0] == str(VENV_JUPITER.parent)
    assert env["JUPITER_URL"] == "http://leader.local:8470"
    assert env["JUPITER_JOIN_TOKEN_FILE"] == str(svc.state_dir / "agent-join-token")
    assert plist["StandardOutPath"] == str(fake_home / "Library/Logs/jupiter/dev.jupiter.agent.log")
    assert plist["StandardErrorPath"] == str(fake_home / "Library/Logs/jupiter/dev.jupiter.agent.err.log")
    assert TOKEN.encode() not in launchd.render_plist(plist)


def test_plist_values_cannot_break_the_xml(fake_home):
    # Built directly: validation would refuse this name, plistlib must cope regardless.
    tricky = AgentService(coordinator="http://leader.local:8470", name="A&B <lab> (1)",
                          state_dir=fake_home / "dir with <xml> & \"quotes\"", executable=VENV_JUPITER)
    data = launchd.render_plist(launchd.build_plist(tricky, fake_home))
    back = plistlib.loads(data)
    assert back["ProgramArguments"][5] == "A&B <lab> (1)"
    assert back["WorkingDirectory"] == str(fake_home / "dir with <xml> & \"quotes\"")


def test_sample_plist_in_deploy_is_what_the_code_generates():
    for path, render in SAMPLES.items():
        assert path.read_bytes() == render(), f"{path} is stale: run `python -m agent.service.samples`"
        assert plistlib.loads(path.read_bytes())["Label"] == "dev.jupiter.agent"


# --------------------------------------------------------------------------- launchd: install, uninstall


def test_launchd_install_writes_files_and_loads_through_the_seam(svc, fake_home):
    fake = FakeSystem(answers={("launchctl", "print", launchctl_target()): NOT_LOADED})
    plan = plan_install(svc, "launchd", system=fake, home=fake_home, uid=UID)
    outcome = apply_plan(plan, fake, sleep=no_sleep)

    path = fake_home / "Library/LaunchAgents/dev.jupiter.agent.plist"
    assert plan.service_file == path
    assert fake.calls == [
        ["launchctl", "print", launchctl_target()],
        ["launchctl", "enable", launchctl_target()],
        ["launchctl", "bootstrap", f"gui/{UID}", str(path)],
        ["launchctl", "kickstart", launchctl_target()],
    ]
    assert outcome.warnings == []

    written = plistlib.loads(path.read_bytes())
    assert written == launchd.build_plist(svc, fake_home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    for log in (written["StandardOutPath"], written["StandardErrorPath"]):
        assert Path(log).parent.is_dir()  # launchd will not create it
    assert Path(written["WorkingDirectory"]).is_dir()

    token_file = Path(written["EnvironmentVariables"]["JUPITER_JOIN_TOKEN_FILE"])
    assert token_file.read_text().strip() == TOKEN
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert TOKEN not in path.read_text()


def test_launchd_reinstall_boots_out_the_loaded_copy_first(svc, fake_home, tmp_path):
    fake = FakeSystem()  # `launchctl print` exits 0: already loaded
    target_dir = tmp_path / "agents"
    apply_plan(plan_install(svc, "launchd", system=fake, home=fake_home, uid=UID, target_dir=target_dir),
               fake, sleep=no_sleep)
    verbs = [call[1] for call in fake.calls]
    assert verbs == ["print", "bootout", "enable", "bootstrap", "kickstart"]
    assert fake.calls[1] == ["launchctl", "bootout", launchctl_target()]
    assert (target_dir / "dev.jupiter.agent.plist").is_file()


def test_launchd_bootstrap_is_retried_while_the_old_job_settles(svc, fake_home):
    path = fake_home / "Library/LaunchAgents/dev.jupiter.agent.plist"
    bootstrap = ("launchctl", "bootstrap", f"gui/{UID}", str(path))
    busy = CommandResult(5, "", "Bootstrap failed: 5: Input/output error")
    fake = FakeSystem(answers={bootstrap: [busy, busy, CommandResult(0, "")]})
    slept: list[float] = []
    apply_plan(plan_install(svc, "launchd", system=fake, home=fake_home, uid=UID), fake, sleep=slept.append)
    assert fake.calls.count(list(bootstrap)) == 3
    assert slept == [1.0, 1.0]


def test_launchd_bootstrap_failure_explains_the_gui_domain(svc, fake_home):
    path = fake_home / "Library/LaunchAgents/dev.jupiter.agent.plist"
    bootstrap = ("launchctl", "bootstrap", f"gui/{UID}", str(path))
    no_gui = CommandResult(125, "", "Bootstrap failed: 125: Domain does not support specified action")
    fake = FakeSystem(answers={bootstrap: no_gui})
    with pytest.raises(ServiceError, match=r"exit 125.*automatic login"):
        apply_plan(plan_install(svc, "launchd", system=fake, home=fake_home, uid=UID), fake, sleep=no_sleep)


def test_launchd_missing_launchctl_is_a_clear_error(svc, fake_home):
    fake = FakeSystem(answers={("launchctl", "enable", launchctl_target()): None})
    with pytest.raises(ServiceError, match="launchctl is missing"):
        apply_plan(plan_install(svc, "launchd", system=fake, home=fake_home, uid=UID), fake, sleep=no_sleep)


def test_launchd_uninstall_boots_out_and_removes_the_plist_only(svc, fake_home):
    fake = FakeSystem(answers={("launchctl", "print", launchctl_target()): NOT_LOADED})
    apply_plan(plan_install(svc, "launchd", system=fake, home=fake_home, uid=UID), fake, sleep=no_sleep)
    path = fake_home / "Library/LaunchAgents/dev.jupiter.agent.plist"

    loaded = FakeSystem()
    plan = plan_uninstall("launchd", system=loaded, home=fake_home, uid=UID)
    apply_plan(plan, loaded)
    assert loaded.calls == [["launchctl", "print", launchctl_target()],
                            ["launchctl", "bootout", launchctl_target()]]
    assert not path.exists()
    assert svc.token_file.is_file()  # the state dir is left alone unless asked


def test_launchd_uninstall_purge_removes_state_and_logs(svc, fake_home):
    fake = FakeSystem(answers={("launchctl", "print", launchctl_target()): NOT_LOADED})
    apply_plan(plan_install(svc, "launchd", system=fake, home=fake_home, uid=UID), fake, sleep=no_sleep)
    log = fake_home / "Library/Logs/jupiter/dev.jupiter.agent.log"
    log.write_text("old log\n")

    apply_plan(plan_uninstall("launchd", system=fake, home=fake_home, uid=UID, purge_state_dir=svc.state_dir), fake)
    assert not svc.state_dir.exists()
    assert not log.exists()
    assert fake.calls[-1] == ["launchctl", "print", launchctl_target()]  # not loaded: no bootout


def test_uninstall_refuses_to_purge_home(fake_home):
    with pytest.raises(ValueError, match="--state-dir"):
        plan_uninstall("launchd", system=FakeSystem(), home=fake_home, uid=UID, purge_state_dir=fake_home)


def test_reinstall_without_a_token_keeps_the_saved_one(svc, fake_home):
    fake = FakeSystem()
    apply_plan(plan_install(svc, "launchd", system=fake, home=fake_home, uid=UID), fake, sleep=no_sleep)
    again = agent_service(svc.coordinator, svc.name, state_dir=svc.state_dir)  # no join token
    plan = plan_install(again, "launchd", system=fake, home=fake_home, uid=UID)
    assert all(not w.secret for w in plan.writes)
    assert plan.notes == ()
    apply_plan(plan, fake, sleep=no_sleep)
    written = plistlib.loads(plan.service_file.read_bytes())
    assert written["EnvironmentVariables"]["JUPITER_JOIN_TOKEN_FILE"] == str(svc.token_file)
    assert svc.token_file.read_text().strip() == TOKEN


def test_no_token_at_all_leaves_the_variable_out_and_says_so(fake_home):
    bare = agent_service("http://leader.local:8470", "node-1", state_dir=fake_home / "fresh")
    plan = plan_install(bare, "launchd", system=FakeSystem(), home=fake_home, uid=UID)
    assert "JUPITER_JOIN_TOKEN_FILE" not in plistlib.loads(plan.writes[-1].content)["EnvironmentVariables"]
    assert any("no join token" in note for note in plan.notes)


# --------------------------------------------------------------------------- --print


def test_print_shows_the_plan_and_changes_nothing(svc, fake_home):
    fake = FakeSystem()
    plan = plan_install(svc, "launchd", system=fake, home=fake_home, uid=UID)
    text = format_plan(plan)
    assert fake.calls == []
    assert not (fake_home / "Library").exists() and not svc.state_dir.exists()

    assert str(plan.service_file) in text
    assert "<key>ProgramArguments</key>" in text
    assert f"launchctl bootstrap gui/{UID} {plan.service_file}" in text
    assert "agent-join-token (mode 0600): the join token, not shown" in text
    assert TOKEN not in text


def test_print_systemd_changes_nothing(svc, fake_home, tmp_path):
    fake = FakeSystem("Linux")
    plan = plan_install(svc, "systemd", system=fake, home=fake_home, uid=1000, user="you")
    text = format_plan(plan)
    assert fake.calls == [] and not (fake_home / ".config").exists()
    assert "ExecStart=" in text and "systemctl --user enable jupiter-agent.service" in text
    assert TOKEN not in text


def test_print_on_the_other_platform_warns(svc, fake_home):
    plan = plan_install(svc, "systemd", system=FakeSystem("Darwin"), home=fake_home, uid=UID)
    assert any("not this machine's service manager" in n for n in plan.notes)


# --------------------------------------------------------------------------- systemd: the unit


def parse_unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
    parser.optionxform = str  # keys are case-sensitive in systemd
    parser.read_string(text)
    return parser


def environment_of(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        if line.startswith("Environment="):
            key, _, value = split_systemd_words(line.removeprefix("Environment="), dollars=False)[0].partition("=")
            env[key] = value
    return env


def split_systemd_words(line: str, *, dollars: bool = True) -> list[str]:
    """A reference reading of systemd's rules for the subset the renderer emits:
    %% is %, words split on blanks, "double quotes" with \\ and \" escapes, $$ is $."""
    line = line.replace("%%", "%")
    words, i = [], 0
    while i < len(line):
        if line[i] == " ":
            i += 1
            continue
        buf = []
        if line[i] == '"':
            i += 1
            while line[i] != '"':
                if line[i] == "\\":
                    i += 1
                buf.append(line[i])
                i += 1
            i += 1
        else:
            while i < len(line) and line[i] != " ":
                buf.append(line[i])
                i += 1
        word = "".join(buf)
        words.append(word.replace("$$", "$") if dollars else word)
    return words


def test_systemd_unit_has_restart_and_an_absolute_existing_exec(svc):
    text = systemd.render_unit(svc, "user")
    unit = parse_unit(text)
    service = unit["Service"]
    assert service["Restart"] == "always"
    assert int(service["RestartSec"]) > 0
    first = Path(split_systemd_words(service["ExecStart"])[0])
    assert first.is_absolute() and first.is_file()
    assert split_systemd_words(service["ExecStart"]) == agent_argv(svc)
    assert service["WorkingDirectory"] == str(svc.state_dir)
    assert "network-online.target" in unit["Unit"]["After"]
    assert unit["Install"]["WantedBy"] == "default.target"

    env = environment_of(text)
    assert env["JUPITER_URL"] == "http://leader.local:8470"
    assert env["JUPITER_JOIN_TOKEN_FILE"] == str(svc.token_file)
    assert env["PATH"].split(":")[0] == str(VENV_JUPITER.parent)
    assert TOKEN not in text
    assert "@" not in text.replace("jupiter-agent", "")  # no placeholder left behind


def test_systemd_quoting_survives_spaces_percent_dollar_and_quotes(fake_home):
    odd = fake_home / 'st dir/50% $HOME "q" back\\slash'
    tricky = agent_service("http://leader.local:8470", "Mac mini (1)", state_dir=odd, join_token=TOKEN)
    text = systemd.render_unit(tricky, "system")
    service = parse_unit(text)["Service"]
    assert split_systemd_words(service["ExecStart"]) == agent_argv(tricky)
    assert service["WorkingDirectory"].replace("%%", "%") == str(odd)
    assert environment_of(text)["JUPITER_JOIN_TOKEN_FILE"] == str(odd / "agent-join-token")
    assert parse_unit(text)["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_accepts_the_rendered_unit(fake_home, tmp_path):
    odd = fake_home / 'st dir/50% $HOME "q"'
    tricky = agent_service("http://leader.local:8470", "Mac mini (1)", state_dir=odd, join_token=TOKEN)
    odd.mkdir(parents=True)
    unit = tmp_path / "jupiter-agent.service"
    unit.write_text(systemd.render_unit(tricky, "system"))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_template_placeholders_are_filled_once_and_checked():
    out = systemd.render_template("## template note\nA=@X@\n@EMPTY@\nB=@Y@\n",
                                  {"X": "@Y@", "Y": "y", "EMPTY": ""})
    assert out == "A=@Y@\nB=y\n"
    with pytest.raises(ValueError, match="MISSING"):
        systemd.render_template("A=@MISSING@\n", {})


def test_deploy_template_renders_every_placeholder(svc):
    text = systemd.TEMPLATE.read_text()
    assert "ExecStart=@EXEC_START@" in text and "Restart=always" in text
    assert "##" not in systemd.render_unit(svc, "system")


# --------------------------------------------------------------------------- systemd: install, uninstall


def test_systemd_user_install_runs_systemctl_user(svc, fake_home, tmp_path):
    fake = FakeSystem("Linux")
    unit_dir = tmp_path / "units"
    plan = plan_install(svc, "systemd", system=fake, home=fake_home, uid=1000, user="you", target_dir=unit_dir)
    outcome = apply_plan(plan, fake)
    assert fake.calls == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "jupiter-agent.service"],
        ["systemctl", "--user", "restart", "jupiter-agent.service"],
        ["loginctl", "enable-linger", "you"],
    ]
    assert outcome.warnings == []
    path = unit_dir / "jupiter-agent.service"
    assert plan.service_file == path and path.is_file()
    assert parse_unit(path.read_text())["Service"]["Restart"] == "always"
    assert stat.S_IMODE(svc.token_file.stat().st_mode) == 0o600
    assert TOKEN not in path.read_text()


def test_systemd_default_locations_follow_the_uid(svc, fake_home):
    fake = FakeSystem("Linux")
    user_plan = plan_install(svc, system=fake, home=fake_home, uid=1000, user="you")
    assert user_plan.manager == "systemd"
    assert user_plan.service_file == fake_home / ".config/systemd/user/jupiter-agent.service"
    root_plan = plan_install(svc, system=fake, home=fake_home, uid=0)
    assert root_plan.service_file == Path("/etc/systemd/system/jupiter-agent.service")
    assert [s.argv for s in root_plan.steps] == [
        ("systemctl", "daemon-reload"),
        ("systemctl", "enable", "jupiter-agent.service"),
        ("systemctl", "restart", "jupiter-agent.service"),
    ]
    assert "WantedBy=multi-user.target" in root_plan.writes[-1].content.decode()
    assert fake.calls == []  # planning alone ran nothing


def test_systemd_failed_linger_is_a_warning_and_failed_enable_an_error(svc, fake_home, tmp_path):
    linger = ("loginctl", "enable-linger", "you")
    fake = FakeSystem("Linux", answers={linger: CommandResult(1, "", "Access denied")})
    plan = plan_install(svc, "systemd", system=fake, home=fake_home, uid=1000, user="you", target_dir=tmp_path)
    outcome = apply_plan(plan, fake)
    assert len(outcome.warnings) == 1 and "Access denied" in outcome.warnings[0]

    enable = ("systemctl", "--user", "enable", "jupiter-agent.service")
    broken = FakeSystem("Linux", answers={enable: CommandResult(1, "", "Failed to connect to bus")})
    with pytest.raises(ServiceError, match="Failed to connect to bus.*session"):
        apply_plan(plan, broken)


def test_systemd_uninstall_disables_removes_and_reloads(svc, fake_home, tmp_path):
    fake = FakeSystem("Linux")
    apply_plan(plan_install(svc, "systemd", system=fake, home=fake_home, uid=1000, user="you",
                            target_dir=tmp_path), fake)
    fake.calls.clear()
    apply_plan(plan_uninstall("systemd", system=fake, home=fake_home, uid=1000, target_dir=tmp_path), fake)
    assert fake.calls == [
        ["systemctl", "--user", "cat", "jupiter-agent.service"],
        ["systemctl", "--user", "disable", "--now", "jupiter-agent.service"],
        ["systemctl", "--user", "daemon-reload"],
    ]
    assert not (tmp_path / "jupiter-agent.service").exists()
    assert svc.state_dir.is_dir()


def test_systemd_uninstall_of_an_unknown_unit_skips_disable(fake_home, tmp_path):
    cat = ("systemctl", "cat", "jupiter-agent.service")
    fake = FakeSystem("Linux", answers={cat: CommandResult(1, "", "No files found for jupiter-agent.service.")})
    apply_plan(plan_uninstall("systemd", system=fake, home=fake_home, uid=0, target_dir=tmp_path), fake)
    assert fake.calls == [list(cat), ["systemctl", "daemon-reload"]]


# --------------------------------------------------------------------------- choosing and validating


@pytest.mark.parametrize("platform, manager", [("Darwin", "launchd"), ("Linux", "systemd")])
def test_default_manager_follows_the_platform(platform, manager):
    assert default_manager(FakeSystem(platform)) == manager


def test_default_manager_refuses_other_platforms():
    with pytest.raises(ValueError, match="--launchd or --systemd"):
        default_manager(FakeSystem("Windows"))


def test_defaults_come_from_the_environment(fake_home, monkeypatch):
    monkeypatch.setenv("JUPITER_URL", "https://coord.example:9000/")
    svc = agent_service(name="n1")
    assert svc.coordinator == "https://coord.example:9000"
    assert svc.state_dir == fake_home / ".jupiter" / "agent"
    assert svc.executable == VENV_JUPITER


@pytest.mark.parametrize("url", [
    "ftp://leader:8470", "leader:8470", "http://", "http://leader:8470/api", "http://u:p@leader",
    "http://leader:99999", "http://leader:0", "http://leader:port", "http://lead er", "http://leader?x=1",
    "http://leader\n", "http://-leader",
])
def test_bad_coordinator_url_names_the_option(url):
    with pytest.raises(ValueError, match="--coordinator"):
        agent_service(url, "n1")


@pytest.mark.parametrize("url", ["http://leader.local:8470", "https://10.0.0.1", "http://[::1]:8470", "http://leader/", "http://leader?"])
def test_good_coordinator_urls(url):
    assert agent_service(url, "n1").coordinator == url.rstrip("/?")


@pytest.mark.parametrize("name", ["", " lead", "a/b", "x" * 65, "new\nline", "semi;colon"])
def test_bad_name_names_the_option(name):
    with pytest.raises(ValueError, match="--name"):
        agent_service("http://leader:8470", name)


@pytest.mark.parametrize("host", ["", "a b", "-x", "host;rm", "a..b"])
def test_bad_host_names_the_option(host):
    with pytest.raises(ValueError, match="--host"):
        agent_service("http://leader:8470", "n1", host=host)


@pytest.mark.parametrize("kwargs, option", [
    ({"label": "bad/label"}, "--label"),
    ({"unit": "jupiter@agent"}, "--unit"),
    ({"join_token": "has space in it"}, "--join-token"),
    ({"executable": "/nonexistent/bin/jupiter"}, "--executable"),
    ({"state_dir": "/tmp/new\nline"}, "--state-dir"),
])
def test_other_bad_options_name_themselves(kwargs, option):
    with pytest.raises(ValueError, match=option):
        agent_service("http://leader:8470", "n1", **kwargs)
