"""The lines a rank behind `python -m agent.rankshim` prints on its own stdout, which the
coordinator reads back out of mpirun's output (mpirun reports one exit code for all ranks):

    JUPITER_RANK_START {"rank": 1}
    JUPITER_RANK_STOPPED {"rank": 1, "stopped": true}
    JUPITER_RANK_EXIT {"rank": 1, "code": 3}

The start line comes first, so the coordinator knows the rank really started on its host; the exit
line comes when the rank's command ends (negative code: killed by that signal); a stopped line
whenever a process of the rank is stopped (state T) or continues. Both sides build and read them
here.
"""

from __future__ import annotations

import json

EXIT_MARKER = "JUPITER_RANK_EXIT "
START_MARKER = "JUPITER_RANK_START "
STOPPED_MARKER = "JUPITER_RANK_STOPPED "


def start_line(rank: int) -> str:
    return START_MARKER + json.dumps({"rank": rank})


def exit_line(rank: int, code: int) -> str:
    return EXIT_MARKER + json.dumps({"rank": rank, "code": code})


def stopped_line(rank: int, stopped: bool) -> str:
    return STOPPED_MARKER + json.dumps({"rank": rank, "stopped": stopped})


def parse_stopped(line: str) -> tuple[int, bool] | None:
    """(rank, whether stopped) from a stopped marker line, else None."""
    if not line.startswith(STOPPED_MARKER):
        return None
    try:
        d = json.loads(line[len(STOPPED_MARKER):])
        return int(d["rank"]), bool(d["stopped"])
    except (ValueError, KeyError, TypeError):
        return None


def parse_marker(line: str) -> tuple[int, int] | None:
    """(rank, exit code) from an exit marker line, else None."""
    if not line.startswith(EXIT_MARKER):
        return None
    try:
        d = json.loads(line[len(EXIT_MARKER):])
        return int(d["rank"]), int(d["code"])
    except (ValueError, KeyError, TypeError):
        return None


def parse_start(line: str) -> int | None:
    """The rank from a start marker line, else None."""
    if not line.startswith(START_MARKER):
        return None
    try:
        return int(json.loads(line[len(START_MARKER):])["rank"])
    except (ValueError, KeyError, TypeError):
        return None
