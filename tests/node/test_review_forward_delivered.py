"""Review: a forward the leader read and then died on is reported "never delivered".

The gateway requeues a forwarded batch only when the transport says it surely never arrived
(``AskError.delivered`` False, from ``TransportError.delivered``), and refuses queued commands
("nothing was done") when no leader takes them within ``leader_wait_ms``.

``FastHttpTransport.post`` retries once, on a fresh connection, when a *reused* keep-alive
connection fails before any byte of the reply — assuming the server dropped an idle socket
and never read the request.  But a leader killed (kill -9, OOM, a crash) after it read the
forward looks exactly the same: the connection ends with no reply byte.  The retry then finds
nobody listening (connection refused), and that error is raised with ``delivered=False``: the
forwarder requeues a batch that the dead leader may have proposed and replicated; with no new
leader within ``leader_wait_ms`` its commands are refused as "nothing happened".

Here a loopback server answers one request (so the connection is kept alive and reused), then
reads the second request in full, stops listening and drops the connection.
"""

from __future__ import annotations

import asyncio

import pytest

from grenex.grenache._fasthttp import FastHttpTransport
from grenex.grenache.errors import TransportError

REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n[]"


async def test_review_a_request_the_server_read_is_not_reported_undelivered() -> None:
    read: list[bytes] = []
    server: asyncio.Server | None = None

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            read.append(await reader.readexactly(length))
            if len(read) == 1:
                writer.write(REPLY)
                await writer.drain()
                continue
            # the second request was read in full: the process dies now
            assert server is not None
            server.close()
            writer.transport.abort()
            return

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    http = FastHttpTransport()
    try:
        assert await http.post(url, b'{"n":1}', timeout_s=5.0) == (200, b"[]")
        with pytest.raises(TransportError) as err:
            await http.post(url, b'{"n":2}', timeout_s=5.0)
        assert read == [b'{"n":1}', b'{"n":2}']  # the server had the second request
        assert err.value.delivered, err.value  # so it may have acted on it
    finally:
        server.close()
        await server.wait_closed()
        await http.close()
