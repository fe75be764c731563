"""Three kinds of bearer token (SPEC §3): admin, join, and one per node.

Secrets are compared as SHA-256 digests with `hmac.compare_digest`; the database holds only the
digests of node tokens. Job submission is remote code execution, so nothing but /healthz and the
docs is open (FIELD-NOTES: ShadowRay).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from shared.paths import load_or_create_secret, write_secret


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

    def is_admin(self, token: str) -> bool:
        return hmac.compare_digest(digest(token), self.admin_digest)

    def is_join(self, token: str) -> bool:
        return hmac.compare_digest(digest(token), self.join_digest)


def admin_token_path(home: Path) -> Path:
    return home / "admin.token"


def join_token_path(home: Path) -> Path:
    return home / "join.token"


def load_keyring(home: Path) -> Keyring:
    """Tokens from JUPITER_TOKEN / JUPITER_JOIN_TOKEN, else generated once into `home` (0600)."""
    admin = os.environ.get("JUPITER_TOKEN")
    join = os.environ.get("JUPITER_JOIN_TOKEN")
    if admin is None:
        admin = load_or_create_secret(admin_token_path(home))
    if join is None:
        join = load_or_create_secret(join_token_path(home))
    if admin == join:
        raise ValueError("JUPITER_TOKEN and JUPITER_JOIN_TOKEN must differ: a join token must not grant admin")
    return Keyring(digest(admin), digest(join), "JUPITER_TOKEN" in os.environ, "JUPITER_JOIN_TOKEN" in os.environ)


def rotate(home: Path, which: str) -> str:
    """Write a fresh admin or join token; the running coordinator picks it up on restart."""
    token = secrets.token_urlsafe(32)
    write_secret(admin_token_path(home) if which == "admin" else join_token_path(home), token)
    return token
