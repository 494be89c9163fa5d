"""Lookups while a DHT host is unreachable (issue 12, measured in the fault lab).

A Grape answers a lookup only when its DHT lookup ends, and a DHT query to a dead node waits
for k-rpc's 2 s timeout (twice when the Grape re-queries its bootstrap list): with one host
cut off, lookups on the healthy hosts took 0.6–5 s in the lab.  A Link whose lookups were
bounded by its 2 s request timeout (the client's default) failed every one of them; and a name
first looked up during the outage (a follower's first message to a new leader) waited seconds.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from grenex.grenache import Link, RequestTimeoutError
from grenex.grenache.fakes import FakeGrape
from grenex.grenache.testing import async_wait_for

DHT_LOOKUP_S = 2.5  # what a lookup took on a healthy host while another host was cut off


class SlowDhtTransport:
    """A Grape whose lookups take ``lookup_s`` (other calls are immediate); a call given less
    time than it takes times out, as the HTTP request to a real Grape does."""

    def __init__(self, grape: FakeGrape, lookup_s: float, *, sleep: bool = False) -> None:
        self.grape = grape
        self.lookup_s = lookup_s
        self.sleep = sleep
        self.timeouts: dict[str, list[float]] = {}
        self.lookups = 0

    async def post(self, url: str, body: bytes, timeout_s: float) -> tuple[int, bytes]:
        _base, _, endpoint = url.rpartition("/")
        self.timeouts.setdefault(endpoint, []).append(timeout_s)
        if endpoint == "lookup":
            self.lookups += 1
            if timeout_s < self.lookup_s:
                raise RequestTimeoutError(f"ERR_TIMEOUT: no reply from {url} in {timeout_s}s")
            if self.sleep:
                await asyncio.sleep(self.lookup_s)
        await asyncio.sleep(0)
        return self.grape.handle(endpoint, body)

    async def close(self) -> None:
        return None


async def test_a_lookup_outlasts_a_dht_that_waits_for_a_dead_node() -> None:
    transport = SlowDhtTransport(FakeGrape(), DHT_LOOKUP_S)
    # the client's Grape timeout (GrenexClient grape_timeout=2.0)
    link = Link("http://g1", request_timeout_ms=2000, transport=transport)
    await link.announce("svc", 5000)
    assert await link.lookup("svc") == ["127.0.0.1:5000"]
    assert transport.timeouts["announce"] == [2.0]  # other calls keep the request timeout
    assert transport.timeouts["lookup"][0] >= 2 * 2.0 + 1  # two dead 2 s DHT queries, and more
    await link.stop()


def test_lookup_timeout_is_configurable_and_checked() -> None:
    assert Link("http://g1", request_timeout_ms=9000).lookup_timeout_ms == 9000
    assert Link("http://g1", lookup_timeout_ms=1500).lookup_timeout_ms == 1500
    with pytest.raises(ValueError):
        Link("http://g1", lookup_timeout_ms=0)


async def test_a_name_kept_fresh_never_waits_for_the_dht() -> None:
    transport = SlowDhtTransport(FakeGrape(), 0.4, sleep=True)
    link = Link("http://g1", lookup_cache_ttl_ms=300, transport=transport)
    await link.announce("peer:n2", 5000)
    link.keep_fresh("peer:n2", "peer:n2")
    assert link.kept_fresh == ["peer:n2"]
    # warmed in the background (one slow lookup), never by the caller
    await async_wait_for(lambda: "peer:n2" in link._cache, 5.0)
    t_end = time.monotonic() + 1.5
    slowest = 0.0
    while time.monotonic() < t_end:
        t0 = time.monotonic()
        assert await link.lookup("peer:n2") == ["127.0.0.1:5000"]
        slowest = max(slowest, time.monotonic() - t0)
        await asyncio.sleep(0.05)
    assert slowest < 0.1  # each lookup 0.4 s at the Grape; none waited for it
    assert transport.lookups >= 3  # refreshed again and again behind the callers
    link.stop_keeping_fresh("peer:n2")
    assert link.kept_fresh == []
    await link.stop()


async def test_keep_fresh_is_bounded_and_needs_a_running_link() -> None:
    link = Link("http://g1", lookup_cache_entries_max=2, transport=SlowDhtTransport(FakeGrape(), 0))
    link.keep_fresh("a", "b")
    with pytest.raises(ValueError):
        link.keep_fresh("c")
    with pytest.raises(ValueError):
        link.keep_fresh("")
    await link.stop()
    with pytest.raises(RuntimeError):
        link.keep_fresh("a")
