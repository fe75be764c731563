"""The Thunderbolt graph of the cluster: who is cabled to whom, on which ports, at what speed,
and what that means for rank order, addresses and JACCL. The problems it shows are found by
coordinator/checks/cabling.py and gathered with the rest in coordinator/problems.py.

Pure functions over node views (`NodeOut`), like the scheduler: no I/O, no clock, deterministic
for the same input whatever its order.

How a cable is recognised: each Mac reports the domain
UUID of each of its Thunderbolt buses, and for each connected port the domain UUID of the host on
the other end. A's port with `peer_uuid` in B's `domain_uuids` is a cable A->B; when B's facts
show a port pointing back at one of A's UUIDs, both ends see it.

Two limits of the facts shape what is claimed here:
- A node's `domain_uuids` are not tied to its port numbers (system_profiler lists buses in its own
  order), so which port of B meets which port of A is exact only when A and B share one cable;
  with several, ends are paired in port order and a note says so.
- Facts carry negotiated speeds, not port capabilities, so "slower than both ends allow" is a
  threshold (coordinator/checks/cabling.py).

One-sided links (only one end sees the cable) are kept and drawn, but not trusted: they join no
component, ring, JACCL matrix or bridge loop, since traffic over them is not to be counted on.

The modules: `graph` (the model), `build`, `components` (the shape of each piece), `rings`
(rank order), `addresses`, `fabric` (what blocks RDMA on each node and cable, and which nodes
jaccl and jaccl-ring can use), `jaccl` (the MLX_IBV_DEVICES matrix), `render` (JSON and DOT).
The names below are the package's surface; callers import them from `coordinator.topology`.
"""

from coordinator.checks.cabling import CABLE_FIX, SLOW_GBPS, is_slow
from coordinator.checks.problem import Problem
from coordinator.topology.addresses import Endpoint, LinkAddresses, link_addresses
from coordinator.topology.build import build
from coordinator.topology.fabric import (
    Blocker,
    explain,
    fabric_json,
    link_blockers,
    mesh_order,
    node_blockers,
    rdma_device,
    rdma_pairs,
    ring_order_rdma,
)
from coordinator.topology.graph import Component, Link, PortFacts, StrayCable, TopoNode, Topology
from coordinator.topology.jaccl import JacclMatrix, jaccl_check, jaccl_matrix
from coordinator.topology.render import to_dot, to_json
from coordinator.topology.rings import SEARCH_BUDGET, ring_order

__all__ = [
    "CABLE_FIX", "SEARCH_BUDGET", "SLOW_GBPS", "Blocker", "Component", "Endpoint", "JacclMatrix", "Link",
    "LinkAddresses", "PortFacts", "Problem", "StrayCable", "TopoNode", "Topology", "build", "explain",
    "fabric_json", "is_slow", "jaccl_check", "jaccl_matrix", "link_addresses", "link_blockers", "mesh_order",
    "node_blockers", "rdma_device", "rdma_pairs", "ring_order", "ring_order_rdma", "to_dot", "to_json",
]
