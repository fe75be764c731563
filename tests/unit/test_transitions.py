"""The job state machine's rules, as pure functions: no store, no clock, no process."""

from coordinator.jobs import transitions as t


def job(status="running", **kw) -> t.Job:
    return t.Job(status=status, **kw)


def ranks(*states, codes=None, reasons=None, ended=None) -> list[t.Rank]:
    codes, reasons, ended = codes or {}, reasons or {}, ended or {}
    return [t.Rank(rank=i, node_name=f"n{i}", state=s, exit_code=codes.get(i), reason=reasons.get(i),
                   ended_at=ended.get(i)) for i, s in enumerate(states)]


def test_all_ranks_running_moves_a_starting_job_to_running_once():
    d = t.decide(job("starting"), ranks("running", "running"), t.RanksChanged())
    assert d.status == "running" and d.effects == (t.MarkRunning(),)
    assert t.decide(job("starting"), ranks("running", "starting"), t.RanksChanged()) == t.Decision("starting")
    assert t.decide(job("running"), ranks("running", "running"), t.RanksChanged()) == t.Decision("running")


def test_every_rank_exiting_zero_succeeds():
    d = t.decide(job(), ranks("exited", "exited", codes={0: 0, 1: 0}), t.RanksChanged())
    assert d == t.Decision("succeeded", (t.Finish("succeeded", 0, None),))


def test_the_first_rank_to_fail_is_named_even_if_others_failed_later():
    rs = ranks("exited", "exited", codes={0: -9, 1: 3}, ended={0: 20.0, 1: 10.0})
    d = t.decide(job(), rs, t.RanksChanged())
    assert d.status == "failed"
    [finish] = d.effects
    assert finish.exit_code == 3 and finish.error == "rank 1 on node n1 exited with code 3"


def test_a_failure_names_signal_and_reason():
    rs = ranks("running", "exited", codes={1: -9}, reasons={1: "out of memory"})
    [finish] = t.decide(job(), rs, t.RanksChanged()).effects
    assert finish.error == "rank 1 on node n1 was killed by SIGKILL (out of memory)"
    rs = ranks("exited", codes={0: None}, reasons={0: "never started"})
    [finish] = t.decide(job(), rs, t.RanksChanged()).effects
    assert finish.error == "rank 0 on node n0 never started" and finish.exit_code == 1


def test_a_failure_with_restarts_left_restarts_and_without_fails():
    rs = ranks("exited", codes={0: 2})
    d = t.decide(job(attempt=0, max_restarts=1), rs, t.RanksChanged())
    assert d.status == "pending" and isinstance(d.effects[0], t.Restart)
    assert "rank 0 on node n0 exited with code 2" in d.effects[0].error
    assert t.decide(job(attempt=1, max_restarts=1), rs, t.RanksChanged()).status == "failed"


def test_a_terminal_job_never_changes():
    for status in ("succeeded", "failed", "cancelled"):
        for event in (t.RanksChanged(), t.Cancel(), t.NodeDown(0, "n0", 3), t.LauncherFailed("x"), t.Tick(1e12)):
            assert t.decide(job(status), ranks("exited", codes={0: 1}), event) == t.Decision(status)


def test_cancel_is_never_restarted():
    d = t.decide(job(max_restarts=5), ranks("running"), t.Cancel())
    assert d == t.Decision("cancelled", (t.Finish("cancelled", None, "cancelled by request"),))


def test_node_down_names_the_rank_and_the_grace():
    d = t.decide(job(), ranks("running", "running"), t.NodeDown(1, "n1", 4.0))
    assert d.effects == (t.Finish("failed", None, "rank 1 on node n1: node went down (no heartbeat for 4 s)"),)


def test_a_launcher_failure_before_start_fails_a_pending_job_without_restart():
    d = t.decide(job("pending", max_restarts=3), [], t.LauncherFailed("cannot build the ring hostfile: x"))
    assert d.status == "failed"


def test_timeouts_each_fire_only_past_their_limit():
    pending = job("pending", created_at=100.0, pending_timeout_s=10, pending_reason="needs 3 nodes, 2 ready")
    assert t.decide(pending, [], t.Tick(109.0)).status == "pending"
    [f] = t.decide(pending, [], t.Tick(111.0)).effects
    assert f.error == "could not be placed within 10 s: needs 3 nodes, 2 ready"
    starting = job("starting", placed_at=100.0, start_timeout_s=5)
    late = ranks("running", "starting")
    assert t.decide(starting, late, t.Tick(104.0)).status == "starting"
    [f] = t.decide(starting, late, t.Tick(106.0)).effects
    assert f.error == "rank 1 on node n1 did not start within 5 s"
    running = job("running", started_at=100.0, timeout_s=30)
    assert t.decide(running, ranks("running"), t.Tick(129.0)).status == "running"
    [f] = t.decide(running, ranks("running"), t.Tick(131.0)).effects
    assert f.error == "timed out after 30 s (timeout_s)"


def test_ranks_only_move_forward():
    assert t.rank_moves("assigned", "running") and t.rank_moves("running", "exited")
    assert not t.rank_moves("running", "starting") and not t.rank_moves("exited", "running")
    assert not t.rank_moves("running", "running")


def test_exit_descriptions():
    assert t.describe_exit(0) == "exited with code 0"
    assert t.describe_exit(-15) == "was killed by SIGTERM"
    assert t.describe_exit(-200) == "was killed by signal 200"
    assert t.describe_exit(None) == "exited"
