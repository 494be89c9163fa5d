"""The gateway (grenex.replica.gateway) with real replicas: every path of a client's command.

Three real :class:`Replica` over MemoryStorage, each with its own :class:`Gateway` and
:class:`Driver` (the very turn the node and the simulator run; flush inline).  Consensus
messages go straight to the destination's inbox; the gateway's outputs (forwards and forward
answers) are *held* by the :class:`Mesh`, so each test delivers, drops or duplicates them by
hand.  Proves: a command submitted on the leader is proposed there and APPLIED; one submitted
on a follower is forwarded, the leader answers ``At``, and the follower's APPLIED carries the
entry from its *own* apply (read your writes); ``NotLeaderHere`` requeues; ``Declined`` gives
BUSY/REFUSED; a lost forward is UNKNOWN at exactly ``forward_timeout_ticks``; no leader is
REFUSED at exactly ``leader_wait_ticks``; an entry overwritten by a new leader is UNKNOWN; a
late ``At`` for an index already applied is decided by the window of recent entries (APPLIED
while in it, UNKNOWN once evicted or under another term); repeated answers are ignored;
``submitted_max`` gives BUSY; malformed input from the network is not asserted on; the
leader's SPEC §8 precheck keeps a failing envelope out of the log (INVALID with the reason,
on the leader and through a forward's ``skipped``) and a duplicate too (UNKNOWN: the client
asks again and is answered from the window), while a copy that reached the log anyway is
applied as a duplicate carrying the first outcome.  Commands are envelopes signed by the
genesis operator (the same bytes for the same arguments).  A
hypothesis property drives random interleavings (loss, duplication, reordering, isolation,
elections) and checks that every token gets exactly one outcome and that every APPLIED is the
token's own command at that index in the committed log.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grenex.consensus import Config, MemoryStorage, Message, Role, bootstrap
from grenex.replica import Applied, Replica, ReplicaConfig
from grenex.replica.auth import Duplicate, Reject
from grenex.replica.driver import Driver, InlineSnapshots, Snapshots
from grenex.replica.gateway import (
    At,
    Declined,
    Fate,
    Forward,
    ForwardAnswer,
    Gateway,
    GatewayLimits,
    NotLeaderHere,
    Outcome,
)

from .signed import GENESIS, OP, T0, Accounts

IDS = ("a", "b", "c")
ACCOUNTS = Accounts()
ADD_MARKET = ACCOUNTS.add_market()


@cache
def place(oid: str, side: str = "buy", price: str = "100") -> bytes:
    """The operator's place: the same envelope (bytes, nonce) for the same arguments."""
    return ACCOUNTS.place(OP, oid, side=side, price=price)


@dataclass
class Peer:
    id: str
    replica: Replica
    gateway: Gateway[str]
    driver: Driver[str] = field(init=False)
    inbox: list[Message] = field(default_factory=list)
    outcomes: list[Outcome[str]] = field(default_factory=list)
    forwards: list[Forward] = field(default_factory=list)  # sent by this peer, not delivered
    answers: list[ForwardAnswer] = field(default_factory=list)  # likewise
    applied: list[Applied] = field(default_factory=list)
    flushes: int = 0
    hashes: dict[int, str] = field(default_factory=dict)  # state hash after each applied batch

    def fates(self) -> dict[str, Fate]:
        return {o.token: o.fate for o in self.outcomes}

    def outcome(self, token: str) -> Outcome[str]:
        (o,) = [o for o in self.outcomes if o.token == token]
        return o


