"""Python peers over real sockets and real Grapes, including the fault cases.

Proves, through two real Grapes started for this module: the Link announces, looks up and
stores values through the real Grape API, and its error strings become typed errors; HTTP and
WS RPC work with gzip, errors, many in flight and connection reuse; the server answers a
malformed body with an error and keeps serving, refuses an oversize body or a gzip bomb with
413, and a peer that sends garbage never crashes it; a slow peer makes the client time out
without hanging; a dead peer still listed in the DHT is skipped; pub/sub delivers and the
subscriber moves to another publisher when its own dies; mutual TLS works and a client
without a certificate is refused; and killing one Grape of three leaves the Link working.
"""

from __future__ import annotations

import asyncio
import gzip as stdlib_gzip
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from grenex.grenache import (
    GrapeError,
    Link,
    PeerPub,
    PeerRPCClient,
    PeerRPCServer,
    PeerSub,
    RemoteError,
    RequestTimeoutError,
    TransportError,
    WsPeerRPCClient,
    client_ssl_context,
    server_ssl_context,
)
from grenex.grenache.testing import GrapeCluster, async_wait_for, free_port, start_grapes

from .helpers import REPO_ROOT


async def handler(key: str, payload: Any) -> Any:
    if isinstance(payload, dict):
        if "error" in payload:
            raise RuntimeError(payload["error"])
        if "sleep_ms" in payload:
            await asyncio.sleep(payload["sleep_ms"] / 1000)
            return {"slept": payload["sleep_ms"]}
    return {"key": key, "echo": payload}


def unique(name: str) -> str:
    return f"test:{name}:{time.monotonic_ns()}"


# ------------------------------------------------------------------------------------- link


async def test_link_against_real_grapes(link: Link, grapes: GrapeCluster) -> None:
    name = unique("link")
    assert await link.lookup(name) == []
    assert await link.announce(name, 4321) >= 1
    # Announced through one Grape, visible through the other.
    async with Link(grapes.api_urls[1]) as other:
        assert await other.lookup(name) == ["127.0.0.1:4321"]
    digest = await link.put("hello world")
    assert digest == "6d33adc2b6b2c14c3036feefb7fedbca1a880527"
    found = await link.get(digest)
    assert found is not None and found.v == "hello world"
    assert await link.get("0" * 40) is None


async def test_real_grape_error_strings_become_grape_errors(link: Link) -> None:
    with pytest.raises(GrapeError) as info:
        await link._call(
            "announce",
            "not-an-array",
            lambda s, b, g: __import__(
                "grenex.grenache.protocol", fromlist=["parse_announce"]
            ).parse_announce(s, b, g),
        )
    assert info.value.code == "ERR_GRAPE_ANNOUNCE"


# ---------------------------------------------------------------------------------- http rpc


@pytest.fixture
async def server(link: Link) -> Any:
    async with PeerRPCServer(handler, body_bytes_max=64 * 1024, handler_timeout_ms=3000) as srv:
        name = unique("rpc")
        await link.start_announcing(name, srv.port)
        yield name, srv


async def test_http_request_gzip_errors_and_map(link: Link, server: Any) -> None:
    name, _srv = server
    async with PeerRPCClient(link) as client:
        assert await client.request(name, {"a": 1}) == {"key": name, "echo": {"a": 1}}
        big = {"text": "x" * 20_000}
        assert await client.request(name, big, compress=True) == {"key": name, "echo": big}
        with pytest.raises(RemoteError) as info:
            await client.request(name, {"error": "ERR_APP: no"})
        assert info.value.message == "ERR_APP: no"
        replies = await client.map(name, 7)
        assert [r.result for r in replies] == [{"key": name, "echo": 7}]


async def test_http_many_in_flight_reuse_connections(link: Link, server: Any) -> None:
    name, srv = server
    async with PeerRPCClient(link, connections_max=8) as client:
        results = await asyncio.gather(*(client.request(name, i) for i in range(200)))
        assert [r["echo"] for r in results] == list(range(200))
    assert srv.core.requests == 200


async def raw_post(port: int, body: bytes, headers: dict[str, str] | None = None) -> Any:
    url = f"http://127.0.0.1:{port}/any/path"
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as r:
        return r.status, await r.read()


