"""A member that lost its log never votes or campaigns until it is re-admitted (issue 10, item 9).

Script-style against real cores (``harness.Cluster``).  Proves:

* the reported interleaving at the core level: n3 cut off, entries committed by n1+n2, n1 and
  n2 crash, n2 restarts empty.  Bootstrapped anew (the old behaviour) n2 votes for n3 and the
  committed entries are gone; in rejoin mode it refuses n3's pre-votes and votes, so n3 never
  leads;
* a node that knows no configuration (never bootstrapped, nothing received) grants no vote;
* a node in rejoin mode does not campaign even when the log it receives says it is a voter,
  ignores TIMEOUT_NOW, and a PROMOTE of itself from before its restart does not re-admit it;
* ``Readmissions`` on the leader: the member is demoted by a REJOIN entry with its tag,
  catches up (its stale progress forgotten), is promoted, and then votes and counts again;
* a REJOIN entry round-trips through the entry encoding and needs its tag.
"""

from __future__ import annotations

import random

import pytest

from grenex.consensus import (
    ConfChange,
    ConfChangeOp,
    Config,
    ConfState,
    MemoryStorage,
    Message,
    MessageType,
    Raft,
    Role,
    bootstrap,
    decode_conf_change,
    encode_conf_change,
)
from grenex.consensus.rejoin import CATCHING_UP, NOT_MEMBER, READMITTED, Readmissions

from .harness import Cluster, Node

VOTERS = ["n1", "n2", "n3"]


def _cut(*nodes: str):  # type: ignore[no-untyped-def]
    return lambda m: m.src in nodes or m.dst in nodes


def _restart_empty(c: Cluster, nid: str, tag: str = "", found: bool = False) -> Node:
    """``nid`` restarts with empty storage: founding anew (old behaviour) or in rejoin mode."""
    st = MemoryStorage()
    if found:
        bootstrap(st, VOTERS)
    cfg = Config(id=nid, election_timeout_ticks=10, rejoin_tag=tag)
    node = Node(Raft(cfg, st, random.Random(7)), st)
    c.nodes[nid] = node
    c.process(nid)
    return node


def _crash_scenario(c: Cluster) -> list[bytes]:
    """n3 cut off; n1 (leader) and n2 commit three entries; n1 is gone for good."""
    c.elect("n1")
    acked = [b"a", b"b", b"c"]
    for d in acked:
        c.propose("n1", d)
    c.stabilize(drop=_cut("n3"))
    assert c.applied_data("n1") == acked and c.applied_data("n3") == []
    del c.nodes["n1"]
    c.outbox.clear()
    return acked


def _campaign(c: Cluster, nid: str, drop_to: str = "n1") -> None:
    """Tick every node (delivering everything but to ``drop_to``) for ten election timeouts,
    or until ``nid`` leads."""
    for _ in range(100):
        for n in sorted(c.nodes):
            c.tick(n)
        c.stabilize(drop=lambda m: m.dst == drop_to)
        if c.role(nid) == Role.LEADER:
            return


def test_before_the_fix_an_empty_refounded_voter_elects_a_leader_without_the_acked_entries() -> (
    None
):
    c = Cluster(VOTERS)
    _crash_scenario(c)
    _restart_empty(c, "n2", found=True)
    _campaign(c, "n3")
    assert c.role("n3") == Role.LEADER  # n2 voted for it: the acknowledged entries are gone
    c.propose("n3", b"new")
    c.stabilize(drop=lambda m: m.dst == "n1")
    assert c.applied_data("n2") == [b"new"]


def test_an_empty_voter_in_rejoin_mode_refuses_pre_votes_and_votes() -> None:
    c = Cluster(VOTERS)
    _crash_scenario(c)
    _restart_empty(c, "n2", tag="inc-2")
    c.trace.clear()
    _campaign(c, "n3")
    assert c.role("n3") != Role.LEADER
    answers = [line for line in c.trace if line.startswith("n2->n3")]
    assert answers and all("reject" in line for line in answers), answers
    # with pre-vote off the candidate reaches n2 with real votes: refused as well
    c["n3"].config = Config(id="n3", election_timeout_ticks=10, pre_vote=False)
    c.trace.clear()
    _campaign(c, "n3")
    assert c.role("n3") != Role.LEADER
    assert any("VOTE_RESP" in line and "reject" in line for line in c.trace), c.trace
    assert c["n2"].vote is None


