"""The replica driver step (persist -> send -> apply -> advance) and how proposers learn outcomes.

Three real replicas over MemoryStorage exchange messages in-process, driven only through
``handle_ready`` (the step the node and the simulator share).  Proves: every committed command
comes out of ``apply`` once per replica with its index, term and events (seq == index), in the
same order everywhere, with equal state hashes; ``Proposals`` resolves a proposal when its
(index, term) is applied and reports unknown when another term's entry took the index; a
replica that fell behind the compaction point installs a snapshot through the same step and
ends with the same state; membership changes come out as CONFIG entries.  Commands are SPEC §8
envelopes signed by the genesis operator (an account from the start).
"""

from __future__ import annotations

import random
from typing import Any

from grenex.consensus import (
    Config,
    EntryKind,
    MemoryStorage,
    Message,
    MessageType,
    Role,
    bootstrap,
)
from grenex.replica import Applied, Proposals, Replica, ReplicaConfig

from .signed import GENESIS, OP, Accounts

ACCOUNTS = Accounts()


def place(oid: str, side: str = "buy", price: str = "100") -> bytes:
    return ACCOUNTS.place(OP, oid, side=side, price=price)


ADD_MARKET = ACCOUNTS.add_market()


class Trio:
    def __init__(self, **cfg: Any) -> None:
        ids = ["a", "b", "c"]
        self.rng = random.Random(5)
        self.reps: dict[str, Replica] = {}
        self.applied: dict[str, list[Applied]] = {n: [] for n in ids}
        for n in ids:
            st = MemoryStorage()
            bootstrap(st, ids)
            self.reps[n] = Replica(
                ReplicaConfig(Config(id=n), GENESIS, **cfg), st, random.Random(self.rng.random())
            )
        self.wire: list[Message] = []
        self.cut: set[str] = set()
        self.settle()  # apply the bootstrap membership

    def settle(self) -> None:
        for _ in range(200):
            for n, r in self.reps.items():
                self.applied[n].extend(r.handle_ready(self.wire.append))
            if not self.wire:
                return
            batch, self.wire = self.wire, []
            for m in batch:
                if m.dst in self.reps and m.dst not in self.cut and m.src not in self.cut:
                    self.reps[m.dst].step(m)  # (a node outside the trio gets nothing)

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            for r in self.reps.values():
                r.tick()
            self.settle()

    def leader(self) -> Replica:
        (ldr,) = [r for r in self.reps.values() if r.raft.role == Role.LEADER]
        return ldr


def test_committed_commands_come_out_once_everywhere_with_seq_equal_to_index() -> None:
    t = Trio()
    t.reps["a"].raft.campaign()
    t.settle()
    ldr = t.leader()
    ldr.propose(ADD_MARKET)
    for i in range(5):
        ldr.propose(place(f"o{i}", side="sell" if i % 2 else "buy"))
    t.settle()
    t.tick()
    normal = {
        n: [(a.index, a.data) for a in t.applied[n] if a.kind == EntryKind.NORMAL] for n in t.reps
    }
    assert normal["a"] == normal["b"] == normal["c"] and len(normal["a"]) == 6
    for a in t.applied["b"]:
        for ev in a.events:
            assert ev.seq == a.index
    assert len({r.state_hash() for r in t.reps.values()}) == 1
    kinds = [a.kind for a in t.applied["c"]]
    assert kinds[:3] == [EntryKind.CONFIG] * 3  # the bootstrap membership
    assert EntryKind.NOOP in kinds  # the leader's no-op


def test_proposals_resolve_applied_and_unknown() -> None:
    t = Trio()
    t.reps["a"].raft.campaign()
    t.settle()
    a = t.reps["a"]
    pending: Proposals[str] = Proposals()
    idx, term = a.propose(ADD_MARKET)
    pending.add(idx, term, "market")
    got = list(pending.resolve(a.handle_ready(t.wire.append), a.applied_index))
    assert got == []  # not committed yet
    t.settle()
    # resolve everything a applied during settle
    outcomes = dict(pending.resolve(t.applied["a"], a.applied_index))
    res = outcomes["market"]
    assert res is not None and (res.index, res.term) == (idx, term)
    assert res.events[0].seq == idx

    # a proposal whose entry is overwritten by another leader's: unknown
    t.cut = {"a"}
    lost_idx, lost_term = a.propose(place("lost"))
    pending.add(lost_idx, lost_term, "lost")
    t.settle()
    t.applied["a"].clear()
    t.tick(40)  # b and c elect a leader among themselves; a steps down (check-quorum)
    t.leader().propose(place("winner"))
    t.settle()
    t.cut = set()
    t.tick(3)
    outcomes = dict(pending.resolve(t.applied["a"], a.applied_index))
    assert outcomes == {"lost": None}


