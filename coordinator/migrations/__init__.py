"""The coordinator's schema history as Alembic revisions, run from code when the coordinator starts.

versions/ holds one file per schema version: revision "0001" is the schema of version 1 (the first
Jupiter that kept a schema version), and revision N is version N, the number also kept in
`meta.schema_version` because Jupiters from before Alembic read it there. env.py is what Alembic
runs; there is no alembic.ini: runner.py configures Alembic in code, on the store's own engine.

A new schema change is a new file in versions/: the next number as `revision`, the newest as
`down_revision`, `meta.schema_version` set to that number, and `op` calls for the change (ALTERs
inside `op.batch_alter_table`, which SQLite needs). A new table needs a revision too. Revisions
define the tables they touch themselves and import nothing from store.py, so they keep doing what
they did when the models move on. tests/system/test_migrations.py checks that head equals the models.
"""

from coordinator.migrations.runner import HEAD_VERSION, SchemaError, migrate

__all__ = ["HEAD_VERSION", "SchemaError", "migrate"]
