"""Consensus messages between nodes, over Grenache HTTP peer RPC.

Every destination node has a :class:`PeerChannel`: a bounded queue of encoded messages and a
sender task that ships *everything queued* in one request to ``grenex:<cluster>:peer:<id>``
(resolved through the Grapes, so a restarted peer on a new port is found again), with at most
``peer_requests_inflight_max`` requests in flight.  Raft tolerates loss, duplication and
reordering, so a failed request is simply dropped and reported to the core (which probes the
peer again); nothing here retries.

Wire: ``{"t": "raft", "from": ID, "m": base64(msgpack([message, ...]))}`` where each message
is :func:`grenex.codec.raft.encode_message` bytes.  With a cluster secret
(``GRENEX_CLUSTER_SECRET``) every peer payload also carries ``"mac"``, an HMAC-SHA256 of its
kind, sender and body, and a payload without a valid one is refused: the peer endpoint is then
closed to anyone who does not hold the secret (forged votes, appends, snapshots, joins).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import msgspec

from grenex.codec.raft import decode_message, encode_message
from grenex.consensus import Message, MessageType
from grenex.grenache import GrenacheError, PeerRPCClient

__all__ = ["PeerChannel", "PeerTransport", "decode_batch", "encode_batch", "sign", "verify"]

log = logging.getLogger("grenex.node.transport")

_batch_encoder: Final = msgspec.msgpack.Encoder()
_batch_decoder: Final = msgspec.msgpack.Decoder(list[bytes])


def encode_batch(sender: str, msgs: list[bytes]) -> dict[str, Any]:
    return {
        "t": "raft",
        "from": sender,
        "m": base64.b64encode(_batch_encoder.encode(msgs)).decode(),
    }


def _mac_input(payload: dict[str, Any]) -> bytes | None:
    """What the cluster secret signs in a peer payload: its kind, sender and body."""
    kind, sender = payload.get("t"), payload.get("from")
    if type(kind) is not str or type(sender) is not str:
        return None
    if kind == "raft":
        body = payload.get("m")
    elif kind == "fwd":
        cmds = payload.get("cmds")
        body = "\n".join(cmds) if type(cmds) is list and all(type(c) is str for c in cmds) else None
    else:
        body = ""
    if type(body) is not str:
        return None
    return f"{kind}\n{sender}\n{body}".encode()


def sign(payload: dict[str, Any], secret: bytes | None) -> dict[str, Any]:
    """Add the HMAC-SHA256 of a peer payload under the cluster secret (if there is one)."""
    if secret:
        data = _mac_input(payload)
        assert data is not None
        payload["mac"] = hmac.new(secret, data, hashlib.sha256).hexdigest()
    return payload


def verify(payload: dict[str, Any], secret: bytes | None) -> bool:
    """True when there is no cluster secret, or the payload carries its valid HMAC."""
    if not secret:
        return True
    mac, data = payload.get("mac"), _mac_input(payload)
    if type(mac) is not str or data is None:
        return False
    return hmac.compare_digest(mac, hmac.new(secret, data, hashlib.sha256).hexdigest())


def decode_batch(payload: dict[str, Any], messages_max: int) -> list[Message]:
    """Decode a peer's batch; raises ValueError (incl. WireError) for anything malformed."""
    blob = payload.get("m")
    if type(blob) is not str:
        raise ValueError("m must be a base64 string")
    raw = _batch_decoder.decode(base64.b64decode(blob, validate=True))
    if len(raw) > messages_max:
        raise ValueError("too many messages in one batch")
    return [decode_message(b) for b in raw]


class PeerChannel:
    """Outbound messages to one peer."""

    def __init__(self, transport: PeerTransport, dst: str) -> None:
        self.transport = transport
        self.dst = dst
        self.queue: deque[tuple[bytes, bool]] = deque()  # (encoded, is_snapshot)
        self.queued_bytes = 0
        self.dropped = 0
        self.wake = asyncio.Event()
        self.inflight: set[asyncio.Task[None]] = set()
        self.task: asyncio.Task[None] | None = None

    def put(self, data: bytes, is_snapshot: bool) -> None:
        cfg = self.transport
        if self.queued_bytes + len(data) > cfg.queue_bytes_max and self.queue:
            # the peer is not keeping up: drop (Raft retransmits what matters)
            self.dropped += 1
            return
        self.queue.append((data, is_snapshot))
        self.queued_bytes += len(data)
        self.wake.set()

    def _take(self) -> tuple[list[bytes], bool]:
        batch: list[bytes] = []
        size = 0
        snap = False
        while self.queue and (
            not batch or size + len(self.queue[0][0]) <= self.transport.batch_bytes_max
        ):
            data, is_snapshot = self.queue.popleft()
            self.queued_bytes -= len(data)
            batch.append(data)
            size += len(data)
            snap = snap or is_snapshot
        return batch, snap

    async def run(self) -> None:
        t = self.transport
        inflight = self.inflight
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.queue:
                if len(inflight) >= t.inflight_max:
                    await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                batch, snap = self._take()
                task = asyncio.create_task(self._send(batch, snap))
                inflight.add(task)
                task.add_done_callback(inflight.discard)

    async def _send(self, batch: list[bytes], snap: bool) -> None:
        t = self.transport
        timeout = t.snapshot_timeout_ms if snap else t.request_timeout_ms
        try:
            await t.client.request(
                t.peer_key(self.dst),
                sign(encode_batch(t.node_id, batch), t.secret),
                timeout_ms=timeout,
            )
        except (TimeoutError, GrenacheError, OSError) as e:
            log.debug("to %s: %s", self.dst, e)
            t.on_failure(self.dst, snap)
        else:
            if snap:
                t.on_snapshot_sent(self.dst)


class PeerTransport:
    """All outbound consensus traffic of one node."""

    def __init__(
        self,
        node_id: str,
        client: PeerRPCClient,
        peer_key: Callable[[str], str],
        on_failure: Callable[[str, bool], None],
        on_snapshot_sent: Callable[[str], None],
        *,
        queue_bytes_max: int,
        batch_bytes_max: int,
        inflight_max: int,
        request_timeout_ms: int,
        snapshot_timeout_ms: int,
        secret: bytes | None = None,
    ) -> None:
        self.node_id = node_id
        self.secret = secret
        self.client = client
        self.peer_key = peer_key
        self.on_failure = on_failure
        self.on_snapshot_sent = on_snapshot_sent
        self.queue_bytes_max = queue_bytes_max
        self.batch_bytes_max = batch_bytes_max
        self.inflight_max = inflight_max
        self.request_timeout_ms = request_timeout_ms
        self.snapshot_timeout_ms = snapshot_timeout_ms
        self.channels: dict[str, PeerChannel] = {}

    def send(self, m: Message) -> None:
        ch = self.channels.get(m.dst)
        if ch is None:
            ch = self.channels[m.dst] = PeerChannel(self, m.dst)
            ch.task = asyncio.create_task(ch.run(), name=f"peer-{m.dst}")
        ch.put(encode_message(m), m.type == MessageType.SNAP)

    async def close(self) -> None:
        tasks = [ch.task for ch in self.channels.values() if ch.task is not None]
        tasks += [t for ch in self.channels.values() for t in ch.inflight]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
