"""The one driver turn, shared by the asyncio node and the simulator; and snapshot taking.

Theory of operation
-------------------
A node's replica is touched by one loop only: the driver.  A *turn* takes everything that
arrived since the last one, in a fixed order, and carries out the Ready contract until the
consensus core is idle:

1. inputs: ``ticks`` (replica and gateway), consensus messages (``Replica.step`` drops what a
   member must not believe), reports (unreachable peers, snapshot sends), gateway inputs (the
   shell calls those directly between turns: they only queue);
2. ``gateway.pump`` — propose here or forward to the leader, answer forwarders;
3. per Ready: **stage** (in memory, on the loop) → **flush** (write + fsync: the turn *yields*
   :data:`FLUSH` and the shell runs ``replica.flush(rd)`` however it likes — in a thread in
   the node, inline in the simulator, which may crash the disk there) → **send** →
   **apply** → the gateway learns the outcomes → ``on_applied`` (publisher, trade tape);
4. snapshots: :meth:`Snapshots.step`, between Readies, never during one.

:func:`Driver.turn` is a generator so that both shells run the very same sequence::

    for rd in driver.turn(ticks, msgs, reports):      # node
        await asyncio.to_thread(replica.flush, rd)
    for rd in driver.turn(ticks, msgs, reports):      # simulator
        replica.flush(rd)

Snapshots (:class:`Snapshots`): taken when ``snapshot_interval_entries`` were applied since the
last one, or when asked (:meth:`Snapshots.request`, for the state hash of ``status``).  A
snapshot's bytes are serialised at a *point* (applied index + membership) captured between
turns; storing them (``Replica.store_snapshot``) and compacting may happen turns later, while
more entries are applied.  Three ways to serialise, one protocol: :class:`InlineSnapshots`
(now, on the driver), :class:`DeferredSnapshots` (the simulator: the bytes are taken at the
point and stored a seeded number of turns later, so it exercises the interleaving of the
node's forked child), and the node's forked child (``grenex.node.snapshots``).  Every snapshot
yields the **state hash at its index** (sha256 of its bytes), so ``status`` reports a hash with
the index it belongs to and never hashes the whole state on the request path.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from grenex.consensus import ConfState, Message, Ready
from grenex.replica.gateway import Gateway
from grenex.replica.replica import Applied, Replica

__all__ = [
    "DeferredSnapshots",
    "Driver",
    "InlineSnapshots",
    "Snapshots",
]

T = TypeVar("T")

Point = tuple[int, ConfState]


class Snapshots:
    """When to snapshot, what to do with finished ones, the state hash they give.

    Subclasses say how the bytes are made: :meth:`_start` begins serialising at ``point``;
    :meth:`_running` says whether one is under way; :meth:`_finished` hands over finished
    ``(point, bytes)`` once."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.hash_at: tuple[int, str] | None = None  # (index, state hash) of the newest
        self.requested = False
        self.taken = 0
        self.stored = 0

    def request(self) -> None:
        """Ask for a snapshot (and so a state hash) at the applied index, soon."""
        self.requested = True

    def replace_replica(self, replica: Replica) -> None:
        self.replica = replica

    def step(self) -> None:
        """Between driver turns: store a finished snapshot; start the next one when due."""
        done = self._finished()
        if done is not None:
            point, data = done
            self._record(point[0], data)
            if self.replica.store_snapshot(point, data):
                self.stored += 1
        if self._running():
            return
        replica = self.replica
        applied = replica.applied_index
        if not (replica.snapshot_due() or self.requested):
            return
        self.requested = False
        at = replica.snapshot_point()
        if at is None:
            # storage already holds a snapshot at the applied index (installed or taken)
            snap = replica.storage.snapshot()
            if snap.index == applied and (self.hash_at is None or self.hash_at[0] != applied):
                self._record(applied, snap.data)
            return
        self.taken += 1
        self._start(at)

    def _record(self, index: int, data: bytes) -> None:
        if self.hash_at is None or index >= self.hash_at[0]:
            self.hash_at = (index, hashlib.sha256(data).hexdigest())

    # -- how the bytes are made ----------------------------------------------------------------

    def _start(self, point: Point) -> None:
        raise NotImplementedError

    def _running(self) -> bool:
        raise NotImplementedError

    def _finished(self) -> tuple[Point, bytes] | None:
        raise NotImplementedError


