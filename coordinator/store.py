"""The coordinator's durable state: SQLModel tables on SQLite (WAL) or any SQLAlchemy URL.

Only this module speaks SQL. Every write is one transaction, so a SIGKILL at any moment leaves the
database either before or after a change, never half-way. (Over 400 lines for that reason: the
tables and every statement about them stay in the one module that speaks SQL.)
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import JSON, Column, and_, bindparam, func, or_, text
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, create_engine, delete, select, update

from coordinator.migrations import HEAD_VERSION, SchemaError, migrate

SCHEMA_VERSION = HEAD_VERSION  # also kept in meta.schema_version, which older Jupiters read
# Events kept per node, the newest: GET /nodes/{id} shows 50, and a node's whole recent story
# (registrations, drains, down and back) is a few a day; 1000 is months of it, and a few hundred
# KiB per node at most, whatever a flapping or hostile node does.
EVENTS_PER_NODE = 1000
# A node's events are pruned at its first new event after start and then every this many: one
# indexed DELETE per 20 events, and never more than EVENTS_PER_NODE + 19 stored.
EVENTS_PRUNE_EVERY = 20


class Meta(SQLModel, table=True):
    __tablename__ = "meta"
    key: str = Field(primary_key=True)
    value: str


class NodeRow(SQLModel, table=True):
    __tablename__ = "nodes"
    id: str = Field(primary_key=True)
    name: str = Field(index=True, unique=True)
    host: str = Field(index=True)
    machine_id: str | None = Field(default=None, index=True)
    declared_json: str | None = None
    facts_json: str | None = None
    memory_available_gb: float | None = None  # the cheap fact, apart so heartbeats rewrite little
    token_hash: str | None = Field(default=None, index=True)
    key_hash: str | None = None      # digest of the node key the agent proves at every registration
    admitted: bool = True            # False: enrolled with an unbound join token, awaiting approval
    drained: bool = False
    online: bool = False
    agent_instance: str | None = None
    registered_at: float | None = None
    last_heartbeat: float | None = None
    created_at: float = Field(default_factory=time.time)


class JoinTokenRow(SQLModel, table=True):
    """A join token made with `jupiter token create`; the cluster's own join secret is not here."""

    __tablename__ = "join_tokens"
    id: str = Field(primary_key=True)
    secret_hash: str
    description: str = ""
    created_at: float = Field(default_factory=time.time)
    expires_at: float | None = None
    max_uses: int | None = None
    uses: int = 0
    node_name: str | None = None     # only this node may enrol with it (and is admitted at once)
    auto_approve: bool = False
    revoked_at: float | None = None
    last_used_at: float | None = None


class EventRow(SQLModel, table=True):
    __tablename__ = "events"
    id: int | None = Field(default=None, primary_key=True)
    node_id: str | None = Field(default=None, index=True)
    at: float = Field(default_factory=time.time, index=True)
    kind: str
    message: str


class JobRow(SQLModel, table=True):
    __tablename__ = "jobs"
    id: str = Field(primary_key=True)
    name: str
    status: str = Field(index=True)
    backend: str
    world_size: int
    # JSON columns (SQLite keeps them as text under their old *_json names, so no migration).
    spec: dict = Field(sa_column=Column("spec_json", JSON, nullable=False))         # the JobSpec as submitted
    command: list = Field(sa_column=Column("command_json", JSON, nullable=False))   # the argv every rank runs
    nodes: list = Field(default_factory=list, sa_column=Column("nodes_json", JSON, nullable=False))  # names in rank order
    idempotency_key: str | None = Field(default=None, index=True, unique=True)
    spec_hash: str
    created_at: float = Field(default_factory=time.time, index=True)
    started_at: float | None = None
    ended_at: float | None = None
    placed_at: float | None = None
    exit_code: int | None = None
    error: str | None = None
    pending_reason: str | None = None
    progress: dict = Field(default_factory=dict, sa_column=Column("progress_json", JSON, nullable=False))  # ProgressTracker.to_dict()
    attempt: int = 0                # restarts so far; ranks of earlier attempts are kept
    max_restarts: int = 0
    # One entry per failed attempt (nodes, error, times); what a launcher needs to find its process again (mpi).
    attempts: list = Field(default_factory=list, sa_column=Column("attempts_json", JSON, nullable=False))
    launcher: dict | None = Field(default=None, sa_column=Column("launcher_json", JSON, nullable=True))
    # The log's size when its stored line counts were last committed: 0 for a new job (nothing of
    # its ranks' output counted yet), null for a job from before this column (not known).
    log_bytes: int | None = 0
    # Signs of life of the current attempt, for the stall watchdog (coordinator/jobs/watchdog.py).
    watch: dict | None = Field(default=None, sa_column=Column("watch_json", JSON, nullable=True))
    # Why the job runs on its backend ("why", at submit) and what placement told its ranks
    # ("coordinator", "devices": the RDMA matrix frozen then, "left_out"); null before version 5.
    plan: dict | None = Field(default=None, sa_column=Column("plan_json", JSON, nullable=True))