class Mesh:
    """Three replicas with gateways and drivers; see the module docstring."""

    def __init__(
        self,
        limits: GatewayLimits | None = None,
        seed: int = 5,
        snapshots: Callable[[Replica], Snapshots] = InlineSnapshots,
        storage: Callable[[], Any] = MemoryStorage,
        precheck: Callable[[Replica], Callable[[bytes], str | None] | None] = lambda r: None,
        **cfg: Any,
    ) -> None:
        self.rng = random.Random(seed)
        self.peers: dict[str, Peer] = {}
        self.cut: list[str] = []  # isolated nodes: consensus messages to/from them are dropped
        for n in IDS:
            disk = storage()
            bootstrap(disk, list(IDS))
            rep = Replica(
                ReplicaConfig(Config(id=n), GENESIS, auto_snapshot=False, **cfg),
                disk,
                random.Random(self.rng.random()),
            )
            p = Peer(n, rep, Gateway(n, limits or GatewayLimits(), precheck=precheck(rep)))
            p.driver = Driver(rep, p.gateway, snapshots(rep), self._sender(n), self._on_applied(p))
            self.peers[n] = p
        self.settle()  # apply the bootstrap membership

    def _on_applied(self, p: Peer) -> Callable[[list[Applied]], None]:
        def on_applied(entries: list[Applied]) -> None:
            p.applied.extend(entries)
            p.hashes[p.replica.applied_index] = p.replica.state_hash()

        return on_applied

    def _sender(self, src: str) -> Any:
        def send(m: Message) -> None:
            if src not in self.cut and m.dst not in self.cut:
                self.peers[m.dst].inbox.append(m)

        return send

    def __getitem__(self, nid: str) -> Peer:
        return self.peers[nid]

    def turn(self, nid: str, ticks: int = 0) -> None:
        p = self.peers[nid]
        msgs, p.inbox = p.inbox, []
        for rd in p.driver.turn(ticks, msgs):
            p.replica.flush(rd)
            p.flushes += 1
        for out in p.gateway.take():
            if isinstance(out, Forward):
                p.forwards.append(out)
            elif isinstance(out, ForwardAnswer):
                p.answers.append(out)
            else:
                p.outcomes.append(out)

    def settle(self) -> None:
        for _ in range(200):
            for n in IDS:
                self.turn(n)
            if not any(p.inbox for p in self.peers.values()):
                return
        raise AssertionError("consensus did not go quiet")

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            for nid in IDS:
                self.turn(nid, ticks=1)
            self.settle()

    def elect(self, nid: str) -> None:
        self.peers[nid].replica.raft.campaign()
        self.settle()
        assert self.leader() == nid

    def leader(self) -> str | None:
        ls = [n for n in IDS if self.peers[n].replica.raft.role == Role.LEADER]
        return ls[0] if len(ls) == 1 else None

    # -- the gateway's network, by hand --------------------------------------------------------

    def deliver_forwards(self, src: str) -> list[Forward]:
        fs, self.peers[src].forwards = self.peers[src].forwards, []
        for f in fs:
            self.peers[f.to].gateway.forwarded(src, f.batch, f.datas)
        return fs

    def deliver_answers(self, src: str) -> list[ForwardAnswer]:
        ans, self.peers[src].answers = self.peers[src].answers, []
        for a in ans:
            self.peers[a.to].gateway.forward_replied(a.batch, a.reply)
        return ans

    def exchange(self, rounds: int = 10) -> None:
        """Deliver forwards and answers (and consensus) until nothing moves."""
        for _ in range(rounds):
            moved = False
            for n in IDS:
                moved |= bool(self.deliver_forwards(n))
            self.settle()
            for n in IDS:
                moved |= bool(self.deliver_answers(n))
            self.settle()
            if not moved:
                return


def node_precheck(replica: Replica) -> Callable[[bytes], str | None]:
    """The node's gateway precheck (``Node._precheck``): §8 checks 1–5 on the applied state."""

    def check(data: bytes) -> str | None:
        _env, v = replica.state.precheck(data, T0)
        if type(v) is Reject:
            return v.reason
        return "duplicate" if type(v) is Duplicate else None

    return check


def ready_mesh(limits: GatewayLimits | None = None, **cfg: Any) -> Mesh:
    """a leads and the market exists."""
    m = Mesh(limits, **cfg)
    m.elect("a")
    m["a"].gateway.submit("market", ADD_MARKET)
    m.settle()
    assert m["a"].fates() == {"market": Fate.APPLIED}
    m["a"].outcomes.clear()
    return m


