"""Wire compatibility with the real Node.js Grenache packages, through real Grapes.

Each test runs ``js/peer.js`` (grenache-nodejs-link 1.0.2, -http 1.0.2, -ws 1.0.0) as a
separate Node process against this module's two Grapes. Proves: a Node client calls a Python
server, and a Python client calls a Node server, over HTTP (plain and gzip) and WebSocket,
with results, with errors (the message crosses intact) and with ``map``; a Node subscriber
reads a Python publisher and a Python subscriber reads a Node publisher, and moves to a second
Node publisher when the first is killed (which Node's own subscriber does not do); a Node
mutual-TLS client is served by a Python TLS server.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from grenex.grenache import (
    Link,
    PeerPub,
    PeerRPCClient,
    PeerRPCServer,
    PeerSub,
    RemoteError,
    WsPeerRPCClient,
    server_ssl_context,
)
from grenex.grenache.testing import GrapeCluster, async_wait_for, free_port

from .helpers import REPO_ROOT, node_call, node_peer

pytestmark = pytest.mark.timeout(120)


async def py_handler(key: str, payload: Any) -> Any:
    if isinstance(payload, dict) and payload.get("action") == "error":
        raise RuntimeError(payload["message"])
    return {"echo": payload, "key": key, "server": "python"}


def unique(name: str) -> str:
    return f"interop:{name}:{time.monotonic_ns()}"


# ------------------------------------------------------------------- Node client → Python


@pytest.mark.parametrize("transport", ["http", "ws"])
async def test_node_client_calls_python_server(
    transport: str, link: Link, grapes: GrapeCluster
) -> None:
    async with PeerRPCServer(py_handler) as srv:
        name = unique(f"py-{transport}")
        await link.start_announcing(name, srv.port)
        grape = grapes.api_urls[1]  # the other Grape than the one we announced on
        payload = {"msg": "hello", "n": [1, 2.5, None], "u": "é✓"}

        answer = await node_call(grape, name, transport, "request", payload)
        assert answer == {"ok": True, "result": {"echo": payload, "key": name, "server": "python"}}

        if transport == "http":
            big = {"text": "z" * 5000}
            answer = await node_call(grape, name, "http", "request", big, compress=True)
            assert answer["ok"] and answer["result"]["echo"] == big

        answer = await node_call(
            grape,
            name,
            transport,
            "request",
            {"action": "error", "message": "ERR_FROM_PYTHON: nope"},
        )
        assert answer == {"ok": False, "error": "ERR_FROM_PYTHON: nope", "result": None}

        answer = await node_call(grape, name, transport, "map", "m")
        assert answer["ok"] and answer["result"] == [{"echo": "m", "key": name, "server": "python"}]


# ------------------------------------------------------------------- Python client → Node


@pytest.mark.parametrize("transport", ["http", "ws"])
async def test_python_client_calls_node_server(
    transport: str, link: Link, grapes: GrapeCluster
) -> None:
    name = unique(f"node-{transport}")
    async with node_peer("server", grapes.api_urls[1], name, transport, str(free_port())) as n:
        port = await n.ready_port()
        client: PeerRPCClient | WsPeerRPCClient = (
            PeerRPCClient(link) if transport == "http" else WsPeerRPCClient(link)
        )
        async with client:
            await async_wait_for(lambda: _listed(link, name), 10.0, message="node announce")
            payload = {"msg": "hi", "list": [1, "two", {"three": 3}]}
            assert await client.request(name, payload) == {
                "echo": payload,
                "key": name,
                "server": "node",
            }
            big = {"text": "y" * 5000}
            result = await client.request(name, big, compress=True)
            assert result["echo"] == big
            with pytest.raises(RemoteError) as info:
                await client.request(name, {"action": "error", "message": "ERR_FROM_NODE: x"})
            assert info.value.message == "ERR_FROM_NODE: x"
            replies = await client.map(name, 3)
            assert [(r.peer, r.result) for r in replies] == [
                (f"127.0.0.1:{port}", {"echo": 3, "key": name, "server": "node"})
            ]


async def _listed(link: Link, name: str) -> bool:
    return bool(await link.lookup(name, use_cache=False))


async def test_map_across_python_and_node_servers(link: Link, grapes: GrapeCluster) -> None:
    name = unique("mixed")
    async with (
        PeerRPCServer(py_handler) as srv,
        node_peer("server", grapes.api_urls[0], name, "http", str(free_port())) as n,
    ):
        await link.start_announcing(name, srv.port)
        await n.ready_port()
        await async_wait_for(lambda: _count(link, name, 2), 10.0, message="both servers listed")
        async with PeerRPCClient(link) as client:
            servers = sorted(r.result["server"] for r in await client.map(name, 1))
        assert servers == ["node", "python"]
        answer = await node_call(grapes.api_urls[1], name, "http", "map", 1)
        assert answer["ok"]
        assert sorted(r["server"] for r in answer["result"]) == ["node", "python"]


async def _count(link: Link, name: str, n: int) -> bool:
    return len(await link.lookup(name, use_cache=False)) >= n


# -------------------------------------------------------------------------------- pub/sub


async def test_node_subscriber_reads_python_publisher(link: Link, grapes: GrapeCluster) -> None:
    topic = unique("pytopic")
    async with (
        PeerPub(link, topic) as pub,
        node_peer("sub", grapes.api_urls[1], topic, "3") as sub,
    ):
        assert await sub.line() == "CONNECTED"
        await async_wait_for(lambda: pub.subscribers == 1, 5.0)
        for i in range(3):
            pub.pub(json.dumps({"seq": i, "from": "python"}))
        lines = [json.loads(await sub.line()) for _ in range(3)]
        assert lines == [{"seq": i, "from": "python"} for i in range(3)]


async def test_python_subscriber_reads_node_publishers_and_fails_over(
    link: Link, grapes: GrapeCluster
) -> None:
    topic = unique("nodetopic")
    async with (
        node_peer("pub", grapes.api_urls[0], topic, str(free_port())) as pub1,
        node_peer("pub", grapes.api_urls[1], topic, str(free_port())) as pub2,
    ):
        port1, port2 = await pub1.ready_port(), await pub2.ready_port()
        await async_wait_for(lambda: _count(link, topic, 2), 10.0, message="2 publishers")
        async with PeerSub(link, topic, backoff_min_ms=20, backoff_max_ms=500) as sub:
            first = await sub.wait_connected(5000)
            msg = json.loads(await sub.recv(5000))
            assert msg["from"] == "node" and isinstance(msg["seq"], int)
            victim = pub1 if first == f"127.0.0.1:{port1}" else pub2
            await victim.kill()
            await async_wait_for(
                lambda: sub.publisher is not None and sub.publisher != first,
                10.0,
                message="subscriber moved to the other publisher",
            )
            second = sub.publisher
            assert second in (f"127.0.0.1:{port1}", f"127.0.0.1:{port2}")
            # Messages keep coming, from the surviving publisher.
            await sub.recv(5000)
            assert sub.connects == 2


# -------------------------------------------------------------------------------------- tls

CERTS = REPO_ROOT / "node_modules" / "grenache-nodejs-http" / "test" / "certs"


@pytest.mark.skipif(not CERTS.exists(), reason="grenache-nodejs-http test certs not installed")
async def test_node_tls_client_calls_python_tls_server(link: Link, grapes: GrapeCluster) -> None:
    ctx = server_ssl_context(
        cert=CERTS / "server-crt.pem", key=CERTS / "server-key.pem", ca=CERTS / "ca-crt.pem"
    )
    async with PeerRPCServer(py_handler, ssl_context=ctx) as srv:
        name = unique("tls")
        await link.start_announcing(name, srv.port)
        answer = await node_call(
            grapes.api_urls[0], name, "http", "request", "secret", env={"TLS_DIR": str(CERTS)}
        )
        assert answer == {"ok": True, "result": {"echo": "secret", "key": name, "server": "python"}}
