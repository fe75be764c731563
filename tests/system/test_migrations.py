"""Schema migrations (coordinator/migrations/): a database made by any earlier Jupiter is upgraded in
place and keeps its nodes, jobs, logs and tokens; a new one is made at the newest schema; both end
up exactly as the models say. The databases are in tests/support/fixtures/db/ (README.md there)."""

from __future__ import annotations

import shutil
import sqlite3

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

from coordinator.migrations import HEAD_VERSION, SchemaError
from coordinator.store import SCHEMA_VERSION, Store
from tests.support.harness import REPO, AgentProcess, CoordinatorProcess, registration, sample_facts, wait_for

DB = REPO / "tests" / "support" / "fixtures" / "db"
V3_JOB = "j-dab9f2e438"
V3_NODES = {"n-6c81114a61": ("mini-a", True), "n-d5f3aa6554": ("mini-b", True), "n-1bad9d03ce": ("pending-c", False)}
V3_TOKENS = {"6s67ah": ("revoked one", "revoked", 0), "jct0w3": ("lab", "usable", 1),
             "oojnua": ("for mini-b", "usable", 1), "t8tztu": ("spare for new minis", "usable", 0)}
MINI_A_KEY = "nk_ZsXIQzNzf3lVaO2QHb1S4Br5Wiz3ZcbWKE5t3viQFEg"
MINI_B_TOKEN = "jnt_imFVIxCmInAjiXbLHd65n3jv2wHvFZ2ndOXzhBYDOIw"


def load(path, fixture: str, *edits: str):
    """A database file made from a fixture's dump, then changed by `edits` (SQL)."""
    db = sqlite3.connect(path)
    db.executescript((DB / fixture).read_text())
    for sql in edits:
        db.execute(sql)
    db.commit()
    db.close()
    return path


def state_of(path) -> tuple[str | None, str]:
    """(Alembic's revision, meta.schema_version) of a database file."""
    db = sqlite3.connect(path)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        rev = db.execute("SELECT version_num FROM alembic_version").fetchone()[0] if "alembic_version" in tables else None
        return rev, db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    finally:
        db.close()


def differences_from_the_models(path) -> list:
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            # Types are left out: on SQLite they are only affinities, and a column may change its
            # Python-side type (text holding JSON -> sa.JSON, still TEXT) with no migration.
            return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}),
                                    SQLModel.metadata)
    finally:
        engine.dispose()


def opened(path) -> None:
    Store(f"sqlite:///{path}").close()


def test_the_head_is_the_schema_version_older_jupiters_read():
    assert SCHEMA_VERSION == HEAD_VERSION == 5


def test_a_new_database_is_made_at_the_newest_schema(tmp_path):
    path = tmp_path / "new.db"
    opened(path)
    assert state_of(path) == ("0005", "5")
    assert differences_from_the_models(path) == []
    opened(path)  # and opening it again changes nothing
    assert state_of(path) == ("0005", "5")


# A database from each version before Alembic: the version-1 and version-3 dumps, version 2 made
# from version 3 as a version-2 Jupiter left it (no log_bytes), and databases whose version row is
# missing (the old code wrote it after making the tables, in another transaction).
EARLIER = {
    "v1": ("v1.sql",),
    "v2": ("v3.sql", "ALTER TABLE jobs DROP COLUMN log_bytes", "UPDATE meta SET value='2'"),
    "v3": ("v3.sql",),
    "v1 without its version row": ("v1.sql", "DELETE FROM meta"),
    "v2 without its version row": ("v3.sql", "ALTER TABLE jobs DROP COLUMN log_bytes", "DELETE FROM meta"),
    "v3 without its version row": ("v3.sql", "DELETE FROM meta"),
}


@pytest.mark.parametrize("made_by", list(EARLIER))
def test_a_database_from_an_earlier_version_is_upgraded_to_the_models_and_keeps_its_rows(tmp_path, made_by):
    path = load(tmp_path / "old.db", *EARLIER[made_by])
    before = sqlite3.connect(path)
    rows = {t: before.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("nodes", "events", "jobs", "ranks")}
    before.close()
    opened(path)
    assert state_of(path) == ("0005", "5")
    assert differences_from_the_models(path) == []
    after = sqlite3.connect(path)
    assert {t: after.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in rows} == rows
    if "v1" in made_by:  # enrolled before node keys: admitted, no key yet
        assert after.execute("SELECT admitted, key_hash FROM nodes").fetchall() == [(1, None)]
    else:
        assert after.execute("SELECT COUNT(*) FROM join_tokens").fetchone()[0] == len(V3_TOKENS)
        assert after.execute("SELECT COUNT(*) FROM nodes WHERE key_hash IS NOT NULL").fetchone()[0] == 3
    if made_by.startswith("v2"):  # its jobs' committed log sizes are not known
        assert after.execute("SELECT log_bytes FROM jobs").fetchall() == [(None,)]
    assert {r for r in after.execute("SELECT watch_json FROM jobs")} <= {(None,)}  # watched from the next start
    assert {r for r in after.execute("SELECT plan_json FROM jobs")} <= {(None,)}  # placed before plans existed
    after.close()


