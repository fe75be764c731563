"""`jupiter agent install --print` as a user runs it: the plist/unit it shows is valid and
writes nothing; bad options are one clear line naming the option."""

from __future__ import annotations

import os
import plistlib
import subprocess
import sys

from tests.support.harness import REPO


def jupiter(*args, home, stdin: str | None = None):
    env = dict(os.environ, HOME=str(home), JUPITER_HOME=str(home / ".jupiter"))
    env.pop("JUPITER_JOIN_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], cwd=REPO, env=env, input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_launchd_print_shows_a_valid_plist_and_writes_nothing(tmp_path):
    out = jupiter("agent", "install", "--launchd", "--print", "--coordinator", "http://leader.local:8470",
                  "--name", "mac-mini-2", "--host", "169.254.10.2", "--join-token-stdin", home=tmp_path,
                  stdin="secret-join-123\n")
    assert out.returncode == 0, out.stderr
    xml = out.stdout[out.stdout.index("<?xml"):out.stdout.index("</plist>") + len("</plist>")]
    plist = plistlib.loads(xml.encode())
    assert plist["RunAtLoad"] is True and plist["KeepAlive"]
    args = plist["ProgramArguments"]
    assert os.path.exists(args[0]) and args[1] == "agent"
    assert args[args.index("--coordinator") + 1] == "http://leader.local:8470"
    assert "secret-join-123" not in out.stdout
    assert plist["EnvironmentVariables"]["JUPITER_JOIN_TOKEN_FILE"].endswith("agent-join-token")
    assert "launchctl bootstrap gui/" in out.stdout
    assert list(tmp_path.iterdir()) == []  # --print changed nothing


def test_systemd_print_and_bad_options(tmp_path):
    out = jupiter("agent", "install", "--systemd", "--print", "--coordinator", "http://leader.local:8470",
                  "--name", "gpu-box", "--join-token-stdin", home=tmp_path, stdin="secret-join-123\n")
    assert out.returncode == 0, out.stderr
    assert "Restart=always" in out.stdout and "systemctl" in out.stdout
    bad = jupiter("agent", "install", "--systemd", "--print", "--coordinator", "ftp://x", home=tmp_path)
    assert bad.returncode != 0 and "--coordinator" in bad.stderr
    bad = jupiter("agent", "install", "--systemd", "--print", "--name", "../etc", home=tmp_path)
    assert bad.returncode != 0 and "--name" in bad.stderr
    bad = jupiter("agent", "--host", "a;reboot", home=tmp_path)
    assert bad.returncode != 0 and "--host" in bad.stderr
