"""What a node looks like to a client (`NodeOut`), built from its row and kept while the row
says the same, so listing 1,000 nodes parses no facts or declarations it parsed before
(docs/benchmarks.md, the registry bench).

The cache is keyed by the values a view is made of, never by a counter someone must remember to
bump: whatever writes a row, a view made from different values is a new view. A heartbeat's new
time, available memory and pressure alone give a shallow copy of the last view with those fields
replaced, which costs a fraction of building it. Pressure is not in the row: the registry keeps
each node's latest in memory and hands it in (`pressure_of`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from shared.schemas import DeclaredNode, MPIInfo, NodeFacts, NodeOut, Pressure, ThunderboltInfo


def utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


def build(row: Any, status: str, facts: NodeFacts | None, pressure: Pressure | None = None) -> NodeOut:
    """The view of `row` (a NodeRow or a NodeRecord) with its `status`, parsed `facts` and latest `pressure`."""
    declared = DeclaredNode.model_validate_json(row.declared_json) if row.declared_json else None
    f = facts
    return NodeOut(
        id=row.id, name=row.name, host=row.host, status=status,
        role=declared.role if declared else "hybrid",
        device_type=f.device_type if f else (declared.device_type if declared else None),
        chip=f.chip if f else None,
        memory_gb=f.memory_gb if f else None,
        memory_available_gb=_memory(row, f),
        cpu_cores=f.cpu_cores if f else None,
        os_version=f.os_version if f else None,
        python_version=f.python_version if f else None,
        mlx_version=f.mlx_version if f else None,
        mlx_device=f.mlx_device if f else None,
        mlx_lm_version=f.mlx_lm_version if f else None,
        mpi=f.mpi if f else MPIInfo(),
        thunderbolt=f.thunderbolt if f else ThunderboltInfo(),
        gpus=list(f.gpus) if f else [],
        declared=declared, problems=[],  # filled in by coordinator.problems.Surveyor
        last_heartbeat=utc(row.last_heartbeat), registered_at=utc(row.registered_at),
        agent_version=f.agent_version if f else None, drained=row.drained, admitted=row.admitted,
        pressure=pressure,
    )


def _memory(row: Any, f: NodeFacts | None) -> float | None:
    # The column is REAL and beats carry floats; float() keeps a copied view's JSON (17.0, not
    # 17) what validation would have made of it.
    mem = row.memory_available_gb if row.memory_available_gb is not None else (f.memory_available_gb if f else None)
    return None if mem is None else float(mem)


class NodeViews:
    """Each node's last view, by node id, with what it was made of. Guarded by the registry's
    lock, held only to look up and to store: views are built outside it."""

    def __init__(self, lock: threading.Lock, facts_of: Callable[[Any], NodeFacts | None],
                 pressure_of: Callable[[str], Pressure | None] = lambda node_id: None):
        self._lock = lock
        self._facts_of = facts_of
        self._pressure_of = pressure_of
        # id -> (the row, its status, the fixed part, the live part, the view); the row itself too
        # because Store.node_records() hands out the same record until the table changes
        self._cache: dict[str, tuple[Any, str, tuple, tuple, NodeOut]] = {}

    def views(self, rows: Sequence[Any], statuses: Sequence[str]) -> list[NodeOut]:
        with self._lock:
            known = [self._cache.get(r.id) for r in rows]
        out: list[NodeOut] = []
        fresh: dict[str, tuple[Any, str, tuple, tuple, NodeOut]] = {}
        for row, status, hit in zip(rows, statuses, known, strict=True):
            pressure = self._pressure_of(row.id)
            if hit is not None and hit[0] is row and hit[1] == status and hit[3][2] is pressure:
                out.append(hit[4])
                continue
            fixed = (row.name, row.host, status, row.declared_json, row.facts_json, row.registered_at, row.drained,
                     row.admitted)
            live = (row.memory_available_gb, row.last_heartbeat, pressure)
            if hit is not None and hit[2] == fixed:
                view = hit[4] if hit[3] == live else hit[4].model_copy(update={
                    "memory_available_gb": _memory(row, self._facts_of(row)), "last_heartbeat": utc(row.last_heartbeat),
                    "pressure": pressure})
            else:
                view = build(row, status, self._facts_of(row), pressure)
            fresh[row.id] = (row, status, fixed, live, view)
            out.append(view)
        if fresh:
            with self._lock:
                self._cache.update(fresh)
        return out

    def keep_only(self, node_ids: set[str]) -> None:
        """Forget the views of nodes no longer listed (deleted, or gone from cluster.yaml)."""
        with self._lock:
            for nid in [n for n in self._cache if n not in node_ids]:
                del self._cache[nid]

    def forget(self, node_id: str) -> None:
        with self._lock:
            self._cache.pop(node_id, None)

    def __len__(self) -> int:
        return len(self._cache)
