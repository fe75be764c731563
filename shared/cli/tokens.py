"""`jupiter token create|list|revoke`: the join tokens that decide who may join the cluster."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Optional

import typer
from rich.table import Table

from shared.cli.api import admin_client, call
from shared.cli.output import console, err, fail
from shared.schemas import TokenCreate
from shared.text import cell

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

token_app = typer.Typer(help="Join tokens: create (the secret is shown once), list, revoke.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")


def parse_duration(text: str) -> float | None:
    """`90s`, `30m`, `24h`, `7d`, `2w` or plain seconds; `0`/`never` for no expiry."""
    text = text.strip().lower()
    if text in ("0", "never", "none"):
        return None
    m = _DURATION.fullmatch(text)
    if not m:
        raise ValueError(f"--ttl {text!r}: use a number with s, m, h, d or w (e.g. 24h), or 'never'")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def _when(ts: datetime | None) -> str:
    if ts is None:
        return "never"
    left = (ts - datetime.now(timezone.utc)).total_seconds()
    if left <= 0:
        return ts.strftime("%Y-%m-%d %H:%M UTC")
    return f"in {left / 3600:.1f} h" if left < 172800 else f"in {left / 86400:.0f} d"


@token_app.command("create")
def token_create(
    ttl: str = typer.Option("24h", help="How long it can be used: 30m, 24h, 7d... or 'never'."),
    uses: Optional[int] = typer.Option(None, min=1, max=10_000, help="How many nodes may enrol with it."),
    node: Optional[str] = typer.Option(None, help="Only this node name may use it (and is admitted at once)."),
    auto_approve: bool = typer.Option(False, "--auto-approve",
                                      help="Admit nodes at once instead of leaving them pending."),
    description: str = typer.Option("", help="A note for `token list`."),
    as_json: bool = typer.Option(False, "--json", help="Print the token object as JSON."),
) -> None:
    """Make a join token and print its join string: give it, with the coordinator's URL, to
    `jupiter agent --coordinator URL` (JUPITER_JOIN_TOKEN) or `jupiter agent install`."""
    try:
        req = TokenCreate(ttl_s=parse_duration(ttl), uses=uses, node=node, auto_approve=auto_approve,
                          description=description)
    except ValueError as exc:
        fail(str(exc))
    with admin_client() as c:
        tok = call(lambda: c.create_token(req))
    if as_json:
        print(json.dumps(tok.model_dump(mode="json"), indent=2))
        return
    print(tok.token)  # alone on stdout, so `$(jupiter token create)` captures just the string
    admits = "admitted at once" if (tok.auto_approve or tok.node) else "pending until `jupiter nodes approve`"
    scope = f"node {tok.node} only" if tok.node else "any node name"
    err.print(f"token {tok.id}: {scope}, {tok.max_uses or 'unlimited'} use(s), expires "
              f"{_when(tok.expires_at)}, nodes {admits}. The secret is not shown again.", highlight=False)


@token_app.command("list")
def token_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every join token with its uses and state (never a secret)."""
    with admin_client() as c:
        rows = call(c.tokens)
    if as_json:
        print(json.dumps([t.model_dump(mode="json") for t in rows], indent=2))
        return
    t = Table(title="Join tokens", title_justify="left")
    for col in ("id", "status", "uses", "node", "admits", "expires", "description"):
        t.add_column(col)
    for r in rows:
        t.add_row(r.id, r.status, f"{r.uses}/{r.max_uses or '∞'}", cell(r.node or "any"),
                  "at once" if (r.auto_approve or r.node) else "pending", _when(r.expires_at), cell(r.description))
    console.print(t)


@token_app.command("revoke")
def token_revoke(token_id: str = typer.Argument(..., help="The token's id (from `token list`).")) -> None:
    """Revoke a join token at once. Nodes it enrolled keep working (they hold their own tokens)."""
    with admin_client() as c:
        tok = call(lambda: c.revoke_token(token_id))
    console.print(f"token {tok.id} revoked", highlight=False)
