"""The agent's life: enrol, then heartbeat on the coordinator's interval, and recover by itself.

Full facts go out at registration and whenever they change; every heartbeat carries the cheap ones
(available memory, link status). When the coordinator is away the agent backs off exponentially
with jitter, capped at one heartbeat interval so it is back within one interval of the
coordinator's return, and logs one line per change of state rather than one per attempt.
"""

from __future__ import annotations

import logging
import random
import secrets
import signal
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.facts.pressure import PressureReader
from agent.facts.runtime import KeptProbes
from agent.keepawake import KeepAwake
from agent.ranks import RankRunner, default_work_dir
from agent.state import AgentState, Enrolment, SetupError, find_join_token
from agent.system import LocalSystem, System
from agent.uplink import ApiError, Connection
from shared.schemas.nodes import HeartbeatRequest, HeartbeatResponse, NodeFacts, RegisterRequest
from shared.schemas.ranks import OrdersRequest, RankAssignment, RankReport
from shared.tlspin import (JoinString, PinMismatch, context_for, fetch_pinned_ca, fingerprint, is_https,
                           is_loopback_url, parse_join)

log = logging.getLogger("jupiter.agent")

FULL_FACTS_EVERY_S = 60.0  # system_profiler takes seconds; re-read the slow facts this often
SETUP_RETRY_S = 30.0


@dataclass
class AgentConfig:
    coordinator: str
    name: str
    host: str
    state_dir: Path
    python: str
    join_token: str | None = None
    work_dir: Path | None = None  # where ranks run; default: ranks.default_work_dir(state_dir)
    full_facts_every_s: float = FULL_FACTS_EVERY_S
    system: System = field(default_factory=LocalSystem)


