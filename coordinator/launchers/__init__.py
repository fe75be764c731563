"""How ranks get started: `ring` ranks by each node's agent (see agent/ranks.py), `mpi` ranks by
Open MPI's mpirun, which the coordinator runs itself (mpi.py)."""