def test_proposals_report_a_displaced_older_proposal() -> None:
    p: Proposals[str] = Proposals(pending_max=2)
    assert p.add(5, 1, "x") is None
    assert p.add(5, 2, "y") == "x"  # a new entry at 5: the older one was overwritten
    assert len(p) == 1


def test_proposals_skipped_below_the_applied_index_are_unknown_lowest_first() -> None:
    p: Proposals[str] = Proposals()
    for index in (9, 4, 7, 12):
        p.add(index, 1, f"p{index}")
    p.add(7, 2, "p7b")  # displaces p7: one proposal at 7, in the heap once more
    applied = [Applied(4, 1, 0, b"", [], False)]
    # 4 came out; a snapshot install then moved the replica to 9: 7 and 9 were never seen here
    got = list(p.resolve(applied, 9))
    assert got == [("p4", applied[0]), ("p7b", None), ("p9", None)]
    assert len(p) == 1  # 12 still waits
    assert list(p.resolve([], 11)) == []
    assert list(p.resolve([], 12)) == [("p12", None)]
    assert len(p) == 0


def test_lagging_replica_installs_a_snapshot_through_the_driver() -> None:
    t = Trio(snapshot_interval_entries=5, compaction_retain_entries=0)
    t.reps["a"].raft.campaign()
    t.settle()
    t.cut = {"c"}
    ldr = t.leader()
    ldr.propose(ADD_MARKET)
    for i in range(20):
        ldr.propose(place(f"o{i}", side="sell" if i % 3 else "buy", price=str(99 + i % 3)))
        t.settle()
    assert ldr.snapshots_taken >= 3 and ldr.storage.first_index() > 10
    t.cut = set()
    t.tick(3)
    c = t.reps["c"]
    assert c.snapshots_installed == 1
    assert c.applied_index == ldr.applied_index
    assert c.state_hash() == ldr.state_hash()
    c.state.engine.check_invariants()


def test_membership_through_the_replica() -> None:
    t = Trio()
    t.reps["a"].raft.campaign()
    t.settle()
    idx, _ = t.leader().remove("c")
    t.settle()
    t.tick()
    conf = [a for a in t.applied["a"] if a.index == idx]
    assert conf and conf[0].kind == EntryKind.CONFIG and conf[0].data == b"remove c"
    assert t.reps["a"].raft.conf_state().voters == ("a", "b")


def test_a_member_steps_a_stranger_only_on_a_members_word_until_its_own_configuration_changes() -> (
    None
):
    """The replica's filter: a node outside the configuration is dropped ("not a member")
    unless a member of the configuration vouched for it; a vouch from a stranger or from this
    node itself changes nothing; the vouch is spent once the configuration changes."""
    t = Trio()
    c = t.reps["c"]
    stranger = Message(MessageType.HEARTBEAT, "e", "c", c.raft.term + 1, commit=0)
    assert not c.step(stranger)
    assert c.dropped == {"not a member": 1}
    assert not c.vouch("e", ["a", "b", "c", "e"])  # the stranger vouching for itself
    assert not c.vouch("c", ["a", "b", "c", "e"])  # nor this node
    assert not c.step(Message(MessageType.HEARTBEAT, "e", "c", c.raft.term + 1, commit=0))
    assert c.vouch("b", ["a", "b", "c", "e"])
    assert c.step(Message(MessageType.HEARTBEAT, "e", "c", c.raft.term + 1, commit=0))
    assert c.raft.lead == "e" and c.unled_ticks == 0
    # a configuration change of ours spends the vouch
    t.reps["a"].raft.campaign()
    t.settle()
    t.leader().add_learner("d")
    t.settle()
    t.tick(3)
    assert "d" in c.raft.learners
    before = c.dropped.get("not a member", 0)
    assert not c.step(Message(MessageType.HEARTBEAT, "e", "c", c.raft.term + 1, commit=0))
    assert c.dropped["not a member"] == before + 1


def test_vouch_is_due_after_three_election_timeouts_without_a_leader_then_once_per_period() -> None:
    t = Trio()
    c = t.reps["c"]
    period = 3 * c.config.raft.election_timeout_ticks
    t.cut = {"a", "b", "c"}  # nobody hears anybody
    due = []
    for i in range(1, 3 * period + 1):
        for r in t.reps.values():
            r.tick()
        t.settle()
        if c.voucher_due() is not None:
            due.append(i)
    assert due == [period, 2 * period, 3 * period]
    t.cut = set()
    t.reps["a"].raft.campaign()
    t.settle()
    t.tick(2)
    assert c.unled_ticks <= 2 and c.voucher_due() is None  # a leader is heard again