async def test_malformed_bodies_get_one_answer_and_the_server_keeps_serving(
    link: Link, server: Any
) -> None:
    name, srv = server
    status, body = await raw_post(srv.port, b"this is not json")
    assert status == 400 and body.startswith(b"ERR_REQUEST_INVALID")
    status, body = await raw_post(srv.port, b'{"rid": 1}')
    assert status == 400
    status, body = await raw_post(srv.port, b'["rid-1", 42, null]')
    assert status == 200 and body.startswith(b'["rid-1","ERR_REQUEST_INVALID')
    status, body = await raw_post(srv.port, b"\x1f\x8b garbage", {"grc-compress": "gzip"})
    assert status == 400
    # A raw socket that sends half a request and hangs up does no harm either.
    _reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(b'POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n["x')
    await writer.drain()
    writer.close()
    async with PeerRPCClient(link) as client:
        assert await client.request(name, "still") == {"key": name, "echo": "still"}


async def test_oversize_body_and_gzip_bomb_get_413(link: Link, server: Any) -> None:
    name, srv = server
    status, body = await raw_post(srv.port, b"[" + b" " * 100_000 + b"]")
    assert status == 413 and body.startswith(b"ERR_REQUEST_TOO_LARGE")
    bomb = stdlib_gzip.compress(b'["r","k","' + b"a" * 10_000_000 + b'"]')
    status, body = await raw_post(srv.port, bomb, {"grc-compress": "gzip"})
    assert status == 413
    async with PeerRPCClient(link) as client:
        with pytest.raises(TransportError) as info:
            await client.request(name, "x" * 100_000)
        assert info.value.status == 413
        assert await client.request(name, "ok") == {"key": name, "echo": "ok"}


async def test_slow_peer_times_out_and_nothing_hangs(link: Link, server: Any) -> None:
    name, _srv = server
    async with PeerRPCClient(link) as client:
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError):
            await client.request(name, {"sleep_ms": 2000}, timeout_ms=200)
        assert time.monotonic() - started < 1.5
        assert await client.request(name, 1, timeout_ms=2000) == {"key": name, "echo": 1}


async def test_dead_peer_listed_in_the_dht_is_skipped(link: Link) -> None:
    name = unique("dead")
    dead_port = free_port()  # nobody listens here: connections are refused
    await link.announce(name, dead_port)
    async with PeerRPCServer(handler) as srv:
        await link.start_announcing(name, srv.port)
        await async_wait_for(lambda: _listed(link, name, 2), 5.0, message="both entries listed")
        async with PeerRPCClient(link, attempts_max=2) as client:
            for i in range(10):
                assert await client.request(name, i) == {"key": name, "echo": i}
            assert client.is_dead(f"127.0.0.1:{dead_port}")
            replies = await client.map(name, "m")
            by_peer = {r.peer: r for r in replies}
            assert by_peer[srv.dest].ok and not by_peer[f"127.0.0.1:{dead_port}"].ok


async def _listed(link: Link, name: str, n: int) -> bool:
    return len(await link.lookup(name, use_cache=False)) >= n


# ------------------------------------------------------------------------------------ ws rpc


async def test_ws_rpc_many_in_flight_errors_and_garbage(link: Link, server: Any) -> None:
    name, srv = server
    async with WsPeerRPCClient(link) as client:
        results = await asyncio.gather(*(client.request(name, i) for i in range(100)))
        assert [r["echo"] for r in results] == list(range(100))
        assert len(client._conns) == 1  # all on one socket
        with pytest.raises(RemoteError, match="ERR_WS"):
            await client.request(name, {"error": "ERR_WS"})
        with pytest.raises(RequestTimeoutError):
            await client.request(name, {"sleep_ms": 1000}, timeout_ms=100)
    async with aiohttp.ClientSession() as s, s.ws_connect(f"ws://{srv.dest}/ws") as ws:
        await ws.send_str("garbage")
        reply = await ws.receive_json(timeout=5)
        assert reply[0] is None and reply[1].startswith("ERR_REQUEST_INVALID")
        await ws.send_str('["r1","k",1]')
        assert await ws.receive_json(timeout=5) == ["r1", None, {"key": "k", "echo": 1}]


async def test_ws_client_to_a_dead_port_fails_fast(link: Link) -> None:
    async with WsPeerRPCClient(link) as client:
        with pytest.raises(TransportError) as info:
            await client.request_peer(f"127.0.0.1:{free_port()}", "k", 1)
        assert not info.value.delivered


# ----------------------------------------------------------------------------------- pub/sub