class RankRow(SQLModel, table=True):
    __tablename__ = "ranks"
    job_id: str = Field(primary_key=True)
    attempt: int = Field(default=0, primary_key=True)
    rank: int = Field(primary_key=True)
    node_id: str = Field(index=True)
    node_name: str
    local_rank: int = 0
    port: int | None = None
    address: str | None = None
    state: str = "assigned"          # assigned -> starting -> running -> exited
    pid: int | None = None
    exit_code: int | None = None
    reason: str | None = None
    lines_stored: int = 0            # output lines received so far (dedup of resends)
    started_at: float | None = None
    ended_at: float | None = None


@functools.cache
def _beat_update():
    """The heartbeat batch's UPDATE, built once: building it anew for every flush (every few
    seconds, on the cores the ranks train on) cost more than running it. It never moves a node's
    time backwards: a registration or a slow-path heartbeat may have written a newer one since
    the beat was noted."""
    t = NodeRow.__table__
    return (t.update()
            .where(and_(t.c.id == bindparam("nid"),
                        or_(t.c.last_heartbeat.is_(None), t.c.last_heartbeat < bindparam("at"))))
            .values(last_heartbeat=bindparam("at"),
                    memory_available_gb=func.coalesce(bindparam("mem"), t.c.memory_available_gb),
                    agent_instance=func.coalesce(bindparam("inst"), t.c.agent_instance)))


def _sqlite_pragmas(dbapi_conn, _record):
    cur = dbapi_conn.cursor()
    # WAL: readers never block the writer; NORMAL: a committed transaction survives a process
    # crash (SIGKILL), only an OS crash could lose the last one.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        sa_event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


@sa_event.listens_for(Session, "after_flush")
def _note_flushed_changes(session, _context):
    if session.new or session.dirty or session.deleted:
        session.info["changed"] = True
    for obj in session.new:
        if isinstance(obj, EventRow) and obj.node_id is not None:
            session.info.setdefault("event_nodes", []).append(obj.node_id)


@sa_event.listens_for(Session, "do_orm_execute")
def _note_bulk_changes(state):
    if state.is_insert or state.is_update or state.is_delete:
        state.session.info["changed"] = True


class NodeRecord(NamedTuple):
    """A nodes row as a plain tuple (Store.node_records), with NodeRow's names and types."""

    id: str
    name: str
    host: str
    machine_id: str | None
    declared_json: str | None
    facts_json: str | None
    memory_available_gb: float | None
    token_hash: str | None
    key_hash: str | None
    admitted: bool
    drained: bool
    online: bool
    agent_instance: str | None
    registered_at: float | None
    last_heartbeat: float | None
    created_at: float


class Beat(NamedTuple):
    at: float
    memory_available_gb: float | None = None
    instance: str | None = None   # set when the agent restarted
    came_back: bool = False       # the node was down until this beat


