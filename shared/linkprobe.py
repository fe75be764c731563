"""The line each rank of the link probe (`python -m agent.linkprobe`, behind `jupiter check
--links`) prints about its outgoing link, and how the check reads it back out of the job's log:

    JUPITER_LINK {"rank": 0, "to": 1, "latency_us": 85.2, "gbps": 9.81, "bytes": 67108864}
"""

from __future__ import annotations

import json

MARKER = "JUPITER_LINK "
# The probe program, named in the job's argv (`python -m agent.linkprobe`) and run by the ranks;
# shared/ never imports it.
PROBE_MODULE = "agent.linkprobe"


def link_line(rank: int, size: int, latency_s: float, seconds: float, nbytes: int) -> str:
    """The line for rank's link to its right neighbour: `latency_s` per one-way tiny message,
    `seconds` per `nbytes` sent."""
    rec = {"rank": rank, "to": (rank + 1) % size, "latency_us": round(latency_s * 1e6, 1),
           "gbps": round(nbytes * 8 / seconds / 1e9, 3), "bytes": nbytes}
    return MARKER + json.dumps(rec)


def parse(line: str) -> dict | None:
    """The record from a `[RANK] JUPITER_LINK {...}` log line (prefix optional), else None."""
    _, sep, rest = line.partition(MARKER)
    if not sep:
        return None
    try:
        rec = json.loads(rest)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) and {"rank", "to", "latency_us", "gbps"} <= rec.keys() else None
