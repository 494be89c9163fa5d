"""The WS RPC client (``WsPeerRPCClient``) against a hand-written server on a raw socket.

Every byte the server sends is the test's: fragmented and binary replies, pings, a close, a
broken upgrade or frame. The client must match replies to requests by rid, answer pings, fail
what is pending with ``ERR_TRANSPORT_CLOSE`` when the socket ends, never believe a broken
answer, and send the requests of one turn of the loop in one write.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from grenex.grenache import Link, RemoteError, TransportError, WsPeerRPCClient
from grenex.grenache.stream import accept_key, mask

from .helpers import count_writes

Serve = Callable[["RawWs"], Awaitable[None]]


class RawWs:
    """The server's side of one connection: the upgrade answered, frames read and written."""

    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r = r
        self.w = w

    async def accept(self, *, accept: bytes | None = None, status: bytes = b"101") -> None:
        head = await self.r.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        self.w.write(
            b"HTTP/1.1 %s Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: %s\r\n\r\n"
            % (status, accept if accept is not None else accept_key(key))
        )

    async def frame(self) -> tuple[int, bytes]:
        """One client frame (it must be masked): (opcode, payload)."""
        b0, b1 = await self.r.readexactly(2)
        assert b1 & 0x80, "a client's frames are masked"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.r.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.r.readexactly(8))
        key = await self.r.readexactly(4)
        payload = bytearray(await self.r.readexactly(n))
        mask(key, payload)
        return b0 & 0x0F, bytes(payload)

    async def request(self) -> list[object]:
        op, payload = await self.frame()
        assert op == 0x1
        req = json.loads(payload)
        assert isinstance(req, list)
        return req

    def send(self, opcode: int, payload: bytes, *, fin: bool = True, masked: bool = False) -> None:
        n = len(payload)
        head = bytes(((0x80 if fin else 0) | opcode,))
        bit = 0x80 if masked else 0
        if n < 126:
            head += bytes((bit | n,))
        else:
            head += struct.pack("!BH", bit | 126, n)
        self.w.write(head + (b"\0\0\0\0" if masked else b"") + payload)

    def reply(self, rid: object, result: object, **kw: bool) -> None:
        self.send(0x1, json.dumps([rid, None, result]).encode(), **kw)


async def serving(serve: Serve) -> tuple[asyncio.Server, str, list[BaseException]]:
    errors: list[BaseException] = []

    async def conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await serve(RawWs(r, w))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except BaseException as exc:
            errors.append(exc)
        finally:
            w.close()

    srv = await asyncio.start_server(conn, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    return srv, f"127.0.0.1:{port}", errors


@pytest.fixture
async def client() -> AsyncIterator[WsPeerRPCClient]:
    link = Link(["http://127.0.0.1:1"])  # never asked: requests go to a given address
    async with WsPeerRPCClient(link, request_timeout_ms=5_000, attempts_max=1) as c:
        yield c


async def test_replies_in_any_order_fragmented_or_binary_reach_their_requests(
    client: WsPeerRPCClient,
) -> None:
    async def serve(ws: RawWs) -> None:
        await ws.accept()
        reqs = [await ws.request() for _ in range(3)]
        by_payload = {r[2]: r[0] for r in reqs}
        ws.send(0x9, b"are you there")  # a ping first
        op, payload = await ws.frame()
        assert (op, payload) == (0xA, b"are you there")
        ws.send(0x2, json.dumps([by_payload[3], None, "three"]).encode())  # binary
        text = json.dumps([by_payload[2], None, "two" * 100]).encode()
        ws.send(0x1, text[:50], fin=False)
        ws.send(0x9, b"")  # a ping between the fragments
        ws.send(0x0, text[50:120], fin=False)
        ws.send(0x0, text[120:], fin=True)
        ws.send(0x1, json.dumps([by_payload[1], "ERR_NOPE: refused", None]).encode())
        await ws.frame()  # the pong
        await ws.r.read()  # until the client goes

    srv, dest, errors = await serving(serve)
    async with srv:
        results = await asyncio.gather(
            *(client.request_peer(dest, "k", i) for i in (1, 2, 3)), return_exceptions=True
        )
    assert isinstance(results[0], RemoteError) and "ERR_NOPE" in str(results[0])
    assert results[1:] == ["two" * 100, "three"]
    assert errors == []


async def test_requests_of_one_turn_leave_in_one_write(client: WsPeerRPCClient) -> None:
    async def serve(ws: RawWs) -> None:
        await ws.accept()
        warm = await ws.request()
        ws.reply(warm[0], warm[2])
        reqs = [await ws.request() for _ in range(20)]
        for r in reqs:
            ws.reply(r[0], r[2])
        await ws.r.read()

    srv, dest, errors = await serving(serve)
    async with srv:
        await client.request_peer(dest, "k", "warm")  # the socket is open
        (conn,) = client._conns.values()
        transport = conn.transport
        assert transport is not None
        writes = count_writes(transport)
        results = await asyncio.gather(*(client.request_peer(dest, "k", i) for i in range(20)))
    assert results == list(range(20))
    assert len(writes) == 1, writes  # one write, not one per request
    assert errors == []


async def test_a_close_or_a_lost_socket_fails_what_is_pending(client: WsPeerRPCClient) -> None:
    async def serve(ws: RawWs) -> None:
        await ws.accept()
        await ws.request()
        ws.send(0x8, struct.pack("!H", 1001))
        op, payload = await ws.frame()  # the client answers the close
        assert op == 0x8 and payload == struct.pack("!H", 1001)

    srv, dest, errors = await serving(serve)
    async with srv:
        with pytest.raises(TransportError, match="ERR_TRANSPORT_CLOSE"):
            await client.request_peer(dest, "k", 1)
    assert errors == []


@pytest.mark.parametrize(
    "broken",
    ["bad-accept", "not-101", "masked-frame", "orphan-continuation", "unknown-opcode"],
)
async def test_a_broken_answer_is_never_believed(client: WsPeerRPCClient, broken: str) -> None:
    async def serve(ws: RawWs) -> None:
        if broken == "bad-accept":
            await ws.accept(accept=b"c29tZXRoaW5nIGVsc2U=")
        elif broken == "not-101":
            await ws.accept(status=b"200")
        else:
            await ws.accept()
            req = await ws.request()
            payload = json.dumps([req[0], None, "believed"]).encode()
            if broken == "masked-frame":
                ws.send(0x1, payload, masked=True)
            elif broken == "orphan-continuation":
                ws.send(0x0, payload)
            else:
                ws.send(0x3, b"")
                ws.reply(req[0], "believed")
        await ws.r.read()

    srv, dest, errors = await serving(serve)
    async with srv:
        with pytest.raises(TransportError) as info:
            await client.request_peer(dest, "k", 1)
    assert "believed" not in str(info.value)
    if broken in ("bad-accept", "not-101"):
        assert not info.value.delivered  # the request never left
    assert errors == []
