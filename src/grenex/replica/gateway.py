"""The gateway: what happens to a client's command between the API and the log (pure, sans-IO).

Theory of operation
-------------------
Every node runs one :class:`Gateway` beside its :class:`~grenex.replica.Replica`.  It owns
every routing decision of the order path, in one place, and does no I/O: inputs are method
calls, outputs are values taken with :meth:`Gateway.take`.  The asyncio node and the simulator
drive the same code (h11 and etcd's proposal forwarding are the models).

Inputs

* :meth:`submit` — a client handed this node a command (its log bytes) under a token;
* :meth:`forwarded` — another node forwarded a batch of commands (we may be the leader);
* :meth:`forward_replied` / :meth:`forward_failed` — what became of a batch we forwarded;
* :meth:`applied` — entries the replica applied (each an :class:`Applied`);
* :meth:`tick` — one tick of the node's clock (every deadline is in ticks);
* :meth:`pump` — after the inputs of a driver turn: propose what waits (if this node leads),
  or ship it to the leader, and answer forwarders.  The replica's role is read here and only
  here; nothing else mirrors it.

Outputs (:meth:`take`)

* :class:`Forward` — send these commands to ``to`` as batch ``batch``;
* :class:`ForwardAnswer` — answer batch ``batch`` of forwarder ``to``: :class:`At` (the
  entries' first index and term), :class:`NotLeaderHere` (not proposed; the hint), or
  :class:`Declined` (not proposed: busy or refused);
* :class:`Outcome` — a token's fate: ``APPLIED`` (committed, applied *here*, with its
  :class:`Applied`: read your writes), ``REFUSED`` (never proposed: safe to send again,
  nothing happened) or ``UNKNOWN`` (it may or may not have executed: send the *same* command
  again, exactly-once makes that safe).  ``BUSY`` is a refusal because a bound was reached.

Matching an outcome: a proposal's entry is identified by ``(index, term)``; it was committed
exactly when an applied entry has that index *and* term (see :class:`Proposals`).  A forwarder
learns ``(index, term)`` from the leader's answer; if that index was applied here before the
answer arrived, the gateway's window of recent entries decides.

Bounds: every token has a deadline (``command_timeout_ticks``); a command that waits for a
leader longer than ``leader_wait_ticks`` is refused; at most ``forwards_inflight_max`` batches
are in flight, each with a deadline; the leader holds at most ``forwarded_batches_max``
forwarded batches per turn; ``submitted_max`` tokens live at once.  Every queue is checked on
insertion; nothing from the network is asserted on.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Generic, NamedTuple, TypeVar

from grenex.codec.peer import FwdAt, FwdDeclined, FwdNotLeader, FwdReply
from grenex.codec.stamp import stamp, unstamp
from grenex.consensus import NotLeader, ProposalDroppedError, Role
from grenex.replica.replica import Applied, Proposals, Replica

__all__ = [
    "EXECUTED_BEFORE",
    "At",
    "Declined",
    "Fate",
    "Forward",
    "ForwardAnswer",
    "ForwardReply",
    "Gateway",
    "GatewayLimits",
    "NotLeaderHere",
    "Outcome",
    "reply_from_wire",
    "reply_to_wire",
]

T = TypeVar("T")

# the ``why`` of an UNKNOWN outcome whose envelope the leader found executed before (its first
# outcome is in the account's window, on every node once it applied that far)
EXECUTED_BEFORE = "executed before: send it again"


@dataclass(frozen=True, slots=True)
class GatewayLimits:
    """Every bound of the gateway, units last."""

    submitted_max: int = 20_000  # client commands alive at once (queued, forwarded, proposed)
    command_timeout_ticks: int = 200  # a command without an outcome by then: UNKNOWN
    leader_wait_ticks: int = 60  # commands waiting this long for a leader: REFUSED
    forward_batch_commands_max: int = 1_024
    forwards_inflight_max: int = 4
    forward_timeout_ticks: int = 100  # a forwarded batch unanswered by then: UNKNOWN
    forwarded_batches_max: int = 64  # batches other nodes forwarded to us, waiting to propose
    recent_entries_max: int = 65_536  # applied entries kept to answer late forward replies
    answered_batches_max: int = 4_096  # answers kept to repeat to a duplicated forward

    def __post_init__(self) -> None:
        assert self.submitted_max >= 1 and self.command_timeout_ticks >= 1
        assert self.leader_wait_ticks >= 1 and self.forward_batch_commands_max >= 1
        assert self.forwards_inflight_max >= 1 and self.forward_timeout_ticks >= 1
        assert self.forwarded_batches_max >= 1 and self.recent_entries_max >= 1
        assert self.answered_batches_max >= 1


class Fate(IntEnum):
    APPLIED = 1
    REFUSED = 2  # never proposed: nothing happened
    BUSY = 3  # never proposed: a bound was reached; retry later
    UNKNOWN = 4  # may have executed: retry with the same command
    INVALID = 5  # never proposed: it failed a SPEC §8 check before the log (``why``: reason)


class Outcome(NamedTuple, Generic[T]):
    token: T
    fate: Fate
    applied: Applied | None  # with APPLIED
    why: str  # with the others


class At(NamedTuple):
    first: int
    term: int
    skipped: tuple[tuple[int, str], ...] = ()  # (position, reason) not proposed


class NotLeaderHere(NamedTuple):
    leader: str | None


class Declined(NamedTuple):
    why: str
    busy: bool


ForwardReply = At | NotLeaderHere | Declined


def reply_to_wire(reply: ForwardReply) -> FwdReply:
    """A leader's answer to a forward, as the peer message that carries it."""
    if isinstance(reply, At):
        return FwdAt(reply.first, reply.term, list(reply.skipped))
    if isinstance(reply, NotLeaderHere):
        return FwdNotLeader(reply.leader)
    return FwdDeclined(reply.why, reply.busy)


