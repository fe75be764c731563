"""Three kinds of bearer token (docs/api.md#authentication): admin, join, and one per node.

Secrets are compared as SHA-256 digests with `hmac.compare_digest`; the database holds only the
digests of node tokens. Job submission is remote code execution, so nothing but /healthz and the
docs is open (Ray's unauthenticated job API was exploited that way: CVE-2023-48022, "ShadowRay").
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from shared.paths import load_or_create_secret, read_secret, write_secret
from shared.tlspin import CLUSTER_TOKEN_ID, JoinString, parse_join

if TYPE_CHECKING:
    from coordinator.settings import Settings


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_node_token() -> str:
    return "jnt_" + secrets.token_urlsafe(32)


@dataclass
class Keyring:
    admin_digest: str
    join_digest: str
    admin_from_env: bool
    join_from_env: bool
    join_secret: str = field(default="", repr=False)  # to write the pinned join string at start-up

    def is_admin(self, token: str) -> bool:
        return hmac.compare_digest(digest(token), self.admin_digest)

    def is_join(self, token: str) -> bool:
        """The cluster's join secret, bare or as `cluster:<secret>` (how a pinned string presents it)."""
        prefix = CLUSTER_TOKEN_ID + ":"
        if token.startswith(prefix):
            token = token[len(prefix):]
        return hmac.compare_digest(digest(token), self.join_digest)


def admin_token_path(home: Path) -> Path:
    return home / "admin.token"


def join_token_path(home: Path) -> Path:
    return home / "join.token"


# Tokens given in the environment are as long as the ones generated here (token_urlsafe(32): 43).
MIN_ENV_TOKEN_CHARS = 32


def load_keyring(settings: Settings) -> Keyring:
    """Tokens from JUPITER_TOKEN / JUPITER_JOIN_TOKEN (settings.token / .join_token), else generated once
    into settings.home (0600). The join token may be given (or found in join.token) as a pinned join
    string: its secret counts."""
    home = settings.home
    admin_given, join_given = settings.token is not None, settings.join_token is not None
    admin = settings.token.get_secret_value() if admin_given else load_or_create_secret(admin_token_path(home))
    join = settings.join_token.get_secret_value() if join_given else load_or_create_secret(join_token_path(home))
    try:
        join = parse_join(join).secret
    except ValueError as exc:
        raise ValueError(f"JUPITER_JOIN_TOKEN / {join_token_path(home)}: {exc}") from None
    for name, value, given in (("JUPITER_TOKEN", admin, admin_given), ("JUPITER_JOIN_TOKEN", join, join_given)):
        if given and len(value) < MIN_ENV_TOKEN_CHARS:  # a guessable token is root on every node
            raise ValueError(f"{name} is {len(value)} characters long; a token needs at least {MIN_ENV_TOKEN_CHARS} "
                             "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")
    if admin == join:
        raise ValueError("JUPITER_TOKEN and JUPITER_JOIN_TOKEN must differ: a join token must not grant admin")
    return Keyring(digest(admin), digest(join), admin_given, join_given, join_secret=join)


def write_join_string(home: Path, keys: Keyring, pin: str) -> str:
    """Keep $JUPITER_HOME/join.token as the pinned join string for the cluster's join secret, so
    an agent needs nothing but the coordinator's URL and this one string."""
    value = JoinString(secret=keys.join_secret, token_id=CLUSTER_TOKEN_ID, pin=pin).render()
    if read_secret(join_token_path(home)) != value:
        write_secret(join_token_path(home), value)
    return value


def rotate(home: Path, which: str) -> str:
    """Write a fresh admin or join token; the running coordinator picks it up on restart."""
    token = secrets.token_urlsafe(32)
    write_secret(admin_token_path(home) if which == "admin" else join_token_path(home), token)
    return token
