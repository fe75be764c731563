"""Schema version 5: each job's plan (`plan_json`): why it runs on its backend, and, once placed,
what its ranks were told (the JACCL/NCCL coordinator address, the RDMA device matrix, the nodes
left out and why).

Null for the jobs already there: they were placed, if at all, on ring or mpi, which need none.
Added only where missing, for the reason given in v0002_node_keys.py.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    if "plan_json" not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("jobs")}:
        with op.batch_alter_table("jobs") as batch:
            batch.add_column(sa.Column("plan_json", sa.JSON()))
    op.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
