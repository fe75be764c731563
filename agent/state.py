"""What an agent remembers between runs: its node id and node token, in its state dir (0600)."""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from shared.paths import read_secret, write_secret


@dataclass
class Enrolment:
    coordinator: str
    node_id: str
    node_token: str
    key_bound: bool = False  # the coordinator knows our node key (False: enrolled by an older Jupiter)


class SetupError(RuntimeError):
    """The agent cannot run as configured; the message says what to fix."""


class StateDirError(SetupError):
    """The state dir cannot be used."""


class AgentState:
    def __init__(self, state_dir: Path):
        self.dir = Path(state_dir)
        self.path = self.dir / "node.json"

    def check_writable(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise StateDirError(f"state dir {self.dir} is not writable ({exc.strerror}); "
                                f"fix its permissions or free space, or pass --state-dir") from None

    def load(self, coordinator: str) -> Enrolment | None:
        try:
            data = json.loads(self.path.read_text())
            enr = Enrolment(**data)
        except (OSError, ValueError, TypeError):
            return None
        # An enrolment belongs to one coordinator; a different URL means enrol afresh.
        return enr if enr.coordinator.rstrip("/") == coordinator.rstrip("/") else None

    def save(self, enr: Enrolment) -> None:
        try:
            write_secret(self.path, json.dumps(asdict(enr)))
        except OSError as exc:
            raise StateDirError(f"cannot save the node token in {self.dir} ({exc.strerror}); "
                                f"fix its permissions or free space") from None

    def forget(self) -> None:
        """Drop the enrolment (node id and token); the node key stays: it is who we are."""
        try:
            self.path.unlink()
        except OSError:
            pass

    def node_key(self) -> str:
        """This agent's own secret, made at first enrolment and shown at every registration, so
        nobody holding only a join token can take this node's name."""
        path = self.dir / "node.key"
        key = read_secret(path)
        if key is None:
            key = "nk_" + secrets.token_urlsafe(32)
            try:
                write_secret(path, key)
            except OSError as exc:
                raise StateDirError(f"cannot save the node key in {self.dir} ({exc.strerror}); "
                                    f"fix its permissions or free space") from None
        return key

    def load_ca(self) -> bytes | None:
        """The coordinator CA this agent pinned at enrolment, if any."""
        try:
            return (self.dir / "ca.pem").read_bytes()
        except OSError:
            return None

    def save_ca(self, pem: bytes) -> None:
        try:
            write_secret(self.dir / "ca.pem", pem.decode().strip())
        except OSError as exc:
            raise StateDirError(f"cannot save the coordinator's CA in {self.dir} ({exc.strerror})") from None


def find_join_token() -> str | None:
    """JUPITER_JOIN_TOKEN, then the file JUPITER_JOIN_TOKEN_FILE names (how launchd passes it
    without the secret in the plist), then the leader's own generated token.

    The running agent asks this at enrolment and to pin the coordinator's CA, so it loads
    pydantic_settings (shared/settings.py) then; importing this module does not."""
    from shared.settings import current, secret

    given = current()
    if given.join_token is not None:
        return secret(given.join_token)
    if given.join_token_file is not None:
        return read_secret(given.join_token_file)
    return read_secret(given.home / "join.token")
