"""The server front (``grenex.grenache._fastserve``) on real sockets on loopback.

What it serves itself (RPC requests with a ``Content-Length``, streams, WS RPC) must behave as
HTTP/1.1 and RFC 6455 say, refuse what is malformed with a clear answer, and never stall; what
it hands to aiohttp (chunked bodies) must be served as before, on the same connection, counted
once against the connection caps. Raw sockets, so that every byte is ours.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from grenex.grenache import PeerRPCServer
from grenex.grenache.stream import FrameHandler, client_frame
from grenex.grenache.testing import async_wait_for
from grenex.grenache.tls import PeerCert

from .helpers import count_writes


def echo(key: str, payload: object) -> object:
    return payload


def rpc(rid: str, payload: object, *, version: str = "1.1", extra: str = "") -> bytes:
    body = json.dumps([rid, "svc", payload]).encode()
    head = f"POST / HTTP/{version}\r\nHost: x\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def read_reply(r: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP reply framed by its Content-Length: (status, headers, body)."""
    async with asyncio.timeout(5):
        status_line = await r.readline()
        assert status_line, "the server closed without answering"
        headers: dict[str, str] = {}
        while (line := await r.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await r.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


async def at_eof(r: asyncio.StreamReader, timeout_s: float = 5.0) -> bool:
    """True when the server closes the connection within ``timeout_s`` (after what it sent)."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    if not await r.read(65536):
                        return True
                except ConnectionError:
                    return True
    except TimeoutError:
        return False


async def open_conn(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


# ------------------------------------------------------------------------------ RPC requests


async def test_pipelined_requests_are_answered_in_order_on_one_connection() -> None:
    async with PeerRPCServer(echo) as srv:
        r, w = await open_conn(srv.port)
        w.write(rpc("a", 1) + rpc("b", 2) + rpc("c", 3))  # one write, three requests
        replies = [await read_reply(r) for _ in range(3)]
        assert [json.loads(b) for _s, _h, b in replies] == [
            ["a", None, 1],
            ["b", None, 2],
            ["c", None, 3],
        ]
        assert all(s == 200 for s, _h, _b in replies)
        assert srv.limits.open == 1
        w.close()
        await async_wait_for(lambda: srv.limits.open == 0, 5.0, message="released")


async def test_a_request_trickling_in_byte_by_byte_is_answered() -> None:
    async with PeerRPCServer(echo) as srv:
        r, w = await open_conn(srv.port)
        for byte in rpc("slow", {"x": "y"}):
            w.write(bytes((byte,)))
            await w.drain()
        status, _h, body = await read_reply(r)
        assert (status, json.loads(body)) == (200, ["slow", None, {"x": "y"}])
        w.close()


async def test_http_1_0_and_connection_close_end_the_connection_after_the_reply() -> None:
    async with PeerRPCServer(echo) as srv:
        for request in (
            rpc("old", 1, version="1.0"),
            rpc("bye", 2, extra="Connection: close\r\n"),
        ):
            r, w = await open_conn(srv.port)
            w.write(request)
            status, headers, body = await read_reply(r)
            assert status == 200 and json.loads(body)[0] in ("old", "bye")
            assert headers.get("connection") == "close"
            assert await at_eof(r)
            w.close()
        # HTTP/1.0 asking for keep-alive keeps the connection
        r, w = await open_conn(srv.port)
        w.write(rpc("k1", 1, version="1.0", extra="Connection: keep-alive\r\n"))
        assert (await read_reply(r))[0] == 200
        w.write(rpc("k2", 2))
        assert json.loads((await read_reply(r))[2]) == ["k2", None, 2]
        w.close()


@pytest.mark.parametrize(
    "head",
    [
        b"POST /\r\nHost: x\r\n\r\n",  # no version
        b"POST / HTTP/2.0\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 12x\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\n folded: value\r\n\r\n",
        b"POST / HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"POST / HTTP/1.1\r\nName : space before the colon\r\n\r\n",
        b"POST / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
    ],
)
async def test_a_malformed_head_gets_400_and_the_connection_closes(head: bytes) -> None:
    async with PeerRPCServer(echo) as srv:
        r, w = await open_conn(srv.port)
        w.write(head)
        status, _h, body = await read_reply(r)
        assert status == 400 and body.startswith(b"ERR_REQUEST_INVALID")
        assert await at_eof(r)
        w.close()
        # the server keeps serving
        r, w = await open_conn(srv.port)
        w.write(rpc("after", 1))
        assert (await read_reply(r))[0] == 200
        w.close()


async def test_a_head_without_end_is_refused_at_its_bound() -> None:
    async with PeerRPCServer(echo) as srv:
        r, w = await open_conn(srv.port)
        w.write(b"POST / HTTP/1.1\r\n" + b"X-A: b\r\n" * 5000)  # 40 KiB, never ending
        status, _h, _b = await read_reply(r)
        assert status == 400
        assert await at_eof(r)
        w.close()


async def test_an_oversized_body_is_refused_and_its_rest_discarded() -> None:
    async with PeerRPCServer(echo, body_bytes_max=1024) as srv:
        r, w = await open_conn(srv.port)
        w.write(b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000)
        status, headers, body = await read_reply(r)
        assert status == 413 and body == b"ERR_REQUEST_TOO_LARGE: 5000 bytes"
        assert headers.get("connection") == "close"
        assert await at_eof(r)  # closed once the rest is read (never parsed as a request)
        w.close()
        assert srv.core.requests == 0


async def test_a_chunked_body_is_handed_to_aiohttp_and_counted_once() -> None:
    async with PeerRPCServer(echo) as srv:
        r, w = await open_conn(srv.port)
        w.write(rpc("first", 1))  # served by the front
        assert (await read_reply(r))[0] == 200
        body = json.dumps(["chunked", "svc", [1, 2]]).encode()
        w.write(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n" % 5
            + body[:5]
            + b"\r\n%x\r\n" % (len(body) - 5)
            + body[5:]
            + b"\r\n0\r\n\r\n"
        )
        status, _h, reply = await read_reply(r)
        assert (status, json.loads(reply)) == (200, ["chunked", None, [1, 2]])
        assert srv.limits.open == 1  # the hand-off released the front's count
        w.write(rpc("then", 3))  # aiohttp serves the connection from now on
        assert json.loads((await read_reply(r))[2]) == ["then", None, 3]
        w.close()
        await async_wait_for(lambda: srv.limits.open == 0, 5.0, message="released")


async def test_ws_rpc_is_served_by_the_front() -> None:
    async with (
        PeerRPCServer(echo) as srv,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://127.0.0.1:{srv.port}/ws") as ws,
    ):
        await ws.send_str(json.dumps(["w1", "svc", {"a": 1}]))
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert json.loads(msg.data) == ["w1", None, {"a": 1}]
        cfg = srv._front_cfg
        assert cfg is not None and len(cfg.connections) == 1  # served here, not handed off
        assert srv.limits.open == 1


async def test_an_idle_connection_is_closed_after_the_keep_alive() -> None:
    async with PeerRPCServer(echo, keepalive_timeout_ms=300, body_read_timeout_ms=5000) as srv:
        r, w = await open_conn(srv.port)
        w.write(rpc("x", 1))
        assert (await read_reply(r))[0] == 200
        assert await at_eof(r, 3.0)
        assert srv.limits.expired == 0  # idle, not late
        w.close()


def slow_echo() -> tuple[Callable[[str, object], Awaitable[object]], asyncio.Event]:
    """An echo that takes 0.2 s, and the event it sets when it starts."""
    started = asyncio.Event()

    async def slow(key: str, payload: object) -> object:
        started.set()
        await asyncio.sleep(0.2)
        return payload

    return slow, started


async def test_stop_lets_a_running_request_finish() -> None:
    slow, started = slow_echo()
    srv = PeerRPCServer(slow, shutdown_timeout_ms=3_000)
    await srv.start()
    r, w = await open_conn(srv.port)
    w.write(rpc("late", 7))
    await asyncio.wait_for(started.wait(), 5)
    await srv.stop()
    status, _h, body = await read_reply(r)
    assert (status, json.loads(body)) == (200, ["late", None, 7])
    w.close()


async def test_the_aiohttp_server_alone_still_serves() -> None:
    async with PeerRPCServer(echo, front=False) as srv:
        r, w = await open_conn(srv.port)
        w.write(rpc("a", 1) + rpc("b", 2))
        assert [json.loads((await read_reply(r))[2])[0] for _ in range(2)] == ["a", "b"]
        w.close()


# ----------------------------------------------------------------------------------- streams

PATH = "/stream"


class Sink:
    def __init__(self, raise_on: bytes | None = None) -> None:
        self.frames: list[bytes] = []
        self.raise_on = raise_on

    def open(self, _peer: PeerCert | None) -> FrameHandler | None:
        def on_frame(data: bytes) -> None:
            if data == self.raise_on:
                raise ValueError("not a frame of ours")
            self.frames.append(data)

        return on_frame


def upgrade(path: str = PATH, key: bytes = b"dGhlIHNhbXBsZSBub25jZQ==") -> bytes:
    return (
        b"GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path.encode(), key)
    )


async def opened_stream(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await open_conn(port)
    w.write(upgrade())
    async with asyncio.timeout(5):
        head = await r.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    # RFC 6455's example key and its accept value
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    return r, w


async def read_frame(r: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked frame from the server: (opcode, payload)."""
    async with asyncio.timeout(5):
        b0, b1 = await r.readexactly(2)
        assert not b1 & 0x80, "a server's frames are not masked"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await r.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await r.readexactly(8))
        return b0 & 0x0F, await r.readexactly(n)


