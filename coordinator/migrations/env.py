"""What Alembic runs for every command: migrate on the connection runner.py hands over.

Transactions are runner.py's business: it opens the connection so that SQLite's DDL is
transactional, and each revision commits on its own (a crash repeats only the step it stopped in).
"""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection,
                  render_as_batch=True,  # SQLite cannot ALTER most things in place
                  # Alembic assumes SQLite's DDL is not transactional (the driver's doing); on the
                  # connection runner.py opens it is. Elsewhere Alembic knows its database.
                  transactional_ddl=True if connection.dialect.name == "sqlite" else None,
                  transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
