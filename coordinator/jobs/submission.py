"""A new job: the spec checked against what this coordinator can run, stored as `pending` once.

A spec that validates as JSON but cannot run here is refused with a message naming the field;
a resubmission under the same idempotency_key returns the stored job, or is a conflict when the
spec differs.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import TYPE_CHECKING

from coordinator import trainer_jobs
from coordinator.jobs import repository as repo
from coordinator.store import JobRow
from shared.schemas import JobSpec
from shared.status import JobStatus

if TYPE_CHECKING:
    from coordinator.jobs.lifecycle import Jobs

DEFAULT_STOP_GRACE_S = 5.0


class SpecConflict(Exception):
    pass


class SpecRejected(ValueError):
    """A spec that validates as JSON but cannot run here; the message names the field."""


def spec_hash(spec: JobSpec) -> str:
    # secret_env counts (the same key with another secret is another job); the digest is stored,
    # never shown. Left out when empty, so digests of jobs stored before it existed still match.
    body = spec.model_dump(mode="json", exclude={"idempotency_key"} | (set() if spec.secret_env else {"secret_env"}))
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def command_of(spec: JobSpec, config) -> list[str]:
    if spec.domain is not None:
        return trainer_jobs.trainer_command(spec, config)
    return list(spec.command)


def stop_grace_of(spec: JobSpec) -> float:
    return trainer_jobs.TRAINER_STOP_GRACE_S if spec.domain is not None else DEFAULT_STOP_GRACE_S


def max_restarts_for(spec: JobSpec, config) -> int:
    if spec.max_restarts is not None:
        return spec.max_restarts
    return 2 if spec.domain is not None and config.auto_restart_failed_nodes else 0


def check(spec: JobSpec, backend: str, known_nodes: set[str]) -> None:
    """Raise SpecRejected for what the schema alone cannot know."""
    if spec.domain is not None:
        try:
            trainer_jobs.check_preset(spec.preset)
            trainer_jobs.check_domain(spec.domain)
        except trainer_jobs.DomainRejected as exc:
            raise SpecRejected(str(exc)) from None
    if backend == "jaccl":
        raise SpecRejected("backend: jaccl needs RDMA over Thunderbolt 5 topology support, "
                           "which this version does not have yet; use ring or mpi")
    for name in spec.node_names or []:
        if name not in known_nodes:
            raise SpecRejected(f"node_names: no node named {name!r}")


def submit(jobs: Jobs, spec: JobSpec) -> tuple[JobRow, bool]:
    config = jobs.registry.config
    backend = spec.backend or jobs.default_backend
    check(spec, backend, {n.name for n in jobs.registry.list_views()})
    digest = spec_hash(spec)
    with jobs.lock, jobs.store.write() as s:
        if spec.idempotency_key:
            old = repo.by_idempotency_key(s, spec.idempotency_key)
            if old is not None:
                if old.spec_hash != digest:
                    raise SpecConflict(f"idempotency_key {spec.idempotency_key!r} was used for a "
                                       f"different job ({old.id})")
                return old, False
        row = JobRow(id="j-" + secrets.token_hex(5), name=spec.name, status=JobStatus.PENDING, backend=backend,
                     world_size=spec.nodes * spec.processes_per_node, spec_json=spec.model_dump_json(),
                     command_json=json.dumps(command_of(spec, config)), idempotency_key=spec.idempotency_key,
                     spec_hash=digest, pending_reason="waiting for the scheduler",
                     max_restarts=max_restarts_for(spec, config))
        s.add(row)
    jobs.logs.note(row.id, f"submitted: {row.world_size} rank(s), backend {backend}")
    jobs.on_change(row.id)
    return row, True