def test_submitted_on_the_leader_is_proposed_there_and_applied() -> None:
    m = ready_mesh()
    a = m["a"]
    a.gateway.submit("t1", place("o1"))
    a.gateway.submit("t2", place("o2", side="sell"))
    m.settle()
    assert a.forwards == [] and [o.fate for o in a.outcomes] == [Fate.APPLIED, Fate.APPLIED]
    o1, o2 = a.outcome("t1").applied, a.outcome("t2").applied
    assert o1 is not None and o2 is not None
    assert (o1.data, o2.data) == (place("o1"), place("o2", side="sell"))
    assert o2.index == o1.index + 1 and o1.term == a.replica.raft.term
    assert all(e.seq == o1.index for e in o1.events)
    assert a.gateway.pending() == 0


def test_forwarded_from_a_follower_applied_from_its_own_apply() -> None:
    m = ready_mesh()
    b = m["b"]
    b.gateway.submit("t", place("o1"))
    m.turn("b")
    assert b.forwards == [Forward("a", 0, [place("o1")])]
    assert b.gateway.inflight() == 1
    m.deliver_forwards("b")
    m.turn("a")  # the leader proposes in its turn and answers At
    (ans,) = m["a"].answers
    assert ans.to == "b" and ans.batch == 0 and isinstance(ans.reply, At)
    first, term, skipped = ans.reply
    assert skipped == ()
    assert (first, term) == (m["a"].replica.raft.log.last_index(), m["a"].replica.raft.term)
    m.deliver_answers("a")
    assert b.outcomes == []  # b waits for its own apply
    m.settle()
    o = b.outcome("t")
    assert o.fate == Fate.APPLIED and o.applied is not None
    assert (o.applied.index, o.applied.term, o.applied.data) == (first, term, place("o1"))
    # read your writes: the Applied is the very one b's replica produced
    assert any(x is o.applied for x in b.applied)
    assert b.replica.applied_index >= first
    assert m["a"].outcomes == [] and b.gateway.pending() == 0 and b.gateway.inflight() == 0


def test_not_leader_here_requeues_and_the_next_leader_gets_it() -> None:
    m = ready_mesh()
    b = m["b"]
    b.gateway.submit("t", place("o1"))
    m.turn("b")
    (f,) = b.forwards
    b.forwards.clear()
    m["c"].gateway.forwarded("b", f.batch, f.datas)  # it reached a follower instead
    m.turn("c")
    assert m["c"].answers == [ForwardAnswer("b", f.batch, NotLeaderHere("a"))]
    m.deliver_answers("c")
    assert b.gateway.queued() == 1 and b.outcomes == []
    m.turn("b")
    (f2,) = b.forwards
    assert f2.to == "a" and f2.batch == f.batch + 1 and f2.datas == f.datas
    m.exchange()
    assert b.fates() == {"t": Fate.APPLIED}


def test_leader_declines_when_its_forward_queue_is_full() -> None:
    lim = GatewayLimits(forwarded_batches_max=1, forward_batch_commands_max=1)
    m = ready_mesh(lim)
    b = m["b"]
    b.gateway.submit("t1", place("o1"))
    b.gateway.submit("t2", place("o2"))
    m.turn("b")
    assert [f.batch for f in b.forwards] == [0, 1]
    m.deliver_forwards("b")  # both arrive before the leader's turn: room for one
    m.turn("a")
    busy, at = m["a"].answers
    assert busy == ForwardAnswer("b", 1, Declined("leader busy", True))
    assert at.batch == 0 and isinstance(at.reply, At)
    m.exchange()
    assert b.fates() == {"t1": Fate.APPLIED, "t2": Fate.BUSY}


