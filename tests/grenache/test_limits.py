"""Limits a hostile peer cannot break, on real sockets on loopback.

Each test runs an attack against a library server and asserts that it fails (connections
closed at the deadline, refused beyond the caps, oversized bodies refused before they are
read, slow subscribers dropped with bounded memory) while an honest peer keeps working.
Other loopback addresses (127.0.0.2, ...) stand for other hosts: Linux routes all of
127.0.0.0/8 to the loopback interface.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import aiohttp

from grenex.grenache import PeerPub, PeerRPCServer
from grenex.grenache.testing import async_wait_for, start_grapes

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def echo(key: str, payload: object) -> object:
    return payload


async def connect(port: int, source: str = "127.0.0.1", rcvbuf: int = 0) -> socket.socket:
    """A non-blocking client socket from ``source`` (a loopback address); ``rcvbuf``: a small
    receive buffer, so that a subscriber that does not read blocks its publisher soon."""
    s = socket.socket()
    s.setblocking(False)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((source, 0))
    await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", port))
    return s


async def read_head(s: socket.socket, timeout_s: float = 5.0) -> bytes:
    """What the server sent before closing or within ``timeout_s`` (b"" if it only closed)."""
    loop = asyncio.get_running_loop()
    data = b""
    async with asyncio.timeout(timeout_s):
        while b"\r\n\r\n" not in data:
            try:
                chunk = await loop.sock_recv(s, 4096)
            except ConnectionError:
                break
            if not chunk:
                break
            data += chunk
    return data


async def closed_by_server(s: socket.socket, timeout_s: float) -> bool:
    """True when the server closes ``s`` within ``timeout_s`` (EOF or reset)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    chunk = await loop.sock_recv(s, 65536)
                except ConnectionError:
                    return True
                if not chunk:
                    return True
    except TimeoutError:
        return False


