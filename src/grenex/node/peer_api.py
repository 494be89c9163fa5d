"""The peer service (``grenex:<cluster>:peer:<id>``): what other nodes send us.

Every request is a typed message of :mod:`grenex.codec.peer` (checked against the cluster
secret when there is one); anything else is answered ``ERR_GRENEX_BAD_REQUEST`` and changes
nothing.  Consensus batches go to the driver's bounded inbox (the replica drops what a member
must not believe); forwarded commands go to the gateway, and the request is answered with the
gateway's answer; joins, probes and rejoins are answered from this node's state.  Forwards
and forward answers may also ride with a member's consensus messages (a stream frame or a
``raft`` request: ``FwdItem``, ``FwdAnswer``); a forward that rode in is answered the same
way, with this node's consensus messages to the sender.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec

from grenex.codec.api import BadRequest, Busy, Unavailable
from grenex.codec.peer import (
    Forward,
    Join,
    JoinReply,
    PeerMessage,
    PeerReply,
    PeerWireError,
    Probe,
    RaftAck,
    RaftBatch,
    Rejoin,
    SnapChunk,
    SnapChunkAck,
    decode_peer_request,
    decode_raft_frame,
    encode_peer_reply,
)
from grenex.codec.raft import decode_message
from grenex.codec.stamp import unstamp
from grenex.consensus import (
    EntryKind,
    InvalidConfChangeError,
    MessageType,
    NotLeader,
    ProposalDroppedError,
    Role,
)
from grenex.engine import is_name
from grenex.grenache.stream import StreamRefusedError
from grenex.grenache.tls import PeerCert
from grenex.node.driving import DriverService
from grenex.node.identity import NodeIdentity
from grenex.node.peers import ANSWERS_QUEUED_MAX

__all__ = ["Assemblies", "PeerAPI", "PeerLimitsIn"]

# the consensus messages a learner may send: answers to the leader's appends and heartbeats
_LEARNER_RAFT: Final = (MessageType.APP_RESP, MessageType.HEARTBEAT_RESP)


class PeerLimitsIn(msgspec.Struct, frozen=True):
    messages_per_batch_max: int
    forward_commands_max: int
    command_bytes_max: int
    forward_wait_ms: int
    forwards_per_batch_max: int = 64  # forwards riding in one frame or raft request


class _Transfer:
    __slots__ = ("at", "buf", "digest", "total", "transfer")

    def __init__(self, transfer: int, total: int, digest: bytes, at: float) -> None:
        self.transfer = transfer
        self.total = total
        self.digest = digest
        self.buf = bytearray()
        self.at = at


class Assemblies:
    """Chunked transfers being received (``SnapChunk``): one per sender at a time, at most
    ``transfers_max`` at once, each at most ``bytes_max``, dropped when idle ``idle_s``.
    Pieces must come in order; the last one completes the message (its SHA-256 checked)."""

    def __init__(
        self, bytes_max: int, transfers_max: int, idle_s: float, clock: Callable[[], float]
    ) -> None:
        self.bytes_max = bytes_max
        self.transfers_max = transfers_max
        self.idle_s = idle_s
        self.clock = clock
        self._t: dict[str, _Transfer] = {}
        self.completed = 0
        self.failed = 0

    def take(self, c: SnapChunk) -> tuple[SnapChunkAck, bytes | None]:
        if (
            not 0 < c.total <= self.bytes_max
            or c.offset < 0
            or not c.data
            or c.offset + len(c.data) > c.total
            or len(c.digest) != 32
        ):
            raise BadRequest("a snapshot piece out of bounds")
        now = self.clock()
        t = self._t.get(c.src)
        if t is None or t.transfer != c.transfer:
            if c.offset != 0:
                return SnapChunkAck(0, restart=True), None
            for src in [s for s, x in self._t.items() if now - x.at > self.idle_s]:
                del self._t[src]
                self.failed += 1
            if c.src not in self._t and len(self._t) >= self.transfers_max:
                raise Busy("too many snapshot transfers at once")
            t = self._t[c.src] = _Transfer(c.transfer, c.total, c.digest, now)
        if (c.total, c.digest) != (t.total, t.digest) or c.offset != len(t.buf):
            del self._t[c.src]
            self.failed += 1
            return SnapChunkAck(0, restart=True), None
        t.buf += c.data
        t.at = now
        if len(t.buf) < t.total:
            return SnapChunkAck(len(t.buf)), None
        del self._t[c.src]
        data = bytes(t.buf)
        if hashlib.sha256(data).digest() != t.digest:
            self.failed += 1
            return SnapChunkAck(0, restart=True), None
        self.completed += 1
        return SnapChunkAck(t.total, done=True), data


class PeerAPI:
    """One node's peer service; ``handle`` is the RPC handler."""

    def __init__(
        self,
        node_id: str,
        driver: DriverService,
        limits: PeerLimitsIn,
        secret: bytes | None,
        on_probe: Callable[[Probe], PeerReply] | None = None,
        on_rejoin: Callable[[Rejoin], Awaitable[PeerReply]] | None = None,
        accepts_raft: Callable[[], bool] | None = None,
        prepare: Callable[[list[bytes]], Awaitable[None]] | None = None,
        prefetch: Callable[[list[bytes]], None] | None = None,
        identity: NodeIdentity | None = None,
        assemblies: Assemblies | None = None,
    ) -> None:
        self.assemblies = assemblies
        # with TLS: who may say what (the sender bound to its certificate, its role's types)
        self.identity = identity
        # verify forwarded commands (awaited) and received log entries (in the background) in
        # threads, before the gateway and the apply look at them
        self.prepare = prepare
        self.prefetch = prefetch
        self.node_id = node_id
        self.driver = driver
        self.limits = limits
        self.secret = secret
        self.on_probe = on_probe
        self.on_rejoin = on_rejoin
        self.accepts_raft = accepts_raft  # False: not founded yet (founding.py), drop consensus
        self.refused = 0
        self._checking: set[asyncio.Task[None]] = set()  # forwards being verified in threads

    async def handle(self, key: str, payload: Any, peer: PeerCert | None = None) -> Any:
        try:
            msg = decode_peer_request(payload, self.secret)
        except PeerWireError as e:
            self.refused += 1
            raise BadRequest(str(e)) from None
        if not is_name(msg.src):
            self.refused += 1
            raise BadRequest("src must be a node name")
        ident = self.identity
        if ident is not None:
            sender = ident.sender(peer)
            if sender is None or sender != msg.src:
                self.refused += 1
                raise BadRequest(f"the sender is not {msg.src[:64]} (SPEC §8: bound to its cert)")
            if not self._allowed(msg, ident.role(sender)):
                self.refused += 1
                raise BadRequest(f"{type(msg).__name__} is not for a {ident.role(sender)}")
        return encode_peer_reply(await self._answer(msg))

    def open_stream_v1(self, peer: PeerCert | None) -> Callable[[bytes], None] | None:
        """A stream of version 1 (``RAFT_STREAM_PATH_V1``: frames of consensus messages only,
        from a node of the previous version), under the same rules."""
        return self.open_stream(peer, version=1)

    def open_stream(
        self, peer: PeerCert | None, version: int = 2
    ) -> Callable[[bytes], None] | None:
        """A consensus stream (``RAFT_STREAM_PATH``) opened by ``peer``: its frame handler, or
        None (refused) unless the certificate is a member's.  Each frame is checked as a
        ``RaftBatch`` from that member is (types by role, every message's sender); a frame
        that does not decode, or a sender no longer a member, closes the stream."""
        ident = self.identity
        if ident is None:
            return None  # without certificates nobody is named by the connection
        sender = ident.sender(peer)
        if sender is None:
            self.refused += 1
            return None

        def on_frame(data: bytes) -> None:
            if ident.sender(peer) != sender:
                self.refused += 1
                raise StreamRefusedError(f"{sender} is no longer a member")
            try:
                f = decode_raft_frame(data, version)
            except PeerWireError as e:
                self.refused += 1
                raise StreamRefusedError(str(e)) from None
            self._raft(RaftBatch(sender, f.msgs, f.fwds, f.answers))

        return on_frame

    @staticmethod
    def _allowed(msg: PeerMessage, role: str | None) -> bool:
        """SPEC §8: a role sends only its own message types.  Voters: everything; learners
        (every participant's node): forwarded commands, joins, and their answers to the
        leader's consensus messages (append and heartbeat responses), nothing that could sway
        an election or install a log."""
        if role == "voter":
            return True
        if role != "learner":
            return False
        if isinstance(msg, Forward | Join):
            return True
        # a learner's consensus messages are filtered by type in _raft (decoded once there)
        return isinstance(msg, RaftBatch)

    async def _answer(self, msg: PeerMessage) -> PeerReply:
        if isinstance(msg, RaftBatch):
            return self._raft(msg)
        if isinstance(msg, Forward):
            return await self._forward(msg)
        if isinstance(msg, Join):
            return await self._join(msg)
        if isinstance(msg, SnapChunk):
            if self.assemblies is None:
                raise BadRequest("this node does not take snapshot pieces")
            ack, whole = self.assemblies.take(msg)
            if whole is not None:
                self._raft(RaftBatch(msg.src, [whole]))
            return ack
        if isinstance(msg, Probe):
            if self.on_probe is None:
                raise BadRequest("this node does not answer probes")
            return self.on_probe(msg)
        if self.on_rejoin is None:
            raise BadRequest("this node does not take rejoins")
        return await self.on_rejoin(msg)

    def _raft(self, msg: RaftBatch) -> PeerReply:
        if self.accepts_raft is not None and not self.accepts_raft():
            return RaftAck(0, len(msg.msgs))
        if len(msg.msgs) > self.limits.messages_per_batch_max:
            raise BadRequest("too many messages in one batch")
        if len(msg.fwds) > self.limits.forwards_per_batch_max:
            raise BadRequest("too many forwards in one batch")
        if len(msg.answers) > ANSWERS_QUEUED_MAX:  # the most a sender queues for one member
            raise BadRequest("too many forward answers in one batch")
        for f in msg.fwds:
            self._check_forward(f.cmds, f.batch)
        try:
            decoded = [decode_message(b) for b in msg.msgs]
        except (ValueError, TypeError, msgspec.DecodeError) as e:
            self.refused += 1
            raise BadRequest(f"malformed consensus message: {str(e)[:200]}") from None
        # a message's sender must be the batch's sender (one node cannot speak for another
        # through its batch; authenticating the batch's sender is the transport's job)
        ok = [m for m in decoded if m.src == msg.src]
        ident = self.identity
        if ident is not None and ident.role(msg.src) != "voter":
            ok = [m for m in ok if m.type in _LEARNER_RAFT]
        if self.prefetch is not None:
            datas = [
                unstamp(e.data)[1] for m in ok for e in m.entries if e.kind == EntryKind.NORMAL
            ]
            self.prefetch(datas)
        taken, dropped = self.driver.deliver(ok) if decoded else (0, 0)
        if msg.answers:
            self.driver.answers(msg.src, msg.answers)
        for f in msg.fwds:
            self._forward_riding(msg.src, f.batch, f.cmds)
        return RaftAck(taken, dropped + len(decoded) - len(ok))

    def _check_forward(self, cmds: list[bytes], batch: int) -> None:
        lim = self.limits
        if (
            not cmds
            or len(cmds) > lim.forward_commands_max
            or any(len(c) > lim.command_bytes_max for c in cmds)
            or batch < 0
        ):
            raise BadRequest("a forward holds 1..max commands of bounded size")

    def _forward_riding(self, src: str, batch: int, cmds: list[bytes]) -> None:
        """A forward that rode ``src``'s consensus traffic: to the gateway (after the
        signature threads, when there are any); the answer rides back."""
        if self.prepare is None:
            self.driver.forwarded_by_peer(src, batch, cmds)
            return
        if len(self._checking) >= self.limits.forwards_per_batch_max:
            self.driver.forwarded_by_peer(src, batch, cmds)  # the precheck verifies them
            return
        prepare = self.prepare

        async def check() -> None:
            await prepare(cmds)
            self.driver.forwarded_by_peer(src, batch, cmds)

        task = asyncio.ensure_future(check())
        self._checking.add(task)
        task.add_done_callback(self._checking.discard)

    async def _forward(self, msg: Forward) -> PeerReply:
        self._check_forward(msg.cmds, msg.batch)
        if self.prepare is not None:
            await self.prepare(list(msg.cmds))
        fut = self.driver.forwarded(msg.src, msg.batch, list(msg.cmds))
        try:
            wait = self.limits.forward_wait_ms / 1000
            return await asyncio.wait_for(asyncio.shield(fut), wait)
        except TimeoutError:
            # it may still be proposed: the forwarder must treat its outcome as unknown
            self.driver.drop_forward_waiter(msg.src, msg.batch)
            raise Unavailable("the leader did not answer the forward in time") from None

    async def _join(self, msg: Join) -> PeerReply:
        replica = self.driver.replica
        if msg.src in replica.raft.conf_state().members():
            return JoinReply(True, True)
        m = replica.state.auth.member(msg.src)
        if m is None or m.role == "removed":
            # SPEC §8: only a node the operator admitted (or that joined with a signed
            # ``join`` when the genesis is open) becomes a member
            return JoinReply(False, False, f"{msg.src} is not admitted (SPEC §8 admit/join)")
        if replica.raft.role != Role.LEADER:
            return JoinReply(False, False, f"not the leader (leader: {replica.raft.lead})")
        try:
            await asyncio.wait_for(
                self.driver.conf_change("add_learner", msg.src), self.limits.forward_wait_ms / 1000
            )
        except (NotLeader, ProposalDroppedError, InvalidConfChangeError, TimeoutError) as e:
            return JoinReply(False, False, str(e)[:200])
        except Unavailable as e:
            return JoinReply(False, False, e.why)
        return JoinReply(True, False)
