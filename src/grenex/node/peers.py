"""Outbound traffic to other nodes' peer service (``grenex:<cluster>:peer:<id>``).

Consensus messages: every destination has a :class:`_Channel`, a bounded queue of encoded
messages and a sender task that ships *everything queued* as one :class:`RaftBatch` request,
at most ``inflight_max`` requests in flight per destination.  Raft tolerates loss,
duplication and reordering, so a failed request is dropped and reported to the core (which
probes the peer again); nothing here retries.

A message larger than ``chunk_bytes`` (a snapshot) travels in pieces (``SnapChunk``), one
small request each, in order (:meth:`Peers.send_in_chunks`): so every peer request stays small
and the peer service's body cap can be small too.

When the I/O offers streams (real sockets: :mod:`grenex.grenache.stream`), consensus messages
travel on a long-lived one-way stream per destination instead: one WebSocket frame per batch
(``encode_raft_frame``: the messages' bytes in a MessagePack array), no request id, no answer,
no JSON or base64 around them, the sender named by its TLS certificate.  While a stream is
down (not yet connected, broken, a peer that does not serve it) the batch goes as a request,
as before, and the stream is tried again after a back-off.  Snapshots always go as requests.

Forwarded commands ride with the consensus messages when the stream to the leader is up
(:meth:`Peers.forward`: a ``FwdItem`` in the frame), and the leader's answer rides with its
own consensus messages to us (:meth:`Peers.answer`: a ``FwdAnswer``), so a forward costs no
request, no reply and no write of its own; when the stream is down, a queued forward or answer
goes in the channel's ``raft`` request instead.  Other messages (forwards while the stream to
the leader is down, join, probe, rejoin) go through :meth:`Peers.ask`, one request and its
typed reply (``grenex.codec.peer``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from grenex.codec.api import service_names
from grenex.codec.peer import (
    FwdAnswer,
    FwdItem,
    FwdReply,
    PeerMessage,
    PeerReply,
    PeerWireError,
    RaftBatch,
    SnapChunk,
    SnapChunkAck,
    decode_peer_reply,
    encode_peer_request,
    encode_raft_frame,
)
from grenex.codec.raft import encode_message
from grenex.consensus import Message, MessageType
from grenex.grenache import GrenacheError, PeerRPCClient
from grenex.grenache.errors import (
    GrapeError,
    GrapeUnavailableError,
    LookupEmptyError,
    TransportError,
)
from grenex.grenache.stream import StreamSender

__all__ = ["ANSWERS_QUEUED_MAX", "AskError", "PeerLimits", "Peers"]

# forward answers queued for one destination (beyond: dropped, the forwarder's deadline
# settles them); also the most one frame or request carries, as the receiver accepts
ANSWERS_QUEUED_MAX = 1_024
WRITTEN_KEPT = 64  # riding forwards remembered per stream connection (see _Channel.written)

log = logging.getLogger("grenex.node.peers")


class AskError(Exception):
    """A peer request got no usable reply; ``delivered`` False when it surely never arrived."""

    def __init__(self, why: str, delivered: bool) -> None:
        super().__init__(why)
        self.delivered = delivered


@dataclass(frozen=True, slots=True)
class PeerLimits:
    queue_bytes_max: int  # per destination, before dropping
    batch_bytes_max: int  # per request
    inflight_max: int  # requests per destination
    request_timeout_ms: int
    snapshot_timeout_ms: int  # a whole chunked transfer
    chunk_bytes: int = 1 << 20  # a larger message (a snapshot) travels in pieces of this size


class _Channel:
    def __init__(self, peers: Peers, dst: str) -> None:
        self.peers = peers
        self.dst = dst
        self.queue: deque[tuple[bytes, bool]] = deque()  # (encoded, is_snapshot)
        self.queued_bytes = 0
        self.dropped = 0
        self.wake = asyncio.Event()
        self.inflight: set[asyncio.Task[None]] = set()
        self.task: asyncio.Task[None] | None = None
        self.stream: StreamSender | None = None
        # forwards to this node (the leader) and answers to its forwards: not dropped for a
        # full queue (the forwarder's gateway bounds its forwards in flight; answers are
        # bounded by ANSWERS_QUEUED_MAX)
        self.fwds: deque[FwdItem] = deque()
        self.answers: deque[FwdAnswer] = deque()
        # forwards written on the stream's connection number ``written_on`` (the newest few:
        # a forwarder has only a few in flight); if that connection breaks they may or may
        # not have been read, and their forwarder is told so at once
        self.written: deque[int] = deque(maxlen=WRITTEN_KEPT)
        self.written_on = 0

    def pending(self) -> bool:
        return bool(self.queue or self.fwds or self.answers)

    def put_control(self) -> None:
        """A forward or an answer was queued: the end of the turn writes it on the stream,
        else the channel's task sends it in a request."""
        if self.stream is None or not self.stream.connected:
            self.wake.set()

    def put(self, data: bytes, is_snapshot: bool) -> None:
        lim = self.peers.limits
        if self.queued_bytes + len(data) > lim.queue_bytes_max and self.queue:
            self.dropped += 1  # the peer is not keeping up: Raft sends again what matters
            return
        self.queue.append((data, is_snapshot))
        self.queued_bytes += len(data)
        if self.stream is None or is_snapshot or not self.stream.connected:
            self.wake.set()  # else Peers.flush writes it at the end of the driver turn

    def stream_out(self) -> bool:
        """Write what is queued up to the next snapshot to the stream, now, as one frame
        (with the queued forwards and answers); False when there is no stream up (or only a
        snapshot is next): the requests carry it."""
        stream = self.stream
        q = self.queue
        plain = bool(q) and not q[0][1]
        if stream is None or not (plain or self.fwds or self.answers) or not stream.ready():
            return False
        answers, fwds, size = self._take_control()
        batch = self._take_plain(size, not fwds)
        try:
            stream.write(encode_raft_frame(batch, fwds, answers))
            if fwds:
                if self.written_on != stream.connects:
                    self.written.clear()
                    self.written_on = stream.connects
                self.written.extend(f.batch for f in fwds)
        except TransportError as e:
            log.debug("stream to %s: %s", self.dst, e)
            # forwards and answers go again, in a request; consensus messages need not
            self.fwds.extendleft(reversed(fwds))
            self.answers.extendleft(reversed(answers))
            self.peers.on_failure(self.dst, False)
            self.wake.set()
            return False
        return True

    def check_written(self) -> None:
        """Forwards written on a connection that is gone: their outcome is unknown now
        (they may have been read), not at the forwarder's deadline."""
        stream = self.stream
        if not self.written or stream is None:
            return
        if stream.connected and stream.connects == self.written_on:
            return
        batches = list(self.written)
        self.written.clear()
        cb = self.peers.on_forwards_failed
        if cb is not None:
            cb(batches, True, f"the stream to {self.dst} broke after the forward was written")

    def _take_control(self) -> tuple[list[FwdAnswer], list[FwdItem], int]:
        """The queued answers, and forwards up to the batch size (at least one)."""
        answers = list(self.answers)
        self.answers.clear()
        fwds: list[FwdItem] = []
        size = 0
        cap = self.peers.limits.batch_bytes_max
        while self.fwds:
            n = sum(len(c) for c in self.fwds[0].cmds)
            if fwds and size + n > cap:
                break
            fwds.append(self.fwds.popleft())
            size += n
        return answers, fwds, size

    def _take_plain(self, size: int = 0, at_least_one: bool = True) -> list[bytes]:
        """Queued messages up to the next snapshot, within the batch size (``size`` of it
        taken by forwards already; ``at_least_one`` beyond it when nothing else goes)."""
        batch: list[bytes] = []
        cap = self.peers.limits.batch_bytes_max
        q = self.queue
        while q and not q[0][1]:
            n = len(q[0][0])
            if size + n > cap and (batch or not at_least_one):
                break
            data, _ = q.popleft()
            self.queued_bytes -= n
            batch.append(data)
            size += n
        return batch

    def _take(self) -> tuple[list[bytes], bool]:
        batch: list[bytes] = []
        size = 0
        snap = False
        cap = self.peers.limits.batch_bytes_max
        while self.queue and (not batch or size + len(self.queue[0][0]) <= cap):
            data, is_snapshot = self.queue.popleft()
            self.queued_bytes -= len(data)
            batch.append(data)
            size += len(data)
            snap = snap or is_snapshot
        return batch, snap

    async def run(self) -> None:
        inflight = self.inflight
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending():
                if self.stream_out():
                    continue
                if len(inflight) >= self.peers.limits.inflight_max:
                    await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                answers, fwds, _ = self._take_control()
                batch, snap = self._take()
                task = asyncio.create_task(self._send(batch, snap, fwds, answers))
                inflight.add(task)
                task.add_done_callback(inflight.discard)

    async def _send(
        self, batch: list[bytes], snap: bool, fwds: list[FwdItem], answers: list[FwdAnswer]
    ) -> None:
        p = self.peers
        lim = p.limits
        try:
            big = [m for m in batch if len(m) > lim.chunk_bytes]
            small = [m for m in batch if len(m) <= lim.chunk_bytes]
            if small or fwds or answers:
                req = RaftBatch(p.node_id, small, fwds, answers)
                await p.ask(self.dst, req, lim.request_timeout_ms)
            for m in big:  # a snapshot: in pieces, each a small request of its own
                await p.send_in_chunks(self.dst, m)
        except AskError as e:
            log.debug("to %s: %s", self.dst, e)
            p.on_failure(self.dst, snap)
            if fwds and p.on_forwards_failed is not None:
                # as a forward's own request would: not delivered, they go again
                p.on_forwards_failed([f.batch for f in fwds], e.delivered, str(e))
        else:
            if snap:
                p.on_snapshot_sent(self.dst)