class Agent:
    def __init__(self, cfg: AgentConfig):
        self.cfg = cfg
        self.state = AgentState(cfg.state_dir)
        self.stop_event = threading.Event()
        self.interval = 5.0
        self.enrolment: Enrolment | None = None
        self.facts: NodeFacts | None = None
        self._facts_at = 0.0
        self._sent_facts_json: str | None = None
        self._link = "starting"  # for one log line per state change
        self.instance = secrets.token_hex(8)  # tells the coordinator when this agent restarted
        self.runner = RankRunner(cfg.work_dir or default_work_dir(cfg.state_dir), cfg.python, cfg.name,
                                 prepare=self._prepare_rank, collect=self._collect_rank, on_busy=self._on_busy,
                                 system=cfg.system)
        self._local = threading.local()
        self._ssl = None  # how the coordinator is verified, settled at first contact
        self._reported = False  # whether a report (the first is `complete`) has gone through
        self._probes = KeptProbes()  # the MLX and MPI probes, re-run only when their answer may change
        self.keep_awake = KeepAwake(cfg.system)  # held while ranks run: a sleeping node fails its job
        self._pressure = PressureReader(cfg.system)  # heat, memory, swap, sleep: cached, cheap every beat

    # ------------------------------------------------------------------ facts

    def _refresh_facts(self, force: bool = False) -> None:
        from agent import facts as facts_mod

        if force or self.facts is None or time.monotonic() - self._facts_at > self.cfg.full_facts_every_s:
            self.facts = facts_mod.collect(self.cfg.system, python=self.cfg.python, kept=self._probes)
            self._facts_at = time.monotonic()

    def _heartbeat_body(self) -> tuple[HeartbeatRequest, str]:
        from agent import facts as facts_mod

        self._refresh_facts()
        mem, tb = facts_mod.collect_cheap(self.cfg.system, self.facts)
        self.facts = self.facts.model_copy(update={"memory_available_gb": mem, "thunderbolt": tb})
        # Pressure goes in its own field and never into self.facts: swap and heat move all the
        # time, and the full facts must go out only when something beyond the cheap fields changed.
        pressure = self._pressure.read(self.keep_awake.state)
        stable = self.facts.model_dump_json(exclude={"memory_available_gb"})
        full = self.facts if stable != self._sent_facts_json else None
        return HeartbeatRequest(instance=self.instance, facts=full, memory_available_gb=mem, thunderbolt=tb,
                                pressure=pressure), stable

    # ------------------------------------------------------------------ protocol

    def _trust(self) -> ssl.SSLContext | None:
        """How to verify the coordinator: the CA pinned at enrolment (kept in the state dir), or
        one fetched now and checked against the join string's pin before anything is sent. None
        for plain HTTP, which only loopback may use."""
        url = self.cfg.coordinator
        if not is_https(url):
            if not is_loopback_url(url):
                raise SetupError(f"refusing plain HTTP to {url}: off loopback the coordinator speaks HTTPS "
                                 f"(use https://, and give the join string, which pins its certificate)")
            return None
        if self._ssl is not None:
            return self._ssl
        pem = self.state.load_ca()
        join = self._join_string(required=False)
        if join is not None and join.pin and (pem is None or fingerprint(pem) != join.pin):
            pem = fetch_pinned_ca(url, join.pin)  # raises PinMismatch: nothing secret has been sent
            self.state.save_ca(pem)
        self._ssl = context_for(pem) if pem is not None else _trust_without_pin(url)
        return self._ssl

    def _join_string(self, *, required: bool = True) -> JoinString | None:
        token = self.cfg.join_token or find_join_token()
        if not token:
            if not required:
                return None
            raise SetupError("no join token: set JUPITER_JOIN_TOKEN or JUPITER_JOIN_TOKEN_FILE "
                             "(the coordinator keeps it in $JUPITER_HOME/join.token on the leader)")
        try:
            return parse_join(token)
        except ValueError as exc:
            raise SetupError(f"join token: {exc}") from None

    def _client(self, token: str | None) -> Connection:
        return Connection(self.cfg.coordinator, token, timeout=10.0, context=self._trust())

    def _node_client(self) -> Connection:
        """This thread's connection for our node token, kept open: a new one costs a TLS handshake."""
        local = self._local
        token = self.enrolment.node_token
        if getattr(local, "token", None) != token:
            if getattr(local, "client", None) is not None:
                local.client.close()
            local.client, local.token = self._client(token), token
        return local.client

    def _on_busy(self, busy: bool) -> None:
        """Keep the node awake exactly while it holds ranks: a Mac that sleeps fails its job."""
        if busy:
            self.keep_awake.hold()
        else:
            self.keep_awake.release()

    # ------------------------------------------------------------------ a rank's folder
    # Imported when a rank needs them, not at start: an idle agent keeps its footprint small.

    def _prepare_rank(self, a: RankAssignment, folder: Path) -> str | None:
        """Fill a rank's folder before it starts: the job's workdir, a restarted attempt's artifacts."""
        from agent import artifacts, workdir

        # Artifacts first: a node uploaded them, and the job's own workdir (from the admin) must
        # win over anything of the same name.
        return (artifacts.restore(self._rank_client, self.enrolment.node_id, a, folder)
                or workdir.prepare(self._rank_client, self.enrolment.node_id, self.runner.work_dir, a, folder))

    def _collect_rank(self, a: RankAssignment, folder: Path, code: int) -> None:
        """Upload what rank 0 left (the job's artifacts) before its end is reported."""
        from agent import artifacts

        artifacts.collect(self._rank_client, self.enrolment.node_id, a, folder, code)

    def _rank_client(self) -> Connection:
        """A new connection with our node token, for a rank's transfers (the caller closes it)."""
        return self._client(self.enrolment.node_token)

    def _register(self, previous: Enrolment | None = None) -> Enrolment:
        join = self._join_string()
        self._trust()  # pin the coordinator's certificate before the secret goes anywhere
        self._refresh_facts(force=True)
        req = RegisterRequest(name=self.cfg.name, host=self.cfg.host, facts=self.facts,
                              node_key=self.state.node_key(),
                              node_token=previous.node_token if previous is not None else None)
        with self._client(join.bearer()) as c:
            resp = c.register(req)
        enr = Enrolment(self.cfg.coordinator, resp.node_id, resp.node_token, key_bound=True)
        self.state.save(enr)
        self.interval = resp.heartbeat_interval_s
        self._sent_facts_json = self.facts.model_dump_json(exclude={"memory_available_gb"})
        log.info("registered as %s (%s) with %s", self.cfg.name, resp.node_id, self.cfg.coordinator)
        if not resp.admitted:
            log.warning("node %s is pending: it gets no work until an admin approves it "
                        "(jupiter nodes approve '%s')", self.cfg.name, self.cfg.name)
        return enr

    def _beat(self) -> None:
        body, stable = self._heartbeat_body()
        resp = self._node_client().heartbeat(self.enrolment.node_id, body)
        if body.facts is not None:
            self._sent_facts_json = stable
        self.interval = resp.heartbeat_interval_s

    def apply(self, orders: HeartbeatResponse) -> None:
        for a in orders.start:
            self.runner.start(a)
        for st in orders.stop:
            self.runner.stop_job(st.job_id, attempt=st.attempt)
        for d in orders.dump_stacks:
            self.runner.dump_stacks(d.job_id, d.attempt, d.reason or "the job stalled")

    def _set_link(self, state: str, message: str) -> None:
        if state != self._link:
            (log.warning if state != "connected" else log.info)(message)
            self._link = state

    def step(self) -> float:
        """One round: (re)register if needed and heartbeat. Returns seconds to wait."""
        if self.enrolment is None:
            self.state.check_writable()
            saved = self.state.load(self.cfg.coordinator)
            # Enrolled by a Jupiter without node keys: register once more, showing the node token
            # we hold, so the coordinator binds our key to the node.
            self.enrolment = saved if saved is not None and saved.key_bound else self._register(saved)
        self._beat()
        self.runner.check_stopped()  # a stopped rank is told within one heartbeat
        self._set_link("connected", f"heartbeating to {self.cfg.coordinator} every {self.interval:g} s")
        return self.interval

    # ------------------------------------------------------------------ side channels

    def _orders_loop(self) -> None:
        """Long-poll for work so a rank starts within moments of being assigned."""
        failures = 0
        while not self.stop_event.is_set():
            enr = self.enrolment
            if enr is None:
                self.stop_event.wait(0.2)
                continue
            try:
                self.apply(self._node_client().orders(enr.node_id, OrdersRequest(ranks=self.runner.states(), wait_s=20)))
                failures = 0
            except (ApiError, OSError, SetupError, PinMismatch):
                failures += 1
                self.stop_event.wait(self._backoff(failures))

    def _report_once(self, last_states=None):
        """Send pending output and rank states; returns (states sent, whether it carried output
        lines), or None if there was nothing to send. Until one report has gone through, reports
        are `complete`: this agent is new, and the coordinator learns that ranks an earlier agent
        ran here and it does not list are gone."""
        enr = self.enrolment
        states = self.runner.states()
        if enr is None or (self._reported and not self.runner.pending() and states == last_states):
            return None
        report = RankReport(ranks=states, output=self.runner.output(), complete=not self._reported)
        ack = self._node_client().report(enr.node_id, report)
        self.runner.ack(ack.acked)
        self._reported = True
        return states, bool(report.output)

    # Each report costs the agent and the coordinator about 8 ms of CPU whatever it holds, and ranks
    # print together: all the ranks of a node reach a progress line at the same step, and a line
    # often comes with a log line or two. Waiting this long after the first new line sends them in
    # one report: with 2 ranks on one node printing in step, a third less CPU than a report each.
    REPORT_GATHER_S = 0.2

    def _report_loop(self) -> None:
        """Send rank output and state changes as they happen. Output is batched a little: new
        lines wait up to REPORT_GATHER_S for more (ranks printing together share a report), and a
        rank printing fast makes one report per 50 ms, not one per line; a rank's start or end
        goes at once and ends that wait. With nothing to send the thread sleeps until a rank
        starts, prints or ends: an idle agent's reporter costs nothing. Until the first report is
        through, after a failure, and while output waits for its acknowledgement, it looks again
        every 0.5 s."""
        last_states = None
        failures = 0
        behind = False  # lines came while the last report went: send them without waiting for more
        while not self.stop_event.is_set():
            idle = self._reported and failures == 0 and not self.runner.pending()
            woke = self.runner.changed.wait(None if idle else 0.5)
            self.runner.changed.clear()
            if woke and failures == 0 and not behind:
                self._gather(last_states)
            behind = False
            if self.stop_event.is_set():
                break
            try:
                sent = self._report_once(last_states)
                failures = 0
            except (ApiError, OSError, SetupError, PinMismatch):
                failures += 1
                self.stop_event.wait(self._backoff(failures))
                continue
            if sent is not None:
                last_states, had_output = sent
                self.runner.forget_finished()
                if had_output:
                    behind = self.runner.pending()
                    self.stop_event.wait(0.05)

    def _gather(self, last_states) -> None:
        """Wait up to REPORT_GATHER_S for more output before it goes, unless a rank started or
        ended: states that changed, or a rank that ended with lines still to send (they must be
        acknowledged before its end can be told, so they go at once)."""
        if not self._reported:
            return
        end = time.monotonic() + self.REPORT_GATHER_S
        while not self.stop_event.is_set():
            states = self.runner.states()
            if states != last_states or self.runner.ending():
                return
            left = end - time.monotonic()
            if left <= 0 or not self.runner.changed.wait(left):
                return
            self.runner.changed.clear()

    def _final_report(self) -> None:
        for _ in range(3):
            try:
                self._report_once()
                if not self.runner.pending():
                    return
            except (ApiError, OSError):
                time.sleep(0.5)

    def run(self) -> int:
        side = [threading.Thread(target=self._orders_loop, name="orders", daemon=True),
                threading.Thread(target=self._report_loop, name="reporter", daemon=True)]
        for t in side:
            t.start()
        try:
            return self._main_loop()
        finally:
            # Ranks do not outlive their agent: stop them and tell the coordinator how they ended.
            self.runner.stop_all(reason="its agent was shut down")
            self.runner.wait_all(timeout=10)
            self.keep_awake.release()  # on a SIGKILL the kernel ends it instead (agent/keepawake.py)
            self.runner.changed.set()  # wake the reporter, which may be asleep until a rank changes
            side[1].join(timeout=2)
            self._final_report()

    def _main_loop(self) -> int:
        failures = 0
        while not self.stop_event.is_set():
            try:
                wait = self.step()
                failures = 0
            except PinMismatch as exc:
                failures += 1
                wait = self._backoff(failures)
                self._set_link("pin-mismatch", f"cannot enrol: {exc}; retrying with backoff")
            except SetupError as exc:
                # Nothing the coordinator can fix: say so once and look again later, without
                # exiting (a service manager would restart us into a loop) or calling out.
                self._set_link(f"setup:{exc}", f"cannot run: {exc}")
                wait = SETUP_RETRY_S
            except ApiError as exc:
                if exc.status in (401, 404) and self.enrolment is not None:
                    # Our node was deleted or its token rotated: enrol again at once.
                    self._set_link("re-enrolling", f"coordinator no longer knows this node ({exc}); registering again")
                    self.state.forget()
                    self.enrolment = None
                    wait = 0.2
                else:
                    failures += 1
                    # A 429 (too many registrations from here) says when to come back: no sooner.
                    wait = max(self._backoff(failures), exc.retry_after or 0.0)
                    self._set_link(f"refused-{exc.status}", f"coordinator refused us: {exc}; retrying")
            except OSError as exc:
                failures += 1
                wait = self._backoff(failures)
                self._set_link("unreachable", f"coordinator {self.cfg.coordinator} unreachable "
                                              f"({type(exc).__name__}); retrying with backoff")
            self.stop_event.wait(wait)
        log.info("agent stopped")
        return 0

    def _backoff(self, failures: int) -> float:
        cap = max(self.interval, 0.5)
        return min(cap, 0.25 * 2 ** min(failures, 10)) * random.uniform(0.5, 1.0)


def _trust_without_pin(url: str) -> ssl.SSLContext:
    """HTTPS with neither a join pin nor a CA kept from enrolment: trust as the `jupiter` command
    does (JUPITER_CA_FILE, JUPITER_CA_SHA256, this machine's leader CA, else the public CAs httpx
    trusts). Rare (a coordinator with a certificate from a public CA), so httpx is imported only here."""
    from shared.client import default_verify

    verify = default_verify(url)
    if isinstance(verify, ssl.SSLContext):
        return verify
    from httpx import create_ssl_context

    return create_ssl_context()


def install_signal_handlers(agent: Agent) -> None:
    def _stop(signum, _frame):
        log.info("signal %d: stopping", signum)
        agent.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
