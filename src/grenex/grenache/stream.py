"""One-way binary channels to an announced service: a WebSocket on a path of its RPC server.

Grenache RPC answers every request, and every request is a JSON array with a fresh id; for
traffic that needs no answer (grenex: consensus messages, which Raft may lose, duplicate or
reorder) that costs more than the message.  A *stream* is a long-lived WebSocket, opened with
an upgrade on a path the server routes to an application handler
(``PeerRPCServer(upgrades={path: open})``), over the same port, the same TLS (mutual, pinned)
and the same connection limits as the service's RPC; each binary frame is one application
message, nothing comes back.

Sender: :class:`StreamSender` (one destination name), a small WebSocket client of its own on
an asyncio protocol (RFC 6455: masked binary frames out; pings answered; a close frame or a
lost connection ends it), so that a frame is written **synchronously**, with no task switch:
``ready()`` says whether a connection is up and, when it is not, starts one attempt in the
background (after a back-off that grows while attempts fail); ``write(frame)`` hands one frame
to the socket at once, or raises :class:`~grenex.grenache.errors.TransportError` (no
connection, or more than ``buffer_bytes_max`` unsent: the peer does not read, and the
connection is dropped).  A ping every ``heartbeat_ms`` finds a peer that went silent: when
nothing came back since the previous ping, the connection is dropped.

Receiver: ``open(peer_cert)`` returns the frame handler, or None to refuse (403 before the
upgrade).  The server's front (:mod:`grenex.grenache._fastserve`) answers the upgrade and
calls the handler for each binary frame from the socket's ``data_received``, with no task
switch; :func:`serve_stream` does the same on aiohttp's WebSocket for a server started with
``front=False``.  A handler that raises closes the socket (1008): bad input never stops the
server.  Frames are never fragmented by the sender; the front refuses fragmented frames
(1003), as it refuses text frames (1003), unmasked frames (1002) and frames over the
server's ``body_bytes_max`` (1009).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import random
import ssl
import struct
import time
from collections.abc import Callable
from typing import Final, cast

import aiohttp
from aiohttp import WSMsgType, web

from grenex.grenache._tlslayer import connect
from grenex.grenache.errors import GrenacheError, TransportError
from grenex.grenache.link import Link
from grenex.grenache.tls import PeerAuthError, PeerCert, check_pinned, handshake_error

__all__ = [
    "CLOSE_POLICY",
    "FrameHandler",
    "StreamOpen",
    "StreamRefusedError",
    "StreamSender",
    "WsClientProtocol",
    "accept_key",
    "client_frame",
    "frame_length",
    "mask",
    "serve_stream",
    "server_frame",
    "upgrade_answered",
]

log = logging.getLogger("grenex.grenache.stream")

FrameHandler = Callable[[bytes], None]
StreamOpen = Callable[[PeerCert | None], FrameHandler | None]

CLOSE_POLICY: Final = 1008  # close code: the peer broke the rules
_WS_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_HEAD_BYTES_MAX: Final = 16 * 1024  # the server's upgrade answer
_IN_FRAME_BYTES_MAX: Final = 64 * 1024  # what a receiver may send back: pings, a close


def _xor_mask(mask: bytes, data: bytearray) -> None:
    n = len(data)
    if n:
        k = (mask * (n // 4 + 1))[:n]
        data[:] = (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


try:  # aiohttp's C masking when it has one (3.11+); the same result either way
    from aiohttp._websocket.helpers import websocket_mask as _mask
except ImportError:  # pragma: no cover - older aiohttp
    _mask = _xor_mask

mask = _mask  # XOR ``data`` in place with the 4-byte ``key`` (masking and unmasking alike)


def _head(opcode: int, n: int, masked: int) -> bytes:
    first = 0x80 | opcode  # FIN set: frames are never fragmented
    if n < 126:
        return bytes((first, masked | n))
    if n < 65536:
        return struct.pack("!BBH", first, masked | 126, n)
    return struct.pack("!BBQ", first, masked | 127, n)


def client_frame(opcode: int, payload: bytes, key: bytes) -> bytes:
    """One masked client-to-server WebSocket frame (FIN set) with masking ``key`` (4 bytes)."""
    body = bytearray(payload)
    _mask(key, body)
    return _head(opcode, len(payload), 0x80) + key + body


def server_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked server-to-client WebSocket frame (FIN set)."""
    return _head(opcode, len(payload), 0) + payload


def accept_key(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())


def frame_length(buf: bytearray, pos: int) -> tuple[int, int] | None:
    """The payload length and the header size before any mask (2, 4 or 10 bytes) of the frame
    starting at ``buf[pos]``, or None while its header is not all there."""
    have = len(buf) - pos
    if have < 2:
        return None
    n = buf[pos + 1] & 0x7F
    if n < 126:
        return n, 2
    if n == 126:
        return (int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4) if have >= 4 else None
    return (int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10) if have >= 10 else None