def test_declined_not_busy_is_refused() -> None:
    m = ready_mesh()
    b = m["b"]
    b.gateway.submit("t", place("o1"))
    m.turn("b")
    b.forwards.clear()
    b.gateway.forward_replied(0, Declined("no", False))
    m.turn("b")
    assert b.fates() == {"t": Fate.REFUSED} and b.outcome("t").why == "no"


def test_a_lost_forward_is_unknown_at_forward_timeout_ticks() -> None:
    lim = GatewayLimits(forward_timeout_ticks=5, command_timeout_ticks=50)
    m = ready_mesh(lim)
    b = m["b"]
    b.gateway.submit("t", place("o1"))
    m.turn("b")
    b.forwards.clear()  # the network lost it
    m.tick(4)
    assert b.outcomes == []
    m.tick(1)
    assert b.fates() == {"t": Fate.UNKNOWN}
    assert "no answer" in b.outcome("t").why
    # the answer, if it ever comes, changes nothing
    b.gateway.forward_replied(0, At(99, 1))
    m.tick(1)
    assert len(b.outcomes) == 1 and b.gateway.counters["forward_replies_ignored"] == 1


def test_forward_failed_not_delivered_goes_again_delivered_is_unknown() -> None:
    m = ready_mesh()
    b = m["b"]
    b.gateway.submit("t1", place("o1"))
    m.turn("b")
    b.forwards.clear()
    b.gateway.forward_failed(0, delivered=False, why="refused")
    m.turn("b")
    (f,) = b.forwards
    assert f.batch == 1 and b.outcomes == []
    b.forwards.clear()
    b.gateway.forward_failed(1, delivered=True, why="timeout")
    m.turn("b")
    assert b.fates() == {"t1": Fate.UNKNOWN}


def test_no_leader_is_refused_after_leader_wait_ticks() -> None:
    lim = GatewayLimits(leader_wait_ticks=6, command_timeout_ticks=100)
    m = Mesh(lim)  # nobody elected yet
    m.cut = ["b"]  # and b hears from nobody
    b = m["b"]
    b.gateway.submit("t", place("o1"))
    m.turn("b")
    assert b.replica.raft.lead is None
    m.tick(5)
    assert b.outcomes == []
    m.tick(1)
    assert b.fates() == {"t": Fate.REFUSED} and "no leader" in b.outcome("t").why
    assert b.forwards == []


def test_queued_without_leader_until_the_command_timeout_is_refused() -> None:
    # A follower that knows a leader but may not forward (in-flight bound) keeps the command
    # queued: never sent anywhere, so REFUSED at the command's deadline.
    lim = GatewayLimits(
        forwards_inflight_max=1,
        forward_batch_commands_max=1,
        command_timeout_ticks=4,
        forward_timeout_ticks=50,
    )
    m = ready_mesh(lim)
    b = m["b"]
    b.gateway.submit("t1", place("o1"))
    b.gateway.submit("t2", place("o2"))
    m.turn("b")
    assert len(b.forwards) == 1
    b.forwards.clear()
    m.tick(4)
    assert b.fates() == {"t1": Fate.UNKNOWN, "t2": Fate.REFUSED}


def test_an_entry_overwritten_by_a_new_leader_is_unknown() -> None:
    m = ready_mesh()
    a = m["a"]
    m.cut = ["a"]
    a.gateway.submit("lost", place("lost"))
    m.turn("a")  # proposed on a, never replicated
    assert a.gateway.pending() == 1 and a.outcomes == []
    m.tick(40)  # b and c elect a leader; a steps down (check quorum)
    new = m.leader() if m.leader() != "a" else None
    assert new in ("b", "c")
    m[new].gateway.submit("winner", place("winner"))
    m.settle()
    m.cut = []
    m.tick(3)
    assert a.fates() == {"lost": Fate.UNKNOWN}
    assert "another entry" in a.outcome("lost").why
    assert m[new].fates() == {"winner": Fate.APPLIED}


