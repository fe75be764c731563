"""Runs mpirun and writes its exit status to a file.

The coordinator starts mpirun through this wrapper, in its own session with output to a file,
so that a coordinator restart neither kills the job nor loses how it ended: the new coordinator
reads the same output file and the exit file.

    python -m coordinator.launchers.mpirun_wrapper EXIT_FILE -- mpirun ARGS...
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: mpirun_wrapper EXIT_FILE -- CMD...", file=sys.stderr)
        return 2
    exit_file, cmd = argv[0], argv[2:]
    child = subprocess.Popen(cmd)

    def forward(signum, _frame):
        # mpirun turns SIGTERM into a clean stop of every rank on every host.
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    # mpirun passes SIGUSR1 on to every rank: how a stalled job's ranks are asked for their stacks.
    signal.signal(signal.SIGUSR1, forward)
    code = child.wait()
    tmp = exit_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(code))
    os.replace(tmp, exit_file)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