async def closed_with(r: asyncio.StreamReader, code: int) -> None:
    while True:
        op, payload = await read_frame(r)
        if op == 0x8:
            assert struct.unpack("!H", payload[:2])[0] == code, payload
            return


KEY = b"\x01\x02\x03\x04"


async def test_stream_frames_reach_the_handler_in_order_and_a_ping_is_answered() -> None:
    sink = Sink()
    async with PeerRPCServer(echo, upgrades={PATH: sink.open}) as srv:
        r, w = await opened_stream(srv.port)
        big = os.urandom(70_000)  # a 64-bit length
        w.write(
            client_frame(0x2, b"one", KEY)
            + client_frame(0x2, b"x" * 300, KEY)  # a 16-bit length
            + client_frame(0x2, big, KEY)
            + client_frame(0x9, b"are you there", KEY)
        )
        assert await read_frame(r) == (0xA, b"are you there")
        assert sink.frames == [b"one", b"x" * 300, big]
        w.write(client_frame(0x8, struct.pack("!H", 1000), KEY))
        await closed_with(r, 1000)  # the close is answered
        assert await at_eof(r)
        w.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (bytes((0x82, 3)) + b"abc", 1002),  # not masked
        (client_frame(0x1, b"text", KEY), 1003),
        (bytes((0x02, 0x83)) + KEY + b"abc", 1003),  # FIN clear: fragmented
        (client_frame(0x2, b"x" * 2000, KEY), 1009),  # over body_bytes_max
        (client_frame(0x2, b"refuse me", KEY), 1008),  # the handler raises
    ],
)
async def test_a_bad_stream_frame_closes_the_stream_with_its_code(frame: bytes, code: int) -> None:
    sink = Sink(raise_on=b"refuse me")
    async with PeerRPCServer(echo, body_bytes_max=1024, upgrades={PATH: sink.open}) as srv:
        r, w = await opened_stream(srv.port)
        w.write(client_frame(0x2, b"fine", KEY) + frame + client_frame(0x2, b"after", KEY))
        await closed_with(r, code)
        w.write(client_frame(0x8, struct.pack("!H", code), KEY))  # the client answers
        assert await at_eof(r)
        assert sink.frames == [b"fine"]  # nothing after the bad frame
        w.close()
        await async_wait_for(lambda: srv.limits.open == 0, 5.0, message="released")