def test_an_at_answer_over_an_older_proposal_makes_it_unknown() -> None:
    # a forwarded batch answered At(i, t) while a token of ours already waits at i (another
    # term): only one entry can hold i, the older proposal's outcome is unknown
    m = ready_mesh()
    b = m["b"]
    b.gateway.submit("t1", place("o1"))
    m.turn("b")
    b.forwards.clear()
    i = b.replica.raft.log.last_index() + 5
    b.gateway.forward_replied(0, At(i, 1))
    b.gateway.submit("t2", place("o2"))
    m.turn("b")
    b.forwards.clear()
    b.gateway.forward_replied(1, At(i, 2))
    m.turn("b")
    assert b.fates() == {"t1": Fate.UNKNOWN}
    assert b.gateway.pending() == 1


def test_a_late_at_for_an_applied_index_is_decided_by_the_recent_window() -> None:
    m = ready_mesh()
    b = m["b"]
    b.gateway.submit("t", place("o1"))
    m.turn("b")
    m.deliver_forwards("b")
    m.settle()  # proposed, committed and applied on b before the answer arrives
    (ans,) = m["a"].answers
    assert isinstance(ans.reply, At) and b.replica.applied_index >= ans.reply.first
    m.deliver_answers("a")
    m.turn("b")
    o = b.outcome("t")
    assert o.fate == Fate.APPLIED and o.applied is not None
    assert o.applied.index == ans.reply.first and any(x is o.applied for x in b.applied)


def test_a_late_at_evicted_from_the_window_or_of_another_term_is_unknown() -> None:
    m = ready_mesh(GatewayLimits(recent_entries_max=1))
    b = m["b"]
    b.gateway.submit("t1", place("o1"))
    b.gateway.submit("t2", place("o2"))
    m.turn("b")
    m.deliver_forwards("b")
    m.settle()
    (ans,) = m["a"].answers
    assert isinstance(ans.reply, At)
    m["a"].gateway.submit("more", place("o3"))
    m.settle()  # the window now holds only o3's entry
    m.deliver_answers("a")
    m.turn("b")
    assert b.fates() == {"t1": Fate.UNKNOWN, "t2": Fate.UNKNOWN}
    # another term at an applied index: not ours
    b.gateway.submit("t3", place("o4"))
    m.turn("b")
    b.forwards.clear()
    last = b.replica.applied_index
    b.gateway.forward_replied(1, At(last, b.replica.raft.term + 1))
    m.turn("b")
    assert b.outcome("t3").fate == Fate.UNKNOWN


def test_repeated_answers_and_repeated_forwards_give_one_outcome() -> None:
    m = ready_mesh()
    b = m["b"]
    b.gateway.submit("t", place("o1"))
    m.turn("b")
    (f,) = b.forwards
    m.deliver_forwards("b")
    m["a"].gateway.forwarded("b", f.batch, f.datas)  # a copy while the first is queued
    m.turn("a")
    (ans,) = m["a"].answers  # proposed once, answered once
    assert isinstance(ans.reply, At)
    m["a"].gateway.forwarded("b", f.batch, f.datas)  # a later copy: the same answer again
    m.turn("a")
    assert m["a"].answers == [ans, ans]
    m["a"].answers.append(ans)  # and the answer duplicated too
    m.deliver_answers("a")
    m.settle()
    m.tick(2)
    assert b.fates() == {"t": Fate.APPLIED}
    assert len(b.outcomes) == 1
    assert b.gateway.counters["forward_replies_ignored"] == 2
    o = b.outcome("t").applied
    assert o is not None and o.index == ans.reply.first
    assert [x.index for x in b.applied if x.data == place("o1")] == [o.index]  # once


