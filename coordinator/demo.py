"""`make run`: the whole system on this one machine, start to clean shutdown.

Starts a coordinator on a free loopback port and two local agents, waits for both to report
`ready`, shows the cluster as `jupiter nodes` and `jupiter check` would, trains the built-in model
on the `sample` domain on two ranks to the end (`jupiter start`, as a user would: progress bar,
final loss, checkpoint path), then stops everything it started and checks that each process
exited cleanly. `JUPITER_DEMO_PRESET` / `JUPITER_DEMO_STEPS` make it smaller or larger.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from rich.console import Console

from shared.client import Client
from shared.settings import explain

REPO = Path(__file__).resolve().parent.parent
console = Console()


class DemoSettings(BaseSettings):
    """JUPITER_DEMO_PRESET / JUPITER_DEMO_STEPS: a smaller or larger training run (empty: unset)."""

    model_config = SettingsConfigDict(env_prefix="JUPITER_DEMO_", env_ignore_empty=True, extra="ignore")

    preset: str = "tiny"
    steps: int | None = None  # None: the preset's own

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, what: str, timeout: float = 15) -> bool:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            console.print(f"[red]{what} did not stop on SIGTERM; killed[/]")
            return False
    # uvicorn re-raises the SIGTERM it handled after a graceful shutdown, so -15 is clean too.
    ok = proc.returncode in (0, -signal.SIGTERM)
    console.print(f"  {what}: " + ("[green]stopped cleanly[/]" if ok else f"[red]exit {proc.returncode}[/]"))
    return ok


def main() -> int:
    try:
        demo = DemoSettings()
    except ValidationError as exc:
        console.print(f"[red]{explain(exc, 'JUPITER_DEMO_')}[/]")
        return 2
    home = Path(tempfile.mkdtemp(prefix="jupiter-demo-"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    config = home / "cluster.yaml"
    config.write_text("backend: ring\nuse_thunderbolt_bridge: true\nsync_every_n_steps: 1\n"
                      "checkpoint_on_failure: true\nauto_restart_failed_nodes: true\nnodes: []\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPITER_")}
    env.update(JUPITER_HOME=str(home), JUPITER_URL=url, PYTHONUNBUFFERED="1")
    jupiter = [sys.executable, "-m", "shared.cli"]
    procs: list[tuple[str, subprocess.Popen]] = []
    logs = home / "logs"
    logs.mkdir()

    def spawn(what: str, argv: list[str]) -> subprocess.Popen:
        out = open(logs / f"{what}.log", "wb")
        p = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append((what, p))
        return p

    console.rule("[bold]Jupiter on this machine")
    console.print(f"state and logs in {home}")
    ok = True
    try:
        coord = spawn("coordinator", jupiter + ["coordinator", "--port", str(port), "--config", str(config),
                                                "--heartbeat-interval", "1", "--down-after", "10"])
        with console.status("starting the coordinator"):
            _wait(lambda: httpx.get(url + "/healthz", timeout=1).status_code == 200, 30, coord, logs)
        console.print(f"coordinator up at {url} (docs at {url}/docs)")
        env["JUPITER_TOKEN"] = (home / "admin.token").read_text().strip()
        env["JUPITER_JOIN_TOKEN"] = (home / "join.token").read_text().strip()
        for i in (1, 2):
            spawn(f"agent-{i}", jupiter + ["agent", "--coordinator", url, "--name", f"local-{i}", "--host", "127.0.0.1",
                                           "--state-dir", str(home / f"agent-{i}")])
        client = Client(url, env["JUPITER_TOKEN"])
        with console.status("waiting for both agents to report ready"):
            _wait(lambda: sum(n.status == "ready" for n in client.nodes()) == 2, 90, coord, logs)
        train = ["start", "--domain", "sample", "--nodes", "2", "--backend", "ring", "--epochs", "1",
                 "--preset", demo.preset]
        if demo.steps is not None:
            train += ["--steps", str(demo.steps)]
        for cmd in (["nodes"], ["check", "--config", str(config)], train, ["jobs"]):
            console.rule(f"jupiter {' '.join(cmd[:1])}")
            res = subprocess.run(jupiter + cmd, cwd=REPO, env=env)
            ok &= res.returncode == 0
        client.close()
    except Exception as exc:  # show what went wrong and still clean up
        console.print(f"[red]demo failed: {exc}[/]")
        ok = False
    finally:
        console.rule("shutting down")
        for what, p in reversed(procs):
            ok &= _stop(p, what)
    if not ok:
        for f in sorted(logs.iterdir()):
            console.print(f"[bold]--- {f.name}[/]\n{f.read_text()[-3000:]}")
    console.print("[bold green]done[/]" if ok else "[bold red]failed[/]")
    return 0 if ok else 1


def _wait(pred, timeout: float, coord: subprocess.Popen, logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if coord.poll() is not None:
            raise RuntimeError(f"the coordinator exited ({coord.returncode}); see {logs / 'coordinator.log'}")
        try:
            if pred():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout:g} s; logs in {logs}")


if __name__ == "__main__":
    sys.exit(main())
