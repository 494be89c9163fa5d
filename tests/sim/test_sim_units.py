"""The simulator's own parts, and proof that its checkers catch real bugs.

Proves: the simulated disk keeps exactly the synced state plus a prefix of unsynced writes on
a crash, and ``fail_next_sync`` kills a node mid-persist; the network delivers in (due, send)
order, drops on cut links, holds packets on clogged links until released; a seed replays
bit for bit (same stats, same final hashes); a run exercises the gateway (forwards, their
answers as peer wire messages, every outcome, signed envelopes: registrations, key
rotations, envelopes signed by rotated-away keys refused, duplicates answered before the log);
and the checkers fail a run when the code under test is broken on purpose (the nonce window
executing a retry again; a pre-log check that calls a fresh
envelope a duplicate; votes not remembered; the gateway matching a forwarded command to the
wrong entry, or an outcome by index without its term), printing a replay command.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from grenex.codec.envelope import Envelope
from grenex.consensus import Entry, HardState
from grenex.replica import Applied, Proposals
from grenex.replica import gateway as gateway_mod
from grenex.replica.auth import Auth, Duplicate, Fresh, Verdict
from grenex.replica.gateway import At, Declined, ForwardReply, NotLeaderHere, reply_to_wire
from grenex.sim import __main__ as sim_main
from grenex.sim import cluster as cluster_mod
from grenex.sim.cluster import Simulation
from grenex.sim.disk import DiskCrash, SimDisk
from grenex.sim.network import Network


def test_disk_crash_keeps_synced_state_and_a_prefix_of_the_rest() -> None:
    kept = set()
    for seed in range(30):
        d = SimDisk()
        d.append([Entry(1, 1, 0, b"a")])
        d.set_hard_state(HardState(1, "x", 1))
        d.sync()
        d.append([Entry(2, 1, 0, b"b")])
        d.append([Entry(3, 1, 0, b"c")])
        d.set_hard_state(HardState(2, None, 1))
        d.crash(random.Random(seed))
        n = d.last_index()
        hs = d.initial_state()[0]
        assert n in (1, 2, 3)
        assert hs == (HardState(2, None, 1) if hs.term == 2 else HardState(1, "x", 1))
        if hs.term == 2:
            assert n == 3  # a prefix: the hard state came after both appends
        kept.add(n)
    assert kept == {1, 2, 3}


def test_fail_next_sync_raises_and_loses_the_batch() -> None:
    d = SimDisk()
    d.append([Entry(1, 1, 0, b"a")])
    d.fail_next_sync = True
    with pytest.raises(DiskCrash):
        d.sync()
    d.crash(random.Random(0))  # keeps a prefix of 0 or 1 of the unsynced ops
    assert d.last_index() in (0, 1)
    assert d.durable.last_index() == d.last_index()


def test_network_order_cut_and_clog() -> None:
    net = Network(random.Random(1))
    net.delay_max_ticks = 1
    net.send("a", "b", 1)
    net.send("a", "b", 2)
    net.send("b", "a", 3)
    net.cut.add(("b", "a"))
    net.clogged.add(("a", "b"))
    net.now = 1
    assert net.due() == []  # 1, 2 held; 3 dropped
    assert net.dropped == 1
    net.now = 5
    net.release(("a", "b"))
    assert [p.payload for p in net.due()] == [1, 2]


def test_a_seed_replays_exactly() -> None:
    a = Simulation(11, ticks=300)
    ra = a.run()
    b = Simulation(11, ticks=300)
    rb = b.run()
    assert ra.ok and rb.ok
    assert ra.stats == rb.stats and ra.status_lines == rb.status_lines


def _window_executes_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Break exactly-once: a retry the window keeps executes again instead of answering its
    first outcome."""
    real_check, real_consume = Auth.check, Auth.consume

    def check(self: Auth, env: Envelope, *args: object, **kw: object) -> Verdict:
        v = real_check(self, env, *args, **kw)  # type: ignore[arg-type]
        signer = self.signer(env)
        if type(v) is Duplicate and type(signer) is bytes and env.type != "register":
            return Fresh(signer)
        return v

    def consume(self: Auth, env: Envelope, seq: int, time_ms: int) -> None:
        a = self.account(env.client)
        if a is not None and env.nonce in a.kept:
            a.nonces.remove(env.nonce)
            del a.kept[env.nonce]
        real_consume(self, env, seq, time_ms)

    monkeypatch.setattr(Auth, "check", check)
    monkeypatch.setattr(Auth, "consume", consume)


def test_checker_catches_broken_exactly_once(monkeypatch: pytest.MonkeyPatch) -> None:
    _window_executes_retries(monkeypatch)
    failures = [r for r in (Simulation(s, ticks=300).run() for s in range(5)) if not r.ok]
    assert failures
    assert "the model says" in failures[0].failure