def test_a_copy_of_a_proposed_forward_is_never_declined() -> None:
    # Found by instrumenting the simulator: the network duplicated a forward; the first copy
    # was proposed (At), the second arrived while the leader's forward queue was full and was
    # declined "leader busy" — whichever answer arrived first decided, so the command could be
    # BUSY ("never proposed") while it was committed.  A copy now gets the first copy's answer.
    m = ready_mesh(GatewayLimits(forwarded_batches_max=1))
    b = m["b"]
    b.gateway.submit("t", place("o1"))
    m.turn("b")
    (f,) = b.forwards
    m.deliver_forwards("b")
    m["a"].gateway.forwarded("b", f.batch, f.datas)  # the copy, while the queue is full
    m.turn("a")
    (ans,) = m["a"].answers
    assert isinstance(ans.reply, At)
    m.deliver_answers("a")
    m.settle()
    assert b.fates() == {"t": Fate.APPLIED}
    # a copy reaching the leader after it stepped down gets At too, not NotLeaderHere
    m.cut = ["a"]
    m.tick(40)
    assert m["a"].replica.raft.role != Role.LEADER
    m["a"].gateway.forwarded("b", f.batch, f.datas)
    m.turn("a")
    assert m["a"].answers == [ans]


@pytest.mark.parametrize("first_batch", [0, 1 << 32])
def test_a_restarted_forwarder_never_takes_its_previous_incarnations_answer(
    first_batch: int,
) -> None:
    # Found by the simulator (seed 342): b forwards x as batch 0, the leader's answer is slow,
    # b restarts and forwards y; if the new gateway numbered its batches from 0 again, the old
    # answer (x's index) would be matched to y's batch and y acknowledged with x's entry.
    m = ready_mesh()
    b = m["b"]
    b.gateway.submit("x", place("ox"))
    m.turn("b")
    m.deliver_forwards("b")
    m.turn("a")
    (old,) = m["a"].answers
    m["a"].answers.clear()  # on its way, slowly; x not committed yet
    b.gateway = Gateway("b", b.gateway.limits, first_batch=first_batch)  # b restarts
    b.driver.gateway = b.gateway
    b.gateway.submit("y", place("oy"))
    m.turn("b")
    (f,) = b.forwards
    assert f.batch == first_batch
    b.gateway.forward_replied(old.batch, old.reply)  # the old answer arrives
    m.exchange()
    o = b.outcome("y")
    assert o.fate == Fate.APPLIED and o.applied is not None
    if first_batch == 0:  # the hazard the shell avoids by drawing first_batch per start
        assert o.applied.data == place("ox")
    else:
        assert o.applied.data == place("oy")
        assert b.gateway.counters["forward_replies_ignored"] == 1


def test_submitted_max_is_busy_at_once() -> None:
    m = ready_mesh(GatewayLimits(submitted_max=2))
    a = m["a"]
    assert a.gateway.submit("t1", place("o1"))
    assert a.gateway.submit("t2", place("o2"))
    assert not a.gateway.submit("t3", place("o3"))
    assert a.gateway.take() == [
        Outcome("t3", Fate.BUSY, None, "too many commands pending at this node")
    ]
    m.settle()
    assert a.fates() == {"t1": Fate.APPLIED, "t2": Fate.APPLIED}
    assert a.gateway.submit("t4", place("o4"))  # room again


def test_leader_busy_proposals_are_busy() -> None:
    m = ready_mesh()
    a = m["a"]
    m.cut = ["b"]
    a.replica.raft.transfer_leadership("b")  # under way: proposals are dropped meanwhile
    a.gateway.submit("t", place("o1"))
    m["c"].gateway.submit("f", place("o2"))
    m.turn("c")
    m.deliver_forwards("c")
    m.turn("a")
    assert a.fates() == {"t": Fate.BUSY}
    (ans,) = m["a"].answers
    assert isinstance(ans.reply, Declined) and ans.reply.busy
    m.deliver_answers("a")
    m.turn("c")
    assert m["c"].fates() == {"f": Fate.BUSY}


