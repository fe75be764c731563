"""The status words: one definition (shared/status.py) that the wire schema, the metrics and the
dashboard agree with."""

from __future__ import annotations

import re
from typing import get_args

from coordinator import metrics
from coordinator.dashboard.routes import GENERATED
from shared import schemas
from shared.status import ACTIVE, TERMINAL, JobStatus, NodeStatus, RankStatus


def test_the_wire_schema_lists_exactly_the_status_words():
    assert set(get_args(schemas.NodeStatus)) == set(NodeStatus)
    assert set(get_args(schemas.JobStatus)) == set(JobStatus)
    rank_states = get_args(schemas.RankState.model_fields["state"].annotation)
    assert set(rank_states) == set(RankStatus) - {RankStatus.ASSIGNED}  # agents never say "assigned"


def test_terminal_and_active_split_the_job_statuses():
    assert TERMINAL.isdisjoint(ACTIVE) and JobStatus.PENDING not in TERMINAL | ACTIVE
    assert TERMINAL | ACTIVE | {JobStatus.PENDING} == set(JobStatus)
    assert JobStatus.RUNNING == "running" and f"{JobStatus.FAILED}" == "failed"  # plain strings on the wire


def test_metrics_and_the_dashboard_know_every_status():
    assert set(metrics.STATUSES) == set(NodeStatus) and set(metrics.JOB_STATUSES) == set(JobStatus)
    js = GENERATED["status.js"]  # served as /static/status.js
    listed = re.search(r"const STATUSES = \[([^\]]*)\]", js).group(1)
    assert set(re.findall(r"'([a-z]+)'", listed)) == set(NodeStatus)
    terminal = re.search(r"const TERMINAL = new Set\(\[([^\]]*)\]\)", js).group(1)
    assert set(re.findall(r"'([a-z]+)'", terminal)) == set(TERMINAL)

