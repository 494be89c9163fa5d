"""Log replication and commitment (Raft §5.3, §5.4.2, Figure 8) and the bounds around them.

Script-style: the test decides which message is delivered when.  Proves: log matching (a
follower's conflicting suffix is replaced by the leader's, committed entries never are); the
conflict hint skips a whole term per round trip; the leader never commits an entry of an
earlier term by counting replicas (the Figure 8 scenario, both endings); a leader counts its
own copy only once persisted; proposals between two Readies travel as one append; the
per-message and in-flight bounds hold; proposals beyond the queue bound are refused.
"""

from __future__ import annotations

import pytest

from grenex.consensus import (
    MessageType,
    NotLeader,
    ProgressState,
    ProposalDroppedError,
    Role,
)

from .harness import Cluster, describe


def test_replication_golden_trace_with_batching() -> None:
    c = Cluster(["n1", "n2", "n3"])
    c.elect("n1")
    c.trace.clear()
    for d in (b"a", b"b", b"c"):
        c["n1"].propose(d)  # three proposals before the next Ready ...
    c.stabilize()
    assert c.trace == [
        # ... travel as one append per follower
        "n1->n2 APP t2 prev=4/2 [5/2 6/2 7/2] commit=4",
        "n1->n3 APP t2 prev=4/2 [5/2 6/2 7/2] commit=4",
        "n2->n1 APP_RESP t2 index=7",
        "n3->n1 APP_RESP t2 index=7",
        # the commit index, quietly: both were sent every entry, so an answer would only
        # repeat the one they gave the entries
        "n1->n2 APP t2 prev=7/2 [] commit=7 quiet",
        "n1->n3 APP t2 prev=7/2 [] commit=7 quiet",
    ]
    for n in ("n1", "n2", "n3"):
        assert c.applied_data(n) == [b"a", b"b", b"c"]


def test_not_leader_carries_a_hint() -> None:
    c = Cluster(["n1", "n2", "n3"])
    c.elect("n1")
    with pytest.raises(NotLeader) as ei:
        c["n2"].propose(b"x")
    assert ei.value.leader == "n1"


def test_follower_conflicting_suffix_is_replaced() -> None:
    """Log matching: after a leader change, the follower's uncommitted suffix is overwritten."""
    c = Cluster(["n1", "n2", "n3"], pre_vote=False, check_quorum=False)
    c.elect("n1")
    # n1 appends two entries that reach nobody, then dies
    c["n1"].propose(b"lost1")
    c["n1"].propose(b"lost2")
    c.process("n1")
    c.take(lambda m: m.src == "n1")
    assert c.log_terms("n1")[-2:] == [(5, 2), (6, 2)]
    # n2 becomes leader at term 3 with n3 and commits its own entries
    c["n2"].campaign()
    c.stabilize(drop=lambda m: "n1" in (m.src, m.dst))
    c.propose("n2", b"kept")
    c.stabilize(drop=lambda m: "n1" in (m.src, m.dst))
    # n1 comes back: its term-2 suffix is truncated and replaced
    c.tick("n2")
    c.stabilize()
    assert c.log_terms("n1") == c.log_terms("n2")
    assert c.applied_data("n1") == [b"kept"]
    assert b"lost1" not in [e.data for e in c.nodes["n1"].storage.all_entries()]


