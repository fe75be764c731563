"""Join tokens: who may enrol a node, how often, until when, under which name.

Two kinds exist. The cluster's own join secret (from JUPITER_JOIN_TOKEN or generated into
$JUPITER_HOME/join.token on first start) admits a node at once, like a k3s server token. Tokens
made with `jupiter token create` live in the database with an id, an optional expiry, a use count,
an optional bound node name and an auto-approve flag; they are listed and revoked while the
coordinator runs. A node enrolled with an unbound token that is not auto-approve waits as `pending`
until an admin approves it. Only digests of secrets are stored.
"""

from __future__ import annotations

import hmac
import secrets
import string
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlmodel import Session, select, update

from coordinator.auth import digest
from coordinator.store import JoinTokenRow, Store
from shared.schemas import TokenOut
from shared.tlspin import CLUSTER_TOKEN_ID, TOKEN_ID_RE, JoinString

_ALPHABET = string.ascii_lowercase + string.digits


@dataclass(frozen=True)
class Grant:
    """What a join credential allows at registration."""

    token_id: str              # "cluster", "admin" or a token's id
    node_name: str | None = None
    admits: bool = True        # a node it enrols is schedulable at once

    @property
    def counted(self) -> bool:
        """A token from the table (`jupiter token create`), with limits and a use count; not the
        cluster secret or the admin token, which are trusted in full."""
        return self.token_id not in (CLUSTER_TOKEN_ID, "admin")


CLUSTER_GRANT = Grant(CLUSTER_TOKEN_ID)
ADMIN_GRANT = Grant("admin")


class TokenError(Exception):
    """A token exists but may not be used now (expired, used up, revoked); the message says which."""


class JoinTokens:
    def __init__(self, store: Store):
        self.store = store

    def create(self, *, ttl_s: float | None, uses: int | None, node_name: str | None, auto_approve: bool,
               description: str = "") -> tuple[JoinTokenRow, str]:
        secret = "".join(secrets.choice(_ALPHABET) for _ in range(32))
        now = time.time()
        with self.store.write() as s:
            while True:
                token_id = "".join(secrets.choice(_ALPHABET) for _ in range(6))
                if s.get(JoinTokenRow, token_id) is None:
                    break
            row = JoinTokenRow(id=token_id, secret_hash=digest(secret), description=description, created_at=now,
                               expires_at=now + ttl_s if ttl_s else None, max_uses=uses, node_name=node_name,
                               auto_approve=auto_approve)
            s.add(row)
        return row, secret

    def list(self) -> list[JoinTokenRow]:
        with self.store.read() as s:
            return list(s.exec(select(JoinTokenRow).order_by(JoinTokenRow.created_at.desc())))

    def revoke(self, token_id: str) -> JoinTokenRow | None:
        with self.store.write() as s:
            row = s.get(JoinTokenRow, token_id)
            if row is not None and row.revoked_at is None:
                row.revoked_at = time.time()
                s.add(row)
            return row

    def grant_for(self, bearer: str) -> Grant | None:
        """The grant of a table token given as `id:secret`, None if it is not one (or is wrong).
        Raises TokenError for a right secret that can no longer be used."""
        token_id, sep, secret = bearer.partition(":")
        if not sep or not TOKEN_ID_RE.fullmatch(token_id) or token_id == CLUSTER_TOKEN_ID:
            return None
        with self.store.read() as s:
            row = s.get(JoinTokenRow, token_id)
        if row is None or not hmac.compare_digest(row.secret_hash, digest(secret)):
            return None
        problem = unusable(row, time.time())
        if problem:
            raise TokenError(f"join token {token_id} {problem}")
        return Grant(row.id, node_name=row.node_name, admits=row.auto_approve or row.node_name is not None)

def consume(s: Session, token_id: str) -> None:
    """Count one enrolment against the token inside the registration's own transaction, so the
    use is spent only if the node is stored, and two agents racing for the last use cannot both
    have it."""
    now = time.time()
    t = JoinTokenRow
    hit = s.exec(update(t).where(t.id == token_id, t.revoked_at.is_(None))
                 .where((t.max_uses.is_(None)) | (t.uses < t.max_uses))
                 .where((t.expires_at.is_(None)) | (t.expires_at > now))
                 .values(uses=t.uses + 1, last_used_at=now)).rowcount
    if not hit:
        raise TokenError(f"join token {token_id} has no uses left")


def unusable(row: JoinTokenRow, now: float) -> str | None:
    if row.revoked_at is not None:
        return "was revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "has expired"
    if row.max_uses is not None and row.uses >= row.max_uses:
        return f"was used {row.uses} time(s), its limit"
    return None


def token_view(row: JoinTokenRow, *, join_string: str | None = None) -> TokenOut:
    now = time.time()
    problem = unusable(row, now)
    return TokenOut(id=row.id, description=row.description, created_at=_utc(row.created_at),
                    expires_at=_utc(row.expires_at),
                    uses=row.uses, max_uses=row.max_uses, node=row.node_name, auto_approve=row.auto_approve,
                    status="usable" if problem is None else
                    ("revoked" if row.revoked_at else "expired" if "expired" in problem else "used up"),
                    token=join_string)


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc)


def join_string(pin: str, token_id: str, secret: str) -> str:
    return JoinString(secret=secret, token_id=token_id, pin=pin).render()