def upgrade_answered(buf: bytearray, key: bytes, head_bytes_max: int) -> bool:
    """Read the server's answer to our WebSocket upgrade (sent with ``key``) from ``buf``:
    False while its head is incomplete; True, the head taken out of ``buf``, when it is a
    ``101`` accepting ``key``; ValueError for anything else (a refusal, a wrong accept value, a
    head over ``head_bytes_max``)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > head_bytes_max:
            raise ValueError("an upgrade answer without end")
        return False
    lines = bytes(buf[:end]).split(b"\r\n")
    del buf[: end + 4]
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or status[1] != b"101":
        raise ValueError(f"upgrade refused: {lines[0][:80]!r}")
    accept = [
        v.strip()
        for k, _, v in (line.partition(b":") for line in lines[1:])
        if k.strip().lower() == b"sec-websocket-accept"
    ]
    if accept != [accept_key(key)]:
        raise ValueError("the upgrade answer does not accept our key")
    return True


class WsClientProtocol(asyncio.Protocol):
    """The client side of one WebSocket connection we opened ourselves (the stream sender's,
    the WS RPC client's): our upgrade request's answer (``upgraded`` resolves when it is the
    right one), then the server's frames, parsed by the subclass's ``_frames``.  A broken
    answer (``ValueError`` from either) is never believed: the connection ends."""

    def __init__(self, key: bytes, peer: str) -> None:
        self.key = key
        self.peer = peer  # for the log
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.open = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's TLS transport is one without being an instance)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        try:
            if not self.open and not self._upgrade():
                return
            self._frames()
        except ValueError as e:  # a broken answer: never believed, the connection ends
            log.debug("websocket to %s: %s", self.peer, e)
            self.abort()

    def _upgrade(self) -> bool:
        if not upgrade_answered(self.buf, self.key, _HEAD_BYTES_MAX):
            return False
        self.open = True
        if not self.upgraded.done():
            self.upgraded.set_result(None)
        return True

    def _frames(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        self.closed = True
        t = self.transport
        if t is not None:
            with contextlib.suppress(AttributeError, RuntimeError):
                t.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed before the upgrade"))
            self.upgraded.exception()  # retrieved: nobody may be waiting any more


class _Client(WsClientProtocol):
    """One connection of a :class:`StreamSender`: the upgrade, then frames from the server
    (pings answered; a close ends it; nothing else is expected)."""

    def __init__(self, sender: StreamSender, key: bytes) -> None:
        super().__init__(key, f"stream {sender.name}")
        self.sender = sender
        self.received = 0  # chunks received (the heartbeat's evidence of life)

    def data_received(self, data: bytes) -> None:
        self.received += 1
        super().data_received(data)

    def _frames(self) -> None:
        buf = self.buf
        while (head := frame_length(buf, 0)) is not None:
            b0, b1 = buf[0], buf[1]
            if b1 & 0x80:
                raise ValueError("a masked frame from the server")
            n, off = head
            if n > _IN_FRAME_BYTES_MAX:
                raise ValueError("a frame too large from the server")
            if len(buf) < off + n:
                return
            payload = bytes(buf[off : off + n])
            del buf[: off + n]
            op = b0 & 0x0F
            if op == 0x9:  # ping: pong with the same payload
                self.write(client_frame(0xA, payload, self.sender.mask_key()))
            elif op == 0x8:  # close: the receiver is done with us
                self.abort()
                return
            # pongs, and data the receiver should not send, are only evidence of life

    def write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.sender._lost(self)


class StreamRefusedError(Exception):
    """Raised by a frame handler: close the stream (the sender broke the rules)."""


async def serve_stream(
    request: web.BaseRequest,
    on_frame: FrameHandler | None,
    *,
    frame_bytes_max: int,
    heartbeat_ms: int,
) -> web.StreamResponse:
    """Serve one upgraded stream until it closes; ``on_frame`` None refuses it (403)."""
    if on_frame is None:
        return web.Response(status=403, text="ERR_GRENEX_NOT_ALLOWED: not a member's stream")
    ws = web.WebSocketResponse(
        max_msg_size=frame_bytes_max,
        autoping=True,
        compress=False,
        heartbeat=heartbeat_ms / 1000,
    )
    await ws.prepare(request)
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.BINARY:
                break  # text, or an error frame (over max size): the stream is done
            try:
                on_frame(msg.data)
            except Exception as exc:  # bad input closes the stream, nothing else
                log.debug("closing a stream: %s", exc)
                await ws.close(code=CLOSE_POLICY, message=str(exc)[:120].encode())
                break
    except (ConnectionError, aiohttp.ClientError):
        pass
    return ws


class StreamSender:
    """A one-way stream to the service ``name`` (see the module docstring)."""

    def __init__(
        self,
        link: Link,
        name: str,
        path: str,
        ssl_for: Callable[[str], ssl.SSLContext | None],
        *,
        connect_timeout_ms: int = 2_000,
        heartbeat_ms: int = 2_000,
        backoff_min_ms: int = 100,
        backoff_max_ms: int = 5_000,
        buffer_bytes_max: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.link = link
        self.name = name
        self.path = path
        self.ssl_for = ssl_for
        self.connect_timeout_ms = connect_timeout_ms
        self.heartbeat_ms = heartbeat_ms
        self.backoff_min_ms = backoff_min_ms
        self.backoff_max_ms = backoff_max_ms
        self.buffer_bytes_max = buffer_bytes_max
        self.clock = clock
        # masking keys need not be secret inside TLS (RFC 6455 masks against proxies that
        # could be confused by plain bytes); the generator is the shell's, seeded at random
        self._rng = rng or random.Random(os.urandom(16))
        self._conn: _Client | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._beat: asyncio.TimerHandle | None = None
        self._beat_seen = -1
        self._backoff_ms = 0
        self._next_try = 0.0
        self._closed = False
        self.dest: str | None = None
        self.connects = 0  # connections made so far
        self.failures = 0  # attempts or connections that failed

    def mask_key(self) -> bytes:
        return self._rng.getrandbits(32).to_bytes(4, "big")

    @property
    def connected(self) -> bool:
        c = self._conn
        return c is not None and c.open and not c.closed

    def ready(self) -> bool:
        """True when a connection is up; otherwise start an attempt (unless one runs or the
        back-off has not elapsed) and return False."""
        if self.connected:
            return True
        if self._closed or self._connecting is not None or self.clock() < self._next_try:
            return False
        self._connecting = asyncio.get_running_loop().create_task(self._connect())
        return False

    def write(self, frame: bytes) -> None:
        """Hand one binary frame to the connection now (see the module docstring)."""
        c = self._conn
        if c is None or not c.open or c.closed or c.transport is None:
            raise TransportError("ERR_TRANSPORT_CLOSE: the stream is down", delivered=False)
        if c.transport.get_write_buffer_size() > self.buffer_bytes_max:
            self._drop(c, "the receiver does not read")
            raise TransportError(
                f"ERR_TRANSPORT_CLOSE: stream to {self.name}: the receiver does not read",
                peer=self.dest or "",
                delivered=False,
            )
        c.transport.write(client_frame(0x2, frame, self.mask_key()))

    def _drop(self, c: _Client, why: str) -> None:
        log.debug("stream to %s dropped: %s", self.name, why)
        c.abort()
        self._lost(c)

    def _lost(self, c: _Client) -> None:
        if self._conn is not c:
            return
        self._conn = None
        self.failures += 1
        self._grow_backoff()
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None

    def _grow_backoff(self) -> None:
        b = min(self.backoff_max_ms, max(self.backoff_min_ms, self._backoff_ms * 2))
        self._backoff_ms = b
        self._next_try = self.clock() + b * (0.5 + self._rng.random() / 2) / 1000

    def _heartbeat(self) -> None:
        c = self._conn
        self._beat = None
        if c is None or c.closed:
            return
        if c.received == self._beat_seen:  # nothing came back since the last ping
            self._drop(c, "no answer to a ping")
            return
        self._beat_seen = c.received
        c.write(client_frame(0x9, b"", self.mask_key()))
        self._beat = asyncio.get_running_loop().call_later(
            self.heartbeat_ms / 1000, self._heartbeat
        )

    async def _connect(self) -> None:
        try:
            async with asyncio.timeout(self.connect_timeout_ms / 1000):
                dests = await self.link.lookup(self.name)
                ctx = self.ssl_for(self.name)
                for dest in dests:
                    c = await self._open(dest, ctx)
                    if c is not None:
                        self._conn, self.dest = c, dest
                        self.connects += 1
                        self._backoff_ms = 0
                        self._beat_seen = -1
                        self._beat = asyncio.get_running_loop().call_later(
                            self.heartbeat_ms / 1000, self._heartbeat
                        )
                        return
        except (TimeoutError, GrenacheError, OSError) as exc:
            log.debug("stream to %s: %s", self.name, exc)
        finally:
            self._connecting = None
        self.failures += 1
        self._grow_backoff()

    async def _open(self, dest: str, ctx: ssl.SSLContext | None) -> _Client | None:
        host, _, port = dest.rpartition(":")
        key = base64.b64encode(os.urandom(16))
        c: _Client | None = None
        ok = False
        try:
            # TLS in the protocol (_tlslayer): the loop's own costs more per record
            t, c = await connect(
                lambda: _Client(self, key),
                host,
                int(port),
                ctx,
                handshake_timeout_s=self.connect_timeout_ms / 1000,
            )
            check_pinned(ctx, t.get_extra_info("ssl_object"), dest, self.name)
            c.write(
                b"GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n" % (self.path.encode(), dest.encode(), key)
            )
            await c.upgraded
            ok = True
            return c
        except PeerAuthError as exc:  # an impostor announcing the name: never believed
            log.debug("%s", exc)
        except ssl.SSLError as exc:
            log.debug("%s", handshake_error(exc, dest, self.name))
        except (OSError, ValueError) as exc:
            log.debug("stream to %s at %s: %s", self.name, dest, exc)
        finally:
            if not ok and c is not None:
                c.abort()
        return None

    async def close(self) -> None:
        self._closed = True
        task, self._connecting = self._connecting, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None
        c, self._conn = self._conn, None
        if c is not None and c.transport is not None:
            c.closed = True
            c.transport.close()
