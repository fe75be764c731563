"""Schema version 3: the committed size of each job's log, to drop output written but never counted
after a crash. Null for the jobs already there: their committed size is not known.

Added only where missing, for the reason given in v0002_node_keys.py.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    if "log_bytes" not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("jobs")}:
        with op.batch_alter_table("jobs") as batch:
            batch.add_column(sa.Column("log_bytes", sa.Integer()))
    op.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