def test_nonsense_from_the_network_is_not_asserted_on() -> None:
    m = ready_mesh()
    b = m["b"]
    b.gateway.submit("t", place("o1"))
    m.turn("b")
    b.forwards.clear()
    b.gateway.forward_replied(0, At(0, 0))
    b.gateway.forward_replied(77, At(1, 1))  # a batch we never sent
    m.turn("b")
    assert b.fates() == {"t": Fate.UNKNOWN}
    m["a"].gateway.forwarded("b", 5, [])  # an empty batch (propose_many asserts on it)
    m["a"].gateway.forwarded("b", 7, [b"not json"])
    m.settle()
    (e, j) = m["a"].answers
    assert e == ForwardAnswer("b", 5, Declined("empty forward batch", False))
    assert j.batch == 7 and isinstance(j.reply, At)  # proposed: the state machine rejects it


# -- every token gets exactly one outcome -------------------------------------------------------

ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(
            (
                "submit",
                "submit",
                "turn",
                "tick",
                "deliver",
                "deliver",
                "drop",
                "dup",
                "swap",
                "isolate",
                "heal",
                "campaign",
            )
        ),
        st.integers(0, 2),
        st.integers(0, 1000),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ACTIONS, st.integers(0, 3))
def test_every_token_gets_exactly_one_outcome(
    actions: list[tuple[str, int, int]], seed: int
) -> None:
    lim = GatewayLimits(
        command_timeout_ticks=30,
        leader_wait_ticks=8,
        forward_timeout_ticks=10,
        forwards_inflight_max=2,
        forward_batch_commands_max=2,
        forwarded_batches_max=2,
        recent_entries_max=4,
        submitted_max=6,
    )
    m = Mesh(lim, seed=seed)
    m.elect("a")
    m["a"].gateway.submit("market", ADD_MARKET)
    m.settle()
    wire: list[tuple[str, str, Forward | ForwardAnswer]] = []  # (src, kind, msg)
    sent: dict[str, bytes] = {}

    def collect() -> None:
        for n in IDS:
            p = m[n]
            wire.extend((n, "f", f) for f in p.forwards)
            wire.extend((n, "a", a) for a in p.answers)
            p.forwards.clear()
            p.answers.clear()

    def deliver(item: tuple[str, str, Forward | ForwardAnswer]) -> None:
        src, _, msg = item
        if src in m.cut or msg.to in m.cut:
            return
        if isinstance(msg, Forward):
            m[msg.to].gateway.forwarded(src, msg.batch, msg.datas)
        else:
            m[msg.to].gateway.forward_replied(msg.batch, msg.reply)

    for k, (what, node, x) in enumerate(actions):
        nid = IDS[node]
        if what == "submit":
            tok = f"{nid}{k}"
            sent[tok] = place(tok, side="buy" if x % 2 else "sell", price=str(99 + x % 3))
            m[nid].gateway.submit(tok, sent[tok])
        elif what == "turn":
            m.turn(nid)
            m.settle()
        elif what == "tick":
            m.tick(1 + x % 5)
        elif what in ("deliver", "drop", "dup", "swap") and wire:
            i = x % len(wire)
            if what == "swap":
                wire.append(wire.pop(i))
            elif what == "drop":
                wire.pop(i)
            else:
                deliver(wire[i] if what == "dup" else wire.pop(i))
        elif what == "isolate":
            m.cut = [nid]
        elif what == "heal":
            m.cut = []
        elif what == "campaign":
            m[nid].replica.raft.campaign()
            m.settle()
        collect()
    # heal, deliver what is on the wire, then let every deadline pass
    m.cut = []
    for item in wire:
        deliver(item)
    wire.clear()
    for _ in range(lim.command_timeout_ticks + 5):
        m.tick()
        collect()
        for item in wire:
            deliver(item)
        wire.clear()
    committed: dict[int, Applied] = {}
    for n in IDS:
        for ap in m[n].applied:
            assert committed.setdefault(ap.index, ap)[:4] == ap[:4]
    seen: dict[str, int] = {}
    for n in IDS:
        p = m[n]
        assert p.gateway.pending() == 0 and p.gateway.inflight() == 0
        for o in p.outcomes:
            seen[o.token] = seen.get(o.token, 0) + 1
            if o.fate == Fate.APPLIED:
                assert o.applied is not None
                assert o.token == "market" or o.token.startswith(n)
                assert o.applied.data == (ADD_MARKET if o.token == "market" else sent[o.token])
                assert committed[o.applied.index][:4] == o.applied[:4]
                assert any(x is o.applied for x in p.applied)  # its own apply
    assert sorted(seen) == sorted([*sent, "market"])
    assert all(v == 1 for v in seen.values()), seen


