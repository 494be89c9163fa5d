"""Grenache over WebSocket: RPC and pub/sub, wire-compatible with grenache-nodejs-ws.

Theory of operation
-------------------
*RPC.* A client connects to ``ws://ip:port/ws`` and sends each request as one text frame
``[rid, key, payload]``; the server answers each with one text frame ``[rid, err, result]``,
in any order. Several requests share one socket, matched by rid. Server side,
:func:`serve_ws_rpc` runs inside :class:`~grenex.grenache.http.PeerRPCServer` (which accepts
upgrades on any path): each frame becomes a task, at most ``inflight_max`` per socket (the
server stops reading the socket beyond that: backpressure, not an unbounded queue). A frame
that is not a request still gets one reply, ``[null, "ERR_REQUEST_INVALID: ...", null]``.
Client side, :class:`WsPeerRPCClient` keeps one socket per peer, its own WebSocket client
on an asyncio protocol (TLS in the protocol, as :mod:`~grenex.grenache._tlslayer` does it):
requests sent in the same turn of the loop leave in one write, reply frames resolve the
pending futures by rid as they are read, and a closing socket fails what is pending with
``ERR_TRANSPORT_CLOSE``. (The server side is served by the front,
:mod:`~grenex.grenache._fastserve`; :func:`serve_ws_rpc` serves it on aiohttp, for a server
started with ``front=False``.)

*Pub/sub.* A :class:`PeerPub` is a WebSocket server that announces its topic; ``pub(msg)``
sends ``msg`` unchanged (text for str, binary for bytes) to every connected socket. The frame
is encoded once into a bounded broadcast ring, and every subscriber reads it from there at its
own cursor: a subscriber that falls more than the ring behind is disconnected rather than
allowed to grow our memory or the cost of publishing. A :class:`PeerSub` looks the topic up,
connects to one random publisher and sends nothing. Unlike the Node subscriber, when its
publisher goes away it looks the topic up again and connects to another publisher (avoiding
the one that just failed, which the DHT may still list), with exponential backoff between
``backoff_min_ms`` and ``backoff_max_ms``. Messages published while no publisher is connected
are not seen: pub/sub is at-most-once, as in Node.

*TLS.* Servers take an :class:`ssl.SSLContext` or a :class:`~grenex.grenache.tls.ServerTLS`.
:class:`WsPeerRPCClient` takes ``ssl_for(name)`` (a context per service name) and
:class:`PeerSub` a context for its topic; with a
:class:`~grenex.grenache.tls.PinnedContext` the publisher's or server's certificate is checked
right after the connection is made, before a request is sent or a message is believed. A
publisher that fails is avoided like one that went away.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import ssl
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from types import TracebackType
from typing import Final, Self

import aiohttp
from aiohttp import WSMsgType, web

from grenex.grenache._core import PeerClientBase, ServiceCore
from grenex.grenache._limits import ConnectionLimits, LimitedServer, upgraded
from grenex.grenache._tlslayer import connect
from grenex.grenache.errors import (
    GrenacheError,
    ProtocolError,
    ReplyError,
    RequestTimeoutError,
    TransportError,
)
from grenex.grenache.link import Link
from grenex.grenache.protocol import Json, check_reply, encode_reply, encode_request, parse_reply
from grenex.grenache.stream import WsClientProtocol, client_frame, frame_length
from grenex.grenache.tls import (
    PeerAuthError,
    PeerCert,
    ServerTLS,
    check_pinned,
    handshake_error,
    make_site,
)

__all__ = ["PeerPub", "PeerSub", "WsPeerRPCClient", "serve_ws_rpc"]

log = logging.getLogger("grenex.grenache.ws")

Message = str | bytes
_CLOSED: Final = object()


async def serve_ws_rpc(
    request: web.BaseRequest,
    core: ServiceCore,
    *,
    frame_bytes_max: int,
    inflight_max: int,
    peer: PeerCert | None = None,
) -> web.WebSocketResponse:
    """Serve Grenache WS RPC on an upgraded request until the socket closes (``peer``: the
    client's TLS certificate, passed to the handlers)."""
    ws = web.WebSocketResponse(max_msg_size=frame_bytes_max, autoping=True, compress=False)
    await ws.prepare(request)
    slots = asyncio.Semaphore(inflight_max)
    tasks: set[asyncio.Task[None]] = set()

    async def answer(frame: str | bytes) -> None:
        try:
            try:
                reply = await core.reply_to(frame, peer)
            except ProtocolError as exc:
                reply = encode_reply(None, exc.message, None)
            if not ws.closed:
                with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
                    await ws.send_frame(reply, WSMsgType.TEXT)
        finally:
            slots.release()

    async for msg in ws:
        if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
            await slots.acquire()
            task = asyncio.get_running_loop().create_task(answer(msg.data))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        else:  # an error frame (e.g. over max size): the socket is being closed
            break
    if tasks:
        # Handlers are bounded by their own timeout; let them finish, their replies are lost.
        await asyncio.gather(*tasks, return_exceptions=True)
    return ws


async def _ws_connect_checked(
    session: aiohttp.ClientSession,
    url: str,
    dest: str,
    ctx: ssl.SSLContext | None,
    name: str,
    *,
    connect_timeout_ms: int,
    frame_bytes_max: int,
) -> aiohttp.ClientWebSocketResponse:
    """Connect a client websocket; with a pinned context, check the peer's certificate
    before returning (nothing is sent or believed before that)."""
    try:
        async with asyncio.timeout(connect_timeout_ms / 1000):
            ws = await session.ws_connect(
                url,
                autoping=True,
                compress=0,
                max_msg_size=frame_bytes_max,
                ssl=ctx if ctx is not None else False,
            )
    except aiohttp.ClientSSLError as exc:
        raise handshake_error(exc, dest, name) from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        if isinstance(exc, ssl.SSLError):
            raise handshake_error(exc, dest, name) from None
        raise _ws_errors_to_transport(exc, url, dest) from None
    if ctx is not None:
        try:
            check_pinned(ctx, ws.get_extra_info("ssl_object"), dest, name)
        except PeerAuthError:
            await ws.close()
            raise
    return ws


def _ws_errors_to_transport(exc: BaseException, url: str, dest: str) -> TransportError:
    return TransportError(
        f"ERR_REQUEST_GENERIC: websocket to {url} failed, reason: {type(exc).__name__}: {exc}",
        peer=dest,
        delivered=False,
    )


class _WsConn(WsClientProtocol):
    """One client socket to one peer (our own WebSocket client on the transport, TLS in the
    protocol as :mod:`~grenex.grenache._tlslayer` does it), with its pending requests by rid.

    Requests sent in the same turn of the loop leave in one write; reply frames (text or
    binary; fragments reassembled up to ``frame_bytes_max``) resolve the futures by rid;
    pings are answered; a close, a broken frame or a lost connection fails what is pending
    with ``ERR_TRANSPORT_CLOSE``."""

    def __init__(
        self, dest: str, key: bytes, inflight_max: int, frame_bytes_max: int, rng: random.Random
    ) -> None:
        super().__init__(key, dest)
        self.dest = dest
        self.frame_bytes_max = frame_bytes_max
        self.rng = rng
        self.pending: dict[str, asyncio.Future[list[Json]]] = {}
        self.slots = asyncio.Semaphore(inflight_max)
        self.frag: bytearray | None = None
        self.out: list[bytes] = []

    # -- the protocol

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.transport = None
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(
                    TransportError(
                        "ERR_TRANSPORT_CLOSE", code="ERR_TRANSPORT_CLOSE", peer=self.dest
                    )
                )
                fut.exception()  # a waiter may have timed out already: mark it retrieved

    def _frames(self) -> None:
        buf = self.buf
        limit = self.frame_bytes_max
        pos = 0
        while (head := frame_length(buf, pos)) is not None:
            b0, b1 = buf[pos], buf[pos + 1]
            if b1 & 0x80:
                raise ValueError("a masked frame from the server")
            n, off = head
            if n > limit:
                raise ValueError(f"a frame over {limit} bytes")
            if len(buf) - pos < off + n:
                break
            payload = bytes(buf[pos + off : pos + off + n])
            pos += off + n
            op = b0 & 0x0F
            if op in (0x0, 0x1, 0x2):
                if op:
                    if self.frag is not None:
                        raise ValueError("a new message inside a fragmented one")
                    if not b0 & 0x80:
                        self.frag = bytearray(payload)
                        continue
                else:
                    frag = self.frag
                    if frag is None:
                        raise ValueError("a continuation frame with nothing to continue")
                    frag += payload
                    if len(frag) > limit:
                        raise ValueError(f"a message over {limit} bytes")
                    if not b0 & 0x80:
                        continue
                    self.frag = None
                    payload = bytes(frag)
                self._reply(payload)
            elif op == 0x9:  # ping: pong with the same payload
                self.send_frame(0xA, payload)
            elif op == 0x8:  # close: answer it; the server ends the connection
                self.send_frame(0x8, payload[:2])
                self._flush()
                self.closed = True
                t = self.transport
                if t is not None:
                    t.close()
                break
            elif op != 0xA:
                raise ValueError(f"a frame with opcode {op}")
        if pos:
            del buf[:pos]

    def _reply(self, payload: bytes) -> None:
        try:
            data = parse_reply(payload, peer=self.dest)
        except ReplyError:
            log.debug("ignoring a non-reply frame from %s", self.dest)
            return
        rid = data[0]
        fut = self.pending.pop(rid, None) if isinstance(rid, str) else None
        if fut is not None and not fut.done():
            fut.set_result(data)

    # -- sending

    def send_frame(self, opcode: int, payload: bytes) -> None:
        """Queue one frame; the frames of this turn of the loop leave in one write."""
        if self.closed or self.transport is None:
            raise TransportError(
                "ERR_TRANSPORT_CLOSE: the socket is closed",
                code="ERR_TRANSPORT_CLOSE",
                peer=self.dest,
            )
        if not self.out:
            asyncio.get_running_loop().call_soon(self._flush)
        self.out.append(client_frame(opcode, payload, self.rng.getrandbits(32).to_bytes(4)))

    def _flush(self) -> None:
        out = self.out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(data)

    async def close(self) -> None:
        t = self.transport
        if t is None or self.closed:
            self.abort()
            return
        with contextlib.suppress(TransportError):
            self.send_frame(0x8, struct.pack("!H", 1000))
        self._flush()
        self.closed = True
        t.close()


async def _ws_rpc_connect(
    dest: str,
    ctx: ssl.SSLContext | None,
    name: str,
    *,
    connect_timeout_ms: int,
    inflight_max: int,
    frame_bytes_max: int,
    rng: random.Random,
) -> _WsConn:
    """Open a WS RPC socket to ``dest``; with a pinned context, check the peer's certificate
    before the upgrade is even sent (nothing is sent or believed before that)."""
    host, _, port = dest.rpartition(":")
    key = base64.b64encode(rng.getrandbits(128).to_bytes(16))
    conn: _WsConn | None = None
    ok = False
    try:
        async with asyncio.timeout(connect_timeout_ms / 1000):
            t, conn = await connect(
                lambda: _WsConn(dest, key, inflight_max, frame_bytes_max, rng),
                host.strip("[]"),
                int(port),
                ctx,
                handshake_timeout_s=connect_timeout_ms / 1000,
            )
            if ctx is not None:
                check_pinned(ctx, t.get_extra_info("ssl_object"), dest, name)
            t.write(
                b"GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n" % (dest.encode(), key)
            )
            await conn.upgraded
        ok = True
        return conn
    except ssl.SSLError as exc:
        raise handshake_error(exc, dest, name) from None
    except (OSError, ValueError, TimeoutError) as exc:
        url = f"{'wss' if ctx is not None else 'ws'}://{dest}/ws"
        raise _ws_errors_to_transport(exc, url, dest) from None
    finally:
        if not ok and conn is not None:
            conn.abort()


class WsPeerRPCClient(PeerClientBase):
    """WebSocket RPC client (one socket per peer, many requests in flight on it).

    ``compress`` is accepted for symmetry and ignored, as by the Node WS transport.
    ``ssl_for(name)``: a TLS context per service name (overrides ``ssl_context``).
    """

    def __init__(
        self,
        link: Link,
        *,
        ssl_context: ssl.SSLContext | None = None,
        ssl_for: Callable[[str], ssl.SSLContext | None] | None = None,
        request_timeout_ms: int = 10_000,
        connect_timeout_ms: int = 3_000,
        attempts_max: int = 3,
        dead_peer_ms: int = 5_000,
        untrusted_peer_ms: int = 30_000,
        inflight_max: int = 1024,
        connections_max: int = 256,
        frame_bytes_max: int = 16 * 1024 * 1024,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            link,
            request_timeout_ms=request_timeout_ms,
            attempts_max=attempts_max,
            dead_peer_ms=dead_peer_ms,
            untrusted_peer_ms=untrusted_peer_ms,
            rng=rng,
            clock=clock,
        )
        self._ssl = ssl_context
        self._ssl_for = ssl_for
        self.connect_timeout_ms = connect_timeout_ms
        self.inflight_max = inflight_max
        self.connections_max = connections_max
        self.frame_bytes_max = frame_bytes_max
        # Sockets by (dest, TLS context): one authenticated under a context serves only it.
        self._conns: OrderedDict[tuple[str, ssl.SSLContext | None], _WsConn] = OrderedDict()
        self._connecting: dict[tuple[str, ssl.SSLContext | None], asyncio.Task[_WsConn]] = {}
        self._mask_rng = random.Random()  # masking keys and upgrade keys (seeded from the OS)

    async def _conn(self, dest: str, name: str) -> _WsConn:
        ctx = self._ssl_for(name) if self._ssl_for is not None else self._ssl
        slot = (dest, ctx)
        conn = self._conns.get(slot)
        if conn is not None and not conn.closed:
            self._conns.move_to_end(slot)
            return conn
        task = self._connecting.get(slot)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._connect(dest, ctx, name))
            self._connecting[slot] = task
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await asyncio.shield(task)

    async def _connect(self, dest: str, ctx: ssl.SSLContext | None, name: str) -> _WsConn:
        slot = (dest, ctx)
        try:
            conn = await _ws_rpc_connect(
                dest,
                ctx,
                name,
                connect_timeout_ms=self.connect_timeout_ms,
                inflight_max=self.inflight_max,
                frame_bytes_max=self.frame_bytes_max,
                rng=self._mask_rng,
            )
            old = self._conns.pop(slot, None)
            self._conns[slot] = conn
            if old is not None:
                await old.close()
            await self._evict()
            return conn
        finally:
            self._connecting.pop(slot, None)

    async def _evict(self) -> None:
        """Close the least recently used idle sockets beyond ``connections_max``."""
        excess = len(self._conns) - self.connections_max
        if excess <= 0:
            return
        for slot, conn in list(self._conns.items()):
            if excess <= 0:
                break
            if not conn.pending:
                del self._conns[slot]
                await conn.close()
                excess -= 1

    async def _exchange(
        self, dest: str, rid: str, key: str, payload: Json, *, compress: bool, timeout_s: float
    ) -> Json:
        body = encode_request(rid, key, payload)
        try:
            async with asyncio.timeout(timeout_s):
                conn = await self._conn(dest, key)
                async with conn.slots:
                    fut: asyncio.Future[list[Json]] = asyncio.get_running_loop().create_future()
                    conn.pending[rid] = fut
                    try:
                        conn.send_frame(0x1, body)
                        data = await fut
                    finally:
                        conn.pending.pop(rid, None)
        except TimeoutError:
            raise RequestTimeoutError(
                f"ERR_TIMEOUT: no reply from ws://{dest}/ws in {timeout_s:g}s", peer=dest
            ) from None
        return check_reply(data, rid, peer=dest)

    async def close(self) -> None:
        conns = list(self._conns.values())
        self._conns.clear()
        for conn in conns:
            await conn.close()


