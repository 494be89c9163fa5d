"""The user's own view through the Python client, against a real cluster (2 Grapes, 3 nodes).

Proves: ``markets`` lists every open market with its tick and lot; ``orders`` lists exactly an
account's resting orders (per market or all) with exact remaining quantities, the same on every
node once applied; ``order`` says resting / filled / cancelled / rejected / used / unknown;
``cancel_all`` cancels what it listed (in one market or all) and nothing of other accounts; a
signed envelope sent again is answered ``duplicate`` (also in ``to_json``); a partly filled
IOC is ``partly_filled``; a read with bad arguments is a :class:`BadRequest`.
"""

from __future__ import annotations

import pytest

from grenex.client import BadRequest, CommandResult, MarketInfo
from grenex.devnet import LocalCluster
from grenex.grenache import RemoteError

from .helpers import until

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]


async def test_markets_with_tick_and_lot(cluster: LocalCluster) -> None:
    async with cluster.client("n2") as c:
        await c.add_market("UV-USD", "0.050", "0.5")
        got = await c.markets()
    assert [m.market for m in got] == sorted(m.market for m in got)
    assert MarketInfo("UV-USD", "0.05", "0.5") in got
    assert {"BTC-USD", "ETH-USD"} <= {m.market for m in got}


async def test_orders_order_and_cancel_all(cluster: LocalCluster) -> None:
    async with (
        cluster.client("n1", client_id="uv-al") as al,
        cluster.client("n3", client_id="uv-bo") as bo,
    ):
        await al.place("ETH-USD", "buy", "2", "100", id="b1")
        await al.place("ETH-USD", "buy", "1", "101", id="b2")
        await al.place("BTC-USD", "sell", "0.5", "90000", id="s1")
        await bo.place("ETH-USD", "buy", "3", "99", id="x1")
        # bo sells 0.5 into al's best bid
        hit = await bo.place("ETH-USD", "sell", "0.5", "101", id="x2")
        assert hit.status == "filled"

        # read your writes holds on bo's node; al's node shows the fill once it applied it
        async def al_saw_the_fill() -> bool | None:
            return True if (await al.status()).applied >= hit.seq else None

        await until(al_saw_the_fill, 10, "al's node applied bo's fill")
        mine = await al.orders()
        assert [(o.id, o.market, o.side, o.price, o.qty, o.remaining) for o in mine] == [
            ("s1", "BTC-USD", "sell", "90000", "0.5", "0.5"),
            ("b2", "ETH-USD", "buy", "101", "1", "0.5"),
            ("b1", "ETH-USD", "buy", "100", "2", "2"),
        ]
        assert [o.id for o in await al.orders(market="ETH-USD")] == ["b2", "b1"]
        assert [o.id for o in await bo.orders("uv-al", "BTC-USD")] == ["s1"]  # anyone may read

        # the same answer from every node once it has applied as far
        async def everywhere() -> bool | None:
            views = []
            for node in ("n1", "n2", "n3"):
                async with cluster.client(node) as c:
                    views.append(await c.orders("uv-al"))
            return True if all(v == mine for v in views) else None

        await until(everywhere, 10, "the same orders on every node")

        st = await al.order(None, "b2")
        assert (st.state, st.market, st.price, st.qty, st.remaining) == (
            "resting",
            "ETH-USD",
            "101",
            "1",
            "0.5",
        )
        assert (await bo.order(None, "x2")).state == "filled"
        assert (await al.order(None, "never")).state == "unknown"

        done = await al.cancel_all(market="ETH-USD")
        assert all(isinstance(r, CommandResult) and r.status == "cancelled" for r in done)
        assert sorted(str(r.id) for r in done if isinstance(r, CommandResult)) == ["b1", "b2"]
        assert [o.id for o in await al.orders()] == ["s1"]
        assert (await al.order(None, "b1")).state == "used"  # rested, then left the book
        assert [o.id for o in await bo.orders()] == ["x1"]  # another account: untouched

        rest = await al.cancel_all()
        assert [r.id for r in rest if isinstance(r, CommandResult)] == ["s1"]
        assert await al.orders() == [] and await al.cancel_all() == []
        await bo.cancel(None, "x1")


async def test_duplicate_flag_and_partly_filled_ioc(cluster: LocalCluster) -> None:
    async with cluster.client("n2", client_id="uv-dup") as c:
        await c.register("uv-dup")
        # the same signed envelope twice (a retry): the second is answered from the nonce window
        env = c.envelope(
            {"type": "place", "client": "uv-dup", "id": "d1", "market": "BTC-USD"}
            | {"side": "sell", "qty": "0.3", "price": "70000"}
        )
        first = CommandResult.from_reply(await cluster.request("n2", "place", env), "uv-dup", "d1")
        again = CommandResult.from_reply(await cluster.request("n2", "place", env), "uv-dup", "d1")
        assert not first.duplicate and again.duplicate
        assert again.to_json()["duplicate"] is True and "duplicate" not in first.to_json()
        assert again.seq == first.seq and again.events == first.events

        ioc = await c.place("BTC-USD", "buy", "0.5", "70000", client="uv-ioc", tif="IOC")
        assert ioc.status == "cancelled" and ioc.reason == "unfilled" and ioc.partly_filled
        assert str(ioc.filled_qty) == "0.3"
        assert not first.partly_filled
        st = await c.order("uv-ioc", ioc.id or "")
        assert (st.state, st.reason, st.remaining) == ("cancelled", "unfilled", "0.2")


async def test_bad_read_arguments_are_bad_requests(cluster: LocalCluster) -> None:
    async with cluster.client("n1") as c:
        with pytest.raises(BadRequest):
            await c.orders("not a name")
        with pytest.raises(BadRequest):
            await c.order("uv", "a/b")
    with pytest.raises(RemoteError) as e:  # the raw request, without a client
        await cluster.request("n1", "orders", {}, timeout_ms=5000)
        assert e.value.code == "ERR_GRENEX_BAD_REQUEST"
