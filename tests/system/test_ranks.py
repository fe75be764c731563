"""The rank runner's own checks, exercised on real sockets and processes."""

from __future__ import annotations

import socket

from agent.ranks import RankRunner, port_problem
from shared.schemas import RankAssignment
from tests.support.harness import free_port, wait_for


def assignment(port, host="127.0.0.1", **kw):
    return RankAssignment(job_id="j-0000000001", rank=0, world_size=2, command=["python", "-c", "print('hi')"],
                          backend="ring", hostfile=[[f"{host}:{port}"], ["127.0.0.1:1"]], **kw)


def test_a_port_held_by_another_program_is_refused_not_shared():
    port = free_port()
    assert port_problem(assignment(port)) is None
    with socket.socket() as stranger:  # MLX's own sockets use SO_REUSEPORT; so might a stranger's
        stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        stranger.bind(("127.0.0.1", port))
        stranger.listen()
        assert "already in use by another program" in port_problem(assignment(port))
    assert "is not on this node" in port_problem(assignment(free_port(), host="192.0.2.77"))


def test_a_refused_rank_reports_the_reason_as_its_exit(tmp_path):
    runner = RankRunner(tmp_path, "python3", "n1")
    port = free_port()
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", port))
        stranger.listen()
        runner.start(assignment(port))
    [st] = runner.states()
    assert st.state == "running"  # its reason line is not delivered yet: the exit waits for it
    runner.ack({f"j-0000000001/0/0": len(runner.output()[0].lines)})
    [st] = runner.states()
    assert (st.state, st.exit_code) == ("exited", 98) and "already in use" in st.reason


def test_output_is_kept_until_acknowledged_and_the_exit_follows_it(tmp_path):
    runner = RankRunner(tmp_path, "python3", "n1")
    a = RankAssignment(job_id="j-0000000002", rank=0, world_size=1,
                       command=["python", "-c", "print('one'); print('two')"], backend="ring")
    runner.start(a)
    wait_for(lambda: runner.output() and len(runner.output()[0].lines) == 2, timeout=20)
    wait_for(lambda: runner._ranks[("j-0000000002", 0, 0)].state == "exited", timeout=20)
    assert runner.states()[0].state == "running"
    [out] = runner.output()
    assert (out.seq, out.lines) == (0, ["one", "two"])
    runner.ack({"j-0000000002/0/0": 1})
    [out] = runner.output()
    assert (out.seq, out.lines) == (1, ["two"])
    runner.ack({"j-0000000002/0/0": 2})
    assert runner.output() == [] and runner.states()[0].state == "exited"
    assert runner.states()[0].exit_code == 0