class Store:
    """A thin, thread-safe layer over the tables. Writes are serialised in-process because SQLite
    has one writer anyway, and queuing here is cheaper than busy-waiting inside SQLite."""

    def __init__(self, url: str, *, events_per_node: int = EVENTS_PER_NODE):
        self.url = url
        self.engine = make_engine(url)
        self._write_lock = threading.Lock()
        self.events_per_node = max(1, events_per_node)
        self._event_counts: dict[str, int] = {}  # node id -> events written since start
        # Plain heartbeats (node already up, nothing but the time and free memory new) wait here
        # and reach the table in one transaction per flush: one commit per beat would queue every
        # request on the write lock at a few hundred nodes. Reads overlay them, so nobody sees a
        # node older than its last beat. `_flushing` holds a batch until its commit is done.
        self._beats: dict[str, Beat] = {}
        self._flushing: dict[str, Beat] = {}
        self._beats_lock = threading.Lock()
        self.generation = 0  # +1 after every write() that changed a row (not beats): lets callers cache reads
        # The nodes table as node_records() last read it, under the count of writes it was read
        # after. Every method here that writes (and so every write anywhere: only this module
        # speaks SQL) adds one once its commit is done, changed rows or not.
        self._writes = 0
        self._records: tuple[int, tuple[NodeRecord, ...]] | None = None
        # record with a waiting beat laid over it, by node id: (the record, the beat, the result),
        # so an unchanged node is the same object from one call to the next
        self._overlaid: dict[str, tuple[NodeRecord, Beat, NodeRecord]] = {}
        self._migrate()

    # ------------------------------------------------------------------ schema

    def _migrate(self) -> None:
        # Alembic revisions in coordinator/migrations/: a new database is made at the newest
        # schema, an older one upgraded step by step, one from a newer Jupiter refused.
        migrate(self.engine)

    def schema_version(self) -> int:
        with Session(self.engine) as s:
            return int(s.get(Meta, "schema_version").value)

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self._write_lock, Session(self.engine, expire_on_commit=False) as s:
            try:
                yield s
                s.commit()
            finally:
                self._writes += 1  # also after a failed one: a flush may have reached the table
            if s.info.pop("changed", False):
                self.generation += 1
            added = s.info.pop("event_nodes", None)
        if added:
            self._events_added(added)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s:
            yield s

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ nodes

    def all_nodes(self) -> list[NodeRow]:
        with self.read() as s:
            return self._with_beats(list(s.exec(select(NodeRow).order_by(NodeRow.name))))

    def node_records(self) -> list[NodeRecord]:
        """Every node as all_nodes() gives it, as plain read-only tuples, for readers that run per
        request or per second (GET /nodes, the liveness sweep). The table is read again only after
        a write (`_writes`), and then as tuples, a third of the cost of ORM rows; the same record
        objects come back while nothing changed, which lets callers cache by identity."""
        writes, cached = self._writes, self._records  # the count first: a write after it reads again
        if cached is None or cached[0] != writes:
            t = NodeRow.__table__
            with self.engine.connect() as conn:
                rows = conn.execute(select(*(t.c[f] for f in NodeRecord._fields)).order_by(t.c.name)).all()
            cached = (writes, tuple(NodeRecord._make(r) for r in rows))
            self._records = cached
        records = list(cached[1])
        with self._beats_lock:
            if not (self._beats or self._flushing):
                self._overlaid = {}
                return records
            pending = {**self._flushing, **self._beats}
            known = self._overlaid
        fresh = {}
        for i, rec in enumerate(records):
            beat = pending.get(rec.id)
            if beat is not None and (rec.last_heartbeat is None or beat.at > rec.last_heartbeat):
                hit = known.get(rec.id)
                if hit is None or hit[0] is not rec or hit[1] is not beat:
                    hit = (rec, beat, rec._replace(
                        last_heartbeat=beat.at,
                        memory_available_gb=rec.memory_available_gb if beat.memory_available_gb is None
                        else beat.memory_available_gb,
                        agent_instance=rec.agent_instance if beat.instance is None else beat.instance,
                        online=True if beat.came_back else rec.online))
                fresh[rec.id] = hit
                records[i] = hit[2]
        with self._beats_lock:
            self._overlaid = fresh
        return records

    def has_node(self, node_id: str) -> bool:
        """Whether the node is registered: one indexed lookup, not its row (whose facts are JSON
        to decode), for the checks agents' reports and long-polls pass through several times a
        second while ranks train."""
        t = NodeRow.__table__
        with self.engine.connect() as conn:
            return conn.execute(select(t.c.id).where(t.c.id == node_id)).first() is not None

    def get_node(self, node_id: str) -> NodeRow | None:
        with self.read() as s:
            row = s.get(NodeRow, node_id)
        return self._with_beats([row])[0] if row is not None else None

    def _with_beats(self, rows: list[NodeRow]) -> list[NodeRow]:
        with self._beats_lock:
            if not (self._beats or self._flushing):
                return rows
            pending = {**self._flushing, **self._beats}
        for row in rows:
            beat = pending.get(row.id)
            if beat is not None and (row.last_heartbeat is None or beat.at > row.last_heartbeat):
                row.last_heartbeat = beat.at
                if beat.memory_available_gb is not None:
                    row.memory_available_gb = beat.memory_available_gb
                if beat.instance is not None:
                    row.agent_instance = beat.instance
                if beat.came_back:
                    row.online = True
        return rows

    def note_heartbeat(self, node_id: str, beat: Beat) -> None:
        """A heartbeat that brings no new facts, written by the next flush_heartbeats()."""
        with self._beats_lock:
            prev = self._beats.get(node_id)
            if prev is not None:  # two beats in one flush: keep the news of both
                beat = beat._replace(memory_available_gb=beat.memory_available_gb
                                     if beat.memory_available_gb is not None else prev.memory_available_gb,
                                     instance=beat.instance or prev.instance,
                                     came_back=beat.came_back or prev.came_back)
            self._beats[node_id] = beat

    def flush_heartbeats(self) -> int:
        """Write every waiting heartbeat in one transaction; returns how many."""
        with self._write_lock:
            with self._beats_lock:
                batch, self._beats = self._beats, {}
                self._flushing = batch
            if not batch:
                return 0
            try:
                t = NodeRow.__table__
                stmt = _beat_update()
                back = [{"node_id": k, "at": b.at, "kind": "back", "message": "heartbeats resumed"}
                        for k, b in batch.items() if b.came_back]
                with self.engine.begin() as conn:
                    conn.execute(stmt, [{"nid": k, "at": b.at, "mem": b.memory_available_gb, "inst": b.instance}
                                        for k, b in batch.items()])
                    if back:
                        conn.execute(t.update().where(t.c.id.in_([e["node_id"] for e in back])).values(online=True))
                        # Only for nodes that still exist: a node deleted since its beat is gone.
                        live = {r[0] for r in conn.execute(select(t.c.id).where(t.c.id.in_([e["node_id"] for e in back])))}
                        back = [e for e in back if e["node_id"] in live]
                        if back:
                            conn.execute(EventRow.__table__.insert(), back)
            except Exception:
                with self._beats_lock:  # keep them for the next flush rather than lose them
                    for k, v in batch.items():
                        self._beats.setdefault(k, v)
                raise
            finally:
                self._writes += 1  # before the batch leaves `_flushing`: readers see it one way or the other
                with self._beats_lock:
                    self._flushing = {}
        if back:
            self._events_added([e["node_id"] for e in back])
        return len(batch)

    def touch_node(self, node_id: str, now: float, *, facts_json: str | None = None,
                   memory_available_gb: float | None = None, came_back: bool = False,
                   instance: str | None = None) -> bool:
        """The heartbeat's write: one UPDATE (plus an event when the node returns from down),
        on a bare connection because this is the hottest path. False if the node is gone."""
        values: dict = {"last_heartbeat": now, "online": True}
        if facts_json is not None:
            values["facts_json"] = facts_json
        if memory_available_gb is not None:
            values["memory_available_gb"] = memory_available_gb
        if instance is not None:
            values["agent_instance"] = instance
        with self._write_lock:
            try:
                with self.engine.begin() as conn:
                    hit = conn.execute(update(NodeRow).where(NodeRow.id == node_id).values(**values)).rowcount
                    if hit and came_back:
                        conn.execute(EventRow.__table__.insert().values(node_id=node_id, at=now, kind="back",
                                                                        message="heartbeats resumed"))
            finally:
                self._writes += 1
        if hit and came_back:
            self._events_added([node_id])
        return bool(hit)

    def mark_down(self, node_ids: list[str], now: float, grace_s: float, cutoff: float) -> list[str]:
        """Mark down those of `node_ids` still silent since before `cutoff`: online in the table
        with an older (or no) heartbeat, and no beat waiting in memory. Returns them."""
        with self._beats_lock:
            waiting = self._beats.keys() | self._flushing.keys()
        candidates = [nid for nid in node_ids if nid not in waiting]
        if not candidates:
            return []
        with self.write() as s:
            down = list(s.exec(select(NodeRow.id).where(
                NodeRow.id.in_(candidates), NodeRow.online.is_(True),
                or_(NodeRow.last_heartbeat.is_(None), NodeRow.last_heartbeat < cutoff))))
            if down:
                s.exec(update(NodeRow).where(NodeRow.id.in_(down)).values(online=False))
            for nid in down:
                s.add(EventRow(node_id=nid, at=now, kind="down", message=f"no heartbeat for {grace_s:g} s"))
        return down

    def delete_node(self, node_id: str, name: str) -> None:
        with self.write() as s:
            s.exec(delete(NodeRow).where(NodeRow.id == node_id))
            s.add(EventRow(node_id=node_id, kind="deleted", message=f"node {name!r} forgotten"))

    # ------------------------------------------------------------------ events

    def _events_added(self, node_ids: list[str]) -> None:
        """Count new events per node; prune a node's at its first since start and every
        EVENTS_PRUNE_EVERY-th after."""
        due = []
        with self._beats_lock:
            for nid in node_ids:
                n = self._event_counts.get(nid, 0)
                self._event_counts[nid] = n + 1
                if n % EVENTS_PRUNE_EVERY == 0:
                    due.append(nid)
        for nid in dict.fromkeys(due):
            self.prune_events(nid)

    def prune_events(self, node_id: str) -> int:
        """Delete all but the newest `events_per_node` events of a node; how many went."""
        t = EventRow.__table__
        newest_dropped = (select(t.c.id).where(t.c.node_id == node_id).order_by(t.c.id.desc())
                          .limit(1).offset(self.events_per_node).scalar_subquery())
        with self._write_lock, self.engine.begin() as conn:
            return conn.execute(t.delete().where(t.c.node_id == node_id, t.c.id <= newest_dropped)).rowcount

    def events_for(self, node_id: str, limit: int = 50) -> list[EventRow]:
        self.flush_heartbeats()  # a waiting beat may carry a "back" event
        with self.read() as s:
            rows = s.exec(select(EventRow).where(EventRow.node_id == node_id)
                          .order_by(EventRow.at.desc(), EventRow.id.desc()).limit(limit))
            return list(rows)

    def ping(self) -> None:
        with self.read() as s:
            s.exec(text("SELECT 1"))
