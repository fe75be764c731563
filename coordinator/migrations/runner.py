"""Bring a coordinator database to the newest schema with Alembic, whatever made it.

Three kinds of database arrive here: a new one (no tables yet), one Alembic already keeps (an
`alembic_version` table), and one made before Alembic, whose version is the `schema_version` row of
its `meta` table. The last kind is stamped at the revision of that version first, so Alembic
carries on from there as if it had made it.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, MetaData, String, Table, event, insert, inspect, select
from sqlalchemy.engine import Connection, Engine

HERE = Path(__file__).resolve().parent
log = logging.getLogger("jupiter.coordinator.migrations")
# Every table any schema version had: a database holding none of them is new.
TABLES = {"meta", "nodes", "events", "jobs", "ranks", "join_tokens"}
# Where every version keeps its number (the table as revision 0001 makes it).
META = Table("meta", MetaData(), Column("key", String(), primary_key=True), Column("value", String(), nullable=False))


class SchemaError(RuntimeError):
    pass


def _config(conn: Connection | None = None) -> Config:
    cfg = Config()  # no file: nothing is read from an alembic.ini
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = conn
    return cfg


def revision_of(version: int) -> str:
    return f"{version:04d}"


SCRIPTS = ScriptDirectory.from_config(_config())
HEAD = SCRIPTS.get_current_head()
HEAD_VERSION = int(HEAD)


def migrate(engine: Engine) -> None:
    """Create or upgrade the database behind `engine` to HEAD; SchemaError if a newer Jupiter made it."""
    with _ddl_connection(engine) as conn, _alembic_quiet():
        cfg = _config(conn)
        current = MigrationContext.configure(conn).get_current_revision()
        if current is not None and current not in {s.revision for s in SCRIPTS.walk_revisions()}:
            raise _newer(f"database schema revision {current}")
        if current is None:
            version, recorded = _version_before_alembic(conn)
            if version is not None:
                if version > HEAD_VERSION:
                    raise _newer(f"database schema version {version}")
                if not recorded:
                    _record_version(conn, version)
                conn.commit()
                command.stamp(cfg, revision_of(version))
                current = revision_of(version)
        conn.commit()  # end the reads' transaction: Alembic commits each revision on its own
        command.upgrade(cfg, HEAD)
    if current is None:
        log.info("new database made at schema version %d", HEAD_VERSION)
    elif current != HEAD:
        log.info("database upgraded from schema version %d to %d", int(current), HEAD_VERSION)


@contextmanager
def _alembic_quiet() -> Iterator[None]:
    """Alembic logs its set-up at every start; migrate() says what happened in one line instead."""
    logger = logging.getLogger("alembic")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _newer(what: str) -> SchemaError:
    return SchemaError(f"{what} is newer than this Jupiter ({HEAD_VERSION}); "
                       f"upgrade Jupiter or point --db elsewhere")


def _version_before_alembic(conn: Connection) -> tuple[int | None, bool]:
    """(The schema version of a database made before Alembic, whether it says so itself);
    (None, False) for a new database."""
    insp = inspect(conn)
    tables = set(insp.get_table_names())
    if not tables & TABLES:
        return None, False
    if "meta" in tables:
        value = conn.execute(select(META.c.value).where(META.c.key == "schema_version")).scalar()
        if value is not None:
            return int(value), True
    # Tables but no version: the old code made its tables and wrote the version in two
    # transactions, and was killed in between (so the tables are empty). The columns tell
    # which version made them.
    if "jobs" in tables and "log_bytes" in {c["name"] for c in insp.get_columns("jobs")}:
        return 3, False
    if "nodes" in tables and "key_hash" in {c["name"] for c in insp.get_columns("nodes")}:
        return 2, False
    return 1, False


def _record_version(conn: Connection, version: int) -> None:
    """Write the version a database lacked, so each revision can step it on from there."""
    META.create(conn, checkfirst=True)
    conn.execute(insert(META).values(key="schema_version", value=str(version)))


@contextmanager
def _ddl_connection(engine: Engine) -> Iterator[Connection]:
    """A connection of `engine` on which DDL is transactional, as SQLite itself allows.

    Python's sqlite3 begins a transaction only before INSERT/UPDATE/DELETE, so an ALTER or CREATE
    would commit on its own and a crash mid-revision would leave half of it done. Here it begins
    none itself and the BEGIN comes from SQLAlchemy's begin, for this connection only: the store's
    other connections keep the driver's behaviour.
    """
    with engine.connect() as conn:
        if conn.dialect.name != "sqlite":
            yield conn
            return
        raw = conn.connection.dbapi_connection
        before = raw.isolation_level
        raw.isolation_level = None
        event.listen(conn, "begin", _begin)
        try:
            yield conn
        finally:
            conn.rollback()
            event.remove(conn, "begin", _begin)
            raw.isolation_level = before


def _begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN")
