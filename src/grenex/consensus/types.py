"""Values of the consensus core: entries, messages, hard state, membership, snapshots, errors.

Everything here is an immutable value (NamedTuple) except :class:`Message`, a slotted dataclass
that the core builds once and never changes after handing it out.  Node ids are strings; sets of
ids are kept as *sorted tuples* so that every iteration order is deterministic.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "CompactedError",
    "ConfChange",
    "ConfChangeOp",
    "ConfState",
    "ConsensusError",
    "Entry",
    "EntryKind",
    "HardState",
    "InvalidConfChangeError",
    "Message",
    "MessageType",
    "NotLeader",
    "ProposalDroppedError",
    "Snapshot",
    "SnapshotUnavailableError",
    "UnavailableError",
    "decode_conf_change",
    "encode_conf_change",
]


class EntryKind(enum.IntEnum):
    """What a log entry carries."""

    NORMAL = 0  # opaque application bytes (in grenex: one command's JSON)
    CONFIG = 1  # a ConfChange, encoded by encode_conf_change
    NOOP = 2  # appended by every new leader, so it can commit earlier-term entries


class Entry(NamedTuple):
    """One log entry. ``index`` starts at 1; ``term`` is the leader's term when appended."""

    index: int  # type: ignore[assignment]  # shadows tuple.index, on purpose
    term: int
    kind: int  # an EntryKind value (plain int on the hot path)
    data: bytes


class HardState(NamedTuple):
    """What must be durable before any message that depends on it is sent."""

    term: int
    vote: str | None
    commit: int


EMPTY_HARD_STATE = HardState(0, None, 0)


class ConfState(NamedTuple):
    """Membership: voters commit and elect; learners only receive the log. Sorted tuples."""

    voters: tuple[str, ...] = ()
    learners: tuple[str, ...] = ()

    def members(self) -> tuple[str, ...]:
        return tuple(sorted(self.voters + self.learners))


class Snapshot(NamedTuple):
    """The state machine at ``index`` (whose entry had ``term``) with membership ``conf``.

    ``data`` is opaque to consensus (in grenex: the replica's canonical snapshot bytes).
    Index 0 is the empty snapshot every log starts from.
    """

    index: int  # type: ignore[assignment]  # shadows tuple.index, on purpose
    term: int
    conf: ConfState
    data: bytes


class ConfChangeOp(enum.IntEnum):
    ADD_LEARNER = 0  # a new member that receives the log but does not vote
    PROMOTE = 1  # learner -> voter
    REMOVE = 2  # voter or learner leaves
    ADD_VOTER = 3  # used by bootstrap (and allowed later); prefer ADD_LEARNER then PROMOTE
    # A member that lost its log asks to come back: it is a learner from this entry on (a voter
    # is demoted, a learner stays one), and ``tag`` names the incarnation that asked, so that
    # this node knows a later promotion of itself is newer than anything it lost (raft.py).
    REJOIN = 4


class ConfChange(NamedTuple):
    """One-server membership change, carried by an EntryKind.CONFIG entry.

    ``tag`` is only for REJOIN (the asking incarnation; no spaces); empty otherwise."""

    op: ConfChangeOp
    node: str
    tag: str = ""


_OP_NAMES = {
    ConfChangeOp.ADD_LEARNER: b"add_learner",
    ConfChangeOp.PROMOTE: b"promote",
    ConfChangeOp.REMOVE: b"remove",
    ConfChangeOp.ADD_VOTER: b"add_voter",
    ConfChangeOp.REJOIN: b"rejoin",
}
_OPS_BY_NAME = {v: k for k, v in _OP_NAMES.items()}


def encode_conf_change(cc: ConfChange) -> bytes:
    """``b"<op> <node>"`` (``b"rejoin <node> <tag>"``): readable in a log dump; ids and tags
    contain no spaces."""
    assert cc.node and " " not in cc.node, cc.node
    out = _OP_NAMES[cc.op] + b" " + cc.node.encode()
    if cc.op == ConfChangeOp.REJOIN:
        assert cc.tag and " " not in cc.tag, cc.tag
        return out + b" " + cc.tag.encode()
    assert not cc.tag, cc
    return out


def decode_conf_change(data: bytes) -> ConfChange:
    op, _, rest = data.partition(b" ")
    node, _, tag = rest.partition(b" ")
    kind = _OPS_BY_NAME.get(op)
    if kind is None or not node or (kind == ConfChangeOp.REJOIN) != bool(tag) or b" " in tag:
        raise ValueError(f"bad conf change {data!r}")
    return ConfChange(kind, node.decode(), tag.decode())


class MessageType(enum.IntEnum):
    APP = 0  # append entries (leader -> member); also carries the commit index
    APP_RESP = 1  # index = last matching index, or reject with a hint
    VOTE = 2
    VOTE_RESP = 3
    PRE_VOTE = 4  # "would you vote for me at term+1?" (changes no one's term)
    PRE_VOTE_RESP = 5
    HEARTBEAT = 6  # commit = min(member's match, leader commit)
    HEARTBEAT_RESP = 7
    SNAP = 8  # install snapshot
    TIMEOUT_NOW = 9  # leadership transfer: campaign now, skipping pre-vote


@dataclass(slots=True)
class Message:
    """One consensus message. Which fields mean what, by type:

    * APP: ``index``/``log_term`` = the entry just before ``entries``; ``commit``.  ``reject``
      set on an empty APP: a *quiet* commit notice, answered only when it does not match
      (the leader sends it to a member in replicate state, to which it has sent all its
      entries; a member of an older version ignores the flag and answers, as before).
    * APP_RESP: accepted: ``index`` = last index now known to match.  Rejected: ``index`` = the
      rejected APP's ``index``, ``reject_hint``/``log_term`` = the follower's largest index at or
      below it whose term is at most the APP's ``log_term`` (lets the leader skip whole terms).
    * VOTE/PRE_VOTE: ``index``/``log_term`` = the candidate's last entry; ``transfer`` = the
      election was asked for by the leader (leadership transfer), so it may break a lease.
    * VOTE_RESP/PRE_VOTE_RESP: ``reject``.  ``term`` = the term voted for (a pre-vote
      answer carries the proposed term, not the voter's).
    * HEARTBEAT: ``commit``.  SNAP: ``snapshot``.
    """

    type: MessageType
    src: str
    dst: str
    term: int
    log_term: int = 0
    index: int = 0
    entries: Sequence[Entry] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    transfer: bool = False


class ConsensusError(Exception):
    """Root of the operational errors raised by grenex.consensus."""


class NotLeader(ConsensusError):  # noqa: N818 (the name the node and brief use)
    """A proposal reached a node that is not the leader; ``leader`` is its best guess or None."""

    def __init__(self, leader: str | None) -> None:
        super().__init__(f"not the leader (leader hint: {leader})")
        self.leader = leader


class ProposalDroppedError(ConsensusError):
    """The leader refused a proposal for now (bounds reached, transfer or conf change pending).

    Safe to retry later: nothing was appended.
    """


class InvalidConfChangeError(ConsensusError):
    """A membership change or leadership transfer that makes no sense for the current
    membership (adding a member twice, promoting a voter, removing the last voter...)."""


class CompactedError(ConsensusError):
    """The entry asked for lies below the snapshot (it was compacted away)."""


class UnavailableError(ConsensusError):
    """The entry asked for lies beyond the end of the log."""


class SnapshotUnavailableError(ConsensusError):
    """The storage cannot produce a snapshot right now; the leader retries later."""
