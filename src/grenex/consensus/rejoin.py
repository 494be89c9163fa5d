"""The leader's side of re-admitting a member that lost its log: demote, catch up, promote.

Theory of operation
-------------------
A member that restarted with empty storage (an in-memory node, a lost disk) may have
acknowledged entries that it no longer holds; it runs in rejoin mode (``Config.rejoin_tag``:
no votes, no campaigns, see ``raft.py``) and asks the leader, about once a second, to be
re-admitted, telling it its tag, whether its REJOIN entry is applied (``marked``) and its
applied index.  :class:`Readmissions` is the leader's table of those requests; the driver
calls :meth:`Readmissions.step` between two Readys, and it:

1. forgets the member's old progress once (``Raft.reset_progress``): the leader may still
   believe the member holds what it acknowledged before it lost it;
2. appends ``REJOIN <node> <tag>``: the member becomes (or stays) a learner, and the entry
   tells that incarnation that everything after it is newer than what it lost.  If the entry
   is lost (another term at its index) or the member applied past it without seeing it (a
   snapshot skipped it), another one is appended;
3. once the REJOIN entry is applied here and the member's match index has reached the target
   (the commit index when it asked, and at least the REJOIN entry), appends ``PROMOTE``.  The
   member applies its REJOIN, then its promotion, and votes again.

A new leader starts with an empty table: the member keeps asking, so the new leader picks the
request up (a member that already applied its REJOIN is only promoted).  Only members are
accepted, so the table is bounded by the membership.  Pure and deterministic: the node and the
simulator run this same code.
"""

from __future__ import annotations

from dataclasses import dataclass

from grenex.consensus.raft import Raft, Role
from grenex.consensus.types import (
    ConfChange,
    ConfChangeOp,
    InvalidConfChangeError,
    ProposalDroppedError,
)

__all__ = ["Readmissions"]

NOT_MEMBER = "not_member"  # the node must join anew (it is not in the configuration)
DEMOTING = "demoting"  # its REJOIN entry is appended, not yet applied by it
CATCHING_UP = "catching_up"  # a learner, waiting for its match index to reach the target
PROMOTING = "promoting"  # its PROMOTE entry is appended
READMITTED = "readmitted"  # a voter again, after its REJOIN


@dataclass(slots=True)
class _Request:
    tag: str
    marked: bool  # the member reported its REJOIN entry applied
    applied: int  # the member's applied index when it last asked
    target: int  # promote once its match index reaches this
    fresh: bool = True  # its old progress is not forgotten yet
    marker: tuple[int, int] | None = None  # (index, term) of the REJOIN entry we appended
    promote: tuple[int, int] | None = None  # (index, term) of the PROMOTE entry we appended


class Readmissions:
    """The leader's re-admission table (see the module docstring)."""

    def __init__(self) -> None:
        self._reqs: dict[str, _Request] = {}

    def __len__(self) -> int:
        return len(self._reqs)

    def request(self, raft: Raft, node: str, tag: str, marked: bool, applied: int) -> str:
        """A member asks to be re-admitted (call on the leader); returns where it stands."""
        conf = raft.conf_state()
        if node == raft.id or (node not in conf.voters and node not in conf.learners):
            return NOT_MEMBER
        r = self._reqs.get(node)
        if r is None or r.tag != tag:
            r = self._reqs[node] = _Request(tag, marked, applied, raft.log.committed)
        else:
            r.marked = r.marked or marked
            r.applied = max(r.applied, applied)
        return self._state(raft, node, r)

    def _state(self, raft: Raft, node: str, r: _Request) -> str:
        if node in raft.voters:
            return READMITTED if r.promote is not None or r.marked else DEMOTING
        if r.promote is not None:
            return PROMOTING
        return CATCHING_UP if r.marked or r.marker is not None else DEMOTING

    def step(self, raft: Raft) -> list[str]:
        """Propose what the table needs (call between two Readys); returns lines to log."""
        if raft.role != Role.LEADER:
            self._reqs.clear()  # a new leader starts over from the members' next requests
            return []
        out: list[str] = []
        log = raft.log
        for node in sorted(self._reqs):
            r = self._reqs[node]
            if node not in raft.voters and node not in raft.learners:
                del self._reqs[node]
                out.append(f"{node} left the configuration: its rejoin request is dropped")
                continue
            if r.fresh:
                raft.reset_progress(node)
                r.fresh = False
            if r.marker is not None and not r.marked:
                index, term = r.marker
                lost = log.term(index) not in (term, None) or index > log.last_index()
                skipped = r.applied >= index and index <= log.committed
                if lost or skipped:
                    r.marker = None
            if r.promote is not None and log.term(r.promote[0]) not in (r.promote[1], None):
                r.promote = None
            if r.marker is None and not r.marked:
                cc = ConfChange(ConfChangeOp.REJOIN, node, r.tag)
                try:
                    r.marker = raft.propose_conf_change(cc)
                except (ProposalDroppedError, InvalidConfChangeError):
                    continue  # an earlier change is not applied yet: next turn
                r.target = max(r.target, r.marker[0])
                r.promote = None
                out.append(f"{node} asked to rejoin: demoted to learner at {r.marker[0]}")
                continue
            marker_applied = r.marked or (r.marker is not None and log.applied >= r.marker[0])
            pr = raft.prs.get(node)
            if (
                node in raft.learners
                and r.promote is None
                and marker_applied
                and pr is not None
                and pr.match >= r.target
            ):
                try:
                    r.promote = raft.propose_conf_change(ConfChange(ConfChangeOp.PROMOTE, node))
                except (ProposalDroppedError, InvalidConfChangeError):
                    continue
                out.append(f"{node} caught up to {pr.match}: promoted again at {r.promote[0]}")
        return out