async def test_a_closed_stream_ends_even_if_the_client_never_answers() -> None:
    sink = Sink(raise_on=b"bad")
    async with PeerRPCServer(echo, upgrades={PATH: sink.open}) as srv:
        r, w = await opened_stream(srv.port)
        w.write(client_frame(0x2, b"bad", KEY))
        await closed_with(r, 1008)
        assert await at_eof(r, 4.0)  # lingers at most a second for the answer
        w.close()


async def test_a_silent_stream_is_dropped_and_a_talking_one_kept() -> None:
    sink = Sink()
    async with PeerRPCServer(echo, upgrades={PATH: sink.open}, stream_heartbeat_ms=200) as srv:
        r1, w1 = await opened_stream(srv.port)  # answers the pings
        r2, w2 = await opened_stream(srv.port)  # says nothing
        deadline = asyncio.get_running_loop().time() + 1.5
        while asyncio.get_running_loop().time() < deadline:
            op, payload = await read_frame(r1)
            assert op == 0x9
            w1.write(client_frame(0xA, payload, KEY))
        assert await at_eof(r2, 1.0)
        w1.write(client_frame(0x2, b"still here", KEY))
        await async_wait_for(lambda: sink.frames == [b"still here"], 5.0, message="kept")
        w1.close()
        w2.close()