def reply_from_wire(reply: FwdReply) -> ForwardReply:
    """The peer message's answer, as the gateway takes it."""
    if isinstance(reply, FwdAt):
        return At(reply.first, reply.term, tuple((int(p), str(r)) for p, r in reply.skipped))
    if isinstance(reply, FwdNotLeader):
        return NotLeaderHere(reply.leader)
    return Declined(reply.why, reply.busy)


class Forward(NamedTuple):
    to: str
    batch: int
    datas: list[bytes]


class ForwardAnswer(NamedTuple):
    to: str
    batch: int
    reply: ForwardReply


# how far back a new leader looks for the newest time stamp in its log (past no-ops and
# membership entries)
_STAMP_SCAN_ENTRIES = 1024

# where a live token is
_QUEUED = 0
_FORWARDING = 1
_PROPOSED = 2


@dataclass
class _Live(Generic[T]):
    token: T
    data: bytes
    where: int = _QUEUED
    index: int = 0  # with _PROPOSED
    queued_at: int = 0  # the tick it was submitted


@dataclass
class _Inflight:
    to: str
    tids: list[int]
    deadline: int


@dataclass
class Gateway(Generic[T]):
    """One node's order path; see the module docstring."""

    node_id: str
    limits: GatewayLimits = field(default_factory=GatewayLimits)
    now: int = 0  # ticks
    # Batch numbers name a forward to its answer, so they must not repeat across restarts of
    # this node: a late answer to the previous incarnation's batch 0 (or a leader's waiter
    # keyed by (src, batch)) would otherwise be matched to the new batch 0 and acknowledge
    # another command's entry.  The shell draws it per start (the simulator: incarnation
    # << 32; the node: random or clock bits).
    first_batch: int = 0
    # the leader's SPEC §8 checks 1–5 before it appends a command (its log bytes): None to
    # propose it, "duplicate" when it was executed before, or a §8 reason code
    precheck: Callable[[bytes], str | None] | None = None
    _next_tid: int = 0
    _next_batch: int = 0
    _live: dict[int, _Live[T]] = field(default_factory=dict)
    _queue: deque[int] = field(default_factory=deque)  # tids not sent anywhere yet, in order
    _deadlines: deque[tuple[int, int]] = field(default_factory=deque)  # (tick, tid), in order
    _inflight: dict[int, _Inflight] = field(default_factory=dict)
    _forwarded: deque[tuple[str, int, list[bytes]]] = field(default_factory=deque)
    # (src, batch) -> the answer given: a copy of a forward (the network duplicated it) gets
    # the same answer and is never proposed again, so "Declined"/"NotLeaderHere" stays true
    _answered: OrderedDict[tuple[str, int], ForwardReply] = field(default_factory=OrderedDict)
    _proposals: Proposals[int] = field(default_factory=lambda: Proposals(1 << 62))
    _recent: OrderedDict[int, Applied] = field(default_factory=OrderedDict)
    _applied_index: int = 0
    _leaderless_since: int | None = None
    _now_ms: int = 0
    _last_time: int = 0  # the newest entry time seen (applied, proposed or read from the log)
    # (index, term) of the last entry _log_time looked at: the same index and term mean the
    # same log up to there (log matching), a new term at an old index means a new log tail
    _time_checked_at: tuple[int, int] = (-1, -1)
    _out: list[Outcome[T] | Forward | ForwardAnswer] = field(default_factory=list)
    counters: dict[str, int] = field(
        default_factory=lambda: {
            "submitted": 0,
            "forwards_sent": 0,
            "forwards_taken": 0,
            "forward_replies_ignored": 0,
            "applied": 0,
            "refused": 0,
            "busy": 0,
            "unknown": 0,
            "invalid": 0,
        }
    )

    # -- inputs ------------------------------------------------------------------------------

    def __post_init__(self) -> None:
        assert self.first_batch >= 0
        self._next_batch = max(self._next_batch, self.first_batch)

    def submit(self, token: T, data: bytes) -> bool:
        """Take a client's command; False (and a BUSY outcome) when ``submitted_max`` are
        alive.  The outcome comes out of :meth:`take` later, exactly once per token."""
        self.counters["submitted"] += 1
        if len(self._live) >= self.limits.submitted_max:
            self._emit(token, Fate.BUSY, None, "too many commands pending at this node")
            return False
        tid = self._next_tid
        self._next_tid += 1
        self._live[tid] = _Live(token, data, queued_at=self.now)
        self._queue.append(tid)
        dl = self._deadlines
        dl.append((self.now + self.limits.command_timeout_ticks, tid))
        if len(dl) > 2 * self.limits.submitted_max:
            # settled tokens' deadlines linger until due: drop them, so the deque stays
            # bounded by the live tokens whatever the throughput
            live = self._live
            self._deadlines = deque(d for d in dl if d[1] in live)
        return True

    def forwarded(self, src: str, batch: int, datas: list[bytes]) -> None:
        """A batch another node forwarded to us; answered by the next :meth:`pump`."""
        self.counters["forwards_taken"] += 1
        done = self._answered.get((src, batch))
        if done is not None:  # a copy: the same answer (the first copy's fate is the batch's)
            self._out.append(ForwardAnswer(src, batch, done))
            return
        if any(s == src and b == batch for s, b, _ in self._forwarded):
            return  # a copy of a batch still queued: its answer will serve
        if not datas:  # only a broken or hostile peer sends one; propose_many asserts on it
            self._answer(src, batch, Declined("empty forward batch", False))
            return
        if len(self._forwarded) >= self.limits.forwarded_batches_max:
            self._answer(src, batch, Declined("leader busy", True))
            return
        self._forwarded.append((src, batch, datas))

    def forward_replied(self, batch: int, reply: ForwardReply, src: str | None = None) -> None:
        """The answer to a batch we forwarded (a late or repeated answer is ignored).  ``src``:
        the node that sent the answer, when it did not come back on the forward's own request
        (it rode that node's consensus traffic): only the node the batch went to answers it."""
        fl = self._inflight.get(batch)
        if fl is None or (src is not None and src != fl.to):
            self.counters["forward_replies_ignored"] += 1
            return
        del self._inflight[batch]
        if isinstance(reply, At):
            first, term = reply.first, reply.term
            skipped = dict(reply.skipped)
            n = len(fl.tids)
            if (
                len(skipped) != len(reply.skipped)
                or any(not 0 <= p < n for p in skipped)
                or (len(skipped) < n and (first < 1 or term < 1))
            ):  # nonsense from the network: we cannot tell
                self._settle(fl.tids, Fate.UNKNOWN, "the leader answered nonsense")
                return
            i = 0
            for pos, tid in enumerate(fl.tids):
                why = skipped.get(pos)
                if why is None:
                    self._wait_for(tid, first + i, term)
                    i += 1
                else:
                    self._refuse(tid, why)
        elif isinstance(reply, NotLeaderHere):
            self._requeue(fl.tids)  # nothing was proposed: send to whoever leads next
        else:
            self._settle(fl.tids, Fate.BUSY if reply.busy else Fate.REFUSED, reply.why)

    def forward_failed(self, batch: int, delivered: bool, why: str) -> None:
        """A batch we forwarded got no answer: ``delivered`` False when it surely never
        arrived (connection refused), so it was not proposed and goes again."""
        fl = self._inflight.pop(batch, None)
        if fl is None:
            return
        if delivered:
            self._settle(fl.tids, Fate.UNKNOWN, f"forward to {fl.to} failed: {why}")
        else:
            self._requeue(fl.tids)

    def applied(self, entries: list[Applied], applied_index: int) -> None:
        """Entries the replica applied (in order); ``applied_index`` after them."""
        recent = self._recent
        for a in entries:
            recent[a.index] = a
            if a.time is not None and a.time > self._last_time:
                self._last_time = a.time
        while len(recent) > self.limits.recent_entries_max:
            recent.popitem(last=False)
        self._applied_index = applied_index
        for tid, outcome in self._proposals.resolve(entries, applied_index):
            if outcome is None:
                self._settle([tid], Fate.UNKNOWN, "its log position went to another entry")
            else:
                live = self._live.pop(tid, None)
                if live is not None:
                    self._emit(live.token, Fate.APPLIED, outcome, "")

    def tick(self) -> None:
        self.now += 1
        now = self.now
        dl = self._deadlines
        while dl and dl[0][0] <= now:
            _, tid = dl.popleft()
            live = self._live.get(tid)
            if live is None:
                continue
            if live.where == _QUEUED:
                self._settle([tid], Fate.REFUSED, "no leader took it in time")
            else:
                self._settle([tid], Fate.UNKNOWN, "not applied in time")
        if self._inflight:
            late = [b for b, fl in self._inflight.items() if fl.deadline <= now]
            for b in late:
                fl = self._inflight.pop(b)
                self._settle(fl.tids, Fate.UNKNOWN, f"no answer from the leader {fl.to}")
        if self._leaderless_since is not None:
            # commands that have waited leader_wait_ticks while no leader is known (each its
            # own wait: one that just arrived at a long-leaderless node gets its full wait)
            wait = self.limits.leader_wait_ticks
            q = self._queue
            while q:
                live = self._live.get(q[0])
                if live is not None and now - live.queued_at < wait:
                    break
                tid = q.popleft()
                if live is not None:
                    self._settle([tid], Fate.REFUSED, "no leader is known")

    # -- the turn ----------------------------------------------------------------------------

    def pump(self, replica: Replica, now_ms: int = 0) -> None:
        """Propose or forward what waits; answer forwarders.  Once per driver turn, after the
        turn's inputs and before its Ready is taken.  ``now_ms``: the node's wall clock, for the
        time stamp a leader puts on what it proposes (SPEC §6)."""
        self._now_ms = now_ms
        raft = replica.raft
        leads = raft.role == Role.LEADER
        leader = raft.lead
        if leader is None:
            if self._leaderless_since is None:
                self._leaderless_since = self.now
        else:
            self._leaderless_since = None
            if self._inflight and leader != self.node_id:
                self._abandon_forwards_to_others(leader)
        while self._forwarded:
            src, batch, datas = self._forwarded.popleft()
            if not leads:
                self._answer(src, batch, NotLeaderHere(leader))
                continue
            skipped: list[tuple[int, str]] = []
            check = self.precheck
            if check is not None:
                keep: list[bytes] = []
                for pos, d in enumerate(datas):
                    why = check(d)
                    if why is None:
                        keep.append(d)
                    else:
                        skipped.append((pos, why))
                datas = keep
            if not datas:
                self._answer(src, batch, At(0, 0, tuple(skipped)))
                continue
            try:
                first, term = raft.propose_many(self._stamped(replica, datas), origin=src)
            except NotLeader as e:
                self._answer(src, batch, NotLeaderHere(e.leader))
                leads = False
            except ProposalDroppedError as e:
                self._answer(src, batch, Declined(str(e), True))
            else:
                self._answer(src, batch, At(first, term, tuple(skipped)))
        if not self._queue:
            return
        if leads:
            self._propose_queue(replica)
        elif leader is not None and leader != self.node_id:
            self._forward_queue(leader)

    def take(self) -> list[Outcome[T] | Forward | ForwardAnswer]:
        """Everything decided since the last call, in the order decided."""
        out, self._out = self._out, []
        return out

    # -- observing ---------------------------------------------------------------------------

    def pending(self) -> int:
        """Client commands alive here (queued, forwarded or proposed)."""
        return len(self._live)

    def queued(self) -> int:
        return len(self._queue)

    def inflight(self) -> int:
        return len(self._inflight)

    # -- inside ------------------------------------------------------------------------------

    def _live_queue(self) -> list[int]:
        live = self._live
        tids = [t for t in self._queue if t in live]
        self._queue.clear()
        return tids

    def _propose_queue(self, replica: Replica) -> None:
        tids = self._live_queue()
        if not tids:
            return
        live = self._live
        check = self.precheck
        if check is not None:
            keep: list[int] = []
            for t in tids:
                why = check(live[t].data)
                if why is None:
                    keep.append(t)
                else:
                    self._refuse(t, why)
            tids = keep
            if not tids:
                return
        try:
            first, term = replica.raft.propose_many(
                self._stamped(replica, [live[t].data for t in tids])
            )
        except NotLeader:
            self._queue.extend(tids)
            return
        except ProposalDroppedError as e:
            self._settle(tids, Fate.BUSY, f"proposal refused ({e})")
            return
        for i, tid in enumerate(tids):
            self._wait_for(tid, first + i, term)

    def _stamped(self, replica: Replica, datas: list[bytes]) -> list[bytes]:
        """The leader's stamp: max(its clock, the previous entry's time), for each entry."""
        t = max(self._now_ms, self._log_time(replica))
        self._last_time = t
        return [stamp(t, d) for d in datas]

    def _log_time(self, replica: Replica) -> int:
        """The newest time stamp in this node's log (entries are stamped in increasing time,
        so the last stamped entry holds it).  Remembered per index: a leader reads its log
        back only when it starts proposing in a new position."""
        raft = replica.raft
        last = raft.log.last_index()
        key = (last, raft.log.last_term())
        if key == self._time_checked_at:
            return self._last_time
        t = self._last_time
        lo = max(raft.log.first_index(), last - _STAMP_SCAN_ENTRIES + 1)
        i = last
        while i >= lo and i > 0:
            ents = raft.log.entries(i, i + 1, 1 << 62, 1)
            if ents is None:  # compacted away: what was applied is in _last_time already
                break
            if ents:
                found, _ = unstamp(ents[0].data)
                if found is not None:
                    t = max(t, found)
                    break
            i -= 1
        self._time_checked_at = key
        self._last_time = t
        return t

    def _forward_queue(self, leader: str) -> None:
        lim = self.limits
        while self._queue and len(self._inflight) < lim.forwards_inflight_max:
            tids: list[int] = []
            while self._queue and len(tids) < lim.forward_batch_commands_max:
                tid = self._queue.popleft()
                live = self._live.get(tid)
                if live is not None:
                    live.where = _FORWARDING
                    tids.append(tid)
            if not tids:
                return
            batch = self._next_batch
            self._next_batch += 1
            self._inflight[batch] = _Inflight(leader, tids, self.now + lim.forward_timeout_ticks)
            self.counters["forwards_sent"] += 1
            self._out.append(Forward(leader, batch, [self._live[t].data for t in tids]))

    def _answer(self, src: str, batch: int, reply: ForwardReply) -> None:
        answered = self._answered
        answered[(src, batch)] = reply
        while len(answered) > self.limits.answered_batches_max:
            answered.popitem(last=False)
        self._out.append(ForwardAnswer(src, batch, reply))

    def _wait_for(self, tid: int, index: int, term: int) -> None:
        live = self._live.get(tid)
        if live is None:
            return
        if index <= self._applied_index:
            done = self._recent.get(index)
            if done is not None and done.term == term:
                del self._live[tid]
                self._emit(live.token, Fate.APPLIED, done, "")
            else:
                self._settle([tid], Fate.UNKNOWN, "its log position went to another entry")
            return
        live.where = _PROPOSED
        live.index = index
        older = self._proposals.add(index, term, tid)
        if older is not None and older != tid:
            self._settle([older], Fate.UNKNOWN, "its log position went to another entry")

    def _abandon_forwards_to_others(self, leader: str) -> None:
        """Another node leads now: batches forwarded to an old leader and still unanswered
        may or may not have been proposed; their outcome is unknown now (the client sends the
        same command again, to the new leader, at once) instead of at their deadline."""
        old = [b for b, fl in self._inflight.items() if fl.to != leader]
        for b in old:
            fl = self._inflight.pop(b)
            self._settle(fl.tids, Fate.UNKNOWN, f"the leader changed from {fl.to} to {leader}")

    def _requeue(self, tids: list[int]) -> None:
        back = [t for t in tids if t in self._live]
        for t in back:
            self._live[t].where = _QUEUED  # queued_at stays: the queue stays oldest first
        self._queue.extendleft(reversed(back))

    def _refuse(self, tid: int, why: str) -> None:
        """A command the leader's precheck kept out of the log: executed before (its first
        outcome is in the window: UNKNOWN, the client asks again), or a §8 reason."""
        if why == "duplicate":
            self._settle([tid], Fate.UNKNOWN, EXECUTED_BEFORE)
        else:
            self._settle([tid], Fate.INVALID, why)

    def _settle(self, tids: list[int], fate: Fate, why: str) -> None:
        for tid in tids:
            live = self._live.pop(tid, None)
            if live is None:
                continue
            if live.where == _PROPOSED:
                self._proposals.discard(live.index, tid)
            self._emit(live.token, fate, None, why)

    def _emit(self, token: T, fate: Fate, applied: Applied | None, why: str) -> None:
        self.counters[fate.name.lower()] += 1
        self._out.append(Outcome(token, fate, applied, why))
