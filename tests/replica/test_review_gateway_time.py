"""Review: the leader's stamp, max(clock, the previous entry's time), across leader changes.

``Gateway._log_time`` remembers the newest time per *last log index* only
(``_time_checked_at``).  A node that led, lost its uncommitted tail to another leader's
entries and leads again can find its log ending at the very index it last looked at, though
the entries there are now another leader's — with a newer stamp it has never read.  Then it
stamps with its remembered (older) time and its clock: the committed log's times go back.

In Raft terms (3 voters A, B, C; C's clock ahead):

1. A leads in term 2, its log 1..5 committed, 6 its no-op; it proposes 7 and 8, then 9 — the
   gateway looked at the log when it ended at 8 — and is cut off: 6..9 never commit;
2. C leads in term 3 (log 1..5): no-op at 6, a command at 7 stamped by C's clock (50 s ahead);
   A comes back and takes C's 6 and 7 (its 6..9 are truncated); C dies before it commits;
3. A leads in term 4 (its log is the longest): its no-op lands at 8 — the index the gateway
   last looked at — and the next command is stamped with A's clock, before entry 7's time.

The fake core below plays exactly that log (the gateway reads nothing else of the core: role,
leader, ``propose_many`` and the log's indexes, terms and entries).  Keying the memo by the last
entry's (index, term) — Raft's log matching: equal index and term, equal logs up to there —
fixes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from grenex.codec import encode_json
from grenex.codec.stamp import stamp, unstamp
from grenex.consensus import Entry, EntryKind, Role
from grenex.replica import Replica
from grenex.replica.gateway import Forward, Gateway


class _Log:
    def __init__(self) -> None:
        self.ents: list[Entry] = []

    def first_index(self) -> int:
        return 1

    def last_index(self) -> int:
        return self.ents[-1].index if self.ents else 0

    def term(self, index: int) -> int | None:
        if index == 0:
            return 0
        if 1 <= index <= len(self.ents):
            return self.ents[index - 1].term
        return None

    def last_term(self) -> int:
        return self.ents[-1].term if self.ents else 0

    def entries(self, lo: int, hi: int, bytes_max: int, count_max: int) -> list[Entry] | None:
        return [e for e in self.ents if lo <= e.index < hi][:count_max]

    def truncate_to(self, last: int) -> None:
        del self.ents[last:]

    def add(self, term: int, kind: int, data: bytes) -> None:
        self.ents.append(Entry(self.last_index() + 1, term, kind, data))


class _Raft:
    def __init__(self) -> None:
        self.log = _Log()
        self.role = Role.FOLLOWER
        self.lead: str | None = None
        self.term = 1

    def propose_many(self, datas: Sequence[bytes]) -> tuple[int, int]:
        first = self.log.last_index() + 1
        for d in datas:
            self.log.add(self.term, EntryKind.NORMAL, d)
        return first, self.term

    def lead_now(self, me: str, term: int) -> None:
        self.term, self.role, self.lead = term, Role.LEADER, me
        self.log.add(term, EntryKind.NOOP, b"")


class _Replica:
    def __init__(self) -> None:
        self.raft = _Raft()


def _cmd(i: int) -> bytes:
    return encode_json({"type": "cancel", "client": "c", "id": f"o{i}"})


def _times(log: _Log) -> list[tuple[int, int]]:
    out = []
    for e in log.ents:
        t, _ = unstamp(e.data) if e.kind == EntryKind.NORMAL else (None, b"")
        if t is not None:
            out.append((e.index, t))
    return out


def test_review_times_never_go_back_after_a_lost_tail_and_a_new_leadership() -> None:
    fake = _Replica()
    replica = cast(Replica, fake)
    raft, log = fake.raft, fake.raft.log
    for i in range(5):  # 1..5, committed, stamped at 1 s
        log.add(1, EntryKind.NORMAL, stamp(1_000, _cmd(i)))
    gw: Gateway[int] = Gateway("a")
    gw.applied([], 5)

    # 1. A leads in term 2: no-op 6, proposes 7+8, then 9 (looked at the log ending at 8)
    raft.lead_now("a", 2)
    gw.submit(1, _cmd(10))
    gw.submit(2, _cmd(11))
    gw.pump(replica, 2_000)
    gw.submit(3, _cmd(12))
    gw.pump(replica, 2_000)
    assert log.last_index() == 9
    # 2. C leads in term 3; A takes C's no-op 6 and command 7 (C's clock 50 s ahead)
    raft.role, raft.lead = Role.FOLLOWER, "c"
    gw.pump(replica, 2_100)
    assert not [o for o in gw.take() if isinstance(o, Forward)]  # nothing left to forward
    log.truncate_to(5)
    log.add(3, EntryKind.NOOP, b"")
    log.add(3, EntryKind.NORMAL, stamp(52_000, _cmd(20)))
    # 3. A leads in term 4: its no-op lands at 8, the index its gateway last looked at
    raft.lead_now("a", 4)
    assert log.last_index() == 8
    gw.submit(4, _cmd(13))
    gw.pump(replica, 2_200)
    times = _times(log)
    assert times[-2] == (7, 52_000)
    assert times[-1][0] == 9
    assert times[-1][1] >= 52_000, times  # the previous entry's time, not A's clock
