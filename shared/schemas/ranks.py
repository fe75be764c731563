"""Ranks on the wire: the assignments and stop orders the coordinator hands an agent, and the
states and output an agent reports back."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints, field_validator

from shared.backends import BACKEND_VARS, FILE_VARS
from shared.schemas.common import PlainText, ShortText, Wire


class RankState(Wire):
    """What an agent knows of one rank it runs."""

    job_id: Annotated[str, StringConstraints(max_length=64), PlainText]
    rank: int = Field(..., ge=0, le=4096)
    attempt: int = Field(0, ge=0, le=1000)
    state: Literal["starting", "running", "exited"]
    pid: int | None = Field(None, ge=0, le=2**31)
    exit_code: int | None = Field(None, ge=-(2**31), le=2**32, description="Negative: killed by that signal.")
    reason: ShortText | None = None
    stopped: bool = Field(False, description="A process of the rank is stopped (state T: SIGSTOP, Ctrl-Z, a "
                                             "debugger); every other rank waits for it in its next collective.")
    stacks_dumped: bool = Field(False, description="The agent already asked the rank for its Python stacks "
                                                   "(a StackDumpOrder is carried out once).")


class RankAssignment(Wire):
    """A rank the coordinator asks an agent to start."""

    job_id: str
    rank: int
    local_rank: int = 0
    attempt: int = 0
    world_size: int
    command: list[str]
    env: dict[str, str] = Field(default_factory=dict)
    secret_env: dict[str, str] = Field(default_factory=dict, description="The job's secret_env (never logged).")
    backend: str = "ring"
    hostfile: list[list[str]] | None = Field(None, description="Ring hostfile (docs/hostfiles.md#ring).")
    mlx_env: dict[str, str] = Field(default_factory=dict, description=(
        "jaccl, jaccl-ring, nccl: the backend's variables for this rank (MLX_JACCL_COORDINATOR, NCCL_PORT, ...)."))
    mlx_files: dict[str, str] = Field(default_factory=dict, description=(
        "A variable that names a file (MLX_IBV_DEVICES) -> the file's text: the agent writes it into "
        "the rank's folder and sets the variable to its path."))
    start_timeout_s: float = 60.0
    stop_grace_s: float = Field(5.0, description="Seconds between TERM and KILL when stopping (a trainer "
                                                 "saves its checkpoint in between).")
    workdir: str | None = Field(None, description="SHA-256 of the archive to fetch (GET /files/{sha256}) and "
                                                  "unpack into the rank's folder before it starts.")
    artifacts: list[str] = Field(default_factory=list, description="Rank 0 only: globs of its folder to upload "
                                                                   "when it ends (the job's artifacts).")
    restore_artifacts: bool = Field(False, description="A restarted attempt: fetch the job's artifacts into "
                                                       "the rank's folder first, so it resumes from them.")


    @field_validator("mlx_env", "mlx_files")
    @classmethod
    def _backend_names(cls, value: dict[str, str], info) -> dict[str, str]:
        allowed = FILE_VARS if info.field_name == "mlx_files" else BACKEND_VARS - FILE_VARS
        for name, text in value.items():
            if name not in allowed:
                raise ValueError(f"{name!r} is not a backend variable Jupiter sets ({', '.join(sorted(allowed))})")
            if len(text) > 1 << 20 or "\x00" in text:
                raise ValueError(f"{name}: over 1 MiB or a NUL byte")
        return value


class StackDumpOrder(Wire):
    """Dump the Python stack of each rank of this job's attempt on the node into its log (the job
    stalled, docs/reliability.md#stalls)."""

    job_id: str
    attempt: int
    reason: str = ""


class StopOrder(Wire):
    job_id: str
    attempt: int | None = Field(None, description="Stop only the ranks of this attempt; null: all of the job's.")
    reason: str = ""


class RankOutput(Wire):
    """Lines a rank printed, numbered so a resend after a lost answer is not stored twice.
    The lines are the rank's own output, colour codes and all: the coordinator stores them without
    control sequences (shared/text.py `shown`)."""

    job_id: Annotated[str, StringConstraints(max_length=64), PlainText]
    rank: int = Field(..., ge=0, le=4096)
    attempt: int = Field(0, ge=0, le=1000)
    seq: int = Field(..., ge=0, le=2**53, description="Number of the first line in `lines` (0-based, per rank).")
    lines: list[Annotated[str, StringConstraints(max_length=65536)]] = Field(default_factory=list, max_length=10_000)


class RankReport(Wire):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"ranks": [{"job_id": "j-0a1b2c3d4e", "rank": 0, "state": "exited", "exit_code": 0}],
         "output": [{"job_id": "j-0a1b2c3d4e", "rank": 0, "seq": 0,
                     "lines": ['JUPITER_PROGRESS {"step": 1, "loss": 2.5}', "done"]}]}]})

    ranks: list[RankState] = Field(default_factory=list, max_length=4096)
    output: list[RankOutput] = Field(default_factory=list, max_length=4096)
    complete: bool = Field(False, description=(
        "`ranks` lists every rank the agent has: sent by an agent's first report after it started, so "
        "a rank it ran before and does not list is known to be gone."))


class RankReportAck(Wire):
    acked: dict[str, int] = Field(default_factory=dict, description="'job_id/attempt/rank' -> lines stored so far.")


class OrdersRequest(Wire):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"ranks": [{"job_id": "j-0a1b2c3d4e", "rank": 1, "state": "running", "pid": 4242}], "wait_s": 20}]})

    ranks: list[RankState] = Field(default_factory=list, max_length=4096, description=(
        "The ranks the agent has, so orders neither start one twice nor miss one to stop. Not stored: "
        "rank states go up in reports."))
    wait_s: float = Field(20, ge=0, le=60)
