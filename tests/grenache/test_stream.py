"""One-way streams (``grenex.grenache.stream``) on a real server over loopback: frames arrive in
order, a refused or closed stream is noticed by the sender, an impostor's certificate is never
believed, and a mutual-TLS server names the sender to the frame handler."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ssl
import time
from collections.abc import Callable

import pytest

from grenex.grenache import Link, PeerRPCServer, TransportError
from grenex.grenache.stream import FrameHandler, StreamSender, client_frame
from grenex.grenache.testing import async_wait_for
from grenex.grenache.tls import (
    PeerCert,
    ServerTLS,
    TrustAnchors,
    make_self_signed,
    pinned_client_context,
)

pytestmark = pytest.mark.timeout(60)

PATH = "/test/stream/1"


def ident(n: int) -> tuple[bytes, bytes]:
    seed = hashlib.sha256(f"grenache-stream-test-{n}".encode()).digest()
    return seed, make_self_signed(seed, f"n{n}")


def unique(name: str) -> str:
    return f"stream:{name}:{time.monotonic_ns()}"


def no_rpc(key: str, payload: object) -> object:
    raise AssertionError("no RPC expected")


class Sink:
    """Records frames (and who sent them); refuses or raises on demand."""

    def __init__(self, refuse: bool = False, raise_on: bytes | None = None) -> None:
        self.frames: list[bytes] = []
        self.peers: list[PeerCert | None] = []
        self.refuse = refuse
        self.raise_on = raise_on

    def open(self, peer: PeerCert | None) -> FrameHandler | None:
        if self.refuse:
            return None
        self.peers.append(peer)

        def on_frame(data: bytes) -> None:
            if data == self.raise_on:
                raise ValueError("not a frame of ours")
            self.frames.append(data)

        return on_frame


def failed(s: StreamSender, n: int) -> Callable[[], bool]:
    """True once ``n`` attempts failed (asking for a connection, as a channel does)."""

    def check() -> bool:
        s.ready()
        return s.failures >= n

    return check


async def connected(sender: StreamSender, timeout: float = 10.0) -> None:
    await async_wait_for(sender.ready, timeout, message="stream up")


def sender(link: Link, name: str, ssl_for: Callable[[str], ssl.SSLContext | None]) -> StreamSender:
    return StreamSender(
        link, name, PATH, ssl_for, backoff_min_ms=20, backoff_max_ms=100, heartbeat_ms=1_000
    )


async def test_frames_arrive_in_order_and_a_restart_is_survived(link: Link) -> None:
    sink = Sink()
    name = unique("order")
    server = PeerRPCServer(no_rpc, upgrades={PATH: sink.open})
    await server.start()
    port = server.port
    await link.start_announcing(name, port)
    s = sender(link, name, lambda _n: None)
    try:
        assert not s.ready()  # not connected yet: an attempt starts
        await connected(s)
        for i in range(200):
            s.write(b"%d" % i)
        await async_wait_for(lambda: len(sink.frames) == 200, 10.0, message="200 frames")
        assert sink.frames == [b"%d" % i for i in range(200)]
        # the server goes away: the sender notices, sends fail, nothing hangs
        await server.stop()
        await async_wait_for(lambda: not s.connected, 10.0, message="noticed the close")
        with pytest.raises(TransportError):
            s.write(b"lost")
        # and comes back on the same port: the sender reconnects by itself
        server = PeerRPCServer(no_rpc, port=port, upgrades={PATH: sink.open})
        await server.start()
        await connected(s)
        s.write(b"again")
        await async_wait_for(lambda: sink.frames[-1:] == [b"again"], 10.0, message="resent")
        assert s.connects == 2
    finally:
        await s.close()
        await link.stop_announcing(name, port)
        await server.stop()


async def test_a_refused_stream_never_connects_and_backs_off(link: Link) -> None:
    name = unique("refused")
    async with PeerRPCServer(no_rpc, upgrades={PATH: Sink(refuse=True).open}) as server:
        await link.start_announcing(name, server.port)
        s = sender(link, name, lambda _n: None)
        try:
            await async_wait_for(failed(s, 3), 10.0, message="three refusals")
            assert not s.connected and s.connects == 0
            with pytest.raises(TransportError):
                s.write(b"x")
        finally:
            await s.close()
            await link.stop_announcing(name, server.port)


async def test_a_frame_the_handler_refuses_closes_the_stream(link: Link) -> None:
    sink = Sink(raise_on=b"bad")
    name = unique("bad")
    async with PeerRPCServer(no_rpc, upgrades={PATH: sink.open}) as server:
        await link.start_announcing(name, server.port)
        s = sender(link, name, lambda _n: None)
        try:
            await connected(s)
            s.write(b"good")
            s.write(b"bad")
            await async_wait_for(lambda: not s.connected, 10.0, message="closed by the server")
            # the server lives on: a new stream works
            await connected(s)
            s.write(b"after")
            await async_wait_for(
                lambda: sink.frames == [b"good", b"after"], 10.0, message="good frames only"
            )
        finally:
            await s.close()
            await link.stop_announcing(name, server.port)


async def test_mutual_tls_names_the_sender_and_an_impostor_is_never_believed(
    link: Link,
) -> None:
    (seed1, cert1), (seed2, cert2), (seed9, cert9) = ident(1), ident(2), ident(9)
    honest, rogue = Sink(), Sink()
    name = unique("tls")
    tls = ServerTLS(cert1, seed1, TrustAnchors([cert2]))
    async with (
        PeerRPCServer(
            no_rpc, ssl_context=tls, with_peer_cert=True, upgrades={PATH: honest.open}
        ) as server,
        PeerRPCServer(
            no_rpc, ssl_context=ServerTLS(cert9, seed9), upgrades={PATH: rogue.open}
        ) as impostor,
    ):
        await link.start_announcing(name, impostor.port)
        ctx = pinned_client_context([cert1], client_cert=cert2, client_seed=seed2)
        s = sender(link, name, lambda _n: ctx)
        try:
            # only the impostor is announced: the pin refuses it, every time
            await async_wait_for(failed(s, 2), 10.0, message="impostor refused")
            assert s.connects == 0 and rogue.frames == [] and rogue.peers == []
            await link.start_announcing(name, server.port)
            await connected(s, 15.0)
            s.write(b"hello")
            await async_wait_for(lambda: honest.frames == [b"hello"], 10.0, message="delivered")
            peer = honest.peers[0]
            assert peer is not None and peer.der == cert2
            assert rogue.frames == []
        finally:
            await s.close()
            await link.stop_announcing(name, impostor.port)
            await link.stop_announcing(name, server.port)


async def test_close_stops_connecting(link: Link) -> None:
    """A sender closed while its attempt runs leaves no task behind and never starts
    another, though a receiver is there to connect to."""
    name = unique("closed")
    async with PeerRPCServer(no_rpc, upgrades={PATH: Sink().open}) as server:
        await link.start_announcing(name, server.port)
        s = sender(link, name, lambda _n: None)
        try:
            assert not s.ready()  # an attempt starts
            await s.close()
            assert s._connecting is None  # cancelled and awaited
            assert not s.ready() and s._connecting is None and not s.connected
            assert s.connects == 0
        finally:
            await link.stop_announcing(name, server.port)


class RawServer:
    """A bare WebSocket server: accepts the upgrade, then sends ``after`` (raw bytes) and
    records what the client sends; it never answers a ping by itself."""

    def __init__(self, after: bytes = b"") -> None:
        self.after = after
        self.got = bytearray()
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(
            hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n" + self.after
        )
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                self.got += data
        writer.close()

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def unmask(frame: bytes) -> tuple[int, bytes]:
    """(opcode, payload) of one masked client frame with a short payload."""
    assert frame[1] & 0x80, "a client frame must be masked"
    n = frame[1] & 0x7F
    key, body = frame[2:6], frame[6 : 6 + n]
    return frame[0] & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(body))


async def test_a_silent_receiver_is_dropped_and_a_ping_is_answered(link: Link) -> None:
    """The server answers no ping: the sender drops the connection after a heartbeat without
    an answer.  Before that, the server's own ping (payload "hi") got a masked pong back."""
    name = unique("silent")
    raw = RawServer(after=b"\x89\x02hi")  # a ping frame, unmasked as a server's must be
    async with raw as port:
        await link.start_announcing(name, port)
        s = StreamSender(link, name, PATH, lambda _n: None, heartbeat_ms=200, backoff_min_ms=5000)
        try:
            await connected(s)
            await async_wait_for(lambda: len(raw.got) >= 8, 5.0, message="the pong")
            assert unmask(bytes(raw.got[:8])) == (0xA, b"hi")
            await async_wait_for(lambda: not s.connected, 5.0, message="dropped when silent")
            assert s.failures == 1
        finally:
            await s.close()
            await link.stop_announcing(name, port)


def test_client_frames_are_masked_with_the_key() -> None:
    for payload in (b"", b"abc", bytes(range(256)) * 300):
        frame = client_frame(0x2, payload, b"\x01\x02\x03\x04")
        n = len(payload)
        off = 2 if n < 126 else 4 if n < 65536 else 10
        assert frame[0] == 0x82 and frame[1] & 0x80
        key, body = frame[off : off + 4], frame[off + 4 :]
        assert key == b"\x01\x02\x03\x04"
        assert bytes(b ^ key[i % 4] for i, b in enumerate(body)) == payload
