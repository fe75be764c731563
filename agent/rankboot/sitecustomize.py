"""Loaded at start-up by every Python process of a Jupiter rank (this folder is first on the
rank's PYTHONPATH), before any user code: SIGUSR1 then dumps every thread's Python stack to the
process's stderr, which is the rank's log.

That is how a stalled job shows where each rank was without changing its code. The dump is done
by faulthandler's C-level handler, so it works while the main thread is stuck in a native call
(an MLX all_sum that never returns, a blocking read). The process then says it can take the
signal by creating an empty file named after its pid in $JUPITER_STACKS_DIR: SIGUSR1's default
action is to end a process, so the agent signals only processes that made such a file.

A sitecustomize of the rank's own Python (a distribution's, a venv's) is imported after this one,
as if this folder were not on the path.
"""

import faulthandler
import os
import signal
import sys


def _install() -> None:
    folder = os.environ.get("JUPITER_STACKS_DIR")
    if not folder or not hasattr(signal, "SIGUSR1"):
        return
    try:
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    except (AttributeError, ValueError, RuntimeError, OSError):  # no usable stderr: nothing to dump into
        return
    try:
        with open(os.path.join(folder, str(os.getpid())), "x"):
            pass
    except OSError:  # the folder is gone (the rank is being stopped) or the pid was used before
        pass


def _chain() -> None:
    """Import the sitecustomize this one hides, if there is one."""
    here = os.path.dirname(os.path.abspath(__file__))
    mine = sys.modules.pop("sitecustomize", None)
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    try:
        import sitecustomize  # noqa: F401  (the next one on the path)
    except ImportError:
        if mine is not None:
            sys.modules["sitecustomize"] = mine
    except Exception as exc:  # as Python does for a failing sitecustomize: say so, carry on
        print(f"Error in sitecustomize; set PYTHONVERBOSE for traceback:\n{type(exc).__name__}: {exc}",
              file=sys.stderr)
    finally:
        sys.path[:] = saved


_install()
_chain()