# -- SPEC §8 before the log: the leader's precheck ---------------------------------------------


def test_the_leaders_precheck_keeps_invalid_envelopes_out_of_the_log() -> None:
    m = ready_mesh(precheck=node_precheck)
    a = m["a"]
    last = a.replica.raft.log.last_index()
    stranger = ACCOUNTS.place("nobody", "x1")  # never registered
    forged = ACCOUNTS.cmd(OP, by=ACCOUNTS.key("eve"), type="cancel", id="o1")
    a.gateway.submit("s", stranger)
    a.gateway.submit("f", forged)
    a.gateway.submit("ok", place("o1"))
    m.settle()
    assert (a.outcome("s").fate, a.outcome("s").why) == (Fate.INVALID, "unknown_client")
    assert (a.outcome("f").fate, a.outcome("f").why) == (Fate.INVALID, "bad_signature")
    ok = a.outcome("ok").applied
    assert ok is not None and ok.index == last + 1  # only the valid one was proposed
    assert a.replica.raft.log.last_index() == last + 1


def test_a_forward_skips_what_the_leaders_precheck_refuses() -> None:
    m = ready_mesh(precheck=node_precheck)
    b = m["b"]
    b.gateway.submit("t1", place("o1"))
    b.gateway.submit("bad", ACCOUNTS.place("nobody", "x1"))
    b.gateway.submit("t2", place("o2"))
    m.turn("b")
    assert [len(f.datas) for f in b.forwards] == [3]
    m.exchange()
    (ans,) = [o for o in m["a"].applied if o.data == place("o1")]
    assert b.outcome("bad").fate == Fate.INVALID and b.outcome("bad").why == "unknown_client"
    o1, o2 = b.outcome("t1").applied, b.outcome("t2").applied
    assert o1 is not None and o2 is not None and o2.index == o1.index + 1 == ans.index + 1


def test_a_duplicate_is_not_proposed_again_but_a_copy_in_the_log_answers_the_first_outcome() -> (
    None
):
    # with the precheck: the leader finds it executed before; UNKNOWN, so the client asks again
    # (a node's client API answers a retry from the account's window)
    m = ready_mesh(precheck=node_precheck)
    a = m["a"]
    a.gateway.submit("t", place("o1"))
    m.settle()
    first = a.outcome("t").applied
    assert first is not None and not first.duplicate
    last = a.replica.raft.log.last_index()
    a.gateway.submit("again", place("o1"))
    m.settle()
    assert a.outcome("again").fate == Fate.UNKNOWN
    assert a.replica.raft.log.last_index() == last
    _env, v = a.replica.state.precheck(place("o1"), T0)
    assert v == Duplicate(first.index, first.time or 0, b"[" + first.events_json + b"]")
    # without it (a leader that had not applied the first copy yet): both copies are logged,
    # the second runs nothing and answers the first outcome
    m2 = ready_mesh()
    a2 = m2["a"]
    a2.gateway.submit("t", place("o1"))
    a2.gateway.submit("again", place("o1"))
    m2.settle()
    o1, o2 = a2.outcome("t").applied, a2.outcome("again").applied
    assert o1 is not None and o2 is not None and o2.index == o1.index + 1
    assert o2.duplicate and o2.events == [] and o2.outcome_seq == o1.index
    assert o2.results_json == b"[" + o1.events_json + b"]"
    assert len({p.replica.state_hash() for p in m2.peers.values()}) == 1
