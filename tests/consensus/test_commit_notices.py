"""Deferred commit notices (``Config.defer_commit_notices``; raft.py, "Commit notices").

A new commit index goes at once only to the members that forwarded what it commits (they answer
their clients when they apply it) and to members not in replicate state; the others learn it
from their next append, a heartbeat, or ``send_commit`` (the driver's, a few ms later).  Proves:
the forwarder hears at once and the others do not; ``commit_deferred`` says so, and
``send_commit(upto)`` tells exactly the members sent less than ``upto``; an append sent
meanwhile carries the commit index (so the deferred notice is not sent again); a heartbeat
tells it too; without the setting everyone hears at once; nothing changes what is committed.
"""

from __future__ import annotations

from grenex.consensus import MessageType

from .harness import Cluster


def _deferred(c: Cluster) -> bool:
    return c["n1"].commit_deferred


def _three() -> Cluster:
    c = Cluster(["n1", "n2", "n3"], defer_commit_notices=True)
    c.elect("n1")
    c["n1"].send_commit(c["n1"].log.committed)  # the no-op's commit, to everyone
    c.stabilize()
    assert [c[n].log.committed for n in ("n1", "n2", "n3")] == [4, 4, 4]
    assert not _deferred(c)
    c.trace.clear()
    return c


def test_only_the_forwarder_hears_the_commit_at_once() -> None:
    c = _three()
    c["n1"].propose_many([b"a", b"b"], origin="n3")
    c.stabilize()
    assert c.trace == [
        "n1->n2 APP t2 prev=4/2 [5/2 6/2] commit=4",
        "n1->n3 APP t2 prev=4/2 [5/2 6/2] commit=4",
        "n2->n1 APP_RESP t2 index=6",
        "n3->n1 APP_RESP t2 index=6",
        # n3 forwarded the entries: it answers its client once it applies them
        "n1->n3 APP t2 prev=6/2 [] commit=6 quiet",
    ]
    assert [c[n].log.committed for n in ("n1", "n2", "n3")] == [6, 4, 6]
    assert [e.data for e in c.nodes["n3"].applied][-2:] == [b"a", b"b"]
    # n2 was sent less than the commit index: the driver is told, and sends it on demand
    assert _deferred(c)
    c.trace.clear()
    c["n1"].send_commit(6)
    c.stabilize()
    assert c.trace == ["n1->n2 APP t2 prev=6/2 [] commit=6 quiet"]
    assert [c[n].log.committed for n in ("n1", "n2", "n3")] == [6, 6, 6]
    assert not _deferred(c)
    assert c.applied_data("n2") == c.applied_data("n3") == [b"a", b"b"]


def test_the_next_append_carries_the_deferred_commit_index() -> None:
    c = _three()
    c["n1"].propose_many([b"a"], origin="n3")
    c.stabilize()
    upto = c["n1"].log.committed  # what the driver notes when it sees commit_deferred
    assert upto == 5 and c["n2"].log.committed == 4 and _deferred(c)
    c.trace.clear()
    c["n1"].propose_many([b"b"], origin="n2")
    c.process("n1")
    # the append of b tells n2 (and n3) that a is committed
    assert c.trace == [
        "n1->n2 APP t2 prev=5/2 [6/2] commit=5",
        "n1->n3 APP t2 prev=5/2 [6/2] commit=5",
    ]
    c.stabilize()
    assert c["n2"].log.committed == 6  # n2 forwarded b: told at once
    assert c["n3"].log.committed == 5  # n3 was told 5 with the append; 6 is deferred
    c.trace.clear()
    c["n1"].send_commit(upto)  # the timer armed for 5 finds everyone told 5 or more
    c.process("n1")
    assert c.trace == []
    c["n1"].send_commit(c["n1"].log.committed)
    c.stabilize()
    assert c.trace == ["n1->n3 APP t2 prev=6/2 [] commit=6 quiet"]
    assert c.applied_data("n1") == c.applied_data("n2") == c.applied_data("n3") == [b"a", b"b"]


def test_a_heartbeat_tells_the_deferred_commit_index() -> None:
    c = _three()
    c["n1"].propose(b"a")  # the leader's own client: nobody waits for it elsewhere
    c.stabilize()
    assert [c[n].log.committed for n in ("n1", "n2", "n3")] == [5, 4, 4]
    assert _deferred(c)
    c.trace.clear()
    c.tick("n1")  # heartbeat_interval_ticks = 1
    beats = [m for m in c.outbox if m.type == MessageType.HEARTBEAT]
    assert sorted((m.dst, m.commit) for m in beats) == [("n2", 5), ("n3", 5)]
    assert not _deferred(c)
    c.stabilize()
    assert [c[n].log.committed for n in ("n1", "n2", "n3")] == [5, 5, 5]


def test_without_the_setting_everyone_hears_at_once() -> None:
    c = Cluster(["n1", "n2", "n3"])
    c.elect("n1")
    c.stabilize()
    c.trace.clear()
    c["n1"].propose_many([b"a"], origin="n3")
    c.stabilize()
    assert c.trace[-2:] == [
        "n1->n2 APP t2 prev=5/2 [] commit=5 quiet",
        "n1->n3 APP t2 prev=5/2 [] commit=5 quiet",
    ]
    assert not _deferred(c)


def test_a_member_being_probed_hears_at_once() -> None:
    c = Cluster(["n1", "n2", "n3"], defer_commit_notices=True)
    c.elect("n1")
    # right after the election n3 was still probed when the no-op committed (see the election
    # golden trace): it got the commit index at once; n2, replicating, did not
    assert [c[n].log.committed for n in ("n1", "n2", "n3")] == [4, 3, 4]
    assert _deferred(c)


def test_origin_self_or_stranger_changes_nothing() -> None:
    c = _three()
    c["n1"].propose_many([b"a"], origin="n1")
    c["n1"].propose_many([b"b"], origin="n9")  # not a member: ignored
    c.stabilize()
    assert [c[n].log.committed for n in ("n1", "n2", "n3")] == [6, 4, 4]
    assert not any("[] commit=6" in t for t in c.trace)
