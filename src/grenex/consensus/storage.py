"""The storage interface the consensus core reads from, and an in-memory implementation.

The core only *reads* storage (to serve entries and terms that are already persisted, and the
latest snapshot).  The driver *writes* it, following the Ready contract (see ``raft.Ready``):
``apply_snapshot``, ``append``, ``set_hard_state``, then ``sync`` — nothing counts as durable
before ``sync`` returns.  Compaction is the application's choice: after it stores a snapshot
with ``create_snapshot(index, ...)`` it may ``compact(i)`` for any ``i <= index``.

Index arithmetic (same as etcd): the storage keeps a *dummy* position just below its first
entry whose term is known, so ``term(first_index() - 1)`` always answers; this is the index
of the last compaction (or of the snapshot installed).  ``last_index() == first_index() - 1``
means the log holds no entries.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Protocol

from grenex.consensus.types import (
    EMPTY_HARD_STATE,
    CompactedError,
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Snapshot,
    UnavailableError,
    encode_conf_change,
)

__all__ = ["ENTRY_OVERHEAD_BYTES", "MemoryStorage", "Storage", "bootstrap", "entry_size"]

# Bytes counted per entry on top of its data when bounding messages: index, term, kind, framing.
ENTRY_OVERHEAD_BYTES = 24


def entry_size(e: Entry) -> int:
    return len(e.data) + ENTRY_OVERHEAD_BYTES


class Storage(Protocol):
    """What the consensus core needs from storage (read side) and the driver writes (write side).

    Read side (called by the core at any time):

    * ``initial_state()``: the persisted hard state and the membership of the latest snapshot.
    * ``first_index()``/``last_index()``: the stored entries are ``[first, last]``.
    * ``term(i)`` for ``first-1 <= i <= last``; raises CompactedError below, UnavailableError above.
    * ``entries(lo, hi, bytes_max)``: entries ``[lo, hi)``, at least one if any, then as many
      as fit in ``bytes_max`` (counted with :func:`entry_size`).
    * ``snapshot()``: the latest snapshot (may raise SnapshotUnavailableError).

    Write side (called by the driver only, in Ready order):

    * ``apply_snapshot(snap)``: replace everything by the snapshot (the log restarts after it).
    * ``append(entries)``: contiguous entries; the first may be at or below ``last_index()``,
      in which case the stored suffix from there on is discarded first (conflict truncation).
    * ``set_hard_state(hs)``.
    * ``sync()``: make everything written so far durable (one fsync for the whole batch).
    * ``create_snapshot(index, conf, data)``: store a snapshot of the state machine at an
      applied ``index``; ``compact(index)``: drop entries up to ``index`` (at most the
      snapshot's index).
    """

    def initial_state(self) -> tuple[HardState, ConfState]: ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def term(self, index: int) -> int: ...

    def entries(self, lo: int, hi: int, bytes_max: int) -> list[Entry]: ...

    def snapshot(self) -> Snapshot: ...

    def apply_snapshot(self, snap: Snapshot) -> None: ...

    def append(self, entries: Sequence[Entry]) -> None: ...

    def set_hard_state(self, hs: HardState) -> None: ...

    def sync(self) -> None: ...

    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> Snapshot: ...

    def compact(self, index: int) -> None: ...


class MemoryStorage:
    """Storage held in memory: for tests, benchmarks, and as the read cache of the durable one.

    ``_ents[0]`` is the dummy entry at the compaction point (its index and term), so entry ``i``
    lives at ``_ents[i - _ents[0].index]``.
    """

    __slots__ = ("_ents", "_hard", "_snap")

    def __init__(self) -> None:
        self._hard = EMPTY_HARD_STATE
        self._snap = Snapshot(0, 0, ConfState(), b"")
        self._ents: list[Entry] = [Entry(0, 0, EntryKind.NOOP, b"")]

    # -- read side ---------------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard, self._snap.conf

    def hard_state(self) -> HardState:
        return self._hard

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def term(self, index: int) -> int:
        offset = self._ents[0].index
        if index < offset:
            raise CompactedError(f"index {index} below {offset}")
        if index - offset >= len(self._ents):
            raise UnavailableError(f"index {index} beyond {self.last_index()}")
        return self._ents[index - offset].term

    def entries(self, lo: int, hi: int, bytes_max: int) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise CompactedError(f"index {lo} compacted (first {offset + 1})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"entries up to {hi - 1} beyond {self.last_index()}")
        ents = self._ents[lo - offset : hi - offset]
        return limit_size(ents, bytes_max)

    def snapshot(self) -> Snapshot:
        return self._snap

    def all_entries(self) -> list[Entry]:
        """The stored entries (a copy); for checkers and tests."""
        return self._ents[1:]

    # -- write side --------------------------------------------------------------------------

    def apply_snapshot(self, snap: Snapshot) -> None:
        assert snap.index >= self._snap.index, (snap.index, self._snap.index)
        self._snap = snap
        self._ents = [Entry(snap.index, snap.term, EntryKind.NOOP, b"")]

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        first = entries[0].index
        offset = self._ents[0].index
        assert first > offset, f"append at {first} at or below the compaction point {offset}"
        assert first <= self.last_index() + 1, f"gap: append at {first}, last {self.last_index()}"
        del self._ents[first - offset :]
        self._ents.extend(entries)

    def set_hard_state(self, hs: HardState) -> None:
        self._hard = hs

    def sync(self) -> None:
        pass

    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> Snapshot:
        assert self._snap.index <= index <= self.last_index(), (index, self.last_index())
        snap = Snapshot(index, self.term(index), conf, data)
        self._snap = snap
        return snap

    def compact(self, index: int) -> None:
        offset = self._ents[0].index
        if index <= offset:
            return
        assert index <= self._snap.index, "compact only below a stored snapshot"
        assert index <= self.last_index()
        del self._ents[: index - offset]
        dummy = self._ents[0]
        self._ents[0] = Entry(dummy.index, dummy.term, EntryKind.NOOP, b"")

    @classmethod
    def from_parts(cls, hard: HardState, snap: Snapshot, ents: list[Entry]) -> MemoryStorage:
        """Reassemble (used by durable storage on open): ``ents[0]`` is the dummy entry at the
        compaction point (only its index and term matter), the rest contiguous after it."""
        assert ents and ents[0].index <= snap.index, (ents[:1], snap.index)
        for a, b in itertools.pairwise(ents):
            assert b.index == a.index + 1, (a.index, b.index)
        m = cls()
        m._hard = hard
        m._snap = snap
        d = ents[0]
        m._ents = [Entry(d.index, d.term, EntryKind.NOOP, b""), *ents[1:]]
        return m

    def clone(self) -> MemoryStorage:
        """An independent copy (entries are immutable, so the list copy suffices)."""
        c = MemoryStorage()
        c._hard = self._hard
        c._snap = self._snap
        c._ents = list(self._ents)
        return c


def limit_size(ents: list[Entry], bytes_max: int) -> list[Entry]:
    """The longest prefix of ``ents`` within ``bytes_max`` (at least one entry)."""
    if len(ents) <= 1:
        return ents
    total = 0
    for i, e in enumerate(ents):
        total += len(e.data) + ENTRY_OVERHEAD_BYTES
        if total > bytes_max and i > 0:
            return ents[:i]
    return ents


def bootstrap(storage: Storage, voters: Sequence[str]) -> None:
    """Write the first entries of a brand-new cluster: one ADD_VOTER per voter at term 1.

    Every founding voter runs this with the same list, so their logs start identical and
    already committed.  The membership lives in the log (not only in a snapshot) so that a
    learner which later receives the log from index 1 learns the founding voters too.
    """
    assert storage.last_index() == 0, "bootstrap needs empty storage"
    ids = sorted(voters)
    assert ids and len(set(ids)) == len(ids), ids
    ents = [
        Entry(i + 1, 1, EntryKind.CONFIG, encode_conf_change(ConfChange(ConfChangeOp.ADD_VOTER, n)))
        for i, n in enumerate(ids)
    ]
    storage.append(ents)
    storage.set_hard_state(HardState(1, None, len(ents)))
    storage.sync()