def test_a_node_that_knows_no_configuration_grants_no_vote() -> None:
    st = MemoryStorage()
    r = Raft(Config(id="x"), st, random.Random(1))
    for typ in (MessageType.PRE_VOTE, MessageType.VOTE):
        r.step(Message(typ, "n1", "x", 5, log_term=4, index=100))
        rd = r.ready()
        assert [m.reject for m in rd.messages] == [True], rd.messages
        r.advance(rd)
    assert r.vote is None


def test_rejoin_mode_never_campaigns_and_an_old_promotion_does_not_readmit() -> None:
    # n4 was added as a learner and promoted long ago: its log holds ADD_LEARNER + PROMOTE n4
    c = Cluster(VOTERS, ["n4"])
    c.elect("n1")
    for op in (ConfChangeOp.ADD_LEARNER, ConfChangeOp.PROMOTE):
        c["n1"].propose_conf_change(ConfChange(op, "n4"))
        c.stabilize()
    assert "n4" in c.conf("n1").voters
    _restart_empty(c, "n4", tag="inc-4")
    # (without this the leader, which still believes n4 holds its old log, would never send
    # it anything below that: the probes ping-pong forever, see the reset_progress test)
    c["n1"].reset_progress("n4")
    c.propose("n1", b"x")
    c.stabilize()  # n4 receives the whole log again, its own old promotion included
    r4 = c["n4"]
    assert "n4" in r4.voters and r4.rejoining
    c.trace.clear()
    c.tick("n4", 100)
    r4.campaign()
    c.deliver([Message(MessageType.TIMEOUT_NOW, "n1", "n4", c["n1"].term)])
    c.process("n4")
    assert r4.role == Role.FOLLOWER
    assert not [line for line in c.trace if line.startswith("n4->") and "VOTE" in line]


def test_the_leader_readmits_a_member_that_lost_its_log() -> None:
    c = Cluster(VOTERS)
    c.elect("n1")
    for d in (b"a", b"b"):
        c.propose("n1", d)
    c.stabilize()
    leader = c["n1"]
    assert leader.progress()["n2"].match >= 6
    n2 = _restart_empty(c, "n2", tag="inc-2")
    rm = Readmissions()
    assert rm.request(leader, "n9", "t", False, 0) == NOT_MEMBER
    assert rm.request(leader, "n1", "t", False, 0) == NOT_MEMBER
    states = []
    for _ in range(30):
        st = n2.raft.status()
        states.append(rm.request(leader, "n2", "inc-2", n2.raft.rejoin_marked, st.applied))
        for line in rm.step(leader):
            states.append(line)
        c.process("n1")
        c.tick("n1")
        c.stabilize()
        if not n2.raft.rejoining:
            break
    assert not n2.raft.rejoining, states
    assert any("demoted to learner" in s for s in states), states
    assert any("promoted again" in s for s in states), states
    assert CATCHING_UP in states
    assert rm.request(leader, "n2", "inc-2", True, n2.raft.log.applied) == READMITTED
    assert c.conf("n1") == ConfState(("n1", "n2", "n3"), ())
    assert c.applied_data("n2") == [b"a", b"b"]  # the stale match was forgotten: sent from 1
    # n2 votes and counts again: n1 gone, n2 and n3 elect a leader and commit
    del c.nodes["n1"]
    c.outbox.clear()
    _campaign(c, "n3")
    assert c.role("n3") == Role.LEADER or c.role("n2") == Role.LEADER


def test_a_stale_progress_is_forgotten_by_reset_progress() -> None:
    c = Cluster(VOTERS)
    c.elect("n1")
    c.propose("n1", b"a")
    c.stabilize()
    _restart_empty(c, "n2", tag="t")
    leader = c["n1"]
    c.propose("n1", b"stuck")
    with pytest.raises(AssertionError, match="did not stabilize"):
        c.stabilize(rounds_max=50)  # probes at match + 1 refused forever: n2 has nothing
    c.outbox.clear()
    leader.reset_progress("n2")
    pr = leader.progress()["n2"]
    assert pr.match == 0
    c.propose("n1", b"b")
    c.stabilize()
    assert c.applied_data("n2") == [b"a", b"stuck", b"b"]


def test_rejoin_entries_round_trip_and_need_a_tag() -> None:
    cc = ConfChange(ConfChangeOp.REJOIN, "n2", "abc123")
    assert encode_conf_change(cc) == b"rejoin n2 abc123"
    assert decode_conf_change(b"rejoin n2 abc123") == cc
    assert decode_conf_change(b"promote n2") == ConfChange(ConfChangeOp.PROMOTE, "n2")
    for bad in (b"rejoin n2", b"promote n2 tag", b"rejoin n2 a b"):
        with pytest.raises(ValueError):
            decode_conf_change(bad)
