"""The driver service: the one task that touches the replica, and the ticker that feeds it.

Theory of operation
-------------------
Everything else (client API, peer API, forwarding replies, the ticker) only *queues* inputs
here and sets one wake-up event; the driver task takes them all, in a fixed order, and runs
one :meth:`grenex.replica.driver.Driver.turn` — the same turn the simulator runs.  The turn
yields a Ready whose disk work must be flushed: with a data directory the flush (write +
fsync) runs in a worker thread, the only part that leaves the loop; in memory it runs inline.

The gateway (pure) decides every routing question; this service only carries its outputs:

* ``Outcome`` → the client's future (``Applied``, or an :class:`~grenex.codec.api.ApiError`);
* ``Forward`` → with the consensus stream to the leader up, a ``FwdItem`` riding with our
  consensus messages to it (:meth:`Peers.forward`), whose ``FwdAnswer`` comes back with the
  leader's messages to us (:meth:`answers`); else a request to the leader's peer service,
  whose typed reply (or failure) is queued back as a gateway input;
* ``ForwardAnswer`` → the future of the forwarder's pending request, or, for a forward that
  rode the consensus traffic (:meth:`forwarded_by_peer`), a ``FwdAnswer`` riding back.

Bounds: the consensus inbox (``inbox_messages_max``), the gateway's own bounds, the pending
forwarded requests (the gateway's ``forwarded_batches_max``), conf-change requests.
A broken invariant in the pure core stops the node rather than let it diverge.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from grenex.codec.api import BadRequest, Busy, Unavailable
from grenex.codec.peer import Forward as PeerForward
from grenex.codec.peer import FwdAnswer, FwdAt, FwdDeclined, FwdNotLeader, FwdReply
from grenex.consensus import (
    InvalidConfChangeError,
    Message,
    NotLeader,
    ProposalDroppedError,
)
from grenex.node.io import NodeIO
from grenex.node.peers import AskError, Peers
from grenex.replica import Applied, Replica
from grenex.replica.driver import Driver, Snapshots
from grenex.replica.gateway import (
    EXECUTED_BEFORE,
    Fate,
    Forward,
    ForwardAnswer,
    ForwardReply,
    Gateway,
    Outcome,
    reply_from_wire,
    reply_to_wire,
)

__all__ = ["ConfRequest", "DriverService", "DriverStoppedError", "ExecutedBefore"]

log = logging.getLogger("grenex.node.driver")

CONF_REQUESTS_MAX = 64  # membership requests queued for the next turn
REPLIES_MAX = 4_096  # answers to our forwards queued for the next turn (beyond: dropped)


class ExecutedBefore(Unavailable):
    """The leader found the envelope executed before: its first outcome is in the account's
    window (here too, once this node applied that far)."""


class DriverStoppedError(Exception):
    """The driver is not running (stopping, or stopped after a broken invariant)."""


@dataclass
class ConfRequest:
    op: str  # "add_learner" | "promote" | "remove" | "transfer"
    node: str
    done: asyncio.Future[None]


class DriverService:
    """Owns the replica, its gateway and its driver; see the module docstring."""

    def __init__(
        self,
        *,
        node_id: str,
        io: NodeIO,
        replica: Replica,
        gateway: Gateway[int],
        snapshots: Snapshots,
        peers: Peers,
        tick_ms: int,
        durable: bool,
        inbox_messages_max: int,
        forward_timeout_ms: int,
        on_applied: Callable[[list[Applied]], None],
        wake: asyncio.Event | None = None,
        commit_notice_delay_ms: int = 0,
    ) -> None:
        self.node_id = node_id
        self.io = io
        self.replica = replica
        self.gateway = gateway
        self.snapshots = snapshots
        self.peers = peers
        self.tick_ms = tick_ms
        self.durable = durable
        self.inbox_messages_max = inbox_messages_max
        self.forward_timeout_ms = forward_timeout_ms
        # > 0: the commit notices the core deferred go this long after the turn that deferred
        # them, to the members not sent an append meanwhile (raft.py, "Commit notices")
        self.commit_notice_delay_ms = commit_notice_delay_ms
        self._commit_wanted = asyncio.Event()
        self._commit_armed = 0  # the commit index the armed timer will send (0: none armed)
        self._commit_due = 0  # the timer fired: this turn sends up to it
        self.driver: Driver[int] = Driver(replica, gateway, snapshots, peers.send, on_applied)
        peers.on_forwards_failed = self._forwards_failed
        self.wake = wake if wake is not None else asyncio.Event()
        self.stopped = asyncio.Event()
        self.failed = False
        self._ticks_due = 0
        self._inbox: deque[Message] = deque()
        self._reports: deque[tuple[str, bool | None]] = deque()
        self._submits: deque[tuple[int, bytes]] = deque()
        self._forwarded: deque[tuple[str, int, list[bytes]]] = deque()
        # (batch, reply or None for a failure, delivered, why, the answering node or None
        # when the reply came back on the forward's own request)
        self._replies: deque[tuple[int, ForwardReply | None, bool, str, str | None]] = deque()
        self._conf: deque[ConfRequest] = deque()
        self._hooks: list[Callable[[Replica], None]] = []
        self._waiters: dict[int, asyncio.Future[Applied]] = {}
        # (src, batch) -> the future of the forwarder's request, or None: the answer rides
        # back with our consensus messages to src (Peers.answer)
        self._fwd_waiters: dict[tuple[str, int], asyncio.Future[FwdReply] | None] = {}
        self._next_token = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._flushing: asyncio.Future[None] | None = None  # a flush in its worker thread
        self.counters = {
            "inbox_dropped": 0,
            "forwards_failed": 0,
            "forwards_riding": 0,
            "forwards_refused": 0,  # riding forwards from a node outside the configuration
            "commit_timer": 0,  # turns that sent deferred commit notices (as leader)
        }

    # -- running -----------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._drive(), name="driver"),
            asyncio.create_task(self._tick(), name="ticker"),
        ]
        if self.commit_notice_delay_ms > 0:
            self._tasks.append(asyncio.create_task(self._commit_timer(), name="commit notices"))

    def add_turn_hook(self, hook: Callable[[Replica], None]) -> None:
        """``hook(replica)`` runs at the start of every turn, on the driver (e.g. the founding
        and rejoin logic of the leader)."""
        self._hooks.append(hook)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._flushing is not None:  # a cancelled turn's flush goes on in its thread
            await asyncio.wait([self._flushing])
            self._flushing = None
        self.stopped.set()
        why = Unavailable("the node is stopping; sending the same command again is safe")
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(why)
        self._waiters.clear()
        queued = {(src, batch) for src, batch, _ in self._forwarded}  # not given to the gateway
        for key, f in self._fwd_waiters.items():
            if f is None or f.done():
                continue
            if key in queued:  # surely never proposed
                f.set_result(FwdDeclined("the leader is stopping", False))
            else:  # the gateway took it: proposed, maybe (its answer died with the turn)
                f.set_exception(Unavailable("the leader stopped before answering the forward"))
        self._fwd_waiters.clear()
        for req in self._conf:
            if not req.done.done():
                req.done.set_exception(DriverStoppedError("stopping"))

    async def _tick(self) -> None:
        period = self.tick_ms / 1000
        io = self.io
        next_at = io.clock()
        while True:
            next_at += period
            await io.sleep(max(0.0, next_at - io.clock()))
            self._ticks_due += 1
            self.wake.set()

    async def _commit_timer(self) -> None:
        delay = self.commit_notice_delay_ms / 1000
        while True:
            await self._commit_wanted.wait()
            self._commit_wanted.clear()
            await self.io.sleep(delay)
            self._commit_due, self._commit_armed = self._commit_armed, 0
            self.wake.set()

    async def _drive(self) -> None:
        replica = self.replica
        while True:
            await self.wake.wait()
            self.wake.clear()
            try:
                await self._turn(replica)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A broken invariant in the pure core: stop rather than diverge.
                log.exception("driver failed; stopping the node")
                self.failed = True
                self.stopped.set()
                raise

    async def _turn(self, replica: Replica) -> None:
        gw = self.gateway
        for hook in self._hooks:
            hook(replica)
        while self._submits:
            token, data = self._submits.popleft()
            gw.submit(token, data)
        while self._forwarded:
            src, batch, datas = self._forwarded.popleft()
            gw.forwarded(src, batch, datas)
        while self._replies:
            batch, reply, delivered, why, by = self._replies.popleft()
            if reply is None:
                gw.forward_failed(batch, delivered, why)
            else:
                gw.forward_replied(batch, reply, by)
        self._conf_changes(replica)
        ticks, self._ticks_due = self._ticks_due, 0
        msgs = list(self._inbox)
        self._inbox.clear()
        reports = list(self._reports)
        self._reports.clear()
        upto, self._commit_due = self._commit_due, 0
        if upto:
            self.counters["commit_timer"] += 1
        driver = self.driver
        for rd in driver.turn(ticks, msgs, reports, self.io.wall_ms(), upto):
            if self.durable:
                # shielded: a stop waits for a flush under way (its thread goes on writing
                # anyway) before storage is closed
                loop = asyncio.get_running_loop()
                self._flushing = loop.run_in_executor(None, replica.flush, rd)
                await asyncio.shield(self._flushing)
                self._flushing = None
            else:
                replica.flush(rd)
        self._dispatch(gw.take())
        self.peers.flush()  # the turn's consensus messages, one frame per member
        if self.commit_notice_delay_ms > 0 and not self._commit_armed:
            self._commit_armed = driver.commit_deferred()
            if self._commit_armed:
                self._commit_wanted.set()

    def _dispatch(self, outputs: list[Outcome[int] | Forward | ForwardAnswer]) -> None:
        for out in outputs:
            if isinstance(out, Outcome):
                fut = self._waiters.pop(out.token, None)
                if fut is None or fut.done():
                    continue
                if out.fate == Fate.APPLIED:
                    assert out.applied is not None
                    fut.set_result(out.applied)
                elif out.fate == Fate.BUSY:
                    fut.set_exception(Busy(out.why))
                elif out.fate == Fate.INVALID:
                    fut.set_exception(BadRequest(out.why))
                elif out.fate == Fate.REFUSED:
                    fut.set_exception(
                        Unavailable(f"{out.why}; nothing was done: send the command again")
                    )
                elif out.why == EXECUTED_BEFORE:
                    fut.set_exception(ExecutedBefore(f"{out.why}: the outcome is the first one"))
                else:
                    fut.set_exception(
                        Unavailable(
                            f"{out.why}: the outcome is unknown; sending the same command "
                            "again is safe"
                        )
                    )
            elif isinstance(out, Forward):
                if self.peers.stream_up(out.to) and self._rides(out.datas):
                    self.peers.forward(out.to, out.batch, out.datas)
                    self.counters["forwards_riding"] += 1
                else:
                    self.peers.spawn(self._forward(out))
            else:
                key = (out.to, out.batch)
                if key not in self._fwd_waiters:
                    continue
                f = self._fwd_waiters.pop(key)
                if f is None:
                    self.peers.answer(out.to, out.batch, reply_to_wire(out.reply))
                elif not f.done():
                    f.set_result(reply_to_wire(out.reply))

    def _forwards_failed(self, batches: list[int], delivered: bool, why: str) -> None:
        """Riding forwards whose ``raft`` request failed (their stream was down)."""
        self.counters["forwards_failed"] += len(batches)
        for b in batches:
            self._replies.append((b, None, delivered, why, None))
        self.wake.set()

    def _rides(self, datas: list[bytes]) -> bool:
        """A forward small enough to ride in a stream frame (half of one)."""
        return sum(len(d) for d in datas) <= self.peers.limits.batch_bytes_max // 2

    async def _forward(self, fwd: Forward) -> None:
        try:
            reply = await self.peers.ask(
                fwd.to, PeerForward(self.node_id, fwd.batch, fwd.datas), self.forward_timeout_ms
            )
        except AskError as e:
            self.counters["forwards_failed"] += 1
            self._replies.append((fwd.batch, None, e.delivered, str(e), None))
        else:
            if isinstance(reply, FwdAt | FwdNotLeader | FwdDeclined):
                self._replies.append((fwd.batch, reply_from_wire(reply), True, "", None))
            else:
                self._replies.append((fwd.batch, None, True, "the leader answered off-topic", None))
        self.wake.set()

    def _conf_changes(self, replica: Replica) -> None:
        while self._conf:
            req = self._conf.popleft()
            if req.done.done():
                continue
            try:
                if req.op == "add_learner":
                    replica.add_learner(req.node)
                elif req.op == "promote":
                    replica.promote(req.node)
                elif req.op == "remove":
                    replica.remove(req.node)
                else:
                    replica.transfer_leadership(req.node)
                req.done.set_result(None)
            except (NotLeader, ProposalDroppedError, InvalidConfChangeError) as e:
                req.done.set_exception(e)

    # -- inputs (from other services) --------------------------------------------------------

    def _running(self) -> None:
        if self.stopped.is_set():
            raise Unavailable("the node is stopping; sending the same command again is safe")

    def submit(self, data: bytes) -> asyncio.Future[Applied]:
        """Queue a client's command; the future resolves with its outcome (``Applied``) or an
        :class:`ApiError`.  Raises :class:`Busy` at once when the node holds too many."""
        self._running()
        if len(self._waiters) >= self.gateway.limits.submitted_max:
            raise Busy("too many commands pending at this node; retry later")
        token = self._next_token
        self._next_token += 1
        fut: asyncio.Future[Applied] = asyncio.get_running_loop().create_future()
        self._waiters[token] = fut
        self._submits.append((token, data))
        self.wake.set()
        return fut

    def forwarded(self, src: str, batch: int, datas: list[bytes]) -> asyncio.Future[FwdReply]:
        """A forward from ``src``; the future resolves with the answer to send back."""
        self._running()
        key = (src, batch)
        pending = self._fwd_waiters.get(key)
        if pending is not None:
            # a copy of a batch still pending (the forwarder's transport sent it again): the
            # same answer, never a second proposal and never a "busy" for a proposed batch
            return pending
        fut: asyncio.Future[FwdReply] = asyncio.get_running_loop().create_future()
        if len(self._fwd_waiters) >= self.gateway.limits.forwarded_batches_max:
            fut.set_result(FwdDeclined("leader busy", True))
            return fut
        self._fwd_waiters[key] = fut
        self._forwarded.append((src, batch, datas))
        self.wake.set()
        return fut

    def forwarded_by_peer(self, src: str, batch: int, datas: list[bytes]) -> None:
        """A forward that rode ``src``'s consensus traffic (a ``FwdItem``): its answer rides
        back the same way (nothing when this node is stopping: the forwarder's deadline, or
        the next leader, settles it)."""
        if self.stopped.is_set():
            return
        raft = self.replica.raft
        if not (src in raft.voters or src in raft.learners):
            # answers ride only to members (no channel is ever opened to a claimed name)
            self.counters["forwards_refused"] += 1
            return
        key = (src, batch)
        if key in self._fwd_waiters:
            return  # a copy of a batch still pending: the first one's answer serves
        if len(self._fwd_waiters) >= self.gateway.limits.forwarded_batches_max:
            self.peers.answer(src, batch, FwdDeclined("leader busy", True))
            return
        self._fwd_waiters[key] = None
        self._forwarded.append((src, batch, datas))
        self.wake.set()

    def answers(self, src: str, answers: list[FwdAnswer]) -> None:
        """Answers to our forwards that rode ``src``'s consensus traffic; the gateway takes
        only those for batches forwarded to ``src``."""
        room = REPLIES_MAX - len(self._replies)
        for a in answers[: max(0, room)]:
            self._replies.append((a.batch, reply_from_wire(a.reply), True, "", src))
        if answers:
            self.wake.set()

    def drop_forward_waiter(self, src: str, batch: int) -> None:
        self._fwd_waiters.pop((src, batch), None)

    def deliver(self, msgs: list[Message]) -> tuple[int, int]:
        """Consensus messages for the next turn: (taken, dropped for a full inbox)."""
        room = self.inbox_messages_max - len(self._inbox)
        if room <= 0:
            self.counters["inbox_dropped"] += len(msgs)
            return 0, len(msgs)
        taken = msgs[:room]
        me = self.node_id
        self._inbox.extend(m for m in taken if m.dst == me)
        self.wake.set()
        dropped = len(msgs) - len(taken)
        self.counters["inbox_dropped"] += dropped
        return len(taken), dropped

    def report(self, peer: str, ok: bool | None) -> None:
        self._reports.append((peer, ok))
        self.wake.set()

    def conf_change(self, op: str, node: str) -> asyncio.Future[None]:
        self._running()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if len(self._conf) >= CONF_REQUESTS_MAX:
            fut.set_exception(ProposalDroppedError("too many membership requests"))
            return fut
        self._conf.append(ConfRequest(op, node, fut))
        self.wake.set()
        return fut

    def status_extra(self) -> dict[str, Any]:
        gw = self.gateway
        return {
            "pending": gw.pending(),
            "queued": gw.queued(),
            "forwards_inflight": gw.inflight(),
            "dropped_messages": self.driver.dropped_messages,
            "forwards_riding": self.counters["forwards_riding"],
        }
