"""One replica: the consensus core, its storage and the state machine, driven the one way.

Theory of operation
-------------------
:class:`Replica` owns a :class:`~grenex.consensus.Raft`, the :class:`Storage` it persists to,
and a :class:`ReplicaState` (engine + sessions).  Inputs are ``tick()``, ``step(msg)`` and
proposals; output comes from the driver step, the only place where consensus' Ready is
carried out, shared by the asyncio node and the simulator:

1. ``rd = replica.ready()``      — None when there is nothing to do;
2. ``replica.persist(rd)``       — storage writes, then one ``sync()`` (blocking disk I/O:
   an asyncio shell may run it in a thread; nothing else may touch the replica meanwhile);
3. send ``rd.messages``          — after persisting, never before;
4. ``applied = replica.apply(rd)`` — restores a received snapshot, applies committed entries
   to the engine (exactly-once), advances the core, and takes a snapshot + compacts the log
   every ``snapshot_interval_entries``.  Returns one :class:`Applied` per committed entry.
   (With ``auto_snapshot=False`` the shell takes snapshots itself, in two halves:
   ``snapshot_point()`` names the index and membership to serialise, and
   ``store_snapshot(point, data)`` stores and compacts later, between driver steps — so the
   serialising can happen elsewhere, e.g. in a forked child of the node.)

:meth:`Replica.handle_ready` does 1–4 in a loop until the core is idle.

How a proposer learns its outcome: ``propose()`` returns the entry's ``(index, term)``.  The
command was committed and applied exactly when an :class:`Applied` with that index *and* term
comes out of ``apply``; if that index comes out with another term, or is skipped by a snapshot
install, the outcome is unknown and the command must be retried with the same id/req (the
session table makes the retry safe and returns the first outcome).  :class:`Proposals` does
this bookkeeping.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

from grenex.codec.genesis import CertCheck, Genesis
from grenex.codec.stamp import unstamp
from grenex.consensus import (
    ConfChange,
    ConfChangeOp,
    Config,
    ConfState,
    EntryKind,
    Message,
    MessageType,
    Raft,
    Ready,
    Role,
    Storage,
    decode_conf_change,
)
from grenex.replica.state import Decoder, ReplicaSnapshotError, ReplicaState, Verifier

__all__ = [
    "TERM_JUMP_MAX",
    "VOUCHED_MAX",
    "Applied",
    "Proposals",
    "Replica",
    "ReplicaConfig",
    "insane",
]

VOUCHED_MAX = 256  # members taken from one vouch
_FROM_LEADER = frozenset((MessageType.APP, MessageType.HEARTBEAT, MessageType.SNAP))


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    raft: Config
    # the cluster's genesis (SPEC §8): accounts, operator, limits — the state machine's root
    genesis: Genesis
    # Snapshot the state machine after this many entries applied since the last snapshot.
    snapshot_interval_entries: int = 8192
    # Entries kept below a snapshot, so a slightly lagging member gets entries, not a snapshot.
    compaction_retain_entries: int = 1024
    # the X.509 checks of a member's certificate (``grenex.grenache.tls``); None: form only
    cert_check: CertCheck | None = None
    # False: apply() never snapshots; the shell calls snapshot_point/store_snapshot itself.
    auto_snapshot: bool = True

    def __post_init__(self) -> None:
        assert self.snapshot_interval_entries >= 1 and self.compaction_retain_entries >= 0


class Applied(NamedTuple):
    """One committed entry after it was applied.

    ``kind``: EntryKind.  NORMAL entries carry the command bytes (without the leader's time
    stamp, which is ``time``) and the events it produced,
    with ``seq == index`` — or, when ``duplicate``, the *original* outcome of the command it
    repeats (the engine did not run; the events' ``seq`` is the original index).  NOOP and
    CONFIG entries have no events (``data`` of a CONFIG entry is its encoded ConfChange).
    """

    index: int  # type: ignore[assignment]  # shadows tuple.index, on purpose
    term: int
    kind: int
    data: bytes
    events: list[Any]
    duplicate: bool
    # the stream's events as one JSON array, encoded once when applied and shared by the
    # reply and the events stream (b"[]" for entries without events; a batch's carry ``n``)
    events_json: bytes = b"[]"
    # the leader's time stamp (ms since the epoch; SPEC §6), None for an unstamped entry
    time: int | None = None
    # the time of the outcome answered: ``time``, or for a duplicate the first execution's
    outcome_time: int | None = None
    # the outcome's log index: ``index``, or for a duplicate the first execution's
    outcome_seq: int = 0
    # a batch's (or a duplicate's) per-command event lists, one JSON array of arrays; None for
    # a single command (its reply is ``events_json``) or a duplicate whose events were dropped
    results_json: bytes | None = None
    batch: bool = False


class Replica:
    """See the module docstring for the driver protocol."""

    def __init__(self, config: ReplicaConfig, storage: Storage, rng: random.Random) -> None:
        self.config = config
        self.id = config.raft.id
        self.storage = storage
        self.raft = Raft(config.raft, storage, rng)
        snap = storage.snapshot()
        self.state = self._restore(snap.data)
        assert self.state.index == snap.index, (self.state.index, snap.index)
        self.last_snapshot_index = snap.index
        self.snapshots_taken = 0
        self.snapshots_installed = 0
        self.dropped: dict[str, int] = {}  # messages dropped by step(), by reason
        # signature verdicts computed earlier (in threads), reused at apply; None: verify there
        self.verifier: Verifier | None = None
        # entries decoded earlier (on receipt), taken at apply; None: decode there
        self.decoder: Decoder | None = None
        # Ticks since a leader was last heard (0 while leading): a member whose configuration
        # is stale hears nobody once the leader is a node it does not know (see vouch()).
        self.unled_ticks = 0
        # Members of the current configuration a member of ours vouched for (vouch()): their
        # messages are stepped although our own configuration does not list them (yet).
        self.vouched: frozenset[str] = frozenset()
        self._vouched_conf: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._vouch_asked_at = 0  # unled_ticks when voucher_due() last named a member
        self._vouch_asks = 0  # which member of the configuration is asked next

    def _restore(self, data: bytes) -> ReplicaState:
        c = self.config
        return ReplicaState.restore(c.genesis, data, c.cert_check)

    # -- inputs --------------------------------------------------------------------------------

    def tick(self) -> None:
        self.raft.tick()
        if self.raft.role == Role.LEADER:
            self.unled_ticks = 0
        else:
            self.unled_ticks += 1

    def voucher_due(self) -> str | None:
        """The member of this replica's configuration the node should ask now for the current
        configuration (and :meth:`vouch` with its answer), the next one each time, or None:
        only when this node is a member and has heard no leader for three election timeouts,
        and did not ask in the last three (once per such period)."""
        raft = self.raft
        if not (self.id in raft.voters or self.id in raft.learners):
            return None  # a node that is no member yet drops nobody
        period = 3 * self.config.raft.election_timeout_ticks
        unled = self.unled_ticks
        if unled < period:
            self._vouch_asked_at = 0
            return None
        if self._vouch_asked_at and unled - self._vouch_asked_at < period:
            return None
        self._vouch_asked_at = unled
        known = [m for m in sorted(raft.voters) + sorted(raft.learners) if m != self.id]
        if not known:
            return None
        self._vouch_asks += 1
        return known[self._vouch_asks % len(known)]

    def vouch(self, voucher: str, members: list[str]) -> bool:
        """A member of this replica's configuration (``voucher``) says the current
        configuration is ``members`` (its voters and learners).  A member restarted with a stale
        configuration, whose leader is now a node added after it, drops everything that
        leader sends ("not a member") and would never catch up: the node asks a member it
        knows (over a connection pinned to that member) and vouches here, and messages from
        the vouched nodes are stepped until this replica's own configuration changes.  A
        voucher gains nothing by it: as a member of our configuration it may already send us
        anything a leader sends.  Returns False (nothing changes) when ``voucher`` is not a
        member of our configuration or is this node."""
        raft = self.raft
        if voucher == self.id or not (voucher in raft.voters or voucher in raft.learners):
            return False
        ids = [m for m in members[:VOUCHED_MAX] if isinstance(m, str) and m and m != self.id]
        self.vouched = frozenset(ids)
        self._vouched_conf = (raft.voters, raft.learners)
        return True

    def step(self, msg: Message) -> bool:
        """Feed one message to the core, or drop it (returns False; counted in ``dropped``
        by reason).  Nothing a peer sends may reach an assertion of the core:

        * a member ignores messages from nodes outside its configuration: nobody it does not
          know may raise its term (a stranger's term of 2**62 - 1 once left every election
          unencodable) or claim to lead.  Every legitimate sender is a member: leaders and
          candidates are voters, a learner only answers the leader, and a node that is not
          a member yet (joining) accepts the leader that is adding it;
        * a message that breaks an invariant no honest member breaks is dropped
          (:func:`insane`): a term that jumps absurdly, entries that are not contiguous or
          newer than their message's term, entries that rewrite what this node committed, an
          acknowledgement of entries this node does not have, a snapshot message without a
          snapshot;
        * a heartbeat's commit index is cut to this node's last index (an honest leader never
          sends more than the follower's acknowledged match; a follower that restarted empty
          may still be sent more, and must not stop on it);
        * a snapshot whose data is not a valid replica snapshot must never be persisted.
        """
        raft = self.raft
        voters, learners = raft.voters, raft.learners
        if (self.id in voters or self.id in learners) and not (
            msg.src in voters or msg.src in learners
        ):
            if not self.vouched or msg.src not in self.vouched:
                return self._drop("not a member")
            if self._vouched_conf != (voters, learners):  # ours changed: the vouch is spent
                self.vouched = frozenset()
                return self._drop("not a member")
        why = insane(raft, msg)
        if why is not None:
            return self._drop(why)
        snap = msg.snapshot
        if snap is not None:
            if any(v in snap.conf.learners for v in snap.conf.voters):
                return self._drop("a snapshot whose membership lists a node twice")
            try:
                restored = self._restore(snap.data)
            except (ReplicaSnapshotError, ValueError, TypeError, KeyError):
                return self._drop("a snapshot that is not a replica snapshot")
            if restored.index != snap.index:
                return self._drop("a snapshot whose state is not at its index")
        typ = msg.type
        if typ == MessageType.HEARTBEAT and msg.commit > raft.log.last_index():
            msg.commit = raft.log.last_index()
        self.raft.step(msg)
        if (typ in _FROM_LEADER and msg.term == raft.term and raft.lead == msg.src) or (
            raft.role == Role.LEADER
        ):
            self.unled_ticks = 0
        return True

    def _drop(self, why: str) -> bool:
        self.dropped[why] = self.dropped.get(why, 0) + 1
        return False

    def propose(self, command: bytes) -> tuple[int, int]:
        """Propose one command (SPEC §2 JSON bytes); returns (index, term).

        Raises NotLeader (with a hint) or ProposalDroppedError."""
        return self.raft.propose(command)

    def add_learner(self, node: str) -> tuple[int, int]:
        return self.raft.propose_conf_change(ConfChange(ConfChangeOp.ADD_LEARNER, node))

    def promote(self, node: str) -> tuple[int, int]:
        return self.raft.propose_conf_change(ConfChange(ConfChangeOp.PROMOTE, node))

    def remove(self, node: str) -> tuple[int, int]:
        return self.raft.propose_conf_change(ConfChange(ConfChangeOp.REMOVE, node))

    def transfer_leadership(self, to: str) -> None:
        self.raft.transfer_leadership(to)

    # -- the driver ----------------------------------------------------------------------------

    def has_ready(self) -> bool:
        return self.raft.has_ready()

    def ready(self) -> Ready | None:
        return self.raft.ready() if self.raft.has_ready() else None

    def persist(self, rd: Ready) -> None:
        """Step 1 of the Ready contract: snapshot, entries, hard state, one sync."""
        self.stage(rd)
        self.flush(rd)

    def stage(self, rd: Ready) -> bool:
        """The first half of persisting, cheap and in memory: hand the Ready's entries and
        hard state to storage.  Returns True when :meth:`flush` has disk work to do.

        A Ready that installs a snapshot is staged entirely by :meth:`flush` (writing the
        snapshot file is disk work, and the entries after it must follow the install)."""
        if rd.snapshot is not None:
            return True
        st = self.storage
        if rd.entries:
            st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        return rd.must_sync  # False only when nothing but the commit index moved

    def flush(self, rd: Ready) -> None:
        """The second half: write and fsync (blocking disk I/O: an asyncio shell may run it in
        a thread, and nothing else may touch the replica meanwhile)."""
        st = self.storage
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
            if rd.entries:
                st.append(rd.entries)
            if rd.hard_state is not None:
                st.set_hard_state(rd.hard_state)
        if rd.must_sync or rd.snapshot is not None:
            st.sync()

    def apply(self, rd: Ready) -> list[Applied]:
        """Steps 3–4: restore/apply, advance the core, snapshot and compact when due."""
        out: list[Applied] = []
        if rd.snapshot is not None:
            self.state = self._restore(rd.snapshot.data)
            assert self.state.index == rd.snapshot.index, (self.state.index, rd.snapshot.index)
            self.last_snapshot_index = rd.snapshot.index
            self.snapshots_installed += 1
        state = self.state
        for e in rd.committed_entries:
            if e.kind == EntryKind.NORMAL:
                time_ms, data = unstamp(e.data)
                o = state.apply_command(e.index, e.term, data, time_ms, self.verifier, self.decoder)
                out.append(
                    Applied(
                        e.index,
                        e.term,
                        e.kind,
                        data,
                        o.events,
                        o.duplicate,
                        o.events_json,
                        time_ms,
                        o.time,
                        o.seq,
                        o.results_json,
                        o.batch,
                    )
                )
            else:
                state.skip(e.index, e.term)
                out.append(Applied(e.index, e.term, e.kind, e.data, [], False))
        self.raft.advance(rd)
        if self.config.auto_snapshot and self.snapshot_due():
            self.take_snapshot()
        return out

    def handle_ready(self, send: Callable[[Message], None]) -> list[Applied]:
        """The whole driver step: persist -> send -> apply -> advance, until idle."""
        applied: list[Applied] = []
        while True:
            rd = self.ready()
            if rd is None:
                return applied
            self.persist(rd)
            for m in rd.messages:
                send(m)
            applied.extend(self.apply(rd))

    def snapshot_due(self) -> bool:
        """``snapshot_interval_entries`` applied since the last snapshot."""
        return self.state.index - self.last_snapshot_index >= self.config.snapshot_interval_entries

    def take_snapshot(self) -> None:
        """Snapshot the state machine at the applied index and compact the log below it,
        keeping ``compaction_retain_entries``.  Call only between driver steps."""
        point = self.snapshot_point()
        if point is not None:
            self.store_snapshot(point, self.state.snapshot())

    def snapshot_point(self) -> tuple[int, ConfState] | None:
        """What a snapshot taken now covers: the applied index and the membership (None when
        storage already holds a snapshot that recent).  Serialise ``self.state`` as it is now
        (``ReplicaState.snapshot``) and hand the bytes to :meth:`store_snapshot`."""
        index = self.state.index
        if index <= self.storage.snapshot().index:
            return None
        return index, self.raft.conf_state()

    def store_snapshot(self, point: tuple[int, ConfState], data: bytes) -> bool:
        """Store a snapshot serialised at ``point`` and compact the log below it; between
        driver steps only.  False (nothing done) when storage meanwhile got a snapshot at least
        as recent, e.g. one installed from the leader."""
        st = self.storage
        index, conf = point
        if index <= st.snapshot().index or index > self.state.index:
            return False
        st.create_snapshot(index, conf, data)
        self.last_snapshot_index = max(self.last_snapshot_index, index)
        self.snapshots_taken += 1
        st.compact(max(index - self.config.compaction_retain_entries, st.first_index() - 1))
        return True

    # -- observing -----------------------------------------------------------------------------

    @property
    def applied_index(self) -> int:
        return self.state.index

    def state_hash(self) -> str:
        return self.state.state_hash()


# the furthest a message's term may lead this node's: terms grow by one per election (and
# pre-vote keeps partitioned nodes from running ahead), so a bigger jump is a forgery
TERM_JUMP_MAX = 1 << 32


def insane(raft: Raft, m: Message) -> str | None:
    """Why no honest member sends ``m`` to this node (None when it may)."""
    if m.term > raft.term + TERM_JUMP_MAX:
        return "an absurd term"
    t = m.type
    log = raft.log
    if t == MessageType.APP:
        if m.log_term > m.term or m.index < 0:
            return "an append whose previous entry is newer than its term"
        expect = m.index + 1
        prev_term = m.log_term
        for e in m.entries:
            if e.index != expect or e.term > m.term or e.term < prev_term:
                return "entries that are not contiguous or newer than their term"
            expect += 1
            prev_term = e.term
            if e.index <= log.committed:
                have = log.term(e.index)
                if have is not None and have != e.term:
                    return "entries that rewrite committed ones"
            if e.kind == EntryKind.CONFIG:
                try:
                    decode_conf_change(e.data)
                except ValueError:
                    return "a membership entry that is not a membership change"
    elif t == MessageType.APP_RESP:
        if m.index > log.last_index() or (m.reject and m.reject_hint > log.last_index()):
            return "an acknowledgement of entries this node does not have"
    elif t == MessageType.SNAP and m.snapshot is None:
        return "a snapshot message without a snapshot"
    return None


T = TypeVar("T")


@dataclass
class Proposals(Generic[T]):
    """A node's own proposals awaiting their outcome, matched by (index, term).

    ``add`` after a successful propose; feed every ``apply`` result to ``resolve``, which yields
    ``(token, Applied)`` when the proposal's entry was applied, or ``(token, None)`` when the
    outcome is unknown (its index was taken by another term's entry or skipped by a snapshot
    install: retry with the same id/req).  At most ``pending_max`` proposals wait at once.
    """

    pending_max: int = 65_536
    _pending: dict[int, tuple[int, T]] = field(default_factory=dict)
    # every index added, smallest first; an index no longer pending is dropped when it comes
    # to the top (so finding the lowest pending index is not a scan of all of them)
    _heap: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, index: int, term: int, token: T) -> T | None:
        """Wait for (index, term).  Returns the token of an older proposal at the same index,
        if any: a new entry there means the older one was overwritten (outcome unknown)."""
        old = self._pending.pop(index, None)
        if old is None and len(self._pending) >= self.pending_max:
            raise OverflowError("too many proposals pending")
        self._pending[index] = (term, token)
        if old is None:
            heapq.heappush(self._heap, index)
        return old[1] if old is not None else None

    def discard(self, index: int, token: T) -> None:
        """Stop waiting for ``index`` if ``token`` waits there (its proposer gave up)."""
        p = self._pending.get(index)
        if p is not None and p[1] == token:
            del self._pending[index]

    def resolve(
        self, applied: list[Applied], applied_index: int
    ) -> Iterator[tuple[T, Applied | None]]:
        """Outcomes decided by one ``apply`` result; ``applied_index`` is the replica's applied
        index afterwards (proposals at or below it that did not come out are unknown)."""
        pending = self._pending
        if not pending:
            self._heap.clear()
            return
        for a in applied:
            p = pending.pop(a.index, None)
            if p is not None:
                yield p[1], (a if p[0] == a.term else None)
        heap = self._heap
        while heap and (heap[0] not in pending or heap[0] <= applied_index):
            idx = heapq.heappop(heap)
            p = pending.pop(idx, None)
            if p is not None:
                # skipped by a snapshot install: never seen here, so unknown
                yield p[1], None
