"""The core's view of the log: stable entries in storage plus an unstable tail in memory.

Theory of operation
-------------------
Entries the core has appended (as leader) or accepted (as follower) but the driver has not yet
persisted live in ``unstable`` starting at ``offset``; everything below ``offset`` is read from
storage.  An incoming snapshot waits in ``pending_snapshot`` until persisted.  A conflict
truncation only touches the unstable tail: if it reaches below ``offset``, ``offset`` moves
down and the storage's stale suffix is simply shadowed until the driver's next ``append``
(which truncates storage too).

Positions, always ``applied <= committed <= last_index()``:

* ``committed``: known committed (by counting or from the leader).
* ``applied``: handed to the application in a Ready and acknowledged by ``advance``.
"""

from __future__ import annotations

from collections.abc import Sequence

from grenex.consensus.storage import Storage, limit_size
from grenex.consensus.types import CompactedError, Entry, Snapshot, UnavailableError

__all__ = ["RaftLog"]


class RaftLog:
    __slots__ = ("applied", "committed", "offset", "pending_snapshot", "storage", "unstable")

    def __init__(self, storage: Storage, committed: int, applied: int) -> None:
        self.storage = storage
        self.offset = storage.last_index() + 1
        self.unstable: list[Entry] = []
        self.pending_snapshot: Snapshot | None = None
        self.committed = committed
        self.applied = applied
        assert applied <= committed <= self.last_index(), (applied, committed, self.last_index())

    # -- positions ---------------------------------------------------------------------------

    def first_index(self) -> int:
        if self.pending_snapshot is not None:
            return self.pending_snapshot.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self.unstable:
            return self.offset + len(self.unstable) - 1
        if self.pending_snapshot is not None:
            return self.pending_snapshot.index
        return self.storage.last_index()

    def term(self, index: int) -> int | None:
        """The term at ``index``, or None when compacted or beyond the end."""
        if index >= self.offset:
            i = index - self.offset
            if i < len(self.unstable):
                return self.unstable[i].term
            return None  # beyond the end (a pending snapshot sits at offset - 1)
        if self.pending_snapshot is not None:
            if index == self.pending_snapshot.index:
                return self.pending_snapshot.term
            return None  # below a pending snapshot: compacted
        try:
            return self.storage.term(index)
        except (CompactedError, UnavailableError):
            return None

    def last_term(self) -> int:
        t = self.term(self.last_index())
        assert t is not None
        return t

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: is a candidate's log at least as up to date as ours?"""
        lt = self.last_term()
        return last_term > lt or (last_term == lt and last_index >= self.last_index())

    # -- reading entries ---------------------------------------------------------------------

    def entries(self, lo: int, hi: int, bytes_max: int, count_max: int) -> list[Entry] | None:
        """Entries ``[lo, hi)`` bounded by size and count, or None when ``lo`` is compacted."""
        if lo > self.last_index():
            return []
        hi = min(hi, self.last_index() + 1, lo + count_max)
        if lo < self.first_index():
            return None
        out: list[Entry] = []
        if lo < self.offset:
            try:
                out = self.storage.entries(lo, min(hi, self.offset), bytes_max)
            except CompactedError:
                return None
            if len(out) < min(hi, self.offset) - lo:
                return out  # the size bound cut it
        if hi > self.offset:
            a = max(lo, self.offset) - self.offset
            more = self.unstable[a : hi - self.offset]
            if out:
                out = limit_size(out + more, bytes_max)
            else:
                out = limit_size(more, bytes_max)
        return out

    def next_committed(self, count_max: int) -> list[Entry]:
        """Committed entries not yet handed out, at most ``count_max`` of them."""
        if self.pending_snapshot is not None or self.committed <= self.applied:
            return []
        hi = min(self.committed, self.applied + count_max) + 1
        ents = self.entries(self.applied + 1, hi, 1 << 62, count_max)
        assert ents, f"committed entries {self.applied + 1}..{hi - 1} unavailable"
        return ents

    def find_conflict(self, ents: Sequence[Entry]) -> int:
        """Index of the first entry that is new or conflicts with our log; 0 when none."""
        for e in ents:
            if self.term(e.index) != e.term:
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= ``index`` whose term is <= ``term``, with that term.

        Used by both sides of a rejected append so that the leader backs off a whole term
        per round trip instead of one entry.  An unknown (compacted) term stops the walk with
        term 0, meaning "maybe".
        """
        index = min(index, self.last_index())
        while index > 0:
            t = self.term(index)
            if t is None:
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    # -- changing the log --------------------------------------------------------------------

    def append(self, ents: Sequence[Entry]) -> None:
        """Append, truncating whatever our log holds from ``ents[0].index`` on."""
        if not ents:
            return
        after = ents[0].index
        assert after > self.committed, f"truncating committed entries at {after}"
        if after == self.offset + len(self.unstable):
            self.unstable.extend(ents)
        elif after <= self.offset:
            # Replaces the whole unstable tail and shadows storage from ``after`` on.
            self.offset = after
            self.unstable = list(ents)
        else:
            del self.unstable[after - self.offset :]
            self.unstable.extend(ents)

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, ents: Sequence[Entry]
    ) -> int | None:
        """A follower's handling of an append: the last new index, or None if the log does not
        match at ``prev_index``."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            assert ci > self.committed, f"conflict at {ci} <= committed {self.committed}"
            self.append(ents[ci - prev_index - 1 :])
        self.commit_to(min(commit, last_new))
        return last_new

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            assert index <= self.last_index(), (index, self.last_index())
            self.committed = index

    def restore(self, snap: Snapshot) -> None:
        """Replace the whole log by a snapshot (follower install)."""
        self.committed = snap.index
        self.offset = snap.index + 1
        self.unstable = []
        self.pending_snapshot = snap

    # -- after the driver persisted a Ready ---------------------------------------------------

    def unstable_entries(self) -> list[Entry]:
        return list(self.unstable)

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to ``index`` (with ``term`` there) are now in storage."""
        i = index - self.offset
        if 0 <= i < len(self.unstable) and self.unstable[i].term == term:
            del self.unstable[: i + 1]
            self.offset = index + 1

    def stable_snapshot_to(self, index: int) -> None:
        if self.pending_snapshot is not None and self.pending_snapshot.index == index:
            self.pending_snapshot = None

    def applied_to(self, index: int) -> None:
        assert self.applied <= index <= self.committed, (self.applied, index, self.committed)
        self.applied = index
