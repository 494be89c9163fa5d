"""The read side of the client API on real processes: ``trades`` paging, ``events``, ``book``.

How: three voters on one Grape, the event stream of n3 recorded from the first command.  One
taker sweeps three resting asks, so one log entry holds three trades; then a few more orders.

Proves:

* ``events`` (the node's bounded window of applied entries, paged with ``since``) gives, on
  every node, exactly the events the stream published (``Harness.verify`` checks this too);
* ``book`` with ``depth`` cuts each side to that many orders, in priority order;
* ``trades`` without ``since`` gives the newest ``limit`` trades;
* ``trades`` paged forward (``since`` = the last seq seen, while ``more``), two at a time,
  gives every trade once: a page never ends inside a log entry with several trades (it used
  to, and the next page, starting after that seq, lost the rest of the entry).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from .conftest import started_harness
from .harness import Harness
from .history import OK

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def harness(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    async with started_harness(
        tmp_path_factory, "reads", stream_node="n3", nodes=3, voters=3, grapes=1
    ) as h:
        for i, price in enumerate(("100", "100.01", "100.02", "100.03")):
            await place(h, "mk", f"a{i}", "sell", "1", price)
        sweep = await place(h, "tk", "t1", "buy", "3", "101")
        assert [e["type"] for e in sweep].count("trade") == 3
        await place(h, "mk", "a9", "sell", "1", "100.5")
        await place(h, "tk", "t2", "buy", "2", "101")  # two trades: 100.03 and 100.5
        for i in range(3):
            await place(h, "bd", f"b{i}", "buy", "1", f"9{i}")
        yield h


async def place(
    h: Harness, client: str, oid: str, side: str, qty: str, price: str
) -> list[dict[str, Any]]:
    op = await h.command(
        "n1",
        "place",
        {
            "client": client,
            "id": oid,
            "market": "ETH-USD",
            "side": side,
            "qty": qty,
            "price": price,
        },
    )
    assert op.status == OK and op.events is not None, op
    return op.events


def stream_trades(h: Harness) -> list[dict[str, Any]]:
    assert h.stream is not None
    return [e for e in h.stream.events if e["type"] == "trade"]


async def test_events_and_books_on_every_node(harness: Harness) -> None:
    _res, statuses = await harness.verify()
    for node in statuses:
        first, events = await harness.node_events(node)
        assert first <= 1 and events == harness.stream.events  # type: ignore[union-attr]
        book = (await harness.cluster.request(node, "book", {"market": "ETH-USD", "depth": 2}))[
            "books"
        ][0]
        assert [o["id"] for o in book["bids"]] == ["b2", "b1"]
        assert book["asks"] == []


def untimed(trades: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trades without their entry's time stamp, which every trade of the tape carries (the
    same on every node: the leader stamped the entry)."""
    assert all(type(t["time"]) is int for t in trades), trades
    return [{k: v for k, v in t.items() if k != "time"} for t in trades]


async def test_newest_trades(harness: Harness) -> None:
    want = stream_trades(harness)
    assert len(want) == 5
    tapes = []
    for node in ("n1", "n2", "n3"):
        got = (await harness.cluster.request(node, "trades", {"limit": 2}))["trades"]
        assert untimed(got) == want[-2:], node
        tapes.append(got)
    assert tapes[0] == tapes[1] == tapes[2]  # times included


async def test_trades_paged_forward(harness: Harness) -> None:
    want = stream_trades(harness)
    got: list[dict[str, Any]] = []
    since = 0
    for _ in range(20):
        r = await harness.cluster.request("n2", "trades", {"since": since, "limit": 2})
        got += r["trades"]
        if not r["more"]:
            break
        since = r["trades"][-1]["seq"]
    assert untimed(got) == want
