"""The leader's view of each member: how much of the log it holds and how to feed it.

A member's progress is in one of three states (as in etcd):

* PROBE: we do not know where its log matches ours.  Send one append at a time and wait for
  the answer (or the next heartbeat answer) before sending another.
* REPLICATE: its log matches up to ``match``; stream appends optimistically (``next`` moves on
  as we send), at most ``inflight_messages_max`` unacknowledged messages at once.
* SNAPSHOT: the entries it needs are compacted; a snapshot is on its way.  Nothing else is
  sent until it is acknowledged, or ``snapshot_retry_ticks`` pass (the snapshot may be lost).
"""

from __future__ import annotations

import enum
from collections import deque

__all__ = ["Progress", "ProgressState"]


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Progress:
    __slots__ = (
        "awaits",
        "commit_told",
        "inflight",
        "inflight_max",
        "is_learner",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "snapshot_ticks",
        "state",
    )

    def __init__(self, next_index: int, inflight_max: int, is_learner: bool) -> None:
        assert inflight_max >= 1
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_ticks = 0
        self.recent_active = False
        self.is_learner = is_learner
        self.inflight_max = inflight_max
        # Last index of each unacknowledged append, oldest first (bounded by inflight_max).
        self.inflight: deque[int] = deque()
        # The commit index last sent to the member (an append's or a heartbeat's), and the
        # last entry it forwarded to us (it waits for that entry's commit to answer a client):
        # a new commit index goes out at once only to a member that waits for it (raft.py,
        # "Commit notices").
        self.commit_told = 0
        self.awaits = 0

    def __repr__(self) -> str:
        return (
            f"Progress({self.state.name} match={self.match} next={self.next}"
            f" inflight={len(self.inflight)}{' learner' if self.is_learner else ''})"
        )

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            # The snapshot may have arrived: probe just past it (a reject sends us lower).
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflight.clear()

    def become_snapshot(self, index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_ticks = 0
        self.probe_sent = False
        self.inflight.clear()

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return len(self.inflight) >= self.inflight_max
        return True

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to ``index``; True if it moved ``match``."""
        updated = False
        if index > self.match:
            self.match = index
            updated = True
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the append at ``rejected``; False if it is stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False  # answers an append older than what is already acknowledged
            self.next = max(min(rejected, match_hint + 1), self.match + 1)
            return True
        if self.next - 1 != rejected:
            return False  # not the probe we are waiting for
        self.next = max(min(rejected, match_hint + 1), self.match + 1, 1)
        self.probe_sent = False
        return True

    def sent_entries(self, last_index: int | None) -> None:
        """Bookkeeping after sending an append whose last entry is ``last_index`` (None: none)."""
        if self.state == ProgressState.REPLICATE:
            if last_index is not None:
                self.next = last_index + 1
                self.inflight.append(last_index)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True

    def free_to(self, index: int) -> None:
        """Forget in-flight appends acknowledged by an answer up to ``index``."""
        inflight = self.inflight
        while inflight and inflight[0] <= index:
            inflight.popleft()
