"""Jobs from submission to a terminal status (docs/jobs.md).

    transitions.py  the state machine, pure: (job, ranks, event) -> (status, effects)
    lifecycle.py    Jobs: submit, the lock, events in, the rules applied, effects carried out
    placement.py    pending -> starting                spec.py       a job spec as this coordinator reads it
    ingest.py       reports from agents and launchers  orders.py     what each agent must run
    views.py        what clients read                  repository.py every SQL statement about jobs

docs/architecture.md follows one job through them.
"""

from coordinator.jobs.ingest import LauncherNews
from coordinator.jobs.lifecycle import JobNotFound, Jobs, Launcher
from coordinator.jobs.spec import SpecConflict, SpecRejected, spec_hash
from coordinator.jobs.transitions import describe_exit
from coordinator.jobs.views import NotPlaced

__all__ = ["JobNotFound", "Jobs", "Launcher", "LauncherNews", "NotPlaced", "SpecConflict", "SpecRejected",
           "describe_exit", "spec_hash"]
