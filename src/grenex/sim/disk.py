"""A simulated disk: the consensus storage interface with a sync point and crash semantics.

Writes go to ``live`` (what the running node reads) and to a journal of unsynced operations.
``sync()`` replays the journal onto ``durable``.  ``crash(rng)`` keeps ``durable`` plus a random
*prefix* of the unsynced journal (a write that reached the platter is kept, later ones are
not, as with an append-only file cut at a random point) and discards the rest; the node
restarts from that.  ``fail_next_sync`` makes the next ``sync()`` raise :class:`DiskCrash`
instead: the node dies in the middle of persisting a Ready, before sending anything.

Snapshots created by the application are treated as durable at once (the real storage writes
them to a temporary file, fsyncs, renames and fsyncs the directory before returning), and so
is compaction (losing it would be harmless anyway).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from grenex.consensus import ConfState, Entry, HardState, MemoryStorage, Snapshot

__all__ = ["DiskCrash", "SimDisk"]


class DiskCrash(Exception):  # noqa: N818 (an event of the simulation, not an error)
    """Raised by ``sync()`` when the simulation crashes the node mid-persist."""


_Op = tuple[str, object]


class SimDisk:
    __slots__ = ("durable", "fail_next_sync", "live", "pending", "syncs")

    def __init__(self) -> None:
        self.live = MemoryStorage()
        self.durable = MemoryStorage()
        self.pending: list[_Op] = []
        self.fail_next_sync = False
        self.syncs = 0

    # -- read side: the live view ------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.live.initial_state()

    def first_index(self) -> int:
        return self.live.first_index()

    def last_index(self) -> int:
        return self.live.last_index()

    def term(self, index: int) -> int:
        return self.live.term(index)

    def entries(self, lo: int, hi: int, bytes_max: int) -> list[Entry]:
        return self.live.entries(lo, hi, bytes_max)

    def snapshot(self) -> Snapshot:
        return self.live.snapshot()

    # -- write side ---------------------------------------------------------------------------

    def apply_snapshot(self, snap: Snapshot) -> None:
        self.live.apply_snapshot(snap)
        self.pending.append(("snap", snap))

    def append(self, entries: Sequence[Entry]) -> None:
        if entries:
            self.live.append(entries)
            self.pending.append(("append", list(entries)))

    def set_hard_state(self, hs: HardState) -> None:
        self.live.set_hard_state(hs)
        self.pending.append(("hs", hs))

    def sync(self) -> None:
        if self.fail_next_sync:
            self.fail_next_sync = False
            raise DiskCrash
        for op in self.pending:
            _replay(self.durable, op)
        self.pending.clear()
        self.syncs += 1

    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> Snapshot:
        snap = self.live.create_snapshot(index, conf, data)
        # Durable at once (atomic file write in the real storage); ``durable`` holds the entry
        # at ``index`` because it was synced before it was applied.
        self.durable.create_snapshot(index, conf, data)
        return snap

    def compact(self, index: int) -> None:
        self.live.compact(index)
        self.durable.compact(min(index, self.durable.snapshot().index))

    # -- faults -------------------------------------------------------------------------------

    def crash(self, rng: random.Random) -> int:
        """Lose unsynced writes except a random prefix; returns how many operations were lost."""
        keep = rng.randrange(len(self.pending) + 1)
        for op in self.pending[:keep]:
            _replay(self.durable, op)
        lost = len(self.pending) - keep
        self.pending.clear()
        self.fail_next_sync = False
        self.live = self.durable.clone()
        return lost


def _replay(st: MemoryStorage, op: _Op) -> None:
    kind, arg = op
    if kind == "append":
        assert isinstance(arg, list)
        st.append(arg)
    elif kind == "hs":
        assert isinstance(arg, HardState)
        st.set_hard_state(arg)
    else:
        assert isinstance(arg, Snapshot)
        st.apply_snapshot(arg)
