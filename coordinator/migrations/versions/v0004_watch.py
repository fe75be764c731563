"""Schema version 4: each job's signs of life (`watch_json`), which the stall watchdog reads.

Null for the jobs already there: a running one is watched from the coordinator's start, as
after any restart. Added only where missing, for the reason given in v0002_node_keys.py.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    if "watch_json" not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("jobs")}:
        with op.batch_alter_table("jobs") as batch:
            batch.add_column(sa.Column("watch_json", sa.JSON()))
    op.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
