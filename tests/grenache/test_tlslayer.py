"""TLS done in the protocol (``grenex.grenache._tlslayer``), on real sockets on loopback.

The server's connections and our clients' (the RPC client, stream senders) do TLS on memory
BIOs instead of the event loop's TLS transport. These tests drive it with a TLS client of
their own whose encrypted bytes they write by hand: records split into single bytes, many
records in one write, a close_notify, garbage after the handshake, plain HTTP on the TLS
port, replies spread over many records, and the connections handed to aiohttp (WebSocket
RPC, chunked bodies) still encrypted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl

import aiohttp
import pytest

from grenex.grenache import PeerRPCServer, make_self_signed, server_context
from grenex.grenache._fasthttp import FastHttpTransport
from grenex.grenache.testing import async_wait_for
from grenex.grenache.tls import pinned_client_context

pytestmark = pytest.mark.timeout(60)

SEED = hashlib.sha256(b"tlslayer-test").digest()
CERT = make_self_signed(SEED, "layer")


def echo(key: str, payload: object) -> object:
    return payload


def tls_server(**kw: object) -> PeerRPCServer:
    return PeerRPCServer(echo, ssl_context=server_context(CERT, SEED), **kw)  # type: ignore[arg-type]


def rpc(rid: str, payload: object, extra: str = "") -> bytes:
    body = json.dumps([rid, "svc", payload]).encode()
    return (
        f"POST / HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: {len(body)}\r\n\r\n".encode() + body
    )


class HandClient:
    """A TLS client on memory BIOs over a plain TCP connection: the test decides how the
    encrypted bytes are cut into writes."""

    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r, self.w = r, w
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = pinned_client_context([CERT]).wrap_bio(self.inc, self.out, server_side=False)
        self.plain = bytearray()

    @classmethod
    async def open(cls, port: int) -> HandClient:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        c = cls(r, w)
        assert await c.handshake(), "closed during the handshake"
        return c

    async def flight(self) -> bool:
        """Send what the handshake has to send and read the server's answer into the BIO;
        False when the server closed the connection instead."""
        self.w.write(self.out.read())
        data = await self.r.read(65536)
        if not data:
            return False
        self.inc.write(data)
        return True

    async def handshake(self) -> bool:
        """Run (or finish) the handshake; False when the server closed the connection."""
        async with asyncio.timeout(5):
            while True:
                try:
                    self.obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    if not await self.flight():
                        return False
        self.w.write(self.out.read())  # the client's Finished
        return True

    def records(self, plaintext: bytes) -> bytes:
        self.obj.write(plaintext)
        return self.out.read()

    async def read_until(self, want: bytes, timeout_s: float = 5.0) -> bytes:
        async with asyncio.timeout(timeout_s):
            while want not in self.plain:
                try:
                    while True:
                        self.plain += self.obj.read(65536)
                except ssl.SSLWantReadError:
                    pass
                if want in self.plain:
                    break
                data = await self.r.read(65536)
                assert data, "closed"
                self.inc.write(data)
        return bytes(self.plain)

    async def closed(self, timeout_s: float = 5.0) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    try:
                        if not await self.r.read(65536):
                            return True
                    except ConnectionError:
                        return True
        except TimeoutError:
            return False


async def test_records_cut_into_single_bytes_and_many_in_one_write_are_read() -> None:
    async with tls_server() as srv:
        c = await HandClient.open(srv.port)
        data = c.records(rpc("one", 1))
        for i in range(len(data)):  # one byte per write: a record arrives in pieces
            c.w.write(data[i : i + 1])
            await c.w.drain()
        await c.read_until(b'["one",null,1]')
        # three requests, each its own record, in one write
        c.w.write(c.records(rpc("a", 2)) + c.records(rpc("b", 3)) + c.records(rpc("c", 4)))
        text = await c.read_until(b'["c",null,4]')
        assert text.index(b'["a",null,2]') < text.index(b'["b",null,3]') < text.index(b'["c"')
        c.w.close()


async def test_a_close_notify_ends_the_connection() -> None:
    async with tls_server() as srv:
        c = await HandClient.open(srv.port)
        c.w.write(c.records(rpc("x", 1)))
        await c.read_until(b'["x",null,1]')
        with pytest.raises(ssl.SSLWantReadError):
            c.obj.unwrap()  # our close_notify (the server's answer is not awaited)
        c.w.write(c.out.read())
        assert await c.closed()
        await async_wait_for(lambda: srv.limits.open == 0, 5.0, message="released")


async def test_garbage_after_the_handshake_drops_the_connection_not_the_server() -> None:
    async with tls_server() as srv:
        c = await HandClient.open(srv.port)
        c.w.write(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)  # an application record that is not
        assert await c.closed()
        d = await HandClient.open(srv.port)
        d.w.write(d.records(rpc("after", 5)))
        await d.read_until(b'["after",null,5]')
        d.w.close()


async def test_plain_http_on_the_tls_port_is_dropped_before_anything_is_served() -> None:
    async with tls_server() as srv:
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.write(rpc("plain", 1))
        async with asyncio.timeout(5):
            data = await r.read(65536)
            while data and b"plain" not in data:
                more = await r.read(65536)
                if not more:
                    break
                data += more
        assert b"plain" not in data  # no answer in clear text: at most a TLS alert
        assert srv.core.requests == 0
        w.close()


async def test_large_bodies_and_replies_span_many_records() -> None:
    async with tls_server(body_bytes_max=4 * 1024 * 1024) as srv:
        t = FastHttpTransport(ssl_context=pinned_client_context([CERT]))
        big = "x" * 300_000  # ~19 records each way
        body = json.dumps(["big", "svc", big]).encode()
        status, reply = await t.post(f"https://127.0.0.1:{srv.port}/", body, timeout_s=10)
        assert status == 200 and json.loads(reply) == ["big", None, big]
        await t.close()


async def test_connections_handed_to_aiohttp_stay_encrypted() -> None:
    async with tls_server() as srv:
        c = await HandClient.open(srv.port)
        body = json.dumps(["chunked", "svc", [1]]).encode()
        c.w.write(
            c.records(
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"%x\r\n" % len(body)
                + body
                + b"\r\n0\r\n\r\n"
            )
        )
        await c.read_until(b'["chunked",null,[1]]')
        c.w.write(c.records(rpc("then", 2)))  # aiohttp serves the rest of this connection
        await c.read_until(b'["then",null,2]')
        c.w.close()
        ctx = pinned_client_context([CERT])
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"https://127.0.0.1:{srv.port}/ws", ssl=ctx) as ws,
        ):
            await ws.send_str(json.dumps(["w", "svc", {"a": 1}]))
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert json.loads(msg.data) == ["w", None, {"a": 1}]


async def test_a_handshake_that_finishes_after_stop_is_not_served() -> None:
    srv = tls_server()
    await srv.start()
    r, w = await asyncio.open_connection("127.0.0.1", srv.port)
    c = HandClient(r, w)
    with pytest.raises(ssl.SSLWantReadError):
        c.obj.do_handshake()  # the ClientHello
    assert await c.flight()  # the server answered it: its half of the handshake runs
    await srv.stop()
    if await c.handshake():  # our Finished arrives after stop()
        c.w.write(c.records(rpc("late", 1)))
        assert await c.closed()
    assert srv.core.requests == 0
    w.close()