async def test_pubsub_and_reconnect_to_another_publisher(link: Link) -> None:
    topic = unique("topic")
    pub1 = PeerPub(link, topic)
    pub2 = PeerPub(link, topic)
    await pub1.start()
    sub = PeerSub(link, topic, backoff_min_ms=20, backoff_max_ms=200)
    await sub.start()
    first = await sub.wait_connected(5000)
    assert first == f"127.0.0.1:{pub1.port}"
    await async_wait_for(lambda: pub1.subscribers == 1, 5.0)
    pub1.pub("hello")
    pub1.pub(b"\x00bin")
    assert await sub.recv(5000) == "hello"
    assert await sub.recv(5000) == b"\x00bin"
    await pub2.start()
    await pub1.stop()  # the DHT still lists pub1 for a while: the subscriber must avoid it
    await async_wait_for(
        lambda: sub.publisher == f"127.0.0.1:{pub2.port}", 10.0, message="resubscribed to pub2"
    )
    await async_wait_for(lambda: pub2.subscribers == 1, 5.0)
    pub2.pub("again")
    assert await sub.recv(5000) == "again"
    assert sub.connects == 2
    await sub.stop()
    await pub2.stop()
    with pytest.raises(TransportError):
        await sub.recv(100)


async def test_slow_subscriber_is_dropped_not_buffered(link: Link) -> None:
    async with (
        PeerPub(None, queue_max=4) as pub,
        aiohttp.ClientSession() as s,
        s.ws_connect(f"ws://127.0.0.1:{pub.port}/ws"),
    ):
        await async_wait_for(lambda: pub.subscribers == 1, 5.0)
        for i in range(10):
            pub.pub(f"m{i}")  # the writer cannot drain 10 in one go: queue of 4 overflows
        assert pub.dropped_slow == 1 and pub.subscribers == 0


# ---------------------------------------------------------------------------------------- tls

CERTS = REPO_ROOT / "node_modules" / "grenache-nodejs-http" / "test" / "certs"


@pytest.mark.skipif(not CERTS.exists(), reason="grenache-nodejs-http test certs not installed")
async def test_mutual_tls(link: Link) -> None:
    c: Path = CERTS
    server_ctx = server_ssl_context(
        cert=c / "server-crt.pem", key=c / "server-key.pem", ca=c / "ca-crt.pem"
    )
    async with PeerRPCServer(handler, ssl_context=server_ctx, websocket=False) as srv:
        name = unique("tls")
        await link.start_announcing(name, srv.port)
        good = client_ssl_context(
            ca=c / "ca-crt.pem", cert=c / "client1-crt.pem", key=c / "client1-key.pem"
        )
        async with PeerRPCClient(link, ssl_context=good) as client:
            assert await client.request(name, "tls") == {"key": name, "echo": "tls"}
        no_cert = client_ssl_context(ca=c / "ca-crt.pem")
        async with PeerRPCClient(link, ssl_context=no_cert, attempts_max=1) as client:
            with pytest.raises(TransportError):
                await client.request(name, "x", timeout_ms=3000)
        async with PeerRPCClient(link, attempts_max=1) as plain:
            with pytest.raises(TransportError):
                await plain.request(name, "x", timeout_ms=3000)


# ------------------------------------------------------------------------------ grape faults


async def test_link_keeps_working_when_a_grape_is_killed() -> None:
    with start_grapes(3, dpa_ms=None) as cluster:
        async with (
            Link(cluster.api_urls[:2], request_timeout_ms=6000, lookup_cache_ttl_ms=60_000) as link,
            PeerRPCServer(handler) as srv,
        ):
            name = unique("kill")
            await link.start_announcing(name, srv.port)
            cluster[0].kill()
            assert not cluster[0].alive
            # The first Grape refuses: the Link moves to the second, which still knows the
            # service (a DHT with a dead node stalls ~2 s per query until it is evicted).
            assert srv.dest in await link.lookup(name, use_cache=False)
            async with PeerRPCClient(link) as client:
                assert await client.request(name, "x") == {"key": name, "echo": "x"}
            later = unique("after-kill")
            await link.announce(later, srv.port)
            assert await link.lookup(later, use_cache=False) == [srv.dest]


def test_free_port_is_free() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


async def test_body_limit_above_one_mib_is_honoured(link: Link) -> None:
    async with PeerRPCServer(handler, body_bytes_max=4 * 1024 * 1024) as srv:
        name = unique("big")
        await link.start_announcing(name, srv.port)
        big = "b" * (2 * 1024 * 1024)
        async with PeerRPCClient(link) as client:
            assert (await client.request(name, big))["echo"] == big