def test_columns_an_interrupted_old_migration_already_added_are_not_added_again(tmp_path):
    # The hand-written v1 -> v2 step ran its ALTERs outside the transaction recording version 2.
    path = load(tmp_path / "old.db", "v1.sql", "ALTER TABLE nodes ADD COLUMN key_hash VARCHAR")
    opened(path)
    assert state_of(path) == ("0005", "5")
    assert differences_from_the_models(path) == []


def test_a_revision_that_fails_leaves_the_database_as_it_was_before_it(tmp_path):
    # Facts that are not JSON make revision 0002 fail after its ALTERs: they must go with it.
    path = load(tmp_path / "old.db", "v1.sql", "UPDATE nodes SET facts_json = 'not json'")
    with pytest.raises(ValueError):
        opened(path)
    assert state_of(path) == ("0001", "1")
    db = sqlite3.connect(path)
    assert "key_hash" not in {r[1] for r in db.execute("PRAGMA table_info(nodes)")}
    assert db.execute("SELECT COUNT(*) FROM sqlite_master WHERE name='join_tokens'").fetchone()[0] == 0
    db.execute("UPDATE nodes SET facts_json = NULL")
    db.commit()
    db.close()
    opened(path)  # mended, it goes on from where it stopped
    assert state_of(path) == ("0005", "5")


@pytest.mark.parametrize("edit", ["UPDATE meta SET value='6'",
                                  "CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)",
                                  ])
def test_a_database_from_a_newer_jupiter_is_refused_untouched(tmp_path, edit):
    path = load(tmp_path / "new.db", "v3.sql", edit)
    if "alembic_version" in edit:
        db = sqlite3.connect(path)
        db.execute("INSERT INTO alembic_version VALUES ('0006')")
        db.commit()
        db.close()
    dump = "\n".join(sqlite3.connect(path).iterdump())
    with pytest.raises(SchemaError, match="newer than this Jupiter"):
        opened(path)
    assert "\n".join(sqlite3.connect(path).iterdump()) == dump


def test_a_leader_upgraded_from_version_3_keeps_nodes_jobs_logs_and_tokens_and_its_agents_get_back_in(tmp_path):
    home = tmp_path / "leader"
    home.mkdir()
    load(home / "coordinator.db", "v3.sql")
    shutil.copytree(DB / "v3-jobs", home / "jobs")
    log_text = (DB / "v3-jobs" / f"{V3_JOB}.log").read_text()
    coord = CoordinatorProcess(home, down_after=30.0).start()
    agent = None
    try:
        with coord.client() as c:
            assert {n.id: (n.name, n.admitted) for n in c.nodes()} == V3_NODES
            job = c.job(V3_JOB)
            assert (job.name, job.status, job.exit_code, job.nodes) == ("hello", "succeeded", 0, ["mini-a"])
            assert [(r.rank, r.exit_code) for r in job.ranks] == [(0, 0)]
        with coord.http() as h:
            admin = {"Authorization": f"Bearer {coord.admin_token}"}
            r = h.get(f"/jobs/{V3_JOB}/logs", headers=admin)
            assert r.status_code == 200 and r.text == log_text
            assert "[0] hello from a v3 job\n" in r.text
            tokens = h.get("/tokens", headers=admin).json()
            assert {t["id"]: (t["description"], t["status"], t["uses"]) for t in tokens} == V3_TOKENS
            # A node token issued before the upgrade still works.
            beat = h.put("/nodes/n-d5f3aa6554/heartbeat", headers={"Authorization": f"Bearer {MINI_B_TOKEN}"}, json={})
            assert beat.status_code == 200, beat.text
            # The node keys came along: another key under an enrolled name is turned away.
            other = registration("mini-a", "127.0.0.1", sample_facts("m-a"), node_key="nk_" + "x" * 43)
            r = h.post("/nodes/register", headers={"Authorization": f"Bearer {coord.join_token}"}, json=other)
            assert r.status_code == 409, r.text

        # mini-a's agent, holding only its node key (its enrolment forgotten), enrols again and is
        # the same node, and runs a job on the upgraded database.
        state = tmp_path / "agents" / "mini-a"
        state.mkdir(parents=True)
        (state / "node.key").write_text(MINI_A_KEY)
        (state / "node.key").chmod(0o600)
        agent = AgentProcess(coord, "mini-a", state).start()
        with coord.client() as c:
            wait_for(lambda: "re-registered" in [e.kind for e in c.node("n-6c81114a61").events], timeout=30,
                     what="mini-a registering again with its node key")
            wait_for(lambda: c.node("n-6c81114a61").status == "ready", timeout=30, what="mini-a ready")
            assert sorted(n.id for n in c.nodes()) == sorted(V3_NODES)
            new = c.submit({"name": "after", "command": ["python", "-c", "print('after the upgrade')"],
                            "node_names": ["mini-a"], "backend": "ring"})
            done = wait_for(lambda: (j := c.job(new.id)).status in ("succeeded", "failed") and j, timeout=60,
                            what="a job after the upgrade")
            assert done.status == "succeeded", (done.error, c.logs(new.id)[0])
            assert "[0] after the upgrade\n" in c.logs(new.id)[0]
            assert c.logs(V3_JOB)[0] == log_text
        assert state_of(home / "coordinator.db") == ("0005", "5")
    finally:
        if agent is not None:
            agent.stop()
        coord.stop()
