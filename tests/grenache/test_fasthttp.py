"""The RPC client's small HTTP/1.1 client: reply framing, limits, and connection reuse.

Proves, by feeding bytes to the protocol object (no sockets) in every possible split: replies
framed by Content-Length, by chunked encoding (as Node sends) with extensions and trailers,
and by the end of the connection are all read exactly; interim 1xx replies are skipped;
malformed or oversize replies fail the request instead of hanging. Against a real server it
proves that connections are reused, and that a stale keep-alive connection the server closed
is not reused.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from grenex.grenache import PeerRPCServer
from grenex.grenache._fasthttp import FastHttpTransport, _BadReplyError, _Conn
from grenex.grenache.errors import TransportError


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def feed(raw: bytes, split: int, reply_max: int = 1 << 20) -> tuple[_Conn, Any]:
    conn = _Conn(reply_max)
    transport = FakeTransport()
    conn.connection_made(transport)
    fut = conn.send(b"POST / HTTP/1.1\r\n\r\n")
    for i in range(0, len(raw), split):
        if fut.done():
            break
        conn.data_received(raw[i : i + split])
    return conn, fut


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'5;ext=1\r\n["r",\r\n'
    b"a\r\nnull,12345\r\n"
    b"1\r\n]\r\n"
    b"0\r\nX-Trailer: 1\r\n\r\n"
)


@pytest.mark.parametrize("split", [1, 2, 3, 7, 1000])
async def test_chunked_reply_in_any_split(split: int) -> None:
    conn, fut = feed(CHUNKED, split)
    assert fut.result() == (200, b'["r",null,12345]')
    assert not conn.closed  # keep-alive: ready for the next request


@pytest.mark.parametrize("split", [1, 5, 1000])
async def test_content_length_reply(split: int) -> None:
    raw = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\n[1,2] "
    _conn, fut = feed(raw, split)
    assert fut.result() == (200, b"[1,2] ")


async def test_interim_reply_is_skipped() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413 Too Large\r\nContent-Length: 3\r\n\r\nbig"
    _, fut = feed(raw, 4)
    assert fut.result() == (413, b"big")


async def test_reply_until_close_and_connection_close_header() -> None:
    conn, fut = feed(b"HTTP/1.0 200 OK\r\n\r\nabc", 100)
    assert not fut.done()
    conn.connection_lost(None)
    assert fut.result() == (200, b"abc")
    conn, fut = feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx", 100)
    assert fut.result() == (200, b"x") and conn.closed


@pytest.mark.parametrize(
    "raw",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFF\r\n",
    ],
)
async def test_malformed_or_oversize_replies_fail_and_close(raw: bytes) -> None:
    conn, fut = feed(raw, 3, reply_max=1000)
    assert fut.done() and isinstance(fut.exception(), _BadReplyError)
    assert conn.closed


async def test_endless_head_is_refused() -> None:
    _conn, fut = feed(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20_000, 4096)
    assert isinstance(fut.exception(), _BadReplyError)


async def test_peer_closing_mid_reply_fails_the_request() -> None:
    conn, fut = feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 100)
    conn.connection_lost(ConnectionResetError())
    assert isinstance(fut.exception(), ConnectionResetError)


async def test_connections_are_reused_and_stale_ones_are_not() -> None:
    async with PeerRPCServer(lambda key, payload: payload, keepalive_timeout_ms=200) as srv:
        transport = FastHttpTransport()
        url = f"http://{srv.dest}/"
        for _ in range(5):
            status, body = await transport.post(url, b'["r","k",1]', timeout_s=5)
            assert (status, body) == (200, b'["r",null,1]')
        assert len(transport._all) == 1  # one keep-alive connection served all five
        conn = next(iter(transport._all))
        # The server closes the idle connection after 200 ms: the next request must use a
        # new one rather than fail on the dead socket.
        await asyncio.wait_for(_closed(conn), 5)
        status, _ = await transport.post(url, b'["r","k",2]', timeout_s=5)
        assert status == 200
        await transport.close()


async def _closed(conn: _Conn) -> None:
    while not conn.closed:
        await asyncio.sleep(0.01)


async def test_connection_limit_waits_and_refused_is_not_delivered() -> None:
    async with PeerRPCServer(lambda key, payload: payload) as srv:
        transport = FastHttpTransport(connections_max=2)
        url = f"http://{srv.dest}/"
        results = await asyncio.gather(
            *(transport.post(url, b'["r","k",1]', timeout_s=5) for _ in range(20))
        )
        assert all(r[0] == 200 for r in results)
        assert len(transport._all) <= 2
        port = srv.port
    # the server is gone: wait until the client has seen its pooled connections close (a
    # request on a pooled connection that fails before any reply may have been read, and
    # is reported delivered; one refused on a fresh connection surely was not)
    for c in list(transport._all):
        await asyncio.wait_for(_closed(c), 5)
    with pytest.raises(TransportError) as info:
        await transport.post(f"http://127.0.0.1:{port}/", b"[]", timeout_s=5)
    assert not info.value.delivered
    await transport.close()
