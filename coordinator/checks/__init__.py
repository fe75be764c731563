"""The checks: each module finds one kind of problem a person has to fix, with its fix.

`cabling` (the cables themselves), `nodes` (each node against its declaration and its own
reports), `versions` (MLX and Python skew across nodes), `backends` (what the chosen backend
needs: Open MPI, mpirun, SSH, RDMA), `config` (cluster.yaml settings without effect), `pressure`
(a node throttling, short of memory, swapping or set to sleep while it trains).
coordinator/problems.py is the one place that runs them together, in a fixed order.
"""
