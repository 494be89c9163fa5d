"""A sans-IO Raft core: ticks, messages and proposals in; a Ready out.

Theory of operation
-------------------
:class:`Raft` is a deterministic state machine with no I/O, no clock and no global randomness
(the caller passes a ``random.Random`` for election timeouts).  Time is ``tick()`` calls;
the network is ``step(message)``; the application proposes with ``propose(data)``.  Everything
the core wants done comes out of ``ready()`` as one :class:`Ready`, which the driver carries out
in a fixed order and then acknowledges with ``advance(ready)`` (see :class:`Ready`).

The algorithm is Raft (Ongaro & Ousterhout) with the refinements of Ongaro's thesis, arranged
as in etcd's raft:

* **Elections** with randomized timeouts in ``[T, 2T)`` ticks, preceded by a **pre-vote**
  round (§9.6) that changes nobody's term, so a node cut off from the cluster cannot inflate
  terms and disrupt it when it returns.  **Check-quorum**: a leader that has not heard from a
  quorum of voters within one election timeout steps down, and a node that heard from a leader
  within the timeout ignores vote requests (the leader "lease"), except those a leadership
  transfer asked for.
* **Replication** per member in three states (probe, replicate, snapshot; ``progress.py``)
  with appends of up to ``entries_per_message_max`` entries / ``bytes_per_message_max`` bytes
  and at most ``inflight_messages_max`` unacknowledged appends per member.  Proposals made
  between two ``ready()`` calls go out as one append per member (batching).  A rejected append
  carries a hint (index, term) so that the leader skips a whole conflicting term per round trip.
* **Commit** by counting only entries of the leader's current term (§5.4.2); each new leader
  appends a no-op so that earlier entries commit promptly.  The leader counts its own copy only
  once the driver has persisted it (``advance``).
* **Commit notices** (with ``Config.defer_commit_notices``; without it a new commit index
  goes to every member at once, as in etcd): a new commit index goes at once (an empty
  append, unanswered: see ``_send_append``) only to the members that wait for it: those that
  forwarded one of the entries it commits (``propose_many(..., origin=)``; they answer a
  client once they apply it) and those not in replicate state.  The others learn it from
  the next append or heartbeat, or when the driver calls :meth:`Raft.send_commit`
  (``commit_deferred`` says a member lacks it; the node calls it a few milliseconds later,
  the simulator at the node's next turn).  At light load that halves the frames a follower
  receives per order, and nobody's answer waits longer.
* **Membership** one server at a time (§4.1): add a learner, promote it, remove a member.  A
  change is a CONFIG log entry and takes effect when *applied* (as in etcd), and a leader
  accepts a new change only when every earlier one is applied (which also requires its no-op
  of this term to be applied: the fix for the single-server-change bug Ongaro reported).
  Learners receive the log but are never counted in a quorum and never campaign.  (A learner
  does answer vote requests: a candidate only counts it if the candidate has *applied* its
  promotion, and refusing would stall elections that need a freshly promoted voter.)
* **Leadership transfer** (§3.10): the leader stops taking proposals, brings the target up to
  date, then sends TIMEOUT_NOW; the target campaigns at once, skipping pre-vote and the lease.
* **Snapshots**: the application compacts storage below a snapshot; a member that needs a
  compacted entry is sent the latest snapshot (SNAP), then replication resumes after it.
* **A member that lost its log** (restarted with empty storage: an in-memory node, a lost
  disk) may have acknowledged entries that only it and a minority still hold; if it voted
  again at once, it could elect a leader without them and they would be gone.  Two rules:
  a node that knows no configuration (never bootstrapped, nothing received yet) grants no
  vote; and a node started with ``Config.rejoin_tag`` ("rejoin mode") grants no vote or
  pre-vote and never campaigns until it is *re-admitted*: it has applied a REJOIN entry
  naming itself with its own tag (which a leader appends only after this incarnation asked,
  so every later entry is newer than anything it lost, and it holds every committed entry
  up to there) and, after it, is a voter again (a later PROMOTE).  The leader side — demote
  with REJOIN, forget the member's stale progress (``reset_progress``), promote once caught
  up — is ``rejoin.Readmissions``.

Invariants are checked with ``assert`` and must stay enabled.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from grenex.consensus.log import RaftLog
from grenex.consensus.progress import Progress, ProgressState
from grenex.consensus.storage import ENTRY_OVERHEAD_BYTES, Storage
from grenex.consensus.types import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    InvalidConfChangeError,
    Message,
    MessageType,
    NotLeader,
    ProposalDroppedError,
    Snapshot,
    SnapshotUnavailableError,
    decode_conf_change,
    encode_conf_change,
)

__all__ = ["Config", "Raft", "Ready", "Role", "Status"]

_APP = MessageType.APP
_APP_RESP = MessageType.APP_RESP
_VOTE = MessageType.VOTE
_VOTE_RESP = MessageType.VOTE_RESP
_PRE_VOTE = MessageType.PRE_VOTE
_PRE_VOTE_RESP = MessageType.PRE_VOTE_RESP
_HEARTBEAT = MessageType.HEARTBEAT
_HEARTBEAT_RESP = MessageType.HEARTBEAT_RESP
_SNAP = MessageType.SNAP
_TIMEOUT_NOW = MessageType.TIMEOUT_NOW


class Role(enum.IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(frozen=True, slots=True)
class Config:
    """Settings of one node's consensus core. Times are in ticks; bounds say their unit last."""

    id: str
    election_timeout_ticks: int = 10
    heartbeat_interval_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    # One append carries at most this many entries / about this many bytes (at least one entry).
    entries_per_message_max: int = 512
    bytes_per_message_max: int = 1 << 20
    # Unacknowledged appends per member in the replicate state (the pipeline depth).
    inflight_messages_max: int = 64
    # The proposal queue: a leader refuses proposals beyond this many appended-but-uncommitted
    # entries / bytes (ProposalDroppedError: retry later).
    uncommitted_entries_max: int = 16_384
    uncommitted_bytes_max: int = 64 << 20
    # Committed entries handed to the application per Ready.
    apply_entries_per_ready_max: int = 4096
    # A snapshot sent without an answer for this long is considered lost and sent again.
    snapshot_retry_ticks: int = 50
    # Non-empty: this node restarted without the log it had (rejoin mode, see the module
    # docstring); the tag names this incarnation (unique per start, no spaces).  It neither
    # votes nor campaigns until a REJOIN entry with this tag, then its promotion, are applied.
    rejoin_tag: str = ""
    # A new commit index goes at once only to the members that wait for it; the others learn
    # it later (see "Commit notices" in the module docstring).  False: to every member at once.
    defer_commit_notices: bool = False

    def __post_init__(self) -> None:
        assert self.id and " " not in self.id, self.id
        assert self.heartbeat_interval_ticks >= 1
        assert self.election_timeout_ticks > self.heartbeat_interval_ticks
        assert self.entries_per_message_max >= 1 and self.bytes_per_message_max >= 1
        assert self.inflight_messages_max >= 1 and self.uncommitted_entries_max >= 1
        assert self.apply_entries_per_ready_max >= 1 and self.snapshot_retry_ticks >= 1
        assert " " not in self.rejoin_tag, self.rejoin_tag


