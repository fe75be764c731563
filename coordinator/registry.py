"""The node registry: who exists, who is alive, and what each node looks like to a client.

The store keeps the truth; this module holds the rules (identity, liveness, declared vs reported)
and the in-memory indexes the hot paths need: token digest -> node id and the parsed facts for
heartbeats, each node's last view (coordinator/nodeviews.py) for listings. All of them change
only under the registry's lock.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable

from sqlmodel import select

from coordinator.auth import digest, new_node_token
from coordinator.checks.pressure import signature as pressure_signature
from coordinator.nodeviews import NodeViews, utc
from coordinator.store import Beat, EventRow, NodeRecord, NodeRow, Store
from coordinator.tokens import CLUSTER_GRANT, Grant
from coordinator.tokens import consume as consume_token
from shared.cluster_config import ClusterConfig
from shared.schemas import (
    EventOut,
    HeartbeatRequest,
    NodeDetail,
    NodeFacts,
    NodeOut,
    Pressure,
    RegisterRequest,
)
from shared.status import NodeStatus


class Conflict(Exception):
    pass


class NotFound(Exception):
    pass


class Forbidden(Exception):
    """The credential is valid but does not allow this registration."""


class Registry:
    def __init__(self, store: Store, config: ClusterConfig, *, heartbeat_interval_s: float,
                 down_after_s: float, started_at: float | None = None):
        self.store = store
        self.config = config
        self.heartbeat_interval_s = heartbeat_interval_s
        self.down_after_s = down_after_s
        # After a restart every node gets one grace period to check in before any is marked down.
        self.started_at = started_at if started_at is not None else time.time()
        self._lock = threading.Lock()
        self._token_index: dict[str, str] = {}  # token digest -> node id
        self._online: dict[str, bool] = {}
        self._instances: dict[str, str] = {}  # node id -> agent process instance last seen
        self._version = 0
        self._facts_cache: dict[str, tuple[str, NodeFacts]] = {}
        # Each node's latest pressure, in memory only: it is live state, and after a restart the
        # next heartbeat brings it again. Never in the stored facts (they would go stale there).
        self._pressure: dict[str, Pressure] = {}
        self._views = NodeViews(self._lock, self.facts_of, self._pressure.get)
        # Which nodes hold ranks is the jobs layer's to say (Jobs.busy_nodes); the app wires it in.
        self.busy_of: Callable[[], frozenset[str]] = frozenset
        self.sync_declared()
        self._reload_indexes()

    # ------------------------------------------------------------------ indexes

    def _reload_indexes(self) -> None:
        with self._lock:
            self._token_index.clear()
            self._online.clear()
            for row in self.store.all_nodes():
                if row.token_hash:
                    self._token_index[row.token_hash] = row.id
                self._online[row.id] = row.online
                self._instances[row.id] = row.agent_instance or ""

    def node_for_token(self, token: str) -> str | None:
        return self._token_index.get(digest(token))

    def facts_of(self, row: NodeRow | NodeRecord) -> NodeFacts | None:
        if not row.facts_json:
            return None
        with self._lock:
            cached = self._facts_cache.get(row.id)
        if cached and cached[0] == row.facts_json:
            return cached[1]
        facts = NodeFacts.model_validate_json(row.facts_json)
        with self._lock:
            self._facts_cache[row.id] = (row.facts_json, facts)
        return facts

    # ------------------------------------------------------------------ declared inventory

    def sync_declared(self) -> None:
        """Make every cluster.yaml node exist as a row (down until its agent registers)."""
        with self.store.write() as s:
            rows = list(s.exec(select(NodeRow)))
            claimed: set[str] = set()
            for decl in self.config.nodes:
                match = next((r for r in rows if r.host.lower() == decl.host.lower()), None) or \
                    next((r for r in rows if r.name == decl.name), None)
                blob = decl.model_dump_json()
                if match is None:
                    row = NodeRow(id=_new_node_id(), name=decl.name, host=decl.host, declared_json=blob)
                    s.add(row)
                    rows.append(row)
                    s.add(EventRow(node_id=row.id, kind="declared", message=f"declared in cluster.yaml as {decl.host}"))
                else:
                    match.declared_json = blob
                    s.add(match)
                claimed.add((match or row).id)
            for r in rows:
                if r.id in claimed or r.declared_json is None:
                    continue
                if r.machine_id is None:  # declared once, never registered, now gone from the file
                    s.delete(r)
                else:
                    r.declared_json = None
                    s.add(r)

    # ------------------------------------------------------------------ registration

    def register(self, req: RegisterRequest, grant: Grant = CLUSTER_GRANT) -> tuple[NodeRow, str, bool]:
        """Return (node, fresh token, is_new).

        A node is its name plus the node key its agent made at first enrolment: the same name and
        key keep their node id; another key under an enrolled name is a Conflict whatever the token
        (an admin must delete the node first). The machine id is only a hint. A new node is admitted
        at once when the grant admits (the cluster secret, a bound or auto-approve token), else it
        waits as pending; an enrolment counts against the grant's token (TokenError when used up)."""
        if grant.node_name is not None and grant.node_name != req.name:
            raise Forbidden(f"this join token is bound to node {grant.node_name!r}, not {req.name!r}")
        now = time.time()
        token = new_node_token()
        key_digest = digest(req.node_key)
        pressure, facts = req.facts.pressure, _without_pressure(req.facts)
        facts_json = facts.model_dump_json()
        with self.store.write() as s:
            rows = list(s.exec(select(NodeRow)))
            row = next((r for r in rows if r.name == req.name), None)
            enrolled = row is not None and row.machine_id is not None
            if enrolled:
                self._prove(row, req, key_digest)
            else:
                # An unclaimed declaration for this name (then this host) becomes this node.
                unclaimed = [r for r in rows if r.machine_id is None]
                row = row or next((r for r in unclaimed if r.host.lower() == req.host.lower()), None)
                if row is not None and grant.counted and \
                        grant.node_name not in (row.name, req.name):
                    raise Forbidden(f"{row.name!r} is declared in cluster.yaml: enrol it with the cluster's join "
                                    f"token or one bound to it (jupiter token create --node '{row.name}')")
                clash = next((r for r in rows if r.name == req.name and r is not row), None)
                if clash is not None:
                    raise Conflict(f"name {req.name!r} is already used by node {clash.id}; "
                                   f"start this agent with another --name")
                if grant.counted:
                    consume_token(s, grant.token_id)
            is_new = not enrolled
            if row is None:
                row = NodeRow(id=_new_node_id(), name=req.name, host=req.host)
            if is_new:
                row.admitted = grant.admits
            old_digest = row.token_hash
            row.name, row.host, row.machine_id = req.name, req.host, req.facts.machine_id
            row.key_hash = key_digest
            row.facts_json = facts_json
            row.memory_available_gb = req.facts.memory_available_gb
            row.token_hash = digest(token)
            row.registered_at = row.registered_at or now
            row.last_heartbeat = now
            was_online = row.online
            row.online = True
            s.add(row)
            kind = "registered" if is_new else "re-registered"
            via = f" with join token {grant.token_id}" if grant.counted else ""
            s.add(EventRow(node_id=row.id, at=now, kind=kind,
                           message=f"{req.facts.chip or req.facts.device_type} at {req.host}, "
                                   f"{req.facts.memory_gb:g} GB, agent {req.facts.agent_version or '?'}{via}"
                                   + ("" if row.admitted else "; pending approval")))
            if not is_new and not was_online:
                s.add(EventRow(node_id=row.id, at=now, kind="back", message="registered again"))
        with self._lock:
            if old_digest:
                self._token_index.pop(old_digest, None)  # the old token stops working at once
            self._token_index[row.token_hash] = row.id
            self._online[row.id] = True
            self._facts_cache[row.id] = (facts_json, facts)
            if pressure is not None:
                self._pressure[row.id] = pressure
            self._bump()
        return row, token, is_new

    @staticmethod
    def _prove(row: NodeRow, req: RegisterRequest, key_digest: str) -> None:
        """Raise Conflict unless the request shows this node's key (or, for a node enrolled before
        node keys existed, its current node token, which binds the key)."""
        if row.key_hash:
            if hmac.compare_digest(row.key_hash, key_digest):
                return
        elif req.node_token and row.token_hash and hmac.compare_digest(row.token_hash, digest(req.node_token)):
            return
        raise Conflict(f"node {row.name!r} is enrolled by another agent (its node key does not match); if this "
                       f"machine really is {row.name!r}, delete the old node first (jupiter nodes delete "
                       f"'{row.name}'), or start this agent with another --name")

    def approve(self, node_id: str) -> NodeRow:
        with self.store.write() as s:
            row = s.get(NodeRow, node_id)
            if row is None:
                raise NotFound(node_id)
            if not row.admitted:
                row.admitted = True
                s.add(row)
                s.add(EventRow(node_id=node_id, kind="approved", message="admitted by an admin; schedulable"))
        with self._lock:
            self._bump()
        return row

    # ------------------------------------------------------------------ heartbeat

    def heartbeat(self, node_id: str, req: HeartbeatRequest, *, in_memory: bool = False) -> tuple[bool, bool] | None:
        """Record a heartbeat. Returns (the node was down until now, its agent restarted).

        With `in_memory`, only a beat that needs no database work is taken (the common one: the
        facts are cached and unchanged); otherwise None comes back and nothing happened, so the
        caller can run it again where blocking is fine. Lets the route answer most beats without
        a trip through the thread pool. The lock is then only tried, never waited for: a sweep or
        a slow beat may hold it across a database write, and the event loop must not wait on that."""
        if not self._lock.acquire(blocking=not in_memory):
            return None
        try:
            known = node_id in self._online
            cached = self._facts_cache.get(node_id)
        finally:
            self._lock.release()
        if not known:
            raise NotFound(node_id)
        if cached is None and in_memory:
            return None
        facts = cached[1] if cached else self._load_facts(node_id)
        new_facts = _changed_facts(facts, req)
        if new_facts is not None and in_memory:
            return None
        facts_json = new_facts.model_dump_json() if new_facts is not None else None
        mem = req.memory_available_gb
        if mem is None and req.facts is not None:
            mem = req.facts.memory_available_gb
        pressure = req.pressure if req.pressure is not None else (req.facts.pressure if req.facts else None)
        # Liveness is read and written in one step under the lock, which sweep() also holds while
        # it marks nodes down: a beat either lands before the sweep looks or after it, never between.
        if not self._lock.acquire(blocking=not in_memory):
            return None
        try:
            online = self._online.get(node_id)
            if online is None:
                raise NotFound(node_id)
            old = self._instances.get(node_id, "")
            came_back = not online
            restarted = req.instance is not None and req.instance != old
            now = time.time()
            if new_facts is None:
                # The common case: the next flush writes it, so no commit waits on the request's path.
                self.store.note_heartbeat(node_id, Beat(now, mem, req.instance if restarted else None, came_back))
            else:
                if not self.store.touch_node(node_id, now, facts_json=facts_json, memory_available_gb=mem,
                                             came_back=came_back, instance=req.instance if restarted else None):
                    raise NotFound(node_id)
                self._facts_cache[node_id] = (facts_json, new_facts)
            self._online[node_id] = True
            if pressure is not None:  # problems are re-surveyed per state key: bump it for a change they see
                if pressure_signature(self._pressure.get(node_id)) != pressure_signature(pressure):
                    self._bump()
                self._pressure[node_id] = pressure
            if came_back or new_facts is not None:
                self._bump()
            if restarted:
                self._instances[node_id] = req.instance
        finally:
            self._lock.release()
        return came_back, restarted and bool(old)

    def _load_facts(self, node_id: str) -> NodeFacts | None:
        row = self.store.get_node(node_id)
        return self.facts_of(row) if row else None

    # ------------------------------------------------------------------ liveness

    def sweep(self, now: float | None = None) -> list[str]:
        """Mark down every node silent for longer than the grace; return their ids."""
        now = time.time() if now is None else now
        self.store.flush_heartbeats()
        if now - self.started_at < self.down_after_s:
            return []
        cutoff = now - self.down_after_s
        silent = [r.id for r in self.store.node_records()
                  if r.online and (r.last_heartbeat is None or r.last_heartbeat < cutoff)]
        if not silent:
            return []
        with self._lock:
            # The records above may be older than a beat that came in since: under the lock no
            # beat can land, and the store marks down only nodes still silent in the table and
            # with no beat waiting to be written.
            stale = self.store.mark_down(silent, now, self.down_after_s, cutoff)
            for nid in stale:
                self._online[nid] = False
            if stale:
                self._bump()
        return stale

    # ------------------------------------------------------------------ admin actions

    def set_drained(self, node_id: str, drained: bool) -> NodeRow:
        with self.store.write() as s:
            row = s.get(NodeRow, node_id)
            if row is None:
                raise NotFound(node_id)
            if row.drained != drained:
                row.drained = drained
                s.add(row)
                s.add(EventRow(node_id=node_id, kind="drained" if drained else "undrained",
                               message="no new work will be placed here" if drained else "schedulable again"))
        with self._lock:
            self._bump()
        return row

    def delete(self, node_id: str) -> None:
        row = self.store.get_node(node_id)
        if row is None:
            raise NotFound(node_id)
        self.store.delete_node(node_id, row.name)
        with self._lock:
            if row.token_hash:
                self._token_index.pop(row.token_hash, None)
            self._online.pop(node_id, None)
            self._facts_cache.pop(node_id, None)
            self._pressure.pop(node_id, None)
            self._bump()
        self._views.forget(node_id)

    # ------------------------------------------------------------------ views

    def status_of(self, row: NodeRow | NodeRecord, busy: frozenset[str] | None = None) -> str:
        if not row.online:
            return NodeStatus.DOWN
        if not row.admitted:
            return NodeStatus.PENDING
        if row.id in (self.busy_of() if busy is None else busy):
            return NodeStatus.BUSY
        if row.drained:
            return NodeStatus.DRAINING
        return NodeStatus.READY

    def view(self, row: NodeRow | NodeRecord) -> NodeOut:
        return self._views.views([row], [self.status_of(row)])[0]

    def _views_of(self, rows: list[NodeRecord]) -> list[NodeOut]:
        busy = self.busy_of()  # once: it is the same for every row of one read
        views = self._views.views(rows, [self.status_of(r, busy) for r in rows])
        if len(self._views) > len(rows):
            self._views.keep_only({r.id for r in rows})
        return views

    def interfaces(self) -> dict[str, list]:
        """Each node's reported network interfaces (for a forced `network_interface`)."""
        out = {}
        for r in self.store.node_records():
            f = self.facts_of(r)
            if f is not None:
                out[r.id] = f.interfaces
        return out

    def list_views(self) -> list[NodeOut]:
        return self._views_of(self.store.node_records())

    def snapshot(self) -> tuple[list[NodeOut], dict[str, NodeFacts | None]]:
        """Views and facts from one read of the table."""
        rows = self.store.node_records()
        return self._views_of(rows), {r.id: self.facts_of(r) for r in rows}

    def state_key(self) -> tuple:
        """Changes whenever anything problems depend on changes: facts, declarations, who is
        up, drained or busy. Heartbeats that only refresh the cheap facts leave it alone."""
        return (self._version, self.busy_of())

    def _bump(self) -> None:
        """Under the lock (held by the caller)."""
        self._version += 1

    def detail(self, node_id: str, events: int = 50) -> NodeDetail:
        row = self.store.get_node(node_id)
        if row is None:
            raise NotFound(node_id)
        base = self.view(row)
        evs = [EventOut(at=utc(e.at), kind=e.kind, message=e.message) for e in self.store.events_for(node_id, events)]
        facts = self.facts_of(row)
        if facts is not None:  # with the live parts the view shows
            mem = facts.memory_available_gb if row.memory_available_gb is None else row.memory_available_gb
            facts = facts.model_copy(update={"memory_available_gb": mem, "pressure": base.pressure})
        return NodeDetail(**base.__dict__, events=evs, facts=facts)


def _new_node_id() -> str:
    return "n-" + secrets.token_hex(5)


def _without_pressure(facts: NodeFacts) -> NodeFacts:
    return facts if facts.pressure is None else facts.model_copy(update={"pressure": None})


def _changed_facts(facts: NodeFacts | None, req: HeartbeatRequest) -> NodeFacts | None:
    """The node's facts to store if this beat really changed them (available memory and pressure
    aside), else None. Stored facts never hold pressure: the registry keeps it in memory."""
    if req.facts is not None:
        new = _without_pressure(req.facts)
        if facts is None or new.model_copy(update={"memory_available_gb": facts.memory_available_gb}) != facts:
            return new
    elif req.thunderbolt is not None and facts is not None and facts.thunderbolt != req.thunderbolt:
        return facts.model_copy(update={"thunderbolt": req.thunderbolt})
    return None