class Peers:
    """All outbound traffic of one node to the others."""

    def __init__(
        self,
        node_id: str,
        cluster: str,
        client: PeerRPCClient,
        limits: PeerLimits,
        on_failure: Callable[[str, bool], None],
        on_snapshot_sent: Callable[[str], None],
        secret: bytes | None = None,
        streams: Callable[[str], StreamSender | None] | None = None,
    ) -> None:
        self.streams = streams  # name -> a stream to it (None: requests only)
        self.node_id = node_id
        self.cluster = cluster
        self.client = client
        self.limits = limits
        self.on_failure = on_failure
        self.on_snapshot_sent = on_snapshot_sent
        self.secret = secret
        self.channels: dict[str, _Channel] = {}
        # (batches, delivered, why): riding forwards whose request failed (set by the driver)
        self.on_forwards_failed: Callable[[list[int], bool, str], None] | None = None
        self._transfers = 0  # chunked transfers started (their ids)
        self._tasks: set[asyncio.Task[None]] = set()

    def flush(self) -> None:
        """At the end of a driver turn: what the turn queued for members with a stream up
        goes out now, one frame per member, written without a task switch; the rest (no
        stream, a snapshot) is left to the channels' tasks."""
        for ch in self.channels.values():
            ch.check_written()
            while ch.stream_out():
                pass
            if ch.pending():
                ch.wake.set()

    def streams_up(self) -> int:
        """Destinations whose consensus stream is connected now."""
        return sum(1 for ch in self.channels.values() if ch.stream and ch.stream.connected)

    def stream_up(self, dst: str) -> bool:
        """The consensus stream to ``dst`` is connected now."""
        ch = self.channels.get(dst)
        return ch is not None and ch.stream is not None and ch.stream.connected

    def _channel(self, dst: str) -> _Channel:
        ch = self.channels.get(dst)
        if ch is None:
            ch = self.channels[dst] = _Channel(self, dst)
            if self.streams is not None:
                ch.stream = self.streams(service_names(self.cluster, dst)["peer"])
            ch.task = asyncio.create_task(ch.run(), name=f"peer-{dst}")
        return ch

    def send(self, m: Message) -> None:
        """Queue one consensus message (after its Ready was flushed)."""
        self._channel(m.dst).put(encode_message(m), m.type == MessageType.SNAP)

    def forward(self, dst: str, batch: int, cmds: list[bytes]) -> None:
        """Queue forwarded commands for the leader ``dst``, to ride with our consensus
        messages to it; its answer comes back as a ``FwdAnswer`` with its messages to us."""
        ch = self._channel(dst)
        ch.fwds.append(FwdItem(batch, cmds))
        ch.put_control()

    def answer(self, dst: str, batch: int, reply: FwdReply) -> None:
        """Queue the answer to ``dst``'s forwarded batch, to ride with our messages to it
        (dropped when ``ANSWERS_QUEUED_MAX`` wait already: a member that forwards faster
        than it takes answers)."""
        ch = self._channel(dst)
        if len(ch.answers) >= ANSWERS_QUEUED_MAX:
            ch.dropped += 1
            return
        ch.answers.append(FwdAnswer(batch, reply))
        ch.put_control()

    async def ask(self, dst: str, msg: PeerMessage, timeout_ms: int) -> PeerReply:
        """One request to ``dst``'s peer service and its typed reply."""
        name = service_names(self.cluster, dst)["peer"]
        try:
            raw = await self.client.request(
                name, encode_peer_request(msg, self.secret), timeout_ms=timeout_ms
            )
        except TransportError as e:
            raise AskError(str(e)[:200], e.delivered) from None
        except (LookupEmptyError, GrapeError, GrapeUnavailableError) as e:
            raise AskError(str(e)[:200], False) from None  # never reached the peer
        except GrenacheError as e:  # remote error, timeout, unreadable reply: it may have
            raise AskError(str(e)[:200], True) from None
        try:
            return decode_peer_reply(raw)
        except PeerWireError as e:
            raise AskError(str(e), True) from None

    async def send_in_chunks(self, dst: str, message: bytes) -> None:
        """One consensus message too large for one request (a snapshot), in order, one piece
        at a time; AskError when a piece fails or the whole takes longer than
        ``snapshot_timeout_ms``."""
        lim = self.limits
        self._transfers += 1
        transfer = self._transfers
        digest = hashlib.sha256(message).digest()
        total = len(message)
        view = memoryview(message)
        try:
            async with asyncio.timeout(lim.snapshot_timeout_ms / 1000):
                offset = 0
                while offset < total:
                    piece = bytes(view[offset : offset + lim.chunk_bytes])
                    msg = SnapChunk(self.node_id, transfer, offset, total, digest, piece)
                    reply = await self.ask(dst, msg, lim.request_timeout_ms)
                    if not isinstance(reply, SnapChunkAck):
                        raise AskError("off-topic answer to a snapshot piece", True)
                    if reply.done:
                        return
                    if reply.restart or reply.received != offset + len(piece):
                        raise AskError("the receiver lost the transfer", True)
                    offset += len(piece)
        except TimeoutError:
            raise AskError("snapshot transfer timed out", True) from None
        raise AskError("the receiver did not complete the snapshot", True)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a fire-and-forget request task, kept until it ends (closed with the node)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for ch in self.channels.values():
            if ch.stream is not None:
                await ch.stream.close()
        tasks = [ch.task for ch in self.channels.values() if ch.task is not None]
        tasks += [t for ch in self.channels.values() for t in ch.inflight]
        tasks += list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
