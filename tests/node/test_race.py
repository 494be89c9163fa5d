"""Issue 5, test 5: opposing orders sent at the same instant to two nodes trade exactly once.

How: 3 voters + 2 learners, the event stream of n5 recorded from the first command.  Fifty
times, with fresh ids, a buy at 100 and a sell at 100 (qty 1, different clients) are sent at
the same moment (``asyncio.gather``) to two different nodes — follower/follower,
learner/learner, leader/learner, in both directions.  Then, twenty times, one place is sent at
the same moment to two nodes as the same signed envelope (a client retrying through another
node while the first attempt is in flight), against a resting counter-order.

Proves:

* every pair trades exactly once, with each other: one reply is ``accepted, resting`` (the
  maker, the earlier log entry), the other ``accepted, trade, filled, filled`` at 100 for 1;
  nothing is left on the book;
* every node's ``trades`` reply lists exactly those fifty trades, in the same order;
* an envelope submitted twice at once is executed once: both replies are identical (same
  ``seq``, same events; at most one is not marked ``duplicate``), it fills its counter-order
  once;
* the history holds and all replicas converge to books equal to the replay of the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from .conftest import started_harness
from .harness import Harness
from .history import OK

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(180)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def harness(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    async with started_harness(tmp_path_factory, "race", stream_node="n5") as h:
        yield h


def order(client: str, oid: str, side: str, price: str = "100") -> dict[str, Any]:
    return {
        "client": client,
        "id": oid,
        "market": "BTC-USD",
        "side": side,
        "qty": "1",
        "price": price,
    }


def types(events: list[dict[str, Any]] | None) -> list[str]:
    return [e["type"] for e in events or []]


async def test_opposing_orders_at_the_same_instant(harness: Harness) -> None:
    h = harness
    leader = await h.cluster.wait_leader()
    others = [n for n in h.cluster.voter_ids if n != leader]
    routes = [
        (others[0], others[1]),  # follower / follower
        ("n4", "n5"),  # learner / learner
        (leader, "n4"),  # leader / learner
        (others[1], leader),
        ("n5", others[0]),
    ]
    trades: list[tuple[str, str]] = []
    for i in range(50):
        to_buy, to_sell = routes[i % len(routes)]
        if i % 2:
            to_buy, to_sell = to_sell, to_buy
        buy, sell = await asyncio.gather(
            h.command(to_buy, "place", order("rb", f"b{i}", "buy")),
            h.command(to_sell, "place", order("rs", f"s{i}", "sell")),
        )
        assert buy.status == OK and sell.status == OK, (buy, sell)
        assert buy.seq is not None and sell.seq is not None and buy.seq != sell.seq
        maker, taker = (buy, sell) if buy.seq < sell.seq else (sell, buy)
        assert types(maker.events) == ["accepted", "resting"], maker.events
        assert types(taker.events) == ["accepted", "trade", "filled", "filled"], taker.events
        assert taker.events is not None
        trade = taker.events[1]
        assert (trade["maker"], trade["taker"]) == (maker.args["id"], taker.args["id"])
        assert (trade["price"], trade["qty"]) == ("100", "1")
        trades.append((trade["maker"], trade["taker"]))
    _res, statuses = await h.verify()
    for node in statuses:
        book = (await h.cluster.request(node, "book", {"market": "BTC-USD"}))["books"][0]
        assert book["bids"] == [] and book["asks"] == [], (node, book)
        got = (await h.cluster.request(node, "trades", {"market": "BTC-USD", "limit": 1000}))[
            "trades"
        ]
        assert [(t["maker"], t["taker"]) for t in got] == trades, node


async def test_one_order_submitted_twice_at_once(harness: Harness) -> None:
    h = harness
    routes = [("n2", "n3"), ("n4", "n5"), ("n1", "n5"), ("n3", "n4")]
    for i in range(20):
        maker = await h.command("n1", "place", order("dm", f"m{i}", "sell", "101"))
        assert maker.status == OK and types(maker.events) == ["accepted", "resting"]
        a, b = routes[i % len(routes)]
        await h.ensure_registered(a, "dt")
        op = h.signing.op(a, {"type": "place", **order("dt", f"t{i}", "buy", "101")})
        first, second = await asyncio.gather(h.send(op), h.send(h.again(op, b)))
        assert first.status == OK and second.status == OK, (first, second)
        assert (first.seq, first.events) == (second.seq, second.events), (first, second)
        assert not (first.duplicate and second.duplicate), (first, second)
        assert types(first.events) == ["accepted", "trade", "filled", "filled"], first.events
    _res, statuses = await h.verify()
    for node in statuses:
        book = (await h.cluster.request(node, "book", {"market": "BTC-USD"}))["books"][0]
        assert book["bids"] == [] and book["asks"] == [], (node, book)
