"""Reading mpirun's output back into what an agent would report: numbered lines per rank, rank
states from the rank shim's start and exit markers, and mpirun's own lines.

mpirun tags each rank's line `[JOBID,RANK]<stdout>: ...` (`--output tag`); anything untagged is
mpirun speaking for itself, e.g. that it could not reach a host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from shared.rankmarkers import parse_marker, parse_start, parse_stopped
from shared.schemas import RankOutput, RankReport, RankState
from shared.status import RankStatus

TAG_RE = re.compile(r"^\[\d+,(\d+)\]<(?:stdout|stderr)>: ?(.*)$")
UNREACHABLE_RE = re.compile(r"(?:connect to host|Remote host:?|unable to reach|host)\s+([A-Za-z0-9][\w.:-]*)")
MAX_LINE_CHARS = 65_536  # what a rank line may be on the wire (shared.schemas.RankOutput)
RECENT_MPIRUN_LINES = 200


@dataclass
class Follower:
    """The state of reading one attempt's output: how many lines of each rank were passed on
    (their sequence numbers) and mpirun's recent lines (to name an unreachable host at the end)."""

    job_id: str
    attempt: int
    seq: dict[int, int] = field(default_factory=dict)
    mpirun_lines: list[str] = field(default_factory=list)

    def read(self, lines: list[str]) -> tuple[RankReport, list[str]]:
        """The rank report for these lines, and mpirun's own lines among them."""
        by_rank: dict[int, list[str]] = {}
        states: list[RankState] = []
        own: list[str] = []
        for line in lines:
            m = TAG_RE.match(line)
            if not m:
                if line.strip():
                    own.append(line)
                continue
            rank, text = int(m.group(1)), m.group(2)
            exited, started, stopped = parse_marker(text), parse_start(text), parse_stopped(text)
            if exited is not None:
                states.append(self._state(exited[0], RankStatus.EXITED, exit_code=exited[1]))
            elif started is not None:
                states.append(self._state(started, RankStatus.RUNNING))
            elif stopped is not None:
                states.append(self._state(stopped[0], RankStatus.RUNNING, stopped=stopped[1]))
            else:
                by_rank.setdefault(rank, []).append(text[:MAX_LINE_CHARS])
        output = []
        for rank, kept in by_rank.items():
            seq = self.seq.get(rank, 0)
            output.append(RankOutput.model_construct(job_id=self.job_id, rank=rank, attempt=self.attempt, seq=seq,
                                                     lines=kept))
            self.seq[rank] = seq + len(kept)
        self.mpirun_lines = (self.mpirun_lines + own)[-RECENT_MPIRUN_LINES:]
        return RankReport.model_construct(ranks=states, output=output), own

    def starting(self, ranks: list[int]) -> RankReport:
        return RankReport.model_construct(ranks=[self._state(r, RankStatus.STARTING) for r in ranks], output=[])

    def _state(self, rank: int, state: str, *, exit_code: int | None = None, reason: str | None = None,
               stopped: bool = False) -> RankState:
        return RankState.model_construct(job_id=self.job_id, rank=rank, attempt=self.attempt, state=state,
                                         pid=None, exit_code=exit_code, reason=reason, stopped=stopped)

    def unreachable(self, hosts_of_rank: dict[int, set[str]]) -> tuple[int, str, str] | None:
        """(rank, host, mpirun's line) when mpirun said it could not reach a host of one of ours."""
        for line in self.mpirun_lines:
            m = UNREACHABLE_RE.search(line)
            if not m:
                continue
            host = m.group(1).rstrip(".:")
            for rank, names in sorted(hosts_of_rank.items()):
                if host in names:
                    return rank, host, line.strip()
        return None

    def ended(self, left: list[tuple[int, int, str]], code: int | None,
              hosts_of_rank: dict[int, set[str]]) -> RankReport:
        """mpirun exited with `code`: every rank in `left` (rank, node id, state) that has not
        reported its own end ends now, with the reason; the one on a host mpirun could not reach
        first, as the cause."""
        cut = self.unreachable(hosts_of_rank) if code else None
        unreachable_node = next((node for r, node, _ in left if cut and r == cut[0]), None)
        ordered = sorted(left, key=lambda x: (unreachable_node is None or x[1] != unreachable_node, x[0]))
        states = []
        for rank, node, state in ordered:
            if code is None:
                reason = "the mpirun launcher was lost"
            elif cut and node == unreachable_node:
                reason = f"mpirun could not start it on {cut[1]}: {cut[2]}"
            elif state in (RankStatus.ASSIGNED, RankStatus.STARTING):
                reason = f"mpirun exited with code {code} before this rank started"
            else:
                reason = f"mpirun exited with code {code} before this rank reported"
            states.append(self._state(rank, RankStatus.EXITED, exit_code=code, reason=reason))
        return RankReport.model_construct(ranks=states, output=[])