def test_checker_catches_a_wrong_duplicate_before_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """A receiving node that answers a fresh envelope from the window (here: the outcome of
    the account's newest kept nonce) would tell a client its command ran when it never did."""
    real_check = Auth.check

    def check(self: Auth, env: Envelope, *args: object, **kw: object) -> Verdict:
        v = real_check(self, env, *args, **kw)  # type: ignore[arg-type]
        kept = self.kept(env.client)
        if type(v) is Fresh and kept and kept[-1].events is not None and env.type != "register":
            return Duplicate(kept[-1].seq, kept[-1].time, kept[-1].events)
        return v

    monkeypatch.setattr(Auth, "check", check)
    failures = [r for r in (Simulation(s, ticks=300).run() for s in range(3)) if not r.ok]
    assert failures
    assert "prechecked" in failures[0].failure or "the model says" in failures[0].failure


def test_checker_catches_forgotten_votes(monkeypatch: pytest.MonkeyPatch) -> None:
    from grenex.consensus import Message, MessageType, Raft

    real = Raft._handle_vote_request

    def forgetful(self: Raft, m: Message) -> None:
        real(self, m)
        if m.type == MessageType.VOTE:
            self.vote = None  # votes for anyone who asks: two leaders per term

    monkeypatch.setattr(Raft, "_handle_vote_request", forgetful)
    results = [Simulation(s, ticks=400).run() for s in range(10)]
    assert any("two leaders in term" in r.failure for r in results)


def test_cli_prints_replay_command_on_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _window_executes_retries(monkeypatch)
    code = sim_main.main(["--seed", "1", "--ticks", "300"])
    out = capsys.readouterr().out
    assert code == 1
    assert "replay: python -m grenex.sim --seed 1 --ticks 300" in out
    assert "n1:" in out  # a status line per replica


def test_cli_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim_main.main(["--seeds", "3..4", "--ticks", "200"]) == 0
    assert "2/2 seeds passed" in capsys.readouterr().out


def test_a_run_exercises_the_gateway() -> None:
    r = Simulation(3, ticks=400).run()
    assert r.ok, r.failure
    st = r.stats
    assert st["forwards"] > 0 and st["fwd_answers"] > 0  # clients reached followers
    assert st["outcome_applied"] + st["prelog_duplicates"] >= st["commands_ok"] > 0
    assert st["outcome_refused"] + st["outcome_unknown"] + st["outcome_busy"] > 0


def test_runs_exercise_the_trust_paths() -> None:
    """Registrations, rotations, duplicates answered from the window before the log, pre-log
    refusals held to the model (the CI seed set asserts old-key envelopes too)."""
    totals: dict[str, int] = {}
    for seed in range(4):
        r = Simulation(seed, ticks=800).run()
        assert r.ok, r.failure
        for k, v in r.stats.items():
            totals[k] = totals.get(k, 0) + v
    for what in ("rotations", "prelog_duplicates", "prelog_invalid"):
        assert totals[what] > 0, what
    assert totals["prechecks_checked"] > 0


def test_forward_answers_round_trip_through_the_peer_wire() -> None:
    replies: list[ForwardReply] = [At(7, 3), NotLeaderHere("n2"), NotLeaderHere(None)]
    replies.append(Declined("leader busy", True))
    for reply in replies:
        wire = reply_to_wire(reply)
        assert cluster_mod._from_wire(wire) == reply


def test_checker_catches_a_gateway_matching_the_wrong_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = gateway_mod.Gateway._wait_for

    def off_by_one(self: gateway_mod.Gateway[object], tid: int, index: int, term: int) -> None:
        real(self, tid, index + 1, term)  # forwarded commands matched one entry too far

    monkeypatch.setattr(gateway_mod.Gateway, "_wait_for", off_by_one)
    results = [Simulation(s, ticks=300).run() for s in range(3)]
    assert all(not r.ok for r in results)
    assert "acknowledged" in results[0].failure


def test_checker_catches_outcomes_matched_by_index_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = Proposals.resolve

    def by_index(
        self: Proposals[object], applied: list[Applied], applied_index: int
    ) -> Iterator[tuple[object, Applied | None]]:
        for a in applied:  # whatever term the entry has: "it is ours"
            p = self._pending.get(a.index)
            if p is not None:
                self._pending[a.index] = (a.term, p[1])
        yield from real(self, applied, applied_index)

    monkeypatch.setattr(Proposals, "resolve", by_index)
    # seeds where a proposal's index goes to another term's entry while its proposer still
    # waits (since forwards to an old leader are settled as soon as another leads, fewer
    # seeds reach that: these two of 0..39 do, with signed envelopes and deferred commit
    # notices drawn)
    results = [Simulation(s, ticks=600).run() for s in (3, 9)]
    assert any("acknowledged" in r.failure for r in results), [r.failure for r in results]


def test_deferred_commit_notices_are_exercised_and_safe() -> None:
    """With ``defer_commit_notices`` drawn, leaders defer notices and the nodes send them at
    their next turn (``deferred_commits``); every check of the run still holds.  Without it,
    no turn sends deferred notices."""
    on = next(s for s in range(50) if Simulation(s, ticks=1).knobs.defer_commit_notices)
    off = next(s for s in range(50) if not Simulation(s, ticks=1).knobs.defer_commit_notices)
    r_on = Simulation(on, ticks=600).run()
    r_off = Simulation(off, ticks=600).run()
    assert r_on.ok and r_off.ok, (r_on.failure, r_off.failure)
    assert r_on.stats["deferred_commits"] > 0
    assert r_off.stats["deferred_commits"] == 0