@dataclass(slots=True)
class Ready:
    """Everything the core asks the driver to do, handed out by :meth:`Raft.ready`.

    The driver must carry it out **in this order**, then call :meth:`Raft.advance` with it,
    and must not call ``tick``/``step``/``propose``/``ready`` in between:

    1. **Persist** (all of it, then one ``storage.sync()`` when ``must_sync``):

       a. ``snapshot`` (if not None): ``storage.apply_snapshot(snapshot)`` — the log now
          restarts after ``snapshot.index``;
       b. ``entries``: ``storage.append(entries)`` — the first may be at or below the stored
          last index; the stored suffix from there is replaced (conflict truncation);
       c. ``hard_state`` (if not None): ``storage.set_hard_state(hard_state)``;
       d. ``storage.sync()`` if ``must_sync`` (it is False only when nothing but the commit
          index changed, which is safe to lose).

    2. **Send** ``messages`` (each to ``message.dst``; delivery may fail, be late, reordered
       or duplicated — the protocol copes).  Persisting first is what makes votes and
       append acknowledgements safe: nothing is promised before it is durable.

    3. **Apply**: if ``snapshot`` is not None, first replace the state machine by
       ``snapshot.data``; then apply ``committed_entries`` in order.  They are committed and
       persisted (some may have been persisted in step 1 of this very Ready).  NORMAL entries
       carry application data; NOOP entries carry nothing; CONFIG entries carry membership
       changes, which the core itself applies in ``advance`` (the application may look at
       them, e.g. to stop a removed node).

    4. ``raft.advance(ready)``.  Then a new Ready may be ready (``has_ready()``).
    """

    hard_state: HardState | None
    snapshot: Snapshot | None
    entries: list[Entry]
    committed_entries: list[Entry]
    messages: list[Message]
    must_sync: bool

    def is_empty(self) -> bool:
        return (
            self.hard_state is None
            and self.snapshot is None
            and not self.entries
            and not self.committed_entries
            and not self.messages
        )


