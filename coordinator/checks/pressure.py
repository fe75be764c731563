"""Problems of a node under pressure: throttling, memory pressure, swapping, or set to sleep while
it trains. A busy node says all of them (one slow or sleeping rank holds its whole job back); an
idle one only what will hurt the next job anyway (critical memory pressure, heavy swap).

`signature` is what these checks read of a node's pressure, coarsened: the registry recomputes
problems when it changes, not on every heartbeat that moves swap by a few MB.
"""

from __future__ import annotations

from coordinator.checks.problem import Problem
from shared.schemas import NodeOut, Pressure

# Swap in use, GB, above which a node is said to be swapping. Not 0: macOS and Linux leave pages
# in swap long after the pressure that put them there has passed, and macOS grows swap in 1 GB
# files. Past 1 GB while training, though, the ranks' own memory is being paged out, and a step
# that waits on disk runs orders of magnitude slower. Idle, a few GB is an old burst; past 4 GB
# something on the machine is holding memory the next job will need.
SWAP_BUSY_GB = 1.0
SWAP_IDLE_GB = 4.0


def signature(p: Pressure | None) -> tuple:
    """What `problems` reads of `p`, in the precision its messages use."""
    if p is None:
        return ()
    swap = p.swap_used_gb
    return (p.thermal, p.cpu_speed_limit_pct, p.memory,
            None if swap is None else (int(swap), swap > SWAP_BUSY_GB, swap > SWAP_IDLE_GB),
            p.sleep_after_min, p.on_battery, p.keep_awake)


def problems(n: NodeOut) -> list[Problem]:
    """Each pressure problem of node `n`, with its fix."""
    p = n.pressure
    if p is None or n.status == "down":  # a silent node's last reading is stale
        return []
    busy = n.status == "busy"
    out = []
    if busy:
        out += _throttling(n.name, p) + _sleep(n.name, p)
    if p.memory == "critical" or (busy and p.memory == "warning"):
        out.append(Problem(n.name, f"memory pressure is {p.memory}"
                           + (": its ranks wait on memory, and the job runs at their pace" if busy else
                              ": the next job placed here will start short of memory"),
                           "give it fewer ranks or a smaller batch, or close what else runs there "
                           "(Activity Monitor > Memory on a Mac)", "memory_pressure"))
    limit = SWAP_BUSY_GB if busy else SWAP_IDLE_GB
    if p.swap_used_gb is not None and p.swap_used_gb > limit:
        out.append(Problem(n.name, f"swapping: over {int(p.swap_used_gb)} GB of swap in use"
                           + (" while it trains: steps wait on the disk" if busy else ""),
                           "run a smaller model or batch here, or free memory (close other apps); "
                           "swap empties only as pages are read back or after a restart", "swapping"))
    return out


def _throttling(name: str, p: Pressure) -> list[Problem]:
    said = []
    if p.thermal in ("serious", "critical"):
        said.append(f"thermal state {p.thermal}")
    if p.cpu_speed_limit_pct is not None and p.cpu_speed_limit_pct < 100:
        said.append(f"CPU speed limited to {p.cpu_speed_limit_pct} %")
    if not said:
        return []
    return [Problem(name, "throttling while it trains (" + ", ".join(said) + "): the whole job runs at its pace",
                    "give it air (vents clear, not stacked or in a closed cabinet, a cooler room), or give it "
                    "a smaller share of the work", "throttling")]


def _sleep(name: str, p: Pressure) -> list[Problem]:
    out = []
    if p.on_battery:
        out.append(Problem(name, "on battery while it trains: macOS lets it sleep (a closed lid, low battery) "
                                 "whatever keep-awake the agent holds, which works on AC power only",
                           "plug it in", "sleep_while_training"))
    elif p.sleep_after_min and p.keep_awake is not True:
        held = "its agent holds no keep-awake" if p.keep_awake is False else "its agent cannot keep it awake"
        out.append(Problem(name, f"set to sleep after {p.sleep_after_min} min idle while it trains, and {held}",
                           "sudo pmset -c sleep 0 on that Mac (never sleep on AC power), or update its agent, "
                           "which keeps it awake while ranks run", "sleep_while_training"))
    return out
