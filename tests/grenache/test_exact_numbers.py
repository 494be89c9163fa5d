"""A server can keep JSON numbers exact: ``float_hook`` receives their literal text.

grenex's node needs this (SPEC §1: JSON numbers are read exactly, never through a float); the
default stays Node-like (floats).  Proved through the server core and over real HTTP.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from grenex.grenache import PeerRPCServer
from grenex.grenache._core import ServiceCore


class Exact(str):
    """Marks the literal text of a non-integer JSON number."""


def recorder(seen: list[Any], result: Any) -> Any:
    def handler(key: str, payload: Any) -> Any:
        seen.append(payload)
        return result

    return handler


async def test_float_hook_gets_the_literal_text() -> None:
    seen: list[Any] = []
    core = ServiceCore(recorder(seen, "ok"), float_hook=Exact)
    reply = await core.reply_to(b'["r1","k",{"a":100.50,"b":1e400,"c":3,"d":0.1}]')
    assert reply == b'["r1",null,"ok"]'
    assert seen == [{"a": "100.50", "b": "1e400", "c": 3, "d": "0.1"}]
    assert [type(v) for v in seen[0].values()] == [Exact, Exact, int, Exact]


async def test_default_is_floats_like_node() -> None:
    seen: list[Any] = []
    core = ServiceCore(recorder(seen, None))
    await core.reply_to(b'["r1","k",[100.50]]')
    assert seen == [[100.5]] and type(seen[0][0]) is float


async def test_over_http() -> None:
    seen: list[Any] = []
    server = PeerRPCServer(recorder(seen, "ok"), float_hook=Exact)
    async with server, aiohttp.ClientSession() as session:
        body = b'["rid-1","svc",{"price":100.50}]'
        async with session.post(f"http://{server.dest}/", data=body) as resp:
            assert resp.status == 200
            assert await resp.read() == b'["rid-1",null,"ok"]'
    assert seen == [{"price": "100.50"}] and type(seen[0]["price"]) is Exact
