"""Schema version 1, the first one Jupiter kept: nodes, their events, jobs and their ranks.

Exactly the tables a version-1 coordinator made (tests/support/fixtures/db/v1.sql is one). A database made
then is stamped at this revision rather than run through it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "meta",
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("value", sa.String(), nullable=False),
    )
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("machine_id", sa.String()),
        sa.Column("declared_json", sa.String()),
        sa.Column("facts_json", sa.String()),
        sa.Column("memory_available_gb", sa.Float()),
        sa.Column("token_hash", sa.String()),
        sa.Column("drained", sa.Boolean(), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("agent_instance", sa.String()),
        sa.Column("registered_at", sa.Float()),
        sa.Column("last_heartbeat", sa.Float()),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_nodes_name", "nodes", ["name"], unique=True)
    op.create_index("ix_nodes_token_hash", "nodes", ["token_hash"])
    op.create_index("ix_nodes_machine_id", "nodes", ["machine_id"])
    op.create_index("ix_nodes_host", "nodes", ["host"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("node_id", sa.String()),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("message", sa.String(), nullable=False),
    )
    op.create_index("ix_events_node_id", "events", ["node_id"])
    op.create_index("ix_events_at", "events", ["at"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("backend", sa.String(), nullable=False),
        sa.Column("world_size", sa.Integer(), nullable=False),
        sa.Column("spec_json", sa.String(), nullable=False),
        sa.Column("command_json", sa.String(), nullable=False),
        sa.Column("nodes_json", sa.String(), nullable=False),
        sa.Column("idempotency_key", sa.String()),
        sa.Column("spec_hash", sa.String(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float()),
        sa.Column("ended_at", sa.Float()),
        sa.Column("placed_at", sa.Float()),
        sa.Column("exit_code", sa.Integer()),
        sa.Column("error", sa.String()),
        sa.Column("pending_reason", sa.String()),
        sa.Column("progress_json", sa.String(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_restarts", sa.Integer(), nullable=False),
        sa.Column("attempts_json", sa.String(), nullable=False),
        sa.Column("launcher_json", sa.String()),
    )
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_index("ix_jobs_idempotency_key", "jobs", ["idempotency_key"], unique=True)
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
    op.create_table(
        "ranks",
        sa.Column("job_id", sa.String(), primary_key=True),
        sa.Column("attempt", sa.Integer(), primary_key=True),
        sa.Column("rank", sa.Integer(), primary_key=True),
        sa.Column("node_id", sa.String(), nullable=False),
        sa.Column("node_name", sa.String(), nullable=False),
        sa.Column("local_rank", sa.Integer(), nullable=False),
        sa.Column("port", sa.Integer()),
        sa.Column("address", sa.String()),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer()),
        sa.Column("exit_code", sa.Integer()),
        sa.Column("reason", sa.String()),
        sa.Column("lines_stored", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Float()),
        sa.Column("ended_at", sa.Float()),
    )
    op.create_index("ix_ranks_node_id", "ranks", ["node_id"])
    op.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")