async def test_a_stream_upgrade_without_a_key_or_refused_is_answered_before_any_frame() -> None:
    async with PeerRPCServer(echo, upgrades={PATH: lambda _peer: None}) as srv:
        r, w = await open_conn(srv.port)
        w.write(upgrade())
        status, _h, body = await read_reply(r)
        assert status == 403 and body.startswith(b"ERR_GRENEX_NOT_ALLOWED")
        w.close()
    async with PeerRPCServer(echo, upgrades={PATH: Sink().open}) as srv:
        r, w = await open_conn(srv.port)
        w.write(upgrade().replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"))
        status, _h, _b = await read_reply(r)
        assert status == 400
        assert await at_eof(r)
        w.close()


async def test_a_client_that_does_not_read_its_replies_is_not_answered_further() -> None:
    """The attack: pipeline requests whose replies are large and never read them. The server
    must stop answering (its write buffer stays near the socket's high-water mark instead of
    holding every reply), then answer everything once the client reads."""
    async with PeerRPCServer(echo, body_bytes_max=64 * 1024) as srv:
        r, w = await open_conn(srv.port)
        payload = "x" * 16_000
        n = 400  # 6.4 MB of replies
        for i in range(n):
            w.write(rpc(f"p{i}", payload))
        cfg = srv._front_cfg
        assert cfg is not None
        await async_wait_for(lambda: len(cfg.connections) == 1, 5.0, message="connected")
        (front,) = cfg.connections
        # the server answers until the socket's buffer passes its high-water mark
        await async_wait_for(lambda: front.write_paused, 5.0, message="writing paused")
        assert front.transport is not None
        buffered = front.transport.get_write_buffer_size()
        assert buffered < 1024 * 1024, buffered  # not the 6.4 MB of replies
        assert srv.core.requests < n
        for i in range(n):  # the client reads: everything is answered, in order
            status, _h, body = await read_reply(r)
            assert status == 200 and json.loads(body)[0] == f"p{i}"
        w.close()


# ------------------------------------------------------------------------------------ WS RPC


async def opened_rpc(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await open_conn(port)
    w.write(upgrade("/ws"))
    async with asyncio.timeout(5):
        head = await r.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return r, w


def fragment(opcode: int, payload: bytes, *, fin: bool) -> bytes:
    """A masked client frame with FIN as given (``client_frame`` always sets it)."""
    frame = bytearray(client_frame(opcode, payload, KEY))
    if not fin:
        frame[0] &= 0x7F
    return bytes(frame)


def ws_request(rid: str, payload: object) -> bytes:
    return client_frame(0x1, json.dumps([rid, "svc", payload]).encode(), KEY)


async def test_a_fragmented_ws_request_is_reassembled_around_a_ping() -> None:
    async with PeerRPCServer(echo) as srv:
        r, w = await opened_rpc(srv.port)
        text = json.dumps(["f1", "svc", {"long": "y" * 300}]).encode()
        w.write(fragment(0x1, text[:100], fin=False))
        w.write(fragment(0x0, text[100:200], fin=False))
        w.write(client_frame(0x9, b"hi", KEY))  # a control frame between fragments
        w.write(fragment(0x0, text[200:], fin=True))
        assert await read_frame(r) == (0xA, b"hi")
        op, reply = await read_frame(r)
        assert op == 0x1 and json.loads(reply) == ["f1", None, {"long": "y" * 300}]
        w.write(client_frame(0x2, json.dumps(["b1", "svc", 2]).encode(), KEY))  # binary too
        assert json.loads((await read_frame(r))[1]) == ["b1", None, 2]
        w.write(client_frame(0x1, b"garbage", KEY))  # no rid: an answer without one
        reply_json = json.loads((await read_frame(r))[1])
        assert reply_json[0] is None and reply_json[1].startswith("ERR_REQUEST_INVALID")
        w.close()


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([fragment(0x0, b"orphan", fin=True)], 1002),
        ([fragment(0x1, b"[", fin=False), fragment(0x1, b"[", fin=True)], 1002),
        ([fragment(0x1, b"x" * 600, fin=False), fragment(0x0, b"x" * 600, fin=False)], 1009),
        ([client_frame(0x1, b"x" * 1500, KEY)], 1009),
    ],
    ids=["continuation-of-nothing", "message-inside-a-message", "fragments-too-big", "too-big"],
)
async def test_a_bad_ws_rpc_frame_closes_the_socket_with_its_code(
    frames: list[bytes], code: int
) -> None:
    calls: list[object] = []

    def record(key: str, payload: object) -> object:
        calls.append(payload)
        return payload

    async with PeerRPCServer(record, body_bytes_max=1024) as srv:
        r, w = await opened_rpc(srv.port)
        w.write(b"".join(frames) + ws_request("after", 1))
        await closed_with(r, code)
        assert calls == []  # nothing after the bad frame was served
        w.close()