# ------------------------------------------------------------------------------------ pub/sub


class _Sub:
    """One subscriber of a :class:`PeerPub`: its socket and its cursor in the ring."""

    __slots__ = ("address", "cursor", "protocol", "transport", "writer", "ws")

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.BaseRequest,
        address: str,
        cursor: int,
    ) -> None:
        self.ws = ws
        self.protocol = request.protocol
        self.transport = request.transport
        self.address = address
        self.cursor = cursor  # sequence number of the next frame to send it
        self.writer: asyncio.Task[None] | None = None


def ws_frame(msg: Message) -> bytes:
    """The unmasked WebSocket frame (server to client) carrying ``msg``: text for str,
    binary for bytes, FIN set, no compression."""
    if isinstance(msg, str):
        payload, first = msg.encode(), 0x81
    else:
        payload, first = bytes(msg), 0x82
    n = len(payload)
    if n < 126:
        head = bytes((first, n))
    elif n < 65536:
        head = struct.pack("!BBH", first, 126, n)
    else:
        head = struct.pack("!BBQ", first, 127, n)
    return head + payload


def _close_frame(code: int, reason: str) -> bytes:
    data = struct.pack("!H", code) + reason.encode()[:123]
    return bytes((0x88, len(data))) + data


_CLOSE_POLICY: Final = 1008  # the subscriber broke the publisher's policy (fell too far behind)
_CLOSE_GOING_AWAY: Final = 1001
_BATCH_FRAMES_MAX: Final = 256  # frames handed to one subscriber's socket at once


