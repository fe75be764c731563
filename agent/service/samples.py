"""The reference files in deploy/ that are generated, not written by hand.

deploy/launchd/dev.jupiter.agent.plist is what `jupiter agent install --launchd` writes for a
typical Mac, produced by the same code; a test fails when the two drift apart. Regenerate with

    .venv/bin/python -m agent.service.samples
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agent.service import launchd
from agent.service.config import DEPLOY_DIR, AgentService

SAMPLE_HOME = Path("/Users/you")
SAMPLE_SERVICE = AgentService(
    coordinator="http://leader.local:8470",
    name="mac-mini-1",
    state_dir=SAMPLE_HOME / ".jupiter" / "agent",
    executable=SAMPLE_HOME / "jupiter" / ".venv" / "bin" / "jupiter",
)


def sample_plist() -> bytes:
    plist = launchd.build_plist(SAMPLE_SERVICE, SAMPLE_HOME, with_token_file=True)
    return launchd.render_plist(plist)


SAMPLES: dict[Path, Callable[[], bytes]] = {
    DEPLOY_DIR / "launchd" / f"{SAMPLE_SERVICE.label}.plist": sample_plist,
}


def write_samples() -> list[Path]:
    for path, render in SAMPLES.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(render())
    return list(SAMPLES)


if __name__ == "__main__":
    for written in write_samples():
        print(f"wrote {written}")
