"""The cluster as a whole on the wire: its summary, its problems with their fixes, and health."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ProblemOut(BaseModel):
    node: str | None = Field(None, description="The node it concerns; null for the cluster as a whole.")
    kind: str = Field(..., examples=["bridge_loop", "slow_link", "mpich", "never_reported"])
    message: str
    fix: str


class ClusterSummary(BaseModel):
    nodes: int
    nodes_by_status: dict[str, int]
    memory_gb: float
    memory_available_gb: float
    problems: list[str] = Field(..., description="Every problem as one line: 'node: message (fix: ...)'.")
    issues: list[ProblemOut] = Field(default_factory=list, description="The same problems, structured.")
    config_path: str | None = None
    backend: str = Field("auto", description="cluster.yaml's backend; auto: the fastest the job's nodes support.")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