def test_conflict_hint_skips_a_whole_term_per_round_trip() -> None:
    c = Cluster(["n1", "n2", "n3"], pre_vote=False, check_quorum=False)
    c.elect("n1")
    # n1 (term 2) appends 20 entries that only it holds
    for i in range(20):
        c["n1"].propose(b"x%d" % i)
    c.process("n1")
    c.take(lambda m: m.src == "n1")
    # n2 leads term 3 and appends 20 entries of its own
    c["n2"].campaign()
    c.stabilize(drop=lambda m: "n1" in (m.src, m.dst))
    for i in range(20):
        c["n2"].propose(b"y%d" % i)
    c.stabilize(drop=lambda m: "n1" in (m.src, m.dst))
    # n2 restarts and leads again at term 4: it probes n1 at the end of its long log
    c.restart("n2")
    c["n2"].campaign()
    c.stabilize(drop=lambda m: "n1" in (m.src, m.dst))
    assert c.log_terms("n2")[-1] == (26, 4)
    c.trace.clear()
    c.tick("n2")
    c.stabilize()
    appends = [t for t in c.trace if t.startswith("n1->n2 APP_RESP")]
    # One rejection: n1 hints (24, term 2); the leader walks its own log back below its
    # whole term-3 run and probes at 4 at once, instead of once per entry.
    assert appends[0] == "n1->n2 APP_RESP t4 reject=25 hint=24/2"
    assert [a for a in appends if "reject" in a] == [appends[0]]
    assert any(t.startswith("n2->n1 APP t4 prev=4/2 [5/3") for t in c.trace)
    assert c.log_terms("n1") == c.log_terms("n2")


def _figure8_setup() -> Cluster:
    """Figure 8 (a)-(c) with s1..s5; bootstrap entries are 1..5, every leader adds a no-op."""
    c = Cluster(
        ["s1", "s2", "s3", "s4", "s5"],
        pre_vote=False,
        check_quorum=False,
        entries_per_message_max=1,
    )
    c.elect("s1")  # term 2, no-op at 6, all committed
    # (a) s1 appends entry 7 of term 2; only s2 receives it
    c.propose("s1", b"a")
    c.deliver_one("s1", "s2", MessageType.APP)
    c.outbox.clear()
    # (b) s1 crashes; s5 wins term 3 with s3, s4 and appends its no-op at 7 (term 3), alone
    c["s5"].campaign()
    c.process("s5")
    for v in ("s3", "s4"):
        c.deliver_one("s5", v, MessageType.VOTE)
        c.deliver_one(v, "s5", MessageType.VOTE_RESP)
    assert c["s5"].role == Role.LEADER and c["s5"].term == 3
    c.outbox.clear()
    assert c.log_terms("s5")[-1] == (7, 3)
    # (c) s5 crashes; s1 comes back and wins term 4 (s2, s3 vote: s3 moves past term 3)
    c.restart("s5")
    c.restart("s1")
    c["s1"].campaign()
    c.process("s1")
    c.deliver_one("s1", "s2", MessageType.VOTE)
    c.deliver_one("s2", "s1", MessageType.VOTE_RESP)
    c.deliver_one("s1", "s3", MessageType.VOTE)
    c.deliver_one("s3", "s1", MessageType.VOTE_RESP)  # reject: s3 voted for s5 in term 3
    c.outbox.clear()
    c["s1"].campaign()
    c.process("s1")
    for v in ("s2", "s3"):
        c.deliver_one("s1", v, MessageType.VOTE)
        c.deliver_one(v, "s1", MessageType.VOTE_RESP)
    assert c["s1"].role == Role.LEADER and c["s1"].term == 4
    c.outbox.clear()
    # s1 replicates entry 7 (term 2) to s3, but not its no-op at 8 (term 4)
    c.tick("s1")  # heartbeats
    c.deliver_one("s1", "s3", MessageType.HEARTBEAT)
    c.deliver_one("s3", "s1", MessageType.HEARTBEAT_RESP)  # -> probe append
    m = c.deliver_one("s1", "s3", MessageType.APP)
    while m.reject if m.type == MessageType.APP_RESP else True:
        m = c.deliver_one("s3", "s1", MessageType.APP_RESP)
        if not m.reject:
            break
        m = c.deliver_one("s1", "s3", MessageType.APP)
    assert c.log_terms("s3")[-1] == (7, 2)
    c.outbox.clear()
    return c


