"""The rank program behind `jupiter check --links`: measures each ring neighbour pair's latency
and bandwidth with real traffic, so a cable that negotiated 40 Gb/s but carries Ethernet speed
shows up at once.

Each rank sends to its right neighbour and receives from its left one at the same time (a ring
shift), first with a tiny message many times (latency), then with a large one (bandwidth), and
prints what its outgoing link did:

    JUPITER_LINK {"rank": 0, "to": 1, "latency_us": 85.2, "gbps": 9.81, "bytes": 67108864}

(the line's format, and its parser for the check, are in shared.linkprobe)

Over MLX's ring backend by default; `--mpi` uses mpi4py over Open MPI instead (where SSH is set
up between the nodes).
"""

from __future__ import annotations

import argparse
import sys
import time

from shared.linkprobe import link_line


def _report(rank: int, size: int, latency_s: float, seconds: float, nbytes: int) -> None:
    print(link_line(rank, size, latency_s, seconds, nbytes), flush=True)


def probe_mlx(nbytes: int, pings: int, reps: int) -> None:
    """One link at a time (k -> k+1), the other ranks waiting at a barrier: two ranks sending to
    each other at once can block each other inside MLX's blocking send."""
    import mlx.core as mx

    group = mx.distributed.init(backend="ring", strict=True)
    rank, size = group.rank(), group.size()
    tiny = mx.zeros((1,), dtype=mx.uint8)
    big = mx.zeros((nbytes,), dtype=mx.uint8)
    mx.eval(tiny, big)

    def send(x, dst):
        mx.eval(mx.distributed.send(x, dst, group=group))

    def recv(x, src):
        mx.eval(mx.distributed.recv_like(x, src, group=group))

    for k in range(size):
        right = (k + 1) % size
        if rank == k:
            send(big, right)
            recv(tiny, right)  # warm-up
            t0 = time.perf_counter()
            for _ in range(pings):
                send(tiny, right)
                recv(tiny, right)
            latency = (time.perf_counter() - t0) / pings / 2
            t0 = time.perf_counter()
            for _ in range(reps):
                send(big, right)
            recv(tiny, right)  # the far end has everything
            _report(rank, size, latency, (time.perf_counter() - t0) / reps, nbytes)
        elif rank == right:
            recv(big, k)
            send(tiny, k)
            for _ in range(pings):
                recv(tiny, k)
                send(tiny, k)
            for _ in range(reps):
                recv(big, k)
            send(tiny, k)
        mx.eval(mx.distributed.all_sum(mx.zeros((1,)), group=group))  # the next link starts together


def probe_mpi(nbytes: int, pings: int, reps: int) -> None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    right, left = (rank + 1) % size, (rank - 1) % size
    tiny, tiny_in = bytearray(1), bytearray(1)
    big, big_in = bytearray(nbytes), bytearray(nbytes)
    comm.Sendrecv(big, dest=right, recvbuf=big_in, source=left)
    t0 = time.perf_counter()
    for _ in range(pings):
        comm.Sendrecv(tiny, dest=right, recvbuf=tiny_in, source=left)
    latency = (time.perf_counter() - t0) / pings
    t0 = time.perf_counter()
    for _ in range(reps):
        comm.Sendrecv(big, dest=right, recvbuf=big_in, source=left)
    _report(rank, size, latency, (time.perf_counter() - t0) / reps, nbytes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mpi", action="store_true", help="use mpi4py over Open MPI instead of MLX's ring")
    ap.add_argument("--mbytes", type=int, default=64, help="message size for the bandwidth (MiB)")
    ap.add_argument("--pings", type=int, default=200)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    (probe_mpi if args.mpi else probe_mlx)(args.mbytes << 20, args.pings, args.reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
