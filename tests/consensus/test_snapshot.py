"""Log compaction and InstallSnapshot (Raft §7).

Proves: after the application snapshots and compacts, a brand-new learner or a member too far
behind receives the snapshot (and then the entries after it), installs it through the Ready
(storage replaced, state machine restored, membership taken from it), and then follows
normally; a lost snapshot is sent again after ``snapshot_retry_ticks``; a snapshot the member
already holds in its log only advances its commit index; a follower never installs a
snapshot older than its commit index.
"""

from __future__ import annotations

from grenex.consensus import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    Message,
    MessageType,
    ProgressState,
    Snapshot,
)

from .harness import Cluster


def test_new_learner_catches_up_by_snapshot() -> None:
    c = Cluster(["n1", "n2", "n3"], ["l1"])
    c.elect("n1")
    for i in range(10):
        c.propose("n1", b"%d" % i)
    c.stabilize()
    snap_index = c.snapshot("n1")
    assert c["n1"].log.first_index() == snap_index + 1
    c["n1"].propose_conf_change(ConfChange(ConfChangeOp.ADD_LEARNER, "l1"))
    c.stabilize()
    c.propose("n1", b"after")
    c.stabilize()
    node = c.nodes["l1"]
    assert node.snapshots_installed == [snap_index]
    assert node.storage.snapshot().data == b"applied-to-%d" % snap_index
    # entries after the snapshot arrive by the log, including the ADD_LEARNER itself
    assert c.applied_data("l1") == [b"after"]
    assert c.conf("l1") == ConfState(("n1", "n2", "n3"), ("l1",))
    assert c["l1"].log.committed == c["n1"].log.committed


def test_lagging_follower_gets_a_snapshot_then_entries() -> None:
    c = Cluster(["n1", "n2", "n3"])
    c.elect("n1")
    cut = lambda m: "n3" in (m.src, m.dst)  # noqa: E731
    for i in range(10):
        c.propose("n1", b"%d" % i)
        c.stabilize(drop=cut)
    snap_index = c.snapshot("n1", keep=2)
    assert c["n1"].log.first_index() == snap_index - 1
    c.propose("n1", b"tail")
    c.stabilize(drop=cut)
    c.trace.clear()
    c.tick("n1")
    c.stabilize()
    assert [t for t in c.trace if "SNAP" in t] == [f"n1->n3 SNAP t2 snap={snap_index}/2"]
    assert c.nodes["n3"].snapshots_installed == [snap_index]
    assert c.applied_data("n3")[-1] == b"tail"
    assert c.log_terms("n3")[-1] == c.log_terms("n1")[-1]


def test_follower_within_the_retained_log_gets_entries_not_a_snapshot() -> None:
    c = Cluster(["n1", "n2", "n3"])
    c.elect("n1")
    c.propose("n1", b"a")
    c.stabilize()
    for i in range(3):
        c.propose("n1", b"%d" % i)
        c.stabilize(drop=lambda m: "n3" in (m.src, m.dst))
    c.snapshot("n1", keep=10)
    c.trace.clear()
    c.tick("n1")
    c.stabilize()
    assert not [t for t in c.trace if "SNAP" in t]
    assert c.applied_data("n3") == c.applied_data("n1")


def test_lost_snapshot_is_sent_again() -> None:
    c = Cluster(["n1", "n2", "n3"], snapshot_retry_ticks=5)
    c.elect("n1")
    for i in range(5):
        c.propose("n1", b"%d" % i)
        c.stabilize(drop=lambda m: m.dst == "n3")
    c.snapshot("n1")
    c.tick("n1")
    c.stabilize(drop=lambda m: m.type == MessageType.SNAP)  # the first snapshot is lost
    assert c["n1"].progress()["n3"].state == ProgressState.SNAPSHOT
    for _ in range(6):
        c.tick("n1")
        c.stabilize()
    assert c["n1"].progress()["n3"].state == ProgressState.REPLICATE
    assert len(c.nodes["n3"].snapshots_installed) == 1


def test_snapshot_already_in_the_log_only_commits() -> None:
    c = Cluster(["n1", "n2", "n3"])
    c.elect("n1")
    c.propose("n1", b"a")
    c.stabilize()
    r = c["n2"]
    last = r.log.last_index()
    # the leader holds more in n2's log than n2 knows committed: fake a snapshot at last
    r.log.committed = last - 1
    r.step(
        Message(
            MessageType.SNAP,
            "n1",
            "n2",
            r.term,
            snapshot=Snapshot(last, r.term, ConfState(("n1", "n2", "n3")), b""),
        )
    )
    assert r.log.committed == last and r.log.pending_snapshot is None
    c.process("n2")
    assert c.nodes["n2"].snapshots_installed == []


def test_stale_snapshot_is_ignored() -> None:
    c = Cluster(["n1", "n2", "n3"])
    c.elect("n1")
    c.propose("n1", b"a")
    c.stabilize()
    r = c["n2"]
    committed = r.log.committed
    r.step(
        Message(
            MessageType.SNAP,
            "n1",
            "n2",
            r.term,
            snapshot=Snapshot(2, 1, ConfState(("n1", "n2", "n3")), b""),
        )
    )
    assert r.log.pending_snapshot is None and r.log.committed == committed
    c.process("n2")
    assert c.outbox[-1].type == MessageType.APP_RESP and c.outbox[-1].index == committed