class KeepAlive:
    """An honest HTTP/1.1 keep-alive client on one connection (Grenache RPC frames)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.n = reader, writer, 0

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1") -> KeepAlive:
        r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        return cls(r, w)

    async def request(self, payload: object) -> tuple[int, object]:
        self.n += 1
        body = json.dumps([f"rid-{self.n}", "svc", payload]).encode()
        head = f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode() + body)
        async with asyncio.timeout(5):
            status_line = await self.reader.readline()
            length = 0
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            data = await self.reader.readexactly(length)
        status = int(status_line.split()[1])
        return status, json.loads(data) if status == 200 else data.decode()

    def close(self) -> None:
        self.writer.close()


# ------------------------------------------------------------------------- body-read deadline


async def test_slow_heads_and_bodies_are_closed_at_the_deadline() -> None:
    deadline_ms = 500
    async with PeerRPCServer(echo, body_read_timeout_ms=deadline_ms) as srv:
        honest = await KeepAlive.open(srv.port)
        assert await honest.request("before") == (200, ["rid-1", None, "before"])
        slow: list[socket.socket] = []
        started = time.monotonic()
        for i in range(300):
            s = await connect(srv.port)
            if i % 3 == 0:  # a head that never ends
                s.send(b"POST / HTTP/1.1\r\nHost: x\r\n")
            elif i % 3 == 1:  # a body that never ends
                s.send(b'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n["r", ')
            else:  # nothing at all
                pass
            slow.append(s)
        await async_wait_for(lambda: srv.limits.open == 301, 5.0, message="all admitted")
        # Honest traffic flows during the attack, on its keep-alive connection and new ones.
        assert await honest.request("during") == (200, ["rid-2", None, "during"])
        await async_wait_for(lambda: srv.limits.open <= 1, 10.0, message="slow connections closed")
        elapsed = time.monotonic() - started
        assert srv.limits.expired >= 300
        # Each was closed at its deadline, not after some longer timeout (keep-alive: 5 s).
        assert elapsed < deadline_ms / 1000 + 3.0, elapsed
        closed = await asyncio.gather(*(closed_by_server(s, 2.0) for s in slow))
        assert all(closed)
        assert srv.core.requests == 2  # nothing of theirs reached the handler
        for s in slow:
            s.close()
        honest.close()


async def test_an_idle_keep_alive_connection_outlives_the_body_deadline() -> None:
    async with PeerRPCServer(echo, body_read_timeout_ms=200, keepalive_timeout_ms=10_000) as srv:
        honest = await KeepAlive.open(srv.port)
        assert (await honest.request(1))[0] == 200
        # Deliberately idle for several deadlines: the deadline clock runs only while a request
        # is arriving, so the connection must still be usable afterwards.
        await asyncio.sleep(0.8)
        assert await honest.request(2) == (200, ["rid-2", None, 2])
        assert srv.limits.expired == 0
        honest.close()


# ---------------------------------------------------------------------------- connection caps


async def test_connection_caps_refuse_at_once_and_keep_honest_connections() -> None:
    async with PeerRPCServer(
        echo, connections_max=20, connections_per_address_max=8, body_read_timeout_ms=30_000
    ) as srv:
        honest = await KeepAlive.open(srv.port)
        assert (await honest.request("hi"))[0] == 200
        # One "host" opens connections and sends nothing: 8 are admitted, the rest refused.
        held = [await connect(srv.port, "127.0.0.2") for _ in range(8)]
        await async_wait_for(lambda: srv.limits.open == 9, 5.0, message="8 admitted")
        extra = await connect(srv.port, "127.0.0.2")
        head = await read_head(extra)
        assert head.startswith(b"HTTP/1.1 503"), head
        assert b"ERR_SERVICE_BUSY: too many connections from this address (8)" in head
        assert srv.limits.refused_address == 1
        # Other hosts fill the total cap; beyond it everyone is refused, honest hosts too.
        for source in ("127.0.0.3", "127.0.0.4"):
            held += [await connect(srv.port, source) for _ in range(8)]
        await async_wait_for(lambda: srv.limits.open == 20, 5.0, message="cap reached")
        late = await connect(srv.port, "127.0.0.5")
        head = await read_head(late)
        assert b"503" in head and b"ERR_SERVICE_BUSY: too many connections (20)" in head
        assert srv.limits.refused >= 1
        # The honest connection made before the flood keeps working.
        assert await honest.request("still") == (200, ["rid-2", None, "still"])
        # When the flood goes away, new connections are admitted again.
        for s in held:
            s.close()
        await async_wait_for(lambda: srv.limits.open == 1, 5.0, message="flood gone")
        fresh = await KeepAlive.open(srv.port, "127.0.0.2")
        assert (await fresh.request("back"))[0] == 200
        fresh.close()
        honest.close()
        extra.close()
        late.close()


async def test_publisher_caps_subscribers_per_address() -> None:
    async with (
        PeerPub(None, subscribers_max=50, subscribers_per_address_max=4) as pub,
        aiohttp.ClientSession() as session,
    ):
        attackers = []
        for _ in range(4):
            s = await connect(pub.port, "127.0.0.2")
            s.send(UPGRADE)
            attackers.append(s)
        await async_wait_for(lambda: pub.subscribers == 4, 5.0, message="4 subscribed")
        refused = await connect(pub.port, "127.0.0.2")
        refused.send(UPGRADE)
        head = await read_head(refused)
        assert head.startswith(b"HTTP/1.1 503") and b"ERR_SERVICE_BUSY" in head
        async with session.ws_connect(f"ws://127.0.0.1:{pub.port}/ws") as ws:
            await async_wait_for(lambda: pub.subscribers == 5, 5.0)
            pub.pub("hello")
            msg = await ws.receive(timeout=5)
            assert msg.data == "hello"
        for s in [*attackers, refused]:
            s.close()


# -------------------------------------------------------------------------------- body sizes


async def test_oversized_content_length_is_refused_before_the_body_is_read() -> None:
    async with PeerRPCServer(echo, body_bytes_max=64 * 1024) as srv:
        s = await connect(srv.port)
        # Only the head: the 413 must come without the server waiting for 256 MiB.
        s.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 268435456\r\n\r\n")
        head = await read_head(s, 5.0)
        assert head.startswith(b"HTTP/1.1 413"), head
        assert await closed_by_server(s, 5.0)
        assert srv.core.requests == 0
        s.close()


async def test_oversized_chunked_body_is_cut_at_the_cap() -> None:
    cap = 64 * 1024
    async with PeerRPCServer(echo, body_bytes_max=cap) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (16 * 1024, b" " * 16 * 1024)
        sent = 0
        answer = asyncio.ensure_future(reader.read(200))
        try:
            async with asyncio.timeout(10):
                while not answer.done() and sent < 256 * 1024 * 1024:
                    writer.write(chunk)
                    await writer.drain()
                    sent += 16 * 1024
        except (ConnectionError, OSError):
            pass
        head = await asyncio.wait_for(answer, 5)
        # The server stopped reading at the cap: the sender could not push more than the cap
        # plus what the socket buffers hold; the handler never saw the body.
        assert sent < 32 * 1024 * 1024, sent
        assert head == b"" or head.startswith(b"HTTP/1.1 413"), head
        assert srv.core.requests == 0
        writer.close()


# --------------------------------------------------------------------- the broadcast ring


async def test_non_reading_subscribers_are_dropped_and_memory_stays_bounded() -> None:
    ring = 1024
    frames = 20_000
    slow_n = 200
    async with (
        PeerPub(None, ring_frames_max=ring, subscribers_per_address_max=300) as pub,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"ws://127.0.0.1:{pub.port}/ws", max_msg_size=0) as honest,
    ):
        slow = []
        for _ in range(slow_n):
            s = await connect(pub.port, rcvbuf=4096)
            s.send(UPGRADE)  # ... and never read again
            slow.append(s)
        await async_wait_for(lambda: pub.subscribers == slow_n + 1, 10.0, message="subscribed")
        received: list[str] = []

        async def read_all() -> None:
            while len(received) < frames:
                msg = await honest.receive()
                assert msg.type is aiohttp.WSMsgType.TEXT, msg
                received.append(msg.data)

        reader = asyncio.ensure_future(read_all())
        filler = "x" * 1000
        ring_max_seen = 0
        buffered_max = 0
        for i in range(frames):
            assert pub.pub(f"{i:06d} {filler}") >= 1
            if i % 64 == 63:
                await asyncio.sleep(0)  # let the writers run, as a publisher's loop does
                ring_max_seen = max(ring_max_seen, pub.ring_frames)
                buffered_max = max(
                    buffered_max,
                    max(
                        (
                            sub.transport.get_write_buffer_size()
                            for sub in pub._subs.values()
                            if sub.transport is not None
                        ),
                        default=0,
                    ),
                )
        await asyncio.wait_for(reader, 60)
        # The honest subscriber got every frame, in order.
        assert [int(m[:6]) for m in received] == list(range(frames))
        # Every non-reader was dropped; the publisher holds at most the ring, and each
        # subscriber's socket at most its high-water mark plus one batch of frames.
        assert pub.dropped_slow == slow_n
        assert pub.subscribers == 1
        assert ring_max_seen <= ring
        assert buffered_max <= 64 * 1024 + 256 * 1010, buffered_max
        # Their connections are closed (after the close frame, or aborted when it cannot go).
        await async_wait_for(lambda: pub.limits.open == 1, 10.0, message="slow ones closed")
        for s in slow:
            s.close()


async def test_a_dropped_subscriber_is_told_why() -> None:
    async with PeerPub(None, ring_frames_max=64, close_timeout_ms=10_000) as pub:
        s = await connect(pub.port, rcvbuf=4096)
        s.send(UPGRADE)
        await async_wait_for(lambda: pub.subscribers == 1, 5.0)
        i = 0
        while pub.dropped_slow == 0:  # publish until the subscriber is 64 frames behind
            pub.pub("y" * 4000 + str(i))
            i += 1
            if i % 16 == 0:
                await asyncio.sleep(0)
            assert i < 100_000
        data = b""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(10):
            while chunk := await loop.sock_recv(s, 1 << 20):
                data += chunk
        # The last frame is a close frame: code 1008 and the reason.
        reason = b"ERR_SLOW_SUBSCRIBER: more than 64 frames behind"
        assert data.endswith(b"\x88" + bytes([2 + len(reason)]) + b"\x03\xf0" + reason)
        s.close()


# ---------------------------------------------------------------------------- the Grape's DHT


def test_grape_dht_listens_on_loopback_only() -> None:
    with start_grapes(2) as cluster:
        udp = Path("/proc/net/udp").read_text().splitlines()[1:]
        for g in cluster:
            local = [
                line.split()[1] for line in udp if line.split()[1].endswith(f":{g.dht_port:04X}")
            ]
            assert local == [f"0100007F:{g.dht_port:04X}"], local  # 127.0.0.1, not 0.0.0.0


async def test_a_subscriber_leaving_does_not_stall_the_others() -> None:
    async with PeerPub(None) as pub, aiohttp.ClientSession() as session:
        stay = await session.ws_connect(f"ws://127.0.0.1:{pub.port}/ws")
        leave = await session.ws_connect(f"ws://127.0.0.1:{pub.port}/ws")
        await async_wait_for(lambda: pub.subscribers == 2, 5.0)
        pub.pub("one")
        assert (await stay.receive(timeout=5)).data == "one"
        assert (await leave.receive(timeout=5)).data == "one"
        # Both writers now wait for the next frame; one subscriber goes away.
        await leave.close()
        await async_wait_for(lambda: pub.subscribers == 1, 5.0)
        pub.pub("two")
        assert (await stay.receive(timeout=5)).data == "two"
        await stay.close()
