"""Schema version 2: node identity and admission, join tokens, and facts as plain text.

Each node gets the digest of the node key its agent proves at every registration, and whether it
is admitted. Nodes enrolled before are admitted (they were trusted then) and have no key yet: their
agent binds one at its next registration by showing its current node token.

The columns are added only where missing: the migration code before Alembic added them outside the
transaction that recorded the new version, so a crash could leave them in a version-1 database.
"""

import json

import sqlalchemy as sa
from alembic import op

from shared.text import plain

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    insp = sa.inspect(op.get_bind())
    have = {c["name"] for c in insp.get_columns("nodes")}
    with op.batch_alter_table("nodes") as batch:
        if "key_hash" not in have:
            batch.add_column(sa.Column("key_hash", sa.String()))
        if "admitted" not in have:
            batch.add_column(sa.Column("admitted", sa.Boolean(), nullable=False, server_default=sa.text("1")))
    if not insp.has_table("join_tokens"):
        op.create_table(
            "join_tokens",
            sa.Column("id", sa.String(), primary_key=True),
            sa.Column("secret_hash", sa.String(), nullable=False),
            sa.Column("description", sa.String(), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.Column("expires_at", sa.Float()),
            sa.Column("max_uses", sa.Integer()),
            sa.Column("uses", sa.Integer(), nullable=False),
            sa.Column("node_name", sa.String()),
            sa.Column("auto_approve", sa.Boolean(), nullable=False),
            sa.Column("revoked_at", sa.Float()),
            sa.Column("last_used_at", sa.Float()),
        )
    _clean_facts()
    op.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")


def _clean_facts() -> None:
    """Facts became plain text in this version (control characters are refused on the wire):
    clean what older versions stored, or reading those nodes would fail validation."""
    conn = op.get_bind()
    for node_id, facts in conn.execute(sa.text("SELECT id, facts_json FROM nodes WHERE facts_json IS NOT NULL")):
        clean = json.dumps(_plain_strings(json.loads(facts)))
        if clean != facts:
            conn.execute(sa.text("UPDATE nodes SET facts_json = :f WHERE id = :i"), {"f": clean, "i": node_id})


def _plain_strings(value):
    if isinstance(value, str):
        return plain(value)
    if isinstance(value, list):
        return [_plain_strings(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain_strings(v) for k, v in value.items()}
    return value