async def test_ws_requests_in_flight_are_bounded_per_socket() -> None:
    release = asyncio.Event()
    started: list[object] = []

    async def held(key: str, payload: object) -> object:
        started.append(payload)
        await release.wait()
        return payload

    async with PeerRPCServer(held, ws_inflight_max=2) as srv:
        r, w = await opened_rpc(srv.port)
        w.write(b"".join(ws_request(f"h{i}", i) for i in range(5)))
        cfg = srv._front_cfg
        assert cfg is not None
        await async_wait_for(lambda: len(started) == 2, 5.0, message="two started")
        (front,) = cfg.connections
        await async_wait_for(lambda: front.paused, 5.0, message="reading paused")
        assert len(started) == 2 and front.inflight == 2  # the other three wait unread
        release.set()
        got = {json.loads((await read_frame(r))[1])[0] for _ in range(5)}
        assert got == {f"h{i}" for i in range(5)}
        assert not front.paused and front.inflight == 0
        w.close()


async def test_ws_replies_finished_together_go_out_in_one_write() -> None:
    async with PeerRPCServer(echo) as srv:
        r, w = await opened_rpc(srv.port)
        w.write(ws_request("warm", 0))
        assert json.loads((await read_frame(r))[1])[0] == "warm"
        cfg = srv._front_cfg
        assert cfg is not None
        (front,) = cfg.connections
        transport = front.transport
        assert transport is not None
        writes = count_writes(transport)
        reads_before = front.heard
        w.write(b"".join(ws_request(f"t{i}", i) for i in range(20)))  # one write, 20 requests
        got = [json.loads((await read_frame(r))[1])[0] for _ in range(20)]
        assert sorted(got) == sorted(f"t{i}" for i in range(20))
        reads = front.heard - reads_before
        # the replies of the requests read together leave together (aiohttp: one write each)
        assert 1 <= len(writes) <= reads < 20, (writes, reads)
        w.close()


async def test_stop_lets_running_ws_requests_finish_then_closes() -> None:
    slow, started = slow_echo()
    srv = PeerRPCServer(slow, shutdown_timeout_ms=3_000)
    await srv.start()
    r, w = await opened_rpc(srv.port)
    w.write(ws_request("late", 7))
    await asyncio.wait_for(started.wait(), 5)
    await srv.stop()
    op, reply = await read_frame(r)
    assert op == 0x1 and json.loads(reply) == ["late", None, 7]
    assert await at_eof(r)
    w.close()


async def test_a_ws_client_that_does_not_read_its_replies_is_not_answered_further() -> None:
    async with PeerRPCServer(echo, body_bytes_max=64 * 1024, ws_inflight_max=4) as srv:
        r, w = await opened_rpc(srv.port)
        payload = "x" * 16_000
        n = 400  # 6.4 MB of replies
        for i in range(n):
            w.write(ws_request(f"p{i}", payload))
        cfg = srv._front_cfg
        assert cfg is not None
        (front,) = cfg.connections
        await async_wait_for(lambda: front.write_paused, 5.0, message="writing paused")
        await async_wait_for(lambda: front.paused, 5.0, message="reading paused")
        assert front.transport is not None
        buffered = front.transport.get_write_buffer_size()
        assert buffered < 1024 * 1024, buffered  # not the 6.4 MB of replies
        assert srv.core.requests < n
        got = set()
        for _ in range(n):  # the client reads: everything is answered
            op, reply = await read_frame(r)
            assert op == 0x1
            got.add(json.loads(reply)[0])
        assert got == {f"p{i}" for i in range(n)}
        w.close()