class Status(NamedTuple):
    id: str
    role: Role
    term: int
    leader: str | None
    vote: str | None
    commit: int
    applied: int
    last_index: int
    first_index: int
    conf: ConfState
    transferee: str | None


_WON = 1
_LOST = -1
_PENDING = 0


class Raft:
    """One node's consensus state. See the module docstring and :class:`Ready`."""

    def __init__(self, config: Config, storage: Storage, rng: random.Random) -> None:
        self.config = config
        self.id = config.id
        self.rng = rng
        hs, conf = storage.initial_state()
        snap_index = storage.snapshot().index
        self.log = RaftLog(storage, committed=max(hs.commit, snap_index), applied=snap_index)
        self.term = hs.term
        self.vote: str | None = hs.vote
        self.voters: tuple[str, ...] = ()
        self.learners: tuple[str, ...] = ()
        self.peers: tuple[str, ...] = ()  # every member but us, sorted
        self.prs: dict[str, Progress] = {}
        self.role = Role.FOLLOWER
        self.lead: str | None = None
        self.msgs: list[Message] = []
        self.votes: dict[str, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_timeout_ticks
        self.lead_transferee: str | None = None
        self.pending_conf_index = 0
        self._prev_hs = HardState(hs.term, hs.vote, hs.commit)
        self._bcast_pending = False
        self._commit_pending = False  # the commit index moved: tell those who wait for it
        self._ready_out = False
        # (index, bytes) of this leader's entries not yet committed: the proposal queue bound.
        self._uncommitted: deque[tuple[int, int]] = deque()
        self._uncommitted_bytes = 0
        # Rejoin mode (see the module docstring): no votes, no campaigns until re-admitted.
        self.rejoining = bool(config.rejoin_tag)
        self.rejoin_marked = False  # our REJOIN entry (with our tag) is applied
        self._set_conf(conf)
        self._become_follower(self.term, None)

    # == public API =============================================================================

    def tick(self) -> None:
        """One unit of logical time."""
        assert not self._ready_out, "tick() between ready() and advance()"
        if self.role == Role.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def step(self, m: Message) -> None:
        """Feed one message from the network (addressed to us)."""
        assert not self._ready_out, "step() between ready() and advance()"
        assert m.dst == self.id, (m.dst, self.id)
        if m.src == self.id:
            return
        if m.term > self.term:
            if m.type in (_VOTE, _PRE_VOTE):
                in_lease = (
                    self.config.check_quorum
                    and self.lead is not None
                    and self.election_elapsed < self.config.election_timeout_ticks
                )
                if in_lease and not m.transfer:
                    # We heard from a leader within the election timeout: a candidate that
                    # cannot hear it must not depose it (check-quorum's lease).
                    return
            if m.type == _PRE_VOTE or (m.type == _PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes never change anyone's term
            elif m.type in (_APP, _HEARTBEAT, _SNAP):
                self._become_follower(m.term, m.src)
            else:
                self._become_follower(m.term, None)
        elif m.term < self.term:
            if (self.config.check_quorum or self.config.pre_vote) and m.type in (
                _APP,
                _HEARTBEAT,
            ):
                # A stale leader (e.g. back from a partition): tell it our term so it steps
                # down; otherwise it could hold on forever, since we never vote at its term.
                self._send(_APP_RESP, m.src)
            elif m.type == _PRE_VOTE:
                self._send(_PRE_VOTE_RESP, m.src, reject=True)
            return

        if m.type in (_VOTE, _PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role == Role.LEADER:
            self._step_leader(m)
        elif self.role == Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def propose(self, data: bytes) -> tuple[int, int]:
        """Append ``data`` as a NORMAL entry; returns its (index, term).

        The entry is *committed* if a later Ready hands out an entry at that index with that
        term; if that index later holds another term, the proposal was lost (retry it).
        Raises NotLeader (with a leader hint) or ProposalDroppedError (bounds; retry later).
        """
        self._check_proposal(1, len(data))
        return self._append(EntryKind.NORMAL, [data]), self.term

    def propose_many(self, datas: Sequence[bytes], origin: str | None = None) -> tuple[int, int]:
        """Append several NORMAL entries at once; returns (first index, term).  ``origin``:
        the member that forwarded them (it hears of their commit at once)."""
        assert datas
        self._check_proposal(len(datas), sum(len(d) for d in datas))
        first = self._append(EntryKind.NORMAL, datas)
        if origin is not None and origin != self.id:
            pr = self.prs.get(origin)
            if pr is not None:
                pr.awaits = first + len(datas) - 1
        return first, self.term

    @property
    def commit_deferred(self) -> bool:
        """A member in replicate state, its pipeline not full, has not been sent the commit
        index (a notice deferred: see "Commit notices" in the module docstring);
        :meth:`send_commit` sends it.  (A member whose pipeline is full hears it with the
        append its next answer lets through.)"""
        if self.role != Role.LEADER:
            return False
        committed = self.log.committed
        for nid in self.peers:
            pr = self.prs[nid]
            if (
                pr.commit_told < committed
                and pr.state == ProgressState.REPLICATE
                and not pr.is_paused()
            ):
                return True
        return False

    def send_commit(self, upto: int) -> None:
        """Send the commit index to every member that was sent less than ``upto`` (what
        ``log.committed`` was when the driver saw :attr:`commit_deferred`: a member sent an
        append since then knows that much).  Any time; a no-op unless leader."""
        if self.role != Role.LEADER:
            return
        prs = self.prs
        for nid in self.peers:
            if prs[nid].commit_told < upto:
                send_if_empty = True
                while self._send_append(nid, send_if_empty, quiet=True):
                    send_if_empty = False

    def propose_conf_change(self, cc: ConfChange) -> tuple[int, int]:
        """Propose one membership change; returns (index, term) of its CONFIG entry.

        It takes effect on every node when applied.  Raises NotLeader, ProposalDroppedError (an
        earlier change is not applied yet — retry later) or InvalidConfChangeError.
        """
        self._check_proposal(1, 0)
        if self.pending_conf_index > self.log.applied:
            raise ProposalDroppedError("an earlier membership change is not applied yet")
        problem = self._conf_change_problem(cc)
        if problem:
            raise InvalidConfChangeError(problem)
        index = self._append(EntryKind.CONFIG, [encode_conf_change(cc)])
        self.pending_conf_index = index
        return index, self.term

    def transfer_leadership(self, to: str) -> None:
        """Hand leadership to voter ``to`` (graceful shutdown). Proposals are refused until the
        transfer ends; it is abandoned after one election timeout."""
        if self.role != Role.LEADER:
            raise NotLeader(self.lead)
        if to == self.id:
            return
        if to not in self.voters:
            raise InvalidConfChangeError(f"{to} is not a voter")
        if self.lead_transferee == to:
            return
        self.lead_transferee = to
        self.election_elapsed = 0
        if self.prs[to].match == self.log.last_index():
            self._send(_TIMEOUT_NOW, to)
        else:
            self._send_append(to)

    def campaign(self) -> None:
        """Start an election now (as if the election timeout elapsed), if we may."""
        assert not self._ready_out
        if self.role != Role.LEADER and self._promotable():
            self._campaign(pre=self.config.pre_vote, transfer=False)

    def reset_progress(self, node: str) -> None:
        """Leader: ``node`` lost its log (it restarted empty and asked to rejoin).  Forget what
        it acknowledged before — a stale ``match`` would both count entries it no longer holds
        and stop us from ever sending it the entries below — and probe it afresh."""
        pr = self.prs.get(node)
        if self.role != Role.LEADER or pr is None or node == self.id:
            return
        pr.match = 0
        pr.become_probe()
        pr.next = self.log.last_index() + 1  # the probe's rejection hint walks us back

    def report_unreachable(self, to: str) -> None:
        """The transport failed to deliver to ``to``: stop streaming, probe instead."""
        pr = self.prs.get(to)
        if self.role == Role.LEADER and pr is not None and pr.state == ProgressState.REPLICATE:
            pr.become_probe()

    def report_snapshot(self, to: str, ok: bool) -> None:
        """The transport's verdict on a snapshot sent to ``to`` (optional: lost snapshots
        are also retried after ``snapshot_retry_ticks``)."""
        pr = self.prs.get(to)
        if self.role != Role.LEADER or pr is None or pr.state != ProgressState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        pr.probe_sent = True  # wait for the next heartbeat answer before probing

    def has_ready(self) -> bool:
        if self._bcast_pending or self._commit_pending:
            return True
        log = self.log
        return bool(
            self.msgs
            or log.unstable
            or log.pending_snapshot is not None
            or (log.committed > log.applied)
            or self._prev_hs != (self.term, self.vote, log.committed)
        )

    def ready(self) -> Ready:
        """What to persist, send and apply now (see :class:`Ready`)."""
        assert not self._ready_out, "ready() twice without advance()"
        self._flush()
        log = self.log
        hs = HardState(self.term, self.vote, log.committed)
        prev = self._prev_hs
        hs_out = None if hs == prev else hs
        ents = log.unstable_entries()
        snap = log.pending_snapshot
        committed = log.next_committed(self.config.apply_entries_per_ready_max)
        msgs = self.msgs
        self.msgs = []
        must_sync = bool(ents) or snap is not None or hs.term != prev.term or hs.vote != prev.vote
        self._ready_out = True
        return Ready(hs_out, snap, ents, committed, msgs, must_sync)

    def advance(self, rd: Ready) -> None:
        """The driver carried out ``rd`` (persisted, sent, applied)."""
        assert self._ready_out, "advance() without ready()"
        self._ready_out = False
        log = self.log
        if rd.hard_state is not None:
            self._prev_hs = rd.hard_state
        if rd.snapshot is not None:
            log.stable_snapshot_to(rd.snapshot.index)
            log.applied = max(log.applied, rd.snapshot.index)
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        for e in rd.committed_entries:
            if e.kind == EntryKind.CONFIG:
                log.applied_to(e.index)
                self._apply_conf_change(decode_conf_change(e.data))
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)
        if self.role == Role.LEADER:
            me = self.prs.get(self.id)
            if me is not None and me.maybe_update(log.offset - 1) and self._maybe_commit():
                self._commit_pending = True

    def status(self) -> Status:
        return Status(
            self.id,
            self.role,
            self.term,
            self.lead,
            self.vote,
            self.log.committed,
            self.log.applied,
            self.log.last_index(),
            self.log.first_index(),
            self.conf_state(),
            self.lead_transferee,
        )

    def conf_state(self) -> ConfState:
        """Membership as of the applied index (what a snapshot taken now must record)."""
        return ConfState(self.voters, self.learners)

    def progress(self) -> dict[str, Progress]:
        """The leader's view of each member (empty unless leader); read-only."""
        return dict(self.prs) if self.role == Role.LEADER else {}

    # == roles ==================================================================================

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = None
        self.lead = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        et = self.config.election_timeout_ticks
        self.randomized_election_timeout = et + self.rng.randrange(et)
        self.lead_transferee = None
        self.votes = {}
        self.pending_conf_index = 0
        self._uncommitted.clear()
        self._uncommitted_bytes = 0
        self._bcast_pending = False
        self._commit_pending = False
        self._reset_progress()

    def _reset_progress(self) -> None:
        nxt = self.log.last_index() + 1
        inflight = self.config.inflight_messages_max
        prs: dict[str, Progress] = {}
        for nid in self.voters:
            prs[nid] = Progress(nxt, inflight, False)
        for nid in self.learners:
            prs[nid] = Progress(nxt, inflight, True)
        me = prs.get(self.id)
        if me is not None:
            me.match = self.log.offset - 1 if self.log.pending_snapshot is None else 0
            me.recent_active = True
        self.prs = prs

    def _become_follower(self, term: int, lead: str | None) -> None:
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER

    def _become_pre_candidate(self) -> None:
        assert self.role != Role.LEADER
        # Term and vote stay: a pre-candidate only asks whether it could win.
        self.votes = {}
        self.lead = None
        self.role = Role.PRE_CANDIDATE

    def _become_candidate(self) -> None:
        assert self.role != Role.LEADER
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        assert self.role == Role.CANDIDATE, self.role
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        # Every member starts in PROBE at our last index + 1 (from _reset).  No membership
        # change until everything up to and including our no-op is applied: the no-op proves
        # an entry of this term committed, which single-server changes need for safety.
        self.pending_conf_index = self._append(EntryKind.NOOP, [b""])

    def _promotable(self) -> bool:
        return self.id in self.voters and self.log.pending_snapshot is None and not self.rejoining

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self._become_pre_candidate()
            term = self.term + 1
            typ = _PRE_VOTE
        else:
            self._become_candidate()
            term = self.term
            typ = _VOTE
        self.votes[self.id] = True
        if self._tally() == _WON:  # a single voter wins at once
            if pre:
                self._campaign(pre=False, transfer=transfer)
            else:
                self._become_leader()
            return
        li = self.log.last_index()
        lt = self.log.last_term()
        for nid in self.voters:
            if nid != self.id:
                self.msgs.append(
                    Message(typ, self.id, nid, term, log_term=lt, index=li, transfer=transfer)
                )

    def _tally(self) -> int:
        granted = rejected = 0
        votes = self.votes
        for nid in self.voters:
            v = votes.get(nid)
            if v is True:
                granted += 1
            elif v is False:
                rejected += 1
        quorum = len(self.voters) // 2 + 1
        if granted >= quorum:
            return _WON
        if rejected > len(self.voters) - quorum:
            return _LOST
        return _PENDING

    # == ticks ==================================================================================

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self._promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self._campaign(pre=self.config.pre_vote, transfer=False)

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        cfg = self.config
        if self.election_elapsed >= cfg.election_timeout_ticks:
            self.election_elapsed = 0
            if cfg.check_quorum:
                if not self._quorum_active():
                    self._become_follower(self.term, None)
                    return
                for nid in self.peers:
                    self.prs[nid].recent_active = False
            self.lead_transferee = None  # a transfer that took this long has failed
        for nid in self.peers:
            pr = self.prs[nid]
            if pr.state == ProgressState.SNAPSHOT:
                pr.snapshot_ticks += 1
                if pr.snapshot_ticks >= cfg.snapshot_retry_ticks:
                    pr.become_probe()  # presumed lost; probing resends it if still needed
        if self.heartbeat_elapsed >= cfg.heartbeat_interval_ticks:
            self.heartbeat_elapsed = 0
            committed = self.log.committed
            for nid in self.peers:
                pr = self.prs[nid]
                commit = min(pr.match, committed)
                pr.commit_told = max(pr.commit_told, commit)
                self.msgs.append(Message(_HEARTBEAT, self.id, nid, self.term, commit=commit))

    def _quorum_active(self) -> bool:
        active = sum(1 for nid in self.voters if self.prs[nid].recent_active or nid == self.id)
        return active >= len(self.voters) // 2 + 1

    # == message handling =======================================================================

    def _send(self, typ: MessageType, to: str, **fields: Any) -> None:
        self.msgs.append(Message(typ, self.id, to, fields.pop("term", self.term), **fields))

    def _handle_vote_request(self, m: Message) -> None:
        pre = m.type == _PRE_VOTE
        # A node that knows no configuration, or that lost its log and is not re-admitted yet,
        # cannot tell whether the candidate holds what a majority acknowledged: it never votes.
        can_vote = (bool(self.voters) and not self.rejoining) and (
            self.vote == m.src
            or (self.vote is None and self.lead is None)
            or (pre and m.term > self.term)
        )
        resp = _PRE_VOTE_RESP if pre else _VOTE_RESP
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # Answer with the term asked about: a pre-vote grant must not look stale to the
            # pre-candidate, whose own term is still one lower.
            self._send(resp, m.src, term=m.term)
            if not pre:
                self.election_elapsed = 0
                self.vote = m.src
        else:
            self._send(resp, m.src, reject=True)

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == _APP:
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_append(m)
        elif t == _HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.src
            self.log.commit_to(m.commit)
            self._send(_HEARTBEAT_RESP, m.src)
        elif t == _SNAP:
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_snapshot(m)
        elif t == _TIMEOUT_NOW and self._promotable():
            self._campaign(pre=False, transfer=True)

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t in (_APP, _HEARTBEAT, _SNAP):
            # A leader of our term exists (we lost, or pre-vote found a live one).
            self._become_follower(m.term, m.src)
            self._step_follower(m)
            return
        expected = _PRE_VOTE_RESP if self.role == Role.PRE_CANDIDATE else _VOTE_RESP
        if t != expected:
            return
        self.votes.setdefault(m.src, not m.reject)
        result = self._tally()
        if result == _WON:
            if self.role == Role.PRE_CANDIDATE:
                self._campaign(pre=False, transfer=False)
            else:
                self._become_leader()
                self._flush()
        elif result == _LOST:
            self._become_follower(self.term, None)

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self._send(_APP_RESP, m.src, index=log.committed)
            return
        last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            if m.reject and not m.entries:
                return  # a quiet commit notice: the leader knows all an answer would say
            self._send(_APP_RESP, m.src, index=last_new)
            return
        hint_index, hint_term = log.find_conflict_by_term(
            min(m.index, log.last_index()), m.log_term
        )
        self._send(
            _APP_RESP,
            m.src,
            index=m.index,
            reject=True,
            reject_hint=hint_index,
            log_term=hint_term,
        )

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        assert snap is not None
        if self._restore(snap):
            self._send(_APP_RESP, m.src, index=self.log.last_index())
        else:
            self._send(_APP_RESP, m.src, index=self.log.committed)

    def _restore(self, snap: Snapshot) -> bool:
        log = self.log
        if snap.index <= log.committed:
            return False  # old news
        if log.match_term(snap.index, snap.term):
            # We hold that entry already: just learn it is committed, keep our log.
            log.commit_to(snap.index)
            return False
        log.restore(snap)
        self._set_conf(snap.conf)
        self._reset_progress()
        return True

    def _step_leader(self, m: Message) -> None:
        pr = self.prs.get(m.src)
        if pr is None:
            return  # not a member (any more)
        pr.recent_active = True
        t = m.type
        if t == _APP_RESP:
            self._handle_append_response(m, pr)
        elif t == _HEARTBEAT_RESP:
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE and len(pr.inflight) >= pr.inflight_max:
                pr.inflight.popleft()  # the member lives: let one more append through
            if pr.match < self.log.last_index():
                self._send_append(m.src)

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                    pr.next = max(min(m.index, next_probe + 1), pr.match + 1)
                self._send_append(m.src)
            return
        if m.index > self.log.last_index():
            return  # acknowledges entries we never sent: not an honest member; ignore it
        was_paused = pr.is_paused()
        if pr.maybe_update(m.index) or (pr.match == m.index and pr.state == ProgressState.PROBE):
            if pr.state == ProgressState.PROBE:
                pr.become_replicate()
            elif pr.state == ProgressState.SNAPSHOT:
                if pr.match >= pr.pending_snapshot:
                    pr.become_replicate()
            else:
                pr.free_to(m.index)
            if self._maybe_commit():
                self._commit_pending = True  # the new commit index goes out with the next flush
            elif was_paused:
                self._send_append(m.src)
            while self._send_append(m.src, send_if_empty=False):
                pass
            if m.src == self.lead_transferee and pr.match == self.log.last_index():
                self._send(_TIMEOUT_NOW, m.src)

    def _send_append(self, to: str, send_if_empty: bool = True, quiet: bool = False) -> bool:
        """Send ``to`` the entries it lacks (or an empty append for the commit index when
        ``send_if_empty``).  ``quiet``: an empty append to a member in replicate state (we
        sent it all our entries) asks for no answer (``reject`` set on an APP: see Message):
        an accepted one would only repeat the answer to the append that carried the entries,
        and at light load those answers were a third of the consensus messages.  A member
        that does not match still answers (the rejection that starts a probe); if the
        entries' own answer is lost, the next heartbeat's answer shows the member behind and
        gets an ordinary append, which is answered."""
        pr = self.prs[to]
        if pr.is_paused():
            return False
        log = self.log
        prev_index = pr.next - 1
        assert prev_index <= log.last_index(), (to, pr, log.last_index())
        prev_term = log.term(prev_index)
        ents = None
        if prev_term is not None:
            cfg = self.config
            ents = log.entries(
                pr.next,
                log.last_index() + 1,
                cfg.bytes_per_message_max,
                cfg.entries_per_message_max,
            )
        if ents is None:
            return self._send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        assert prev_term is not None
        self.msgs.append(
            Message(
                _APP,
                self.id,
                to,
                self.term,
                log_term=prev_term,
                index=prev_index,
                entries=ents,
                commit=log.committed,
                # quiet: everything is sent (an empty append's prev is our last entry); an
                # answer would repeat the one to the append that carried it
                reject=quiet and not ents and pr.state == ProgressState.REPLICATE,
            )
        )
        pr.sent_entries(ents[-1].index if ents else None)
        pr.commit_told = log.committed
        return True

    def _send_snapshot(self, to: str, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # it may be down; wait until it answers something
        try:
            snap = self.log.storage.snapshot()
        except SnapshotUnavailableError:
            return False
        self.msgs.append(Message(_SNAP, self.id, to, self.term, snapshot=snap))
        pr.become_snapshot(snap.index)
        return True

    def _flush(self) -> None:
        if not (self._bcast_pending or self._commit_pending):
            return
        everyone = self._bcast_pending  # new entries, a new member, a new leader
        self._bcast_pending = self._commit_pending = False
        if self.role != Role.LEADER:
            return
        committed = self.log.committed
        prs = self.prs
        defer = self.config.defer_commit_notices
        for nid in self.peers:
            # Fill the member's pipeline; send one empty append at least, for the commit index
            # (unless the pipeline is full or the member is probed), to everyone or only to
            # those waiting for the commit index (see "Commit notices").
            pr = prs[nid]
            send_if_empty = (
                everyone
                or not defer
                or pr.state != ProgressState.REPLICATE
                or pr.commit_told < min(pr.awaits, committed)
            )
            while self._send_append(nid, send_if_empty, quiet=True):
                send_if_empty = False

    def _maybe_commit(self) -> bool:
        prs = self.prs
        matches = sorted((prs[nid].match for nid in self.voters), reverse=True)
        if not matches:
            return False
        mci = matches[len(matches) // 2]  # the highest index a quorum holds
        log = self.log
        # Raft §5.4.2: count replicas only for an entry of the current term.
        if mci > log.committed and log.term(mci) == self.term:
            log.commit_to(mci)
            unc = self._uncommitted
            while unc and unc[0][0] <= mci:
                self._uncommitted_bytes -= unc.popleft()[1]
            return True
        return False

    # == proposals ==============================================================================

    def _check_proposal(self, count: int, nbytes: int) -> None:
        if self.role != Role.LEADER:
            raise NotLeader(self.lead)
        if self.lead_transferee is not None:
            raise ProposalDroppedError(f"leadership transfer to {self.lead_transferee} in progress")
        log = self.log
        cfg = self.config
        if log.last_index() - log.committed + count > cfg.uncommitted_entries_max:
            raise ProposalDroppedError("too many uncommitted entries")
        if self._uncommitted_bytes and self._uncommitted_bytes + nbytes > (
            cfg.uncommitted_bytes_max
        ):
            raise ProposalDroppedError("too many uncommitted bytes")

    def _append(self, kind: int, datas: Sequence[bytes]) -> int:
        """Append entries of our term (leader); returns the first index."""
        first = self.log.last_index() + 1
        term = self.term
        ents = [Entry(first + i, term, kind, d) for i, d in enumerate(datas)]
        self.log.append(ents)
        nbytes = sum(len(d) for d in datas) + ENTRY_OVERHEAD_BYTES * len(datas)
        self._uncommitted.append((ents[-1].index, nbytes))
        self._uncommitted_bytes += nbytes
        self._bcast_pending = True
        return first

    # == membership =============================================================================

    def _set_conf(self, conf: ConfState) -> None:
        voters = tuple(sorted(conf.voters))
        learners = tuple(sorted(conf.learners))
        assert not set(voters) & set(learners), conf
        self.voters = voters
        self.learners = learners
        self.peers = tuple(sorted(n for n in voters + learners if n != self.id))
        nxt = self.log.last_index() + 1
        inflight = self.config.inflight_messages_max
        prs: dict[str, Progress] = {}
        for nid in sorted(voters + learners):
            pr = self.prs.get(nid)
            if pr is None:
                pr = Progress(nxt, inflight, False)
                if nid == self.id:
                    pr.match = self.log.offset - 1
                    pr.recent_active = True
            pr.is_learner = nid in learners
            prs[nid] = pr
        self.prs = prs

    def _conf_change_problem(self, cc: ConfChange) -> str:
        n = cc.node
        if cc.op in (ConfChangeOp.ADD_LEARNER, ConfChangeOp.ADD_VOTER):
            if n in self.voters or n in self.learners:
                return f"{n} is already a member"
        elif cc.op == ConfChangeOp.PROMOTE:
            if n not in self.learners:
                return f"{n} is not a learner"
        elif cc.op in (ConfChangeOp.REMOVE, ConfChangeOp.REJOIN):
            if n not in self.voters and n not in self.learners:
                return f"{n} is not a member"
            if self.voters == (n,):
                return "cannot remove the last voter"
            if cc.op == ConfChangeOp.REJOIN and (not cc.tag or " " in cc.tag):
                return "a rejoin needs a tag without spaces"
        return ""

    def _apply_conf_change(self, cc: ConfChange) -> None:
        if self._conf_change_problem(cc):
            return  # every replica skips the same invalid change the same way
        voters = list(self.voters)
        learners = list(self.learners)
        n = cc.node
        if cc.op == ConfChangeOp.ADD_LEARNER:
            learners.append(n)
        elif cc.op == ConfChangeOp.ADD_VOTER:
            voters.append(n)
        elif cc.op == ConfChangeOp.PROMOTE:
            learners.remove(n)
            voters.append(n)
        elif cc.op == ConfChangeOp.REJOIN:
            if n in voters:  # demoted; a learner stays one
                voters.remove(n)
                learners.append(n)
            if n == self.id and self.rejoining and cc.tag == self.config.rejoin_tag:
                self.rejoin_marked = True
        elif n in voters:
            voters.remove(n)
        else:
            learners.remove(n)
        self._set_conf(ConfState(tuple(voters), tuple(learners)))
        if self.rejoining and self.rejoin_marked and self.id in self.voters:
            # Promoted after our own REJOIN entry: we hold every committed entry up to it, and
            # nothing after it predates our restart.  Vote and campaign again.
            self.rejoining = False
        if self.role != Role.LEADER:
            return
        if self.id not in self.voters:
            # Removed (or never a voter): leave; the others elect a leader among themselves.
            self._become_follower(self.term, None)
            return
        if self.lead_transferee is not None and self.lead_transferee not in self.voters:
            self.lead_transferee = None
        if self._maybe_commit():  # a smaller quorum may commit more
            self._commit_pending = True
        if cc.op in (ConfChangeOp.ADD_LEARNER, ConfChangeOp.ADD_VOTER):
            self._bcast_pending = True  # start probing the newcomer from our last index