def test_figure8_entry_of_an_earlier_term_is_not_committed_by_counting() -> None:
    c = _figure8_setup()
    # entry 7 (term 2) is on s1, s2, s3: a majority, but not of the current term
    assert [c.log_terms(s)[6] for s in ("s1", "s2", "s3")] == [(7, 2)] * 3
    assert c["s1"].log.committed == 6
    # (d) s1 crashes; s5 wins term 5 (its last term 3 beats everyone's 2) and overwrites 7
    c.restart("s1")
    c["s5"].campaign()  # term 4: loses, s2 and s3 voted for s1 in term 4
    c.stabilize(drop=lambda m: "s1" in (m.src, m.dst))
    c["s5"].campaign()  # term 5: wins with s2, s3, s4
    c.stabilize(drop=lambda m: "s1" in (m.src, m.dst))
    assert c["s5"].role == Role.LEADER and c["s5"].term == 5
    for s in ("s2", "s3", "s4", "s5"):
        assert c.log_terms(s)[6] == (7, 3)
        assert b"a" not in c.applied_data(s)  # never applied anywhere: it was never committed


def test_figure8_entry_commits_with_a_current_term_entry() -> None:
    c = _figure8_setup()
    # (e) s1 gets its term-4 no-op onto a majority: now 7 and 8 commit together
    c.tick("s1")
    c.stabilize(drop=lambda m: "s5" in (m.src, m.dst) or "s4" in (m.src, m.dst))
    assert c["s1"].log.committed == 8
    assert c.applied_data("s1") == [b"a"]
    # and s5 can no longer win an election: every majority holds term 4 at index 8
    c["s5"].campaign()
    c.stabilize(drop=lambda m: "s1" in (m.src, m.dst))
    assert c["s5"].role != Role.LEADER


def test_leader_counts_itself_only_after_persisting() -> None:
    c = Cluster(["n1", "n2", "n3"])
    c.elect("n1")
    r = c["n1"]
    idx, _ = r.propose(b"x")
    rd = r.ready()
    # a follower acknowledges before the leader persisted (the message was sent early)
    from grenex.consensus import Message

    assert [e.index for e in rd.entries] == [idx]
    # pretend n2 answered: the leader must not commit with n2 alone while its own copy is
    # not durable -- it can't even step before advance()
    with pytest.raises(AssertionError):
        r.step(Message(MessageType.APP_RESP, "n2", "n1", r.term, index=idx))
    c.nodes["n1"].storage.append(rd.entries)
    r.advance(rd)
    r.step(Message(MessageType.APP_RESP, "n2", "n1", r.term, index=idx))
    assert r.log.committed == idx


def test_entries_per_message_and_inflight_bounds() -> None:
    c = Cluster(["n1", "n2", "n3"], entries_per_message_max=2, inflight_messages_max=3)
    c.elect("n1")
    for i in range(20):
        c["n1"].propose(b"%d" % i)
    c.process("n1")
    to_n2 = [m for m in c.outbox if m.dst == "n2" and m.type == MessageType.APP]
    # the pipeline holds 3 appends of 2 entries; the rest waits for acknowledgements
    assert [len(m.entries) for m in to_n2] == [2, 2, 2]
    assert c["n1"].progress()["n2"].state == ProgressState.REPLICATE
    c.stabilize()
    assert c.applied_data("n2") == [b"%d" % i for i in range(20)]


def test_bytes_per_message_bound_keeps_at_least_one_entry() -> None:
    c = Cluster(["n1", "n2", "n3"], bytes_per_message_max=100)
    c.elect("n1")
    c["n1"].propose(b"x" * 500)  # bigger than the bound on its own
    c["n1"].propose(b"y" * 10)
    c["n1"].propose(b"z" * 10)
    c.process("n1")
    sizes = [len(m.entries) for m in c.outbox if m.dst == "n2"]
    assert sizes[0] == 1  # the big one travels alone
    c.stabilize()
    assert c.applied_data("n3") == [b"x" * 500, b"y" * 10, b"z" * 10]