def _abort(transport: asyncio.Transport) -> None:
    """Abort a connection that may be gone already. (CPython 3.11: once a closing transport
    has flushed its buffer and closed, ``abort()`` raises AttributeError instead of doing
    nothing.)"""
    with contextlib.suppress(AttributeError, RuntimeError):
        transport.abort()


class PeerPub:
    """A publisher: a WebSocket server that announces ``topic`` and fans out raw frames.

    Each published message is encoded once, as a WebSocket frame, into a ring of the last
    ``ring_frames_max`` frames; each subscriber has a cursor into it and a writer that hands
    the frames from its cursor to the head to its socket (references, not copies). A subscriber
    more than ``ring_frames_max`` frames behind the head is dropped: sent a close frame (1008,
    ``ERR_SLOW_SUBSCRIBER``) and disconnected (it may reconnect). Publishing costs the same
    whatever the subscribers' backlogs: ``pub`` stores one frame and wakes the writers that
    wait; every ``ring_frames_max // 4`` frames it sweeps the subscribers for ones too far
    behind (their writers are blocked on a full socket) and releases the frames every
    subscriber has passed.

    ``subscribers_max``, ``subscribers_per_address_max``: connections in all and from one IP
    (beyond them: ``503 ERR_SERVICE_BUSY`` at once); the upgrade request must arrive within
    ``body_read_timeout_ms``. ``queue_max`` is the former name of ``ring_frames_max``.
    """

    def __init__(
        self,
        link: Link | None,
        topic: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | ServerTLS | None = None,
        ring_frames_max: int = 4096,
        subscribers_max: int = 1024,
        subscribers_per_address_max: int = 256,
        body_read_timeout_ms: int = 5_000,
        close_timeout_ms: int = 1_000,
        queue_max: int | None = None,
    ) -> None:
        if queue_max is not None:
            ring_frames_max = queue_max
        if ring_frames_max < 1 or close_timeout_ms <= 0:
            raise ValueError("ring_frames_max >= 1, close_timeout_ms > 0")
        self.link = link
        self.topic = topic
        self.host = host
        self._port = port
        self.ssl_context = ssl_context
        self.ring_frames_max = ring_frames_max
        self.subscribers_max = subscribers_max
        self.subscribers_per_address_max = subscribers_per_address_max
        self.close_timeout_ms = close_timeout_ms
        # Connections, not only subscribers: a connection that never upgrades counts too.
        self.limits = ConnectionLimits(
            connections_max=subscribers_max,
            connections_per_address_max=subscribers_per_address_max,
            body_read_timeout_ms=body_read_timeout_ms,
        )
        self._ring: list[bytes | None] = [None] * ring_frames_max
        self._head = 0  # sequence number of the next frame published
        self._kept = 0  # frames older than this one have been released
        self._sweep_every = max(1, ring_frames_max // 4)
        self._until_sweep = self._sweep_every
        self._wake: asyncio.Future[None] | None = None
        self._subs: dict[web.WebSocketResponse, _Sub] = {}
        # Dropped subscribers' connections, aborted if still open after close_timeout_ms.
        self._closing: dict[asyncio.Transport, asyncio.TimerHandle] = {}
        self._runner: web.ServerRunner | None = None
        self.published = 0
        self.dropped_slow = 0  # subscribers disconnected for not keeping up

    @property
    def queue_max(self) -> int:
        return self.ring_frames_max

    @property
    def port(self) -> int:
        return self._port

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    @property
    def ring_frames(self) -> int:
        """Frames held in the ring now (released once every subscriber has passed them)."""
        return self._head - self._kept

    async def start(self) -> None:
        """Bind, then (with a link and a topic) announce the topic every second."""
        if self._runner is None:
            runner = web.ServerRunner(
                LimitedServer(self._handle, limits=self.limits, access_log=None),
                handle_signals=False,
                shutdown_timeout=1.0,
            )
            await runner.setup()
            site = make_site(runner, self.host, self._port, self.ssl_context)
            try:
                await site.start()
            except BaseException:
                await runner.cleanup()
                raise
            self._runner = runner
            for addr in runner.addresses:
                if isinstance(addr, tuple):
                    self._port = int(addr[1])
                    break
        if self.link is not None and self.topic is not None:
            await self.link.start_announcing(self.topic, self._port)

    def pub(self, msg: Message) -> int:
        """Publish ``msg`` to every subscriber (never blocks); return how many subscribe."""
        if not isinstance(msg, str | bytes):
            raise TypeError("a published message is str (text frame) or bytes (binary frame)")
        if not self._subs:
            return 0  # nobody to send it to, and nobody joining later is owed it
        size = self.ring_frames_max
        self._ring[self._head % size] = ws_frame(msg)
        self._head += 1
        self.published += 1
        if self._head - self._kept > size:
            self._kept = self._head - size  # the oldest frame was just overwritten
        wake, self._wake = self._wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)
        self._until_sweep -= 1
        if self._until_sweep <= 0:
            self._until_sweep = self._sweep_every
            self._sweep()
        return len(self._subs)

    def _sweep(self) -> None:
        """Drop the subscribers too far behind; release the frames nobody needs any more."""
        head, size = self._head, self.ring_frames_max
        low = head
        for sub in list(self._subs.values()):
            if head - sub.cursor > size:
                self._drop(sub, f"ERR_SLOW_SUBSCRIBER: more than {size} frames behind")
            elif sub.cursor < low:
                low = sub.cursor
        ring = self._ring
        for seq in range(self._kept, low):
            ring[seq % size] = None
        self._kept = max(self._kept, low)

    async def _write(self, sub: _Sub) -> None:
        """Hand the frames from the subscriber's cursor to the head to its socket."""
        ring, size = self._ring, self.ring_frames_max
        loop = asyncio.get_running_loop()
        try:
            while True:
                head = self._head
                if sub.cursor >= head:
                    if self._wake is None:
                        self._wake = loop.create_future()
                    # Shielded: every waiting writer shares this future, and cancelling one
                    # writer (its subscriber left) must not cancel it for the others.
                    await asyncio.shield(self._wake)
                    continue
                if head - sub.cursor > size:
                    self._drop(sub, f"ERR_SLOW_SUBSCRIBER: more than {size} frames behind")
                    return
                transport = sub.transport
                if transport is None or transport.is_closing():
                    return
                end = min(head, sub.cursor + _BATCH_FRAMES_MAX)
                frames = [ring[seq % size] for seq in range(sub.cursor, end)]
                sub.cursor = end
                transport.writelines(frames)  # type: ignore[arg-type]  # None only below _kept
                # Wait while the socket's buffer is above its high-water mark (aiohttp's
                # protocol implements the transport's flow control).
                await sub.protocol._drain_helper()
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            pass

    def _drop(self, sub: _Sub, reason: str, code: int = _CLOSE_POLICY) -> None:
        """Disconnect a subscriber: a close frame after what is already queued, then the
        connection closed; aborted if its socket does not drain within close_timeout_ms."""
        if self._subs.pop(sub.ws, None) is None:
            return
        if code == _CLOSE_POLICY:
            self.dropped_slow += 1
            log.warning("dropping a slow subscriber %s: %s", sub.address, reason)
        writer = sub.writer
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
        transport = sub.transport
        if transport is None or transport.is_closing():
            return
        transport.write(_close_frame(code, reason))
        transport.close()
        self._closing[transport] = asyncio.get_running_loop().call_later(
            self.close_timeout_ms / 1000, self._abort, transport
        )

    def _abort(self, transport: asyncio.Transport) -> None:
        self._closing.pop(transport, None)
        _abort(transport)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.Response(status=426, text="ERR_UPGRADE_REQUIRED: a websocket publisher")
        upgraded(request)
        if len(self._subs) >= self.subscribers_max:
            return web.Response(status=503, text="ERR_SERVICE_BUSY: too many subscribers")
        peer = request.transport.get_extra_info("peername") if request.transport else None
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        ws = web.WebSocketResponse(autoping=True, compress=False, max_msg_size=64 * 1024)
        await ws.prepare(request)
        sub = _Sub(ws, request, address, self._head)
        self._subs[ws] = sub
        sub.writer = asyncio.get_running_loop().create_task(self._write(sub))
        try:
            async for _msg in ws:  # subscribers send nothing; read to see pings and the close
                pass
        finally:
            self._subs.pop(ws, None)
            sub.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sub.writer
        return ws

    async def stop(self) -> None:
        if self.link is not None and self.topic is not None:
            await self.link.stop_announcing(self.topic, self._port)
        for sub in list(self._subs.values()):
            self._drop(sub, "publisher stopping", _CLOSE_GOING_AWAY)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        closing, self._closing = self._closing, {}
        for transport, handle in closing.items():
            handle.cancel()
            _abort(transport)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class PeerSub:
    """A subscriber to ``topic`` that reconnects to another publisher when its own goes away.

    ``await sub.start()`` then ``async for msg in sub`` (str for text frames, bytes for
    binary). ``queue_max`` bounds unread messages; beyond it reading the socket pauses.
    """

    def __init__(
        self,
        link: Link,
        topic: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout_ms: int = 3_000,
        backoff_min_ms: int = 100,
        backoff_max_ms: int = 5_000,
        avoid_failed_ms: int = 10_000,
        queue_max: int = 1024,
        frame_bytes_max: int = 16 * 1024 * 1024,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < backoff_min_ms <= backoff_max_ms:
            raise ValueError("0 < backoff_min_ms <= backoff_max_ms")
        self.link = link
        self.topic = topic
        self._ssl = ssl_context
        self.connect_timeout_ms = connect_timeout_ms
        self.backoff_min_ms = backoff_min_ms
        self.backoff_max_ms = backoff_max_ms
        self.avoid_failed_ms = avoid_failed_ms
        self.frame_bytes_max = frame_bytes_max
        self._rng = rng or random.Random()
        self._queue: asyncio.Queue[object] = asyncio.Queue(queue_max)
        self._failed: dict[str, float] = {}  # publisher -> avoid until (monotonic)
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.publisher: str | None = None  # "ip:port" of the current publisher
        self.connects = 0  # successful connections so far
        self.auth_failures = 0  # publishers that failed TLS authentication

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"grenache-sub-{self.topic}"
            )

    async def wait_connected(self, timeout_ms: int = 5_000) -> str:
        """Wait until connected to a publisher; return its ``"ip:port"``."""
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                while True:
                    await self._connected.wait()
                    if self.publisher is not None:
                        return self.publisher
                    await asyncio.sleep(0.01)
        except TimeoutError:
            raise RequestTimeoutError(
                f"ERR_TIMEOUT: no publisher of {self.topic!r} reached in {timeout_ms} ms"
            ) from None

    async def recv(self, timeout_ms: int | None = None) -> Message:
        """The next message. Raises :class:`RequestTimeoutError` after ``timeout_ms``, and
        :class:`TransportError` once the subscriber is stopped."""
        if self._stopped and self._queue.empty():
            raise TransportError(
                "ERR_TRANSPORT_CLOSE: subscriber stopped", code="ERR_TRANSPORT_CLOSE"
            )
        try:
            if timeout_ms is None:
                item = await self._queue.get()
            else:
                async with asyncio.timeout(timeout_ms / 1000):
                    item = await self._queue.get()
        except TimeoutError:
            raise RequestTimeoutError(
                f"ERR_TIMEOUT: no message on {self.topic!r} in {timeout_ms} ms"
            ) from None
        if isinstance(item, str | bytes):
            return item
        self._queue.put_nowait(item)  # leave the end marker for other readers
        raise TransportError("ERR_TRANSPORT_CLOSE: subscriber stopped", code="ERR_TRANSPORT_CLOSE")

    def __aiter__(self) -> PeerSub:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.recv()
        except TransportError:
            raise StopAsyncIteration from None

    def _candidates(self, peers: list[str]) -> list[str]:
        now = time.monotonic()
        for dest, until in list(self._failed.items()):
            if until <= now:
                del self._failed[dest]
        fresh = [p for p in peers if p not in self._failed]
        return fresh or peers

    async def _run(self) -> None:
        backoff_ms = self.backoff_min_ms
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=False),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        try:
            while not self._stopped:
                try:
                    peers = await self.link.lookup(self.topic, use_cache=False)
                except (GrenacheError, ValueError) as exc:
                    log.debug("lookup of %s failed: %s", self.topic, exc)
                    peers = []
                candidates = self._candidates(peers)
                if candidates:
                    dest = self._rng.choice(candidates)
                    if await self._consume(session, dest):
                        backoff_ms = self.backoff_min_ms  # it worked for a while: start over
                        continue
                await asyncio.sleep(backoff_ms / 1000 * (0.5 + self._rng.random() / 2))
                backoff_ms = min(self.backoff_max_ms, backoff_ms * 2)
        finally:
            await session.close()

    async def _consume(self, session: aiohttp.ClientSession, dest: str) -> bool:
        """Read one publisher until it goes away. True if the connection was made."""
        url = f"{'wss' if self._ssl is not None else 'ws'}://{dest}/ws"
        try:
            ws = await _ws_connect_checked(
                session,
                url,
                dest,
                self._ssl,
                self.topic,
                connect_timeout_ms=self.connect_timeout_ms,
                frame_bytes_max=self.frame_bytes_max,
            )
        except TransportError as exc:
            log.debug("cannot reach publisher %s of %s: %s", dest, self.topic, exc)
            if isinstance(exc, PeerAuthError):
                self.auth_failures += 1
            self._failed[dest] = time.monotonic() + self.avoid_failed_ms / 1000
            return False
        self.publisher = dest
        self.connects += 1
        self._connected.set()
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                    await self._queue.put(msg.data)
                else:
                    break
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
            log.debug("publisher %s of %s broke: %s", dest, self.topic, exc)
        finally:
            self._connected.clear()
            self.publisher = None
            # The DHT may list a dead publisher for a while: prefer the others next time.
            self._failed[dest] = time.monotonic() + self.avoid_failed_ms / 1000
            with contextlib.suppress(Exception):
                await ws.close()
        return True

    async def stop(self) -> None:
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._connected.clear()
        self.publisher = None
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(_CLOSED)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
