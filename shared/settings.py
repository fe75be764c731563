"""The JUPITER_* variables a client or an agent reads, declared once (pydantic-settings).

Read afresh on every `current()`: the environment can change between calls (tests change it in
process), and nothing here is costly enough to keep. An empty variable counts as unset, as it
always has (`JUPITER_HOME=` means ~/.jupiter). The coordinator's own settings, every flag of
`jupiter coordinator` among them, are coordinator/settings.py.

Importing this loads pydantic_settings (about 2 MB resident), so shared/paths.py and agent/state.py
import it inside the functions that read it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.paths import DEFAULT_URL


class ClientSettings(BaseSettings):
    """What the `jupiter` command, shared/client.py and the agents take from the environment."""

    model_config = SettingsConfigDict(env_prefix="JUPITER_", env_ignore_empty=True, extra="ignore")

    home: Path = Path("~/.jupiter")     # JUPITER_HOME: tokens, TLS files, the database, agent state
    url: str = DEFAULT_URL              # JUPITER_URL: the coordinator a client or an agent talks to
    token: SecretStr | None = None      # JUPITER_TOKEN: the admin token (else the leader's admin.token)
    join_token: SecretStr | None = None  # JUPITER_JOIN_TOKEN: how an agent enrols (a pinned join string)
    join_token_file: Path | None = None  # JUPITER_JOIN_TOKEN_FILE: a file holding it (how services pass it)
    ca_file: str | None = None          # JUPITER_CA_FILE: PEM of the coordinator's CA (kept as given: errors quote it)
    ca_sha256: str | None = None        # JUPITER_CA_SHA256: the CA's pin, fetched and checked before any token

    @field_validator("home")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()


def current() -> ClientSettings:
    """The environment as it is now (none of these fields can fail validation: all are strings)."""
    return ClientSettings()


def secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def explain(exc: ValidationError, prefix: str = "JUPITER_") -> str:
    """One line per bad variable, naming it as the operator set it; never the value (it may be a token)."""
    return "; ".join(f"{prefix}{str(e['loc'][0]).upper() if e['loc'] else ''}: {e['msg']}" for e in exc.errors())