def test_proposal_queue_bound() -> None:
    c = Cluster(["n1", "n2", "n3"], uncommitted_entries_max=5)
    c.elect("n1")
    for i in range(5):
        c["n1"].propose(b"%d" % i)
    with pytest.raises(ProposalDroppedError):
        c["n1"].propose(b"too many")
    c.stabilize()  # commits free the queue
    c["n1"].propose(b"fits again")
    c.stabilize()
    assert c.applied_data("n2")[-1] == b"fits again"


def test_lost_appends_are_recovered_through_probing() -> None:
    c = Cluster(["n1", "n2", "n3"])
    c.elect("n1")
    for i in range(6):
        c.propose("n1", b"%d" % i)
        c.take(lambda m: m.dst == "n3")  # n3 misses every append
    c.stabilize(drop=lambda m: m.dst == "n3")
    assert c.applied_data("n2") == [b"%d" % i for i in range(6)]
    c.trace.clear()
    c.tick("n1")  # the heartbeat answer reveals n3 is behind
    c.stabilize()
    assert c.applied_data("n3") == [b"%d" % i for i in range(6)]
    assert any("n3->n1 APP_RESP t2 reject" in t for t in c.trace)


def test_duplicated_and_reordered_messages_are_harmless() -> None:
    c = Cluster(["n1", "n2", "n3"])
    c.elect("n1")
    for i in range(4):
        c["n1"].propose(b"%d" % i)
        c.process("n1")
    msgs = c.take()
    # deliver every message twice, in reverse order
    c.deliver(list(reversed(msgs)) + msgs)
    c.tick("n1")
    c.stabilize()
    for n in ("n1", "n2", "n3"):
        assert c.applied_data(n) == [b"0", b"1", b"2", b"3"], describe


def test_a_quiet_commit_notice_that_does_not_match_is_answered_and_repaired() -> None:
    """The append carrying the entries to n3 is lost; the quiet notice that follows does not
    match n3's log, so n3 answers it with a rejection and the leader sends the entries again."""
    c = Cluster(["n1", "n2", "n3"])
    c.elect("n1")
    c.trace.clear()
    c.propose("n1", b"x")
    c.process("n1")
    c.take(lambda m: m.dst == "n3" and m.type == MessageType.APP)  # lost
    c.deliver_one("n1", "n2", MessageType.APP)
    c.deliver_one("n2", "n1", MessageType.APP_RESP)  # n2's answer commits index 5
    notice = c.deliver_one("n1", "n3", MessageType.APP)
    assert notice.reject and not notice.entries  # quiet: n3 was sent everything
    c.stabilize()
    assert "n3->n1 APP_RESP t2 reject=5 hint=4/2" in c.trace  # no match: answered
    assert c.applied_data("n3") == [b"x"]
    assert c["n1"].prs["n3"].match == 5


def test_a_lost_answer_is_made_good_by_the_next_heartbeat_not_by_the_quiet_notice() -> None:
    """n3's answer to the entries is lost and the quiet notice, which matches, is not
    answered: the next heartbeat's answer shows n3 behind, and the ordinary append that
    follows is answered, so the leader learns n3's match."""
    c = Cluster(["n1", "n2", "n3"])
    c.elect("n1")
    c.propose("n1", b"y")
    c.stabilize(drop=lambda m: m.src == "n3" and m.type == MessageType.APP_RESP)
    assert c.applied_data("n3") == [b"y"]  # n3 has it and knows it is committed ...
    assert c["n1"].prs["n3"].match == 4  # ... but the leader does not know n3 has it
    c.trace.clear()
    c.tick("n1", c["n1"].config.heartbeat_interval_ticks)
    c.stabilize()
    assert c["n1"].prs["n3"].match == 5
    assert "n3->n1 APP_RESP t2 index=5" in c.trace
