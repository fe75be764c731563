"""The status words of nodes, jobs and ranks, defined once.

They are `StrEnum`s, so each member *is* its string ("running" == JobStatus.RUNNING): the wire
format, the database and the dashboard keep plain strings, while the code names them instead of
repeating tuples of literals in every module.
"""

from __future__ import annotations

from enum import StrEnum


class NodeStatus(StrEnum):
    READY = "ready"          # heartbeating, schedulable, idle
    BUSY = "busy"            # holds ranks of a running job
    DRAINING = "draining"    # no new work
    DOWN = "down"            # no heartbeat within the grace period
    PENDING = "pending"      # enrolled with a token that does not admit; waits for approval


class JobStatus(StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RankStatus(StrEnum):
    ASSIGNED = "assigned"    # placed, not yet reported by its agent
    STARTING = "starting"
    RUNNING = "running"
    EXITED = "exited"


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE = frozenset({JobStatus.STARTING, JobStatus.RUNNING})
# What GET /cluster always counts (pending nodes appear only when some node is pending).
SUMMARY_NODE_STATUSES = (NodeStatus.READY, NodeStatus.BUSY, NodeStatus.DRAINING, NodeStatus.DOWN)