class InlineSnapshots(Snapshots):
    """Serialise on the driver, at once."""

    def __init__(self, replica: Replica) -> None:
        super().__init__(replica)
        self._done: tuple[Point, bytes] | None = None

    def _start(self, point: Point) -> None:
        data = self.replica.state.snapshot()
        self._record(point[0], data)
        if self.replica.store_snapshot(point, data):
            self.stored += 1

    def _running(self) -> bool:
        return False

    def _finished(self) -> tuple[Point, bytes] | None:
        return None


class DeferredSnapshots(Snapshots):
    """The simulator's stand-in for the forked child: the bytes are the state at the point
    (what the child's copy-on-write image holds), handed over ``1..delay_turns_max`` turns
    later (drawn from the simulation's seed), while the replica goes on applying."""

    def __init__(self, replica: Replica, rng: random.Random, delay_turns_max: int) -> None:
        super().__init__(replica)
        self.rng = rng
        self.delay_turns_max = max(1, delay_turns_max)
        self._pending: tuple[Point, bytes] | None = None
        self._turns_left = 0

    def _start(self, point: Point) -> None:
        self._pending = (point, self.replica.state.snapshot())
        self._turns_left = self.rng.randint(1, self.delay_turns_max)

    def _running(self) -> bool:
        return self._pending is not None

    def _finished(self) -> tuple[Point, bytes] | None:
        if self._pending is None:
            return None
        self._turns_left -= 1
        if self._turns_left > 0:
            return None
        done, self._pending = self._pending, None
        return done

    def abandon(self) -> None:
        """The node crashed: a child dies with it."""
        self._pending = None


class Driver(Generic[T]):
    """One node's driver: see the module docstring.  ``send`` ships a consensus message (after
    the flush of its Ready); ``on_applied`` sees every applied entry once (publisher, tape)."""

    def __init__(
        self,
        replica: Replica,
        gateway: Gateway[T],
        snapshots: Snapshots,
        send: Callable[[Message], None],
        on_applied: Callable[[list[Applied]], None] | None = None,
    ) -> None:
        self.replica = replica
        self.gateway = gateway
        self.snapshots = snapshots
        self.send = send
        self.on_applied = on_applied
        self.dropped_messages = 0
        self.turns = 0

    def turn(
        self,
        ticks: int = 0,
        messages: list[Message] | None = None,
        reports: list[tuple[str, bool | None]] | None = None,
        now_ms: int = 0,
        commit_upto: int = 0,
    ) -> Iterator[Ready]:
        """One turn; yields each Ready whose disk work the shell must flush (see above).
        ``now_ms``: the node's wall clock (the simulator's time), for the leader's stamps.
        ``commit_upto``: send the deferred commit notices (``Raft.send_commit``): the
        commit index when an earlier turn ended with :meth:`commit_deferred`."""
        self.turns += 1
        replica, gateway = self.replica, self.gateway
        for _ in range(ticks):
            replica.tick()
            gateway.tick()
        if messages:
            for m in messages:
                if not replica.step(m):
                    self.dropped_messages += 1
        if reports:
            raft = replica.raft
            for peer, ok in reports:
                if ok is None:
                    raft.report_unreachable(peer)
                else:
                    raft.report_snapshot(peer, ok)
        if commit_upto:
            replica.raft.send_commit(commit_upto)
        gateway.pump(replica, now_ms)
        while True:
            rd = replica.ready()
            if rd is None:
                break
            if replica.stage(rd):
                yield rd
            for m in rd.messages:
                self.send(m)
            applied = replica.apply(rd)
            if applied:
                gateway.applied(applied, replica.applied_index)
                if self.on_applied is not None:
                    self.on_applied(applied)
            gateway.pump(replica, now_ms)
        self.snapshots.step()

    def commit_deferred(self) -> int:
        """After a turn: the commit index to pass as a later turn's ``commit_upto`` when a
        member has not been sent it (see "Commit notices" in ``consensus/raft.py``), else 0."""
        raft = self.replica.raft
        return raft.log.committed if raft.commit_deferred else 0
