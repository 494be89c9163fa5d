"""The driver turn (grenex.replica.driver) and the snapshot protocol, with real replicas.

Uses the three-replica :class:`~tests.replica.test_gateway.Mesh` (each replica with its own
gateway and :class:`Driver`, flushed inline), over the simulator's :class:`SimDisk` where the
test needs to see what is staged and what is synced.  Proves: a turn yields a Ready for flushing
only when it has disk work (staged but unsynced writes at the yield, nothing sent yet; a Ready
that only moves the commit index is never yielded); messages from strangers are dropped and
counted; :class:`InlineSnapshots` stores when due and its hash is the state's at that index;
:class:`DeferredSnapshots` serialises at a point, stores turns later while more entries apply,
and its ``hash_at`` is sha256 of the state *at the point* (equal to
``ReplicaState.state_hash`` recorded when that index was applied); ``request()`` gives the
hash at the applied index (also when storage already holds it, e.g. installed from the
leader); ``abandon()`` forgets a snapshot under way.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

from grenex.consensus import Message, MessageType, Ready
from grenex.replica import Replica
from grenex.replica.driver import DeferredSnapshots, InlineSnapshots, Snapshots
from grenex.replica.gateway import Fate
from grenex.sim.disk import SimDisk

from .test_gateway import ADD_MARKET, IDS, Mesh, place


def _deferred(delay: int, seed: int = 3) -> Callable[[Replica], Snapshots]:
    rng = random.Random(seed)
    return lambda rep: DeferredSnapshots(rep, rng, delay)


def test_a_turn_yields_only_readies_with_disk_work_before_sending() -> None:
    m = Mesh(storage=SimDisk)
    m.elect("a")
    a = m["a"]
    sent_at_yield: list[int] = []
    yielded: list[Ready] = []
    all_readies: list[Ready] = []
    real_ready = Replica.ready

    def ready(self: Replica) -> Ready | None:
        rd = real_ready(self)
        if rd is not None and self is a.replica:
            all_readies.append(rd)
        return rd

    Replica.ready = ready  # type: ignore[method-assign]
    try:
        for i in range(5):
            a.gateway.submit(f"t{i}", ADD_MARKET if i == 0 else place(f"o{i}"))
            before_b = len(m["b"].inbox)
            disk = a.replica.storage
            assert isinstance(disk, SimDisk)
            for rd in a.driver.turn():
                yielded.append(rd)
                sent_at_yield.append(len(m["b"].inbox) - before_b)
                assert disk.pending  # staged on the loop, not synced yet
                syncs = disk.syncs
                a.replica.flush(rd)
                assert disk.syncs == syncs + 1 and not disk.pending
            m.settle()
            m.tick()
    finally:
        Replica.ready = real_ready  # type: ignore[method-assign]
    assert yielded and all(rd.must_sync or rd.snapshot is not None for rd in yielded)
    assert sent_at_yield == [0] * len(yielded)  # the Ready's messages go after its flush
    # some Readies only moved the commit index (or only sent): never handed to flush
    assert any(not (rd.must_sync or rd.snapshot is not None) for rd in all_readies)
    assert a.fates() == {f"t{i}": Fate.APPLIED for i in range(5)}


def test_an_idle_turn_yields_nothing_and_strangers_are_dropped() -> None:
    m = Mesh()
    m.elect("a")
    b = m["b"]
    assert list(b.driver.turn()) == []
    stranger = Message(MessageType.HEARTBEAT, "zz", "b", term=99)
    assert list(b.driver.turn(0, [stranger])) == []
    assert b.driver.dropped_messages == 1 and b.replica.raft.term < 99


def test_inline_snapshots_store_when_due_with_the_hash_at_their_index() -> None:
    m = Mesh(snapshot_interval_entries=4, compaction_retain_entries=0)
    m.elect("a")
    a = m["a"]
    snaps = a.driver.snapshots
    assert isinstance(snaps, InlineSnapshots)
    a.gateway.submit("m", ADD_MARKET)
    for i in range(12):
        a.gateway.submit(f"t{i}", place(f"o{i}", side="sell" if i % 2 else "buy"))
        m.settle()
    assert snaps.taken >= 2 and snaps.stored == snaps.taken
    snap = a.replica.storage.snapshot()
    assert snaps.hash_at == (snap.index, hashlib.sha256(snap.data).hexdigest())
    assert snaps.hash_at[1] == a.hashes[snap.index]
    assert a.replica.storage.first_index() == snap.index + 1  # compacted


def test_deferred_snapshots_store_later_with_the_hash_of_the_state_at_their_point() -> None:
    m = Mesh(snapshots=_deferred(6), snapshot_interval_entries=3, compaction_retain_entries=0)
    m.elect("a")
    a = m["a"]
    snaps = a.driver.snapshots
    assert isinstance(snaps, DeferredSnapshots)
    a.gateway.submit("m", ADD_MARKET)
    m.settle()
    points: list[int] = []
    stored_while_ahead = 0
    for i in range(40):
        a.gateway.submit(f"t{i}", place(f"o{i}", side="sell" if i % 2 else "buy"))
        for _ in range(50):  # one turn of a at a time, checking after each
            taken, stored, pending = snaps.taken, snaps.stored, snaps._pending
            m.turn("a")
            if snaps.stored > stored:
                assert pending is not None
                snap = a.replica.storage.snapshot()
                assert snap.index == pending[0][0] == points[-1]
                if a.replica.applied_index > snap.index:
                    stored_while_ahead += 1  # more entries were applied meanwhile
                assert snaps.hash_at == (snap.index, a.hashes[snap.index])
                assert snaps.hash_at[1] == hashlib.sha256(snap.data).hexdigest()
            if snaps.taken > taken:
                assert snaps._pending is not None
                points.append(snaps._pending[0][0])
                assert points[-1] == a.replica.applied_index
                assert a.replica.storage.snapshot().index < points[-1]  # not stored yet
            for n in ("b", "c"):
                m.turn(n)
            if not any(m[n].inbox for n in IDS):
                break
    assert len(points) >= 3 and stored_while_ahead >= 2
    assert a.fates() == {"m": Fate.APPLIED} | {f"t{i}": Fate.APPLIED for i in range(40)}


def test_abandoned_deferred_snapshot_is_never_stored() -> None:
    m = Mesh(snapshots=_deferred(50), snapshot_interval_entries=2)
    m.elect("a")
    a = m["a"]
    snaps = a.driver.snapshots
    assert isinstance(snaps, DeferredSnapshots)
    a.gateway.submit("m", ADD_MARKET)
    a.gateway.submit("t", place("o1"))
    m.settle()
    assert snaps.taken == 1 and snaps._running()
    snaps.abandon()
    assert not snaps._running()
    m.settle()
    assert snaps.stored == 0 and a.replica.storage.snapshot().index == 0


def test_request_gives_the_hash_at_the_applied_index() -> None:
    makers: list[Callable[[Replica], Snapshots]] = [InlineSnapshots, _deferred(3)]
    for make in makers:
        m = Mesh(snapshots=make)  # the interval is far away
        m.elect("a")
        a = m["a"]
        a.gateway.submit("m", ADD_MARKET)
        a.gateway.submit("t", place("o1"))
        m.settle()
        snaps = a.driver.snapshots
        before = snaps.hash_at
        assert before is None
        snaps.request()
        for _ in range(5):
            m.turn("a")
        assert snaps.hash_at == (a.replica.applied_index, a.replica.state_hash())
        # asked again with nothing new applied: storage already holds it, the same answer
        snaps.request()
        m.turn("a")
        assert snaps.hash_at == (a.replica.applied_index, a.replica.state_hash())
        assert snaps.taken == 1


def test_request_after_installing_the_leaders_snapshot() -> None:
    m = Mesh(snapshot_interval_entries=3, compaction_retain_entries=0)
    m.elect("a")
    m.cut = ["c"]
    a = m["a"]
    a.gateway.submit("m", ADD_MARKET)
    for i in range(7):  # a's last snapshot lands on its last entry (12)
        a.gateway.submit(f"t{i}", place(f"o{i}"))
        m.settle()
    assert a.replica.storage.first_index() > 5
    m.cut = []
    m.tick(3)
    c = m["c"]
    snaps = c.driver.snapshots
    assert c.replica.snapshots_installed == 1
    assert c.replica.applied_index == c.replica.storage.snapshot().index == 12
    assert snaps.hash_at is not None and snaps.hash_at[0] < 12  # its own, from before
    taken = snaps.taken
    snaps.request()
    m.turn("c")
    assert snaps.taken == taken  # nothing to serialise: storage holds the state at 12
    assert snaps.hash_at == (12, c.replica.state_hash())
    assert c.replica.state_hash() == a.replica.state_hash()
