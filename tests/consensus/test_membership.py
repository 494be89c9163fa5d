"""Membership changes one server at a time (thesis §4.1), learners, leadership transfer (§3.10).

Script-style against real cores.  Proves: a learner joins with an empty log and catches up
(from index 1, learning the founding voters from the log); promotion makes it count toward
the quorum; removal shrinks the quorum; only one change may be pending, and none before the
leader's no-op is applied; invalid changes are refused; a leader that removes itself steps
down and the rest elect a new one; a leadership transfer hands over to an up-to-date target
(catching it up first), refuses proposals meanwhile, and gives up after an election timeout.
"""

from __future__ import annotations

import pytest

from grenex.consensus import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    InvalidConfChangeError,
    MessageType,
    ProposalDroppedError,
    Role,
)

from .harness import Cluster

ADD = ConfChangeOp.ADD_LEARNER
PROMOTE = ConfChangeOp.PROMOTE
REMOVE = ConfChangeOp.REMOVE


def change(c: Cluster, leader: str, op: ConfChangeOp, node: str) -> None:
    c[leader].propose_conf_change(ConfChange(op, node))
    c.stabilize()


def test_learner_joins_empty_and_catches_up_from_the_log() -> None:
    c = Cluster(["n1", "n2", "n3"], ["l1"])
    c.elect("n1")
    c.propose("n1", b"before")
    c.stabilize()
    change(c, "n1", ADD, "l1")
    c.propose("n1", b"after")
    c.stabilize()
    assert c.applied_data("l1") == [b"before", b"after"]
    # the founding voters came from the log (ADD_VOTER entries at 1..3), not from a snapshot
    for n in ("n1", "n2", "n3", "l1"):
        assert c.conf(n) == ConfState(("n1", "n2", "n3"), ("l1",))
    assert c["n1"].progress()["l1"].is_learner


def test_promoted_learner_counts_toward_the_quorum() -> None:
    c = Cluster(["n1", "n2", "n3"], ["n4"])
    c.elect("n1")
    change(c, "n1", ADD, "n4")
    change(c, "n1", PROMOTE, "n4")
    assert c.conf("n4") == ConfState(("n1", "n2", "n3", "n4"), ())
    # 4 voters: quorum 3; with n3 and n4 cut off nothing commits ...
    idx, _ = c.propose("n1", b"x")
    c.stabilize(drop=lambda m: m.dst in ("n3", "n4") or m.src in ("n3", "n4"))
    assert c["n1"].log.committed < idx
    # ... and n4's answer completes the quorum
    c.tick("n1")
    c.stabilize(drop=lambda m: m.dst == "n3" or m.src == "n3")
    assert c["n1"].log.committed >= idx


def test_removed_voter_shrinks_the_quorum() -> None:
    c = Cluster(["n1", "n2", "n3", "n4", "n5"])
    c.elect("n1")
    change(c, "n1", REMOVE, "n5")
    change(c, "n1", REMOVE, "n4")
    assert c.conf("n2") == ConfState(("n1", "n2", "n3"), ())
    # 3 voters: n1 + n2 commit without n3, n4, n5
    idx, _ = c.propose("n1", b"x")
    c.stabilize(drop=lambda m: m.dst in ("n3", "n4", "n5"))
    assert c["n1"].log.committed >= idx
    assert "n5" not in c["n1"].progress()


def test_one_pending_change_at_a_time() -> None:
    c = Cluster(["n1", "n2", "n3"], ["l1", "l2"])
    c.elect("n1")
    c["n1"].propose_conf_change(ConfChange(ADD, "l1"))
    with pytest.raises(ProposalDroppedError):
        c["n1"].propose_conf_change(ConfChange(ADD, "l2"))
    c.stabilize()
    c["n1"].propose_conf_change(ConfChange(ADD, "l2"))  # applied: the next one may go
    c.stabilize()
    assert c.conf("n1").learners == ("l1", "l2")


