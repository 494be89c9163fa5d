"""Link and peer-RPC client logic over the in-memory fakes (no sockets, milliseconds each).

Proves: the Link fails over to the next Grape when one refuses or says its DHT is empty,
raises typed errors otherwise, caches non-empty lookups for their TTL and never empty ones,
shares concurrent identical lookups, refuses ports that crash a Grape, and re-announces in the
background. The RPC client retries a refused request on another peer, remembers dead peers
and skips them, refreshes a stale lookup, times out slow peers, does not retry what may have
been delivered, and ``map`` returns each peer's result or error. The server core answers
every frame exactly once, bounds its backlog and handler time. The fakes speak the real bytes,
so these run the real encode/decode paths.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from grenex.grenache import (
    GrapeError,
    GrapeUnavailableError,
    Link,
    LookupEmptyError,
    PeerRPCClient,
    RemoteError,
    RequestTimeoutError,
    TransportError,
)
from grenex.grenache._core import ServiceCore
from grenex.grenache.fakes import FakeGrape, FakeGrapeTransport, FakeNetwork, FakeRPCTransport
from grenex.grenache.testing import async_wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def echo(key: str, payload: Any) -> Any:
    if isinstance(payload, dict) and payload.get("fail"):
        raise RemoteError(payload["fail"], {"partial": True})
    if payload == "boom":
        raise ValueError("ERR_BOOM")
    return {"key": key, "echo": payload}


def make(
    grapes: tuple[str, ...] = ("http://g1", "http://g2"), **link_kw: Any
) -> tuple[FakeGrape, Link]:
    grape = FakeGrape()
    return grape, Link(list(grapes), transport=grape.transport(), **link_kw)


def fake_transport(link: Link) -> FakeGrapeTransport:
    transport = link._transport
    assert isinstance(transport, FakeGrapeTransport)
    return transport


# ------------------------------------------------------------------------------------- link


async def test_link_announce_lookup_put_get() -> None:
    _grape, link = make()
    assert await link.announce("svc", 5000) == 1
    assert await link.lookup("svc") == ["127.0.0.1:5000"]
    digest = await link.put("hello world")
    assert digest == "6d33adc2b6b2c14c3036feefb7fedbca1a880527"
    found = await link.get(digest)
    assert found is not None and found.v == "hello world"
    assert await link.get("0" * 40) is None
    await link.stop()


async def test_link_fails_over_to_the_next_grape_and_sticks_to_it() -> None:
    _grape, link = make(("http://g1", "http://g2", "http://g3"), lookup_stale_ms=0)
    transport = fake_transport(link)
    assert hasattr(transport, "down")
    transport.down("http://g1")
    await link.announce("svc", 5000)
    calls = transport.calls
    await link.lookup("svc", use_cache=False)
    assert transport.calls == calls + 1  # g2 answered last: no new attempt on dead g1
    transport.down("http://g2")
    assert await link.lookup("svc", use_cache=False) == ["127.0.0.1:5000"]
    for url in ("http://g1", "http://g3"):
        transport.down(url)
    with pytest.raises(GrapeUnavailableError):
        await link.lookup("svc", use_cache=False)
    await link.stop()


async def test_link_serves_the_last_known_answer_while_grapes_fail_or_forget() -> None:
    """A Grape whose DHT neighbour died stalls and answers [] or fails: the last non-empty
    answer (younger than lookup_stale_ms) keeps services reachable, refreshed in the
    background; with lookup_stale_ms=0 the Link reports what the Grapes say."""
    now = [0.0]
    grape = FakeGrape()
    link = Link(
        ["http://g1"],
        transport=grape.transport(),
        lookup_cache_ttl_ms=1000,
        lookup_stale_ms=10_000,
        clock=lambda: now[0],
    )
    transport = fake_transport(link)
    await link.announce("svc", 5000)
    assert await link.lookup("svc") == ["127.0.0.1:5000"]
    transport.down("http://g1")
    now[0] = 5.0  # cache expired, answer still recent: served at once, refreshed behind
    assert await link.lookup("svc") == ["127.0.0.1:5000"]
    assert await link.lookup("svc", use_cache=False) == ["127.0.0.1:5000"]  # failing Grape
    now[0] = 11.0  # too old now: the failure shows
    with pytest.raises(GrapeUnavailableError):
        await link.lookup("svc")
    await link.stop()


async def test_link_moves_on_when_a_grape_has_no_dht_nodes() -> None:
    grape, link = make()
    calls: list[str] = []
    real = grape.handle

    def handle(endpoint: str, body: bytes) -> tuple[int, bytes]:
        calls.append(endpoint)
        if len(calls) == 1:
            return 200, b'"No nodes to query"'
        return real(endpoint, body)

    grape.handle = handle  # type: ignore[method-assign]
    assert await link.announce("svc", 1) == 1
    assert calls == ["announce", "announce"]
    await link.stop()


async def test_grape_stated_errors_are_final() -> None:
    grape, link = make()

    def handle(endpoint: str, body: bytes) -> tuple[int, bytes]:
        return 200, b'"ERR_GRAPE_LOOKUP"'

    grape.handle = handle  # type: ignore[method-assign]
    with pytest.raises(GrapeError) as info:
        await link.lookup("svc")
    assert info.value.code == "ERR_GRAPE_LOOKUP"
    await link.stop()


async def test_empty_lookups_are_never_cached_but_results_are_for_their_ttl() -> None:
    clock = Clock()
    _grape, link = make(lookup_cache_ttl_ms=5000, clock=clock)
    transport = fake_transport(link)
    assert await link.lookup("svc") == []
    await link.announce("svc", 5000)
    assert await link.lookup("svc") == ["127.0.0.1:5000"]  # the empty answer was not cached
    calls = transport.calls
    await link.announce("svc", 5001)
    assert await link.lookup("svc") == ["127.0.0.1:5000"]  # cached
    assert transport.calls == calls + 1  # only the announce
    clock.now += 5.001
    # expired: the last known answer at once, refreshed in the background (stale-while-
    # revalidate; lookup_stale_ms), so a stalling Grape never stalls the caller
    assert await link.lookup("svc") == ["127.0.0.1:5000"]
    both = ["127.0.0.1:5000", "127.0.0.1:5001"]
    assert sorted(await link.lookup("svc", use_cache=False)) == both  # joins that refresh
    assert sorted(await link.lookup("svc")) == both
    await link.stop()


async def test_lookup_cache_is_bounded() -> None:
    _grape, link = make(lookup_cache_entries_max=3)
    for i in range(10):
        await link.announce(f"svc{i}", 5000 + i)
        await link.lookup(f"svc{i}")
    assert len(link._cache) == 3
    await link.stop()


async def test_concurrent_identical_lookups_share_one_request() -> None:
    _grape, link = make()
    await link.announce("svc", 5000)
    transport = fake_transport(link)
    calls = transport.calls
    results = await asyncio.gather(*(link.lookup("svc", use_cache=False) for _ in range(20)))
    assert all(r == ["127.0.0.1:5000"] for r in results)
    assert transport.calls == calls + 1
    await link.stop()


@pytest.mark.parametrize("port", [0, -1, 65536, 70000])
async def test_link_refuses_ports_that_crash_a_grape(port: int) -> None:
    grape, link = make()
    with pytest.raises(ValueError):
        await link.announce("svc", port)
    with pytest.raises(ValueError):
        await link.start_announcing("svc", port)
    assert grape.requests == []
    await link.stop()


async def test_link_validates_put_and_get_arguments() -> None:
    _grape, link = make()
    with pytest.raises(ValueError):
        await link.put("é" * 500)  # 1000 UTF-8 bytes
    assert await link.put("a" * 999)
    with pytest.raises(ValueError):
        await link.get("xyz")
    await link.stop()


async def test_background_announcing_keeps_a_service_alive_until_stopped() -> None:
    clock = Clock()
    grape = FakeGrape(peer_ttl_ms=100, clock=clock)
    link = Link("http://g", transport=grape.transport(), announce_interval_ms=20)
    await link.start_announcing("svc", 5000)
    assert link.announcing == [("svc", 5000)]
    first = len(grape.requests)
    await async_wait_for(
        lambda: len(grape.requests) >= first + 3, 2.0, message="three re-announces"
    )
    await link.stop_announcing("svc", 5000)
    clock.now += 1
    assert grape.lookup("svc") == []
    await link.stop()
    assert link.announcing == []


async def test_announce_loop_survives_failures() -> None:
    grape, link = make(("http://g",), announce_interval_ms=20)
    await link.start_announcing("svc", 5000)
    transport = fake_transport(link)
    transport.down("http://g")
    calls = transport.calls
    await async_wait_for(lambda: transport.calls >= calls + 3, 2.0)
    transport.down("http://g", False)
    n = len(grape.requests)
    await async_wait_for(lambda: len(grape.requests) > n, 2.0, message="announce recovers")
    await link.stop()


# -------------------------------------------------------------------------------------- rpc


async def rpc_setup(
    n: int = 3, **client_kw: Any
) -> tuple[FakeGrape, Link, FakeNetwork, list[str], PeerRPCClient]:
    grape, link = make(lookup_cache_ttl_ms=60_000)
    net = FakeNetwork()
    dests = [net.serve(echo) for _ in range(n)]
    for d in dests:
        await link.announce("svc", net.port_of(d))
    client = PeerRPCClient(link, transport=net.transport(), rng=random.Random(7), **client_kw)
    return grape, link, net, dests, client


async def test_request_reaches_a_random_peer_and_back() -> None:
    _, _link, net, dests, client = await rpc_setup()
    seen = set()
    for i in range(60):
        assert await client.request("svc", i) == {"key": "svc", "echo": i}
    for d in dests:
        seen.add(net.services[d].core.requests > 0)
    assert seen == {True}  # uniformly random: 60 draws reach all 3
    assert await client.request("svc", {"z": [1, 2]}, compress=True) == {
        "key": "svc",
        "echo": {"z": [1, 2]},
    }


async def test_remote_errors_carry_message_and_result() -> None:
    _, _, _, _, client = await rpc_setup()
    with pytest.raises(RemoteError) as info:
        await client.request("svc", {"fail": "ERR_NOPE: because"})
    assert info.value.message == "ERR_NOPE: because" and info.value.result == {"partial": True}
    with pytest.raises(RemoteError, match="ERR_BOOM"):
        await client.request("svc", "boom")


async def test_refused_peer_is_retried_elsewhere_and_then_skipped() -> None:
    _, _, net, dests, client = await rpc_setup(n=2, attempts_max=2)
    net.kill(dests[0])
    transport = client._poster
    assert isinstance(transport, FakeRPCTransport)
    for i in range(20):
        assert await client.request("svc", i) == {"key": "svc", "echo": i}
    assert client.is_dead(dests[0])
    # The dead peer costs at most one refused attempt, then is skipped.
    assert transport.calls <= 21


async def test_dead_memory_expires() -> None:
    clock = Clock()
    _, _, _net, dests, client = await rpc_setup(n=2, dead_peer_ms=1000, clock=clock)
    client.mark_dead(dests[0])
    assert client.is_dead(dests[0])
    clock.now += 1.001
    assert not client.is_dead(dests[0])


async def test_all_peers_dead_refreshes_the_lookup() -> None:
    _grape, link, net, dests, client = await rpc_setup(n=1)
    net.kill(dests[0])
    with pytest.raises(TransportError) as info:
        await client.request("svc", 1)
    assert not info.value.delivered
    fresh = net.serve(echo)
    await link.announce("svc", net.port_of(fresh))  # the cached lookup does not list it yet
    assert await client.request("svc", 2) == {"key": "svc", "echo": 2}


async def test_slow_peer_times_out_and_is_not_retried() -> None:
    _, _, net, dests, client = await rpc_setup(n=1)
    net.set_delay(dests[0], 5.0)
    transport = client._poster
    assert isinstance(transport, FakeRPCTransport)
    calls = transport.calls
    with pytest.raises(RequestTimeoutError):
        await client.request("svc", 1, timeout_ms=50)
    assert transport.calls == calls + 1  # maybe delivered
    assert not client.is_dead(dests[0])  # slow is not dead


async def test_lookup_empty() -> None:
    _, _, _, _, client = await rpc_setup()
    with pytest.raises(LookupEmptyError):
        await client.request("nobody", 1)
    with pytest.raises(LookupEmptyError):
        await client.map("nobody", 1)


async def test_map_returns_every_peers_result_or_error() -> None:
    _, _, net, dests, client = await rpc_setup(n=3)
    net.kill(dests[1])
    replies = await client.map("svc", "x")
    assert [r.peer for r in replies] == dests  # lookup order (fake keeps announce order)
    assert [r.ok for r in replies] == [True, False, True]
    assert replies[0].result == {"key": "svc", "echo": "x"}
    assert isinstance(replies[1].error, TransportError)
    assert replies[1].to_json()["error"].startswith("ERR_REQUEST_GENERIC")
    limited = await client.map("svc", "x", limit=2)
    assert len(limited) == 2


async def test_request_peer_addresses_one_peer() -> None:
    _, _, _, dests, client = await rpc_setup()
    assert await client.request_peer(dests[2], "svc", 5) == {"key": "svc", "echo": 5}


# ------------------------------------------------------------------------------ server core


async def test_core_answers_garbage_with_one_error_each() -> None:
    core = ServiceCore(echo)
    assert (await core.reply_to(b'["r","k",1]')).startswith(b'["r",null,')
    assert b"ERR_REQUEST_INVALID" in await core.reply_to(b'["r", 7]')
    assert core.invalid == 1


async def test_core_bounds_handler_time() -> None:
    async def slow(key: str, payload: Any) -> Any:
        await asyncio.sleep(10)

    core = ServiceCore(slow, handler_timeout_ms=30)
    reply = await core.reply_to(b'["r","k",1]')
    assert reply.startswith(b'["r","ERR_TIMEOUT')


async def test_core_bounds_its_backlog() -> None:
    gate = asyncio.Event()

    async def blocked(key: str, payload: Any) -> Any:
        await gate.wait()
        return payload

    core = ServiceCore(blocked, concurrency_max=2, backlog_max=3)
    tasks = [asyncio.create_task(core.reply_to(f'["r{i}","k",{i}]'.encode())) for i in range(8)]
    await async_wait_for(lambda: sum(t.done() for t in tasks) == 3, 2.0)
    busy = [t.result() for t in tasks if t.done()]
    assert all(b"ERR_SERVICE_BUSY" in r for r in busy)
    gate.set()
    done = await asyncio.gather(*tasks)
    assert sum(b",null," in r for r in done) == 5  # 2 running + 3 waiting were served


async def test_sync_handlers_are_accepted() -> None:
    core = ServiceCore(lambda key, payload: [key, payload])
    assert await core.reply_to(b'["r","k",1]') == b'["r",null,["k",1]]'