def test_no_change_before_the_new_leaders_noop_is_applied() -> None:
    c = Cluster(["n1", "n2", "n3"], ["l1"])
    c["n1"].campaign()
    # deliver votes but no appends: n1 leads, its no-op is not committed
    c.stabilize(drop=lambda m: m.type == MessageType.APP)
    assert c["n1"].role == Role.LEADER
    with pytest.raises(ProposalDroppedError):
        c["n1"].propose_conf_change(ConfChange(ADD, "l1"))
    c.tick("n1")
    c.stabilize()
    change(c, "n1", ADD, "l1")


@pytest.mark.parametrize(
    ("op", "node", "why"),
    [
        (ADD, "n2", "already a member"),
        (PROMOTE, "n2", "not a learner"),
        (PROMOTE, "zz", "not a learner"),
        (REMOVE, "zz", "not a member"),
    ],
)
def test_invalid_changes_are_refused(op: ConfChangeOp, node: str, why: str) -> None:
    c = Cluster(["n1", "n2", "n3"])
    c.elect("n1")
    with pytest.raises(InvalidConfChangeError, match=why):
        c["n1"].propose_conf_change(ConfChange(op, node))


def test_cannot_remove_the_last_voter() -> None:
    c = Cluster(["n1"])
    c.elect("n1")
    with pytest.raises(InvalidConfChangeError, match="last voter"):
        c["n1"].propose_conf_change(ConfChange(REMOVE, "n1"))


def test_leader_removing_itself_steps_down_and_the_rest_carry_on() -> None:
    c = Cluster(["n1", "n2", "n3"])
    c.elect("n1")
    change(c, "n1", REMOVE, "n1")
    assert c["n1"].role == Role.FOLLOWER
    assert c.conf("n2") == ConfState(("n2", "n3"), ())
    for _ in range(30):
        c.tick("n2")
        c.tick("n3")
        c.stabilize(drop=lambda m: "n1" in (m.src, m.dst))
    assert len(c.leaders()) == 1 and c.leaders()[0] in ("n2", "n3")
    # the removed node never campaigns again
    c.outbox.clear()
    c.tick("n1", 50)
    assert c.take(lambda m: m.src == "n1") == []


def test_leadership_transfer_to_an_up_to_date_voter() -> None:
    c = Cluster(["n1", "n2", "n3"])
    c.elect("n1")
    c.trace.clear()
    c["n1"].transfer_leadership("n2")
    c.stabilize()
    assert "n1->n2 TIMEOUT_NOW t2" in c.trace
    assert "n2->n1 VOTE t3 last=4/2 transfer" in c.trace  # no pre-vote, breaks the lease
    assert c.leaders() == ["n2"] and c["n2"].term == 3


def test_leadership_transfer_catches_the_target_up_first_and_blocks_proposals() -> None:
    c = Cluster(["n1", "n2", "n3"])
    c.elect("n1")
    for i in range(5):
        c.propose("n1", b"%d" % i)
        c.take(lambda m: m.dst == "n3")  # n3 falls behind
    c.stabilize(drop=lambda m: m.dst == "n3")
    c["n1"].transfer_leadership("n3")
    with pytest.raises(ProposalDroppedError):
        c["n1"].propose(b"during transfer")
    c.tick("n1")
    c.stabilize()
    assert c.leaders() == ["n3"]
    assert c.applied_data("n3") == [b"%d" % i for i in range(5)]


def test_leadership_transfer_gives_up_after_an_election_timeout() -> None:
    c = Cluster(["n1", "n2", "n3"])
    c.elect("n1")
    c["n1"].transfer_leadership("n3")
    for _ in range(10):
        c.tick("n1")
        c.stabilize(drop=lambda m: "n3" in (m.src, m.dst))  # the target is unreachable
    assert c["n1"].role == Role.LEADER and c["n1"].status().transferee is None
    c.propose("n1", b"accepted again")
