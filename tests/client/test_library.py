"""GrenexClient against a real cluster (2 Grapes, 3 node processes on loopback).

Proves:

* place / cancel / amend / add_market return typed results with working helpers
  (``status``, ``reason``, ``trades``, ``remaining``, ``filled_qty``), engine rejections are
  results not exceptions, and the books, trades and statuses read back what was done, on the
  node that acknowledged it (read your writes) and, once converged, on every node;
* exactly once: the same signed envelope sent twice is answered with the first outcome
  (``duplicate``); the same order id in a new envelope is rejected ``duplicate_id``; a reply
  lost after the node executed the command (``ERR_GRENEX_UNAVAILABLE`` or a timeout, injected
  by a TLS proxy announced in the real DHT) is retried by the client with the *same* envelope
  and yields the original outcome, with one execution;
* the event stream delivers typed events in log order, filtered by market; when its
  publisher goes away it moves to another one and drops what it already delivered;
* floats are refused with TypeError before anything is sent; Decimals are written exactly;
* failures are clean and bounded: no Grape (refused or silent), an unknown node, a node that
  is announced but dead (retried until the deadline, the command attached to the error), a
  request the node refuses (BadRequest, not retried).
"""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from typing import Any

import pytest

from grenex.client import (
    BadRequest,
    CommandResult,
    GrapeUnavailable,
    GrenexClient,
    NotFound,
    Unavailable,
)
from grenex.codec.genesis import parse_genesis
from grenex.codec.keys import SecretKey
from grenex.codec.signer import Keyring
from grenex.devnet import LocalCluster
from grenex.engine import Accepted, Filled, Resting, Trade
from grenex.grenache import (
    Link,
    PeerPub,
    PeerRPCClient,
    PeerRPCServer,
    RemoteError,
    WsPeerRPCClient,
)
from grenex.grenache.tls import b64url, make_self_signed, server_context

from .helpers import black_hole, closed_port, inner, until

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]


def client(c: LocalCluster, node: str | None = None, **kw: Any) -> GrenexClient:
    """A client of the cluster signing with its keyring (accounts registered on first use)."""
    out: GrenexClient = c.client(node, **kw)
    return out


async def test_place_cross_and_read_back(cluster: LocalCluster) -> None:
    async with client(cluster, "n2") as n2, client(cluster, "n3") as n3:
        sell = await n2.place("BTC-USD", "sell", "1", Decimal("100.10"), id="lib-s1")
        assert (sell.status, sell.remaining, sell.client, sell.id) == (
            "resting",
            "1",
            "n2",
            "lib-s1",
        )
        assert not sell.rejected and sell.reason is None and sell.trades == []
        assert type(sell.events[0]) is Accepted and sell.events[0].price == "100.1"

        buy = await n3.place("BTC-USD", "buy", "0.4", "101", client="lib-bob")
        assert buy.status == "filled" and buy.client == "lib-bob"
        assert buy.filled_qty == Decimal("0.4")
        (trade,) = buy.trades
        assert (trade.price, trade.qty, trade.maker, trade.maker_client, trade.taker_side) == (
            "100.1",
            "0.4",
            "lib-s1",
            "n2",
            "buy",
        )
        assert buy.seq > sell.seq

        # read your writes on the acknowledging node
        book = (await n3.book("BTC-USD"))["BTC-USD"]
        assert [(o.id, o.qty) for o in book.asks] == [("lib-s1", "0.6")]
        assert book.best_ask == Decimal("100.1")
        trades = await n3.trades("BTC-USD", since=buy.seq - 1)
        assert trades == [trade]

        # every node, once converged
        await cluster.wait_converged()
        for node in ("n1", "n2"):
            async with client(cluster, node) as other:
                snap = await other.book()
                assert set(snap.books) >= {"BTC-USD", "ETH-USD"}
                assert snap["BTC-USD"] == book


async def test_amend_cancel_and_rejections(cluster: LocalCluster) -> None:
    async with client(cluster, "n1", client_id="lib-amend") as c:
        placed = await c.place("ETH-USD", "buy", "2", "1500", id="a1")
        assert placed.status == "resting"

        smaller = await c.amend(None, "a1", qty="1.5")
        assert (smaller.status, smaller.remaining) == ("amended", "1.5")
        moved = await c.amend(None, "a1", price=Decimal("1501.00"))
        assert moved.status == "resting"
        assert [type(e).__name__ for e in moved.events] == ["Amended", "Resting"]
        bids = (await c.book("ETH-USD"))["ETH-USD"].bids
        assert [(o.id, o.price, o.qty) for o in bids if o.client == "lib-amend"] == [
            ("a1", "1501", "1.5")
        ]

        gone = await c.cancel(None, "a1")
        assert (gone.status, gone.reason, gone.remaining) == ("cancelled", "user", "0")
        again = await c.cancel(None, "a1")
        assert again.rejected and again.reason == "unknown_order" and again.status == "rejected"

        bad_qty = await c.place("ETH-USD", "buy", "1.5e3", "1500")
        assert bad_qty.rejected and bad_qty.reason == "invalid_qty"
        no_market = await c.place("NOPE-USD", "buy", "1", "1")
        assert no_market.reason == "unknown_market"
        ioc = await c.place("ETH-USD", "sell", "1", "999999", tif="IOC")
        assert (ioc.status, ioc.reason) == ("cancelled", "unfilled")


async def test_the_same_envelope_is_answered_with_the_first_outcome(
    cluster: LocalCluster,
) -> None:
    async with client(cluster, "n3", client_id="lib-dup") as c:
        first = await c.place("BTC-USD", "buy", "0.001", "50", id="dup1")
        # the same id in a new envelope: a new command, rejected (never placed twice)
        again = await c.place("BTC-USD", "buy", "0.001", "50", id="dup1")
        assert first.status == "resting" and again.reason == "duplicate_id"
        assert again.seq > first.seq

        # the same envelope twice (what a retry sends): the first outcome, marked duplicate
        env = c.envelope({"type": "cancel", "client": "lib-dup", "id": "dup1"})
        r1 = await cluster.request("n3", "cancel", env)
        r2 = await cluster.request("n2", "cancel", env)
        assert "duplicate" not in r1 and r2["duplicate"] is True
        assert (r2["seq"], r2["events"]) == (r1["seq"], r1["events"])
        assert CommandResult.from_reply(r2, "lib-dup", "dup1").status == "cancelled"

        m1 = await c.add_market("DUP-USD", "0.5", "1")
        m2 = await c.add_market("DUP-USD", "0.5", "1")
        assert m1.status == "market_added" and m2.reason == "market_exists"


def _attempt_key(args: Any) -> str:
    """What a proxy groups attempts by: the command inside the envelope (type and id)."""
    cmd = inner(args)
    return f"{cmd.get('type', 'batch')}:{cmd.get('id', cmd.get('nonce'))}"


class Proxy:
    """A fake node ``grenex:<cluster>:node:<name>`` in the real DHT that forwards to n1.

    It serves TLS with a certificate of its own, which the client under test pins for that
    name (as if the operator had admitted it).  The first attempt of each command (by the
    command inside its envelope) is executed by n1, then its reply is lost: answered
    ``ERR_GRENEX_UNAVAILABLE`` (``"unavailable"``), or held past the client's attempt timeout
    (``"hang"``).  Later attempts are forwarded and answered.
    """

    def __init__(self, c: LocalCluster, name: str, mode: str) -> None:
        self.c = c
        self.name = name
        self.mode = mode
        self.attempts: dict[str, list[Any]] = {}  # command -> the envelope of each attempt
        self.link = Link(c.grape_urls)
        seed = c.keyring.node_key(name).seed
        self.cert = make_self_signed(seed, name)
        self.server = PeerRPCServer(self.handle, ssl_context=server_context(self.cert, seed))

    def pin(self, c: GrenexClient) -> None:
        assert c.pins is not None
        c.pins.add(self.name, self.cert)

    async def handle(self, key: str, payload: Any) -> Any:
        args = payload["args"][0]
        tries = self.attempts.setdefault(_attempt_key(args), [])
        tries.append(args)
        reply = await self.c.request("n1", payload["action"], args)
        if len(tries) == 1:
            if self.mode == "hang":
                await asyncio.sleep(2 * HANG_ATTEMPT_S)
            raise RemoteError("ERR_GRENEX_UNAVAILABLE: reply lost (test)")
        return reply

    async def __aenter__(self) -> Proxy:
        await self.link.start()
        await self.server.start()
        await self.link.start_announcing(self.c.api_name(self.name), self.server.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()
        await self.link.stop()


HANG_ATTEMPT_S = 1.0


@pytest.mark.parametrize("mode", ["unavailable", "hang"])
async def test_lost_reply_is_retried_with_the_same_envelope(
    cluster: LocalCluster, mode: str
) -> None:
    name = f"proxy-{mode}"
    account = f"lib-{name}"
    await cluster.register("n1", account)  # before the proxy: its register is not under test
    async with (
        Proxy(cluster, name, mode) as proxy,
        client(cluster, name, client_id=account, attempt_timeout=HANG_ATTEMPT_S) as c,
    ):
        proxy.pin(c)
        placed = await c.place("BTC-USD", "sell", "0.0005", "777")
        assert placed.id is not None
        tries = proxy.attempts[f"place:{placed.id}"]
        assert len(tries) >= 2 and all(t == tries[0] for t in tries)
        # the original outcome: accepted + resting, not duplicate_id
        assert placed.status == "resting" and not placed.rejected and placed.duplicate

        cancelled = await c.cancel(None, placed.id)
        assert cancelled.status == "cancelled"  # not unknown_order: the same envelope again
        tries = proxy.attempts[f"cancel:{placed.id}"]
        assert len(tries) >= 2 and all(t == tries[0] for t in tries)

        # a batch too: one envelope, retried as is, each order placed once
        many = await c.place_many(
            [{"market": "BTC-USD", "side": "sell", "qty": "0.0005", "price": "778"}] * 2
        )
        assert [r.status for r in many if isinstance(r, CommandResult)] == ["resting"] * 2
        (batch,) = (v for k, v in proxy.attempts.items() if k.startswith("batch:"))
        assert len(batch) >= 2 and all(t == batch[0] for t in batch)
        await c.cancel_many(None, [r.id or "" for r in many if isinstance(r, CommandResult)])


async def test_statuses_and_any_node(cluster: LocalCluster) -> None:
    await cluster.register("n1", "lib-any")
    await cluster.wait_converged()  # any node may take the place: every one knows the account
    async with client(cluster) as anyone:
        placed = await anyone.place("ETH-USD", "sell", "0.5", "99999", client="lib-any")
        assert placed.status == "resting"
        st = await anyone.status()
        assert st.node in ("n1", "n2", "n3") and st.voters == ("n1", "n2", "n3")
        await cluster.wait_converged()
        replies = await anyone.statuses()
        assert sorted(r.status.node for r in replies if r.status) == ["n1", "n2", "n3"]
        assert len({(r.status.applied, r.status.state_hash) for r in replies if r.status}) == 1
        leaders = {r.status.leader for r in replies if r.status}
        assert len(leaders) == 1
        roles = sorted(r.status.role for r in replies if r.status)
        assert roles == ["follower", "follower", "leader"]


async def test_event_stream(cluster: LocalCluster) -> None:
    async with client(cluster, "n2", client_id="lib-ev") as c, c.events("BTC-USD") as stream:
        await stream.wait_connected(timeout=5)
        await c.place("ETH-USD", "buy", "1", "1", id="ev-other")  # filtered out
        sell = await c.place("BTC-USD", "sell", "0.01", "123.45", id="ev-s")
        buy = await c.place("BTC-USD", "buy", "0.01", "123.45", id="ev-b", client="lib-ev2")
        seen: list[Any] = []
        while not any(type(e) is Filled and e.id == "ev-b" for e in seen):
            ev = await stream.next(timeout=5)
            assert ev is not None
            seen.append(ev)
        assert all(getattr(e, "market", None) == "BTC-USD" for e in seen)
        mine = [e for e in seen if e.seq in (sell.seq, buy.seq)]
        assert tuple(mine) == sell.events + buy.events
        assert [e.seq for e in seen] == sorted(e.seq for e in seen)
        assert any(type(e) is Trade for e in mine) and any(type(e) is Resting for e in mine)
        assert stream.publisher is not None and stream.last_seq >= buy.seq


async def test_floats_are_refused_before_sending() -> None:
    # no cluster needed: nothing is sent, so even an unreachable Grape does not matter
    async with GrenexClient(f"http://127.0.0.1:{closed_port()}", node="x") as c:
        with pytest.raises(TypeError, match="float"):
            await c.place("BTC-USD", "buy", 1.5, "100")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="float"):
            await c.place("BTC-USD", "buy", "1", 100.0)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="float"):
            await c.amend("x", "1", qty=0.1)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await c.add_market("M", 0.01, "1")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await c.place("BTC-USD", "buy", True, "1")  # bool is an int, but not a quantity


async def test_decimals_are_written_exactly(cluster: LocalCluster) -> None:
    async with client(cluster, "n1", client_id="lib-dec") as c:
        r = await c.place("ETH-USD", "buy", Decimal("1E+1"), Decimal("0.0100"))
        acc = r.events[0]
        assert type(acc) is Accepted and (acc.qty, acc.price) == ("10", "0.01")
        await c.cancel(None, r.id or "")


async def test_no_grape_fails_fast() -> None:
    t0 = time.monotonic()
    genesis = parse_genesis(
        Keyring().genesis("main", ["n1"], cert=lambda k, n: b64url(make_self_signed(k.seed, n)))
    )
    key = SecretKey.generate()
    async with GrenexClient(
        f"http://127.0.0.1:{closed_port()}", node="n1", genesis=genesis, key=key
    ) as c:
        with pytest.raises(GrapeUnavailable):
            await c.status()
        with pytest.raises(GrapeUnavailable) as info:
            await c.place("BTC-USD", "buy", "1", "1", id="never")
        # what was sent: the signed envelope, to send again as is
        assert info.value.command is not None and inner(info.value.command)["id"] == "never"
    assert time.monotonic() - t0 < 5


async def test_silent_grape_is_bounded() -> None:
    async with black_hole() as url:
        t0 = time.monotonic()
        async with GrenexClient(url, node="n1", grape_timeout=0.5, timeout=2) as c:
            with pytest.raises(GrapeUnavailable):
                await c.book()
        assert time.monotonic() - t0 < 4


async def test_unknown_node_is_not_found(cluster: LocalCluster) -> None:
    t0 = time.monotonic()
    async with client(cluster, "n99") as c:
        with pytest.raises(NotFound, match="n99"):
            await c.place("BTC-USD", "buy", "1", "1")
    async with GrenexClient(cluster.grape_urls, "no-such-cluster", genesis=cluster.genesis) as c:
        with pytest.raises(NotFound):
            await c.statuses()
    assert time.monotonic() - t0 < 5


async def test_dead_node_is_retried_until_the_deadline(cluster: LocalCluster) -> None:
    """An announced node that refuses connections: retried with the same id, then Unavailable."""
    async with Link(cluster.grape_urls) as link:
        await link.announce(cluster.api_name("ghost"), closed_port())
    async with client(cluster, "ghost", timeout=1.0) as c:
        t0 = time.monotonic()
        with pytest.raises(Unavailable) as info:
            await c.place("BTC-USD", "buy", "1", "1", id="ghost-1")
        elapsed = time.monotonic() - t0
    assert 0.9 < elapsed < 4
    assert info.value.attempts > 1 and info.value.command is not None
    assert inner(info.value.command)["id"] == "ghost-1"
    assert "gave up" in str(info.value)


async def test_bad_request_is_not_retried(cluster: LocalCluster) -> None:
    async with client(cluster, "n1", timeout=10) as c:
        t0 = time.monotonic()
        with pytest.raises(BadRequest, match="market must be a name"):
            await c.book("not a name!")
        with pytest.raises(BadRequest):
            await c.trades(limit=0)
        assert time.monotonic() - t0 < 3  # not retried until the 10 s deadline


def _filled(seq: int, *oids: str) -> str:
    """One frame of the stream: a log entry's events (here ``filled`` events)."""
    events = [
        {"type": "filled", "seq": seq, "client": "c", "id": oid, "market": "EV-USD"} for oid in oids
    ]
    return json.dumps({"seq": seq, "events": events})


async def test_event_stream_reconnects_without_repeats(cluster: LocalCluster) -> None:
    """Publisher A goes away; the stream moves to B, which is behind: repeats are dropped."""
    topic = "grenex:evtest:events"
    async with GrenexClient(cluster.grape_urls, "evtest") as c, c.events() as stream:
        async with Link(cluster.grape_urls) as link_a:
            pub_a = PeerPub(link_a, topic)
            await pub_a.start()
            await stream.wait_connected(timeout=10)
            await until(lambda: _true_if(pub_a.subscribers == 1), what="subscriber on A")
            for seq, oids in ((1, ("a",)), (2, ("b",)), (3, ("c", "d"))):
                pub_a.pub(_filled(seq, *oids))
            got = [await stream.next(timeout=5) for _ in range(4)]
            assert [(e.seq, getattr(e, "id", None)) for e in got if e] == [
                (1, "a"),
                (2, "b"),
                (3, "c"),
                (3, "d"),
            ]
            await pub_a.stop()
        async with Link(cluster.grape_urls) as link_b:
            pub_b = PeerPub(link_b, topic)
            await pub_b.start()
            await until(lambda: _true_if(pub_b.subscribers == 1), 15, "subscriber on B")
            for seq, oids in ((2, ("b",)), (3, ("c", "d")), (4, ("e", "f"))):
                pub_b.pub(_filled(seq, *oids))
            pub_b.pub("not an event")
            pub_b.pub(_filled(5, "g"))
            got = [await stream.next(timeout=5) for _ in range(3)]
            assert [(e.seq, getattr(e, "id", None)) for e in got if e] == [
                (4, "e"),
                (4, "f"),
                (5, "g"),
            ]
            assert stream.reconnects == 1 and stream.skipped == 1
            await pub_b.stop()


async def _true_if(cond: bool) -> bool | None:
    return True if cond else None


async def test_place_many_gives_each_order_its_outcome_exactly_once(cluster: LocalCluster) -> None:
    async with client(cluster, "n1") as n1, client(cluster, "n2") as n2:
        await n1.add_market("PM-USD", "0.01", "0.1")
        orders: list[dict[str, Any]] = [
            {
                "market": "PM-USD",
                "side": "sell",
                "qty": "1",
                "price": "10",
                "id": "pm-s",
                "client": "mk",
            },
            {"market": "PM-USD", "side": "buy", "qty": "1", "price": "10", "id": "pm-b"},
            {"market": "PM-USD", "side": "buy", "qty": "1", "price": "9.999", "id": "pm-x"},
            {"market": "PM-USD", "side": "buy", "qty": "0.5", "price": "9", "client": "other"},
        ]
        first = await n1.place_many(orders)
        assert all(isinstance(r, CommandResult) for r in first)
        results = [r for r in first if isinstance(r, CommandResult)]
        assert [r.status for r in results] == ["resting", "filled", "rejected", "resting"]
        assert [(r.client, r.id) for r in results][:3] == [
            ("mk", "pm-s"),
            ("n1", "pm-b"),
            ("n1", "pm-x"),
        ]
        assert results[3].client == "other" and results[3].id is not None
        # one signed batch (one log entry) per run of one account's orders, in order
        assert [r.seq for r in results] == sorted(r.seq for r in results)
        assert results[1].seq == results[2].seq and len({r.seq for r in results}) == 3
        # the same ids in new batches: each rejected duplicate_id, nothing placed twice
        again = await n1.place_many(orders[:3])
        assert [r.reason for r in again if isinstance(r, CommandResult)] == ["duplicate_id"] * 3

        async def one_trade_on_n2() -> list[Trade] | None:
            trades = await n2.trades("PM-USD")
            return trades if trades else None

        trades = await until(one_trade_on_n2, what="the trade on another node")
        assert [(t.maker, t.taker, t.qty) for t in trades] == [("pm-s", "pm-b", "1")]
        assert await n1.place_many([]) == []
        with pytest.raises(TypeError):
            await n1.place_many([{"market": "PM-USD", "side": "buy", "qty": 1.5}])
        with pytest.raises(TypeError):
            await n1.place_many([{"market": "PM-USD", "side": "buy", "qty": "1", "size": "2"}])


async def test_the_websocket_transport(cluster: LocalCluster) -> None:
    """``transport="ws"``: the same calls over one pinned WebSocket per node (many requests
    in flight on it), with the same results and errors as over HTTP."""
    async with (
        client(cluster, "n2", transport="ws", client_id="lib-ws") as n2,
        client(cluster, "n3", transport="ws") as n3,
    ):
        assert isinstance(n2._rpc, WsPeerRPCClient)
        sell = await n2.place("ETH-USD", "sell", "1", "2500", id="ws-s1")
        assert sell.status == "resting" and sell.client == "lib-ws"
        buy = await n3.place("ETH-USD", "buy", "0.25", "2500", client="lib-ws-b")
        assert buy.status == "filled"
        assert [(t.maker, t.qty) for t in buy.trades] == [("ws-s1", "0.25")]
        many = await asyncio.gather(
            *(n2.place("ETH-USD", "sell", "1", str(2600 + i), id=f"ws-m{i}") for i in range(20))
        )
        assert [r.status for r in many] == ["resting"] * 20
        assert len({r.seq for r in many}) == 20
        # one socket per node and TLS context carried them all (the pins' context is made
        # again once the members are learned: at most two)
        assert len(n2._rpc._conns) <= 2
        asks = (await n2.book("ETH-USD"))["ETH-USD"].asks
        assert {o.id for o in asks if o.client == "lib-ws"} >= {"ws-s1", "ws-m0", "ws-m19"}
        gone = await n2.cancel(None, "ws-m0")
        assert gone.status == "cancelled"
        with pytest.raises(BadRequest, match="market must be a name"):
            await n2.book("not a name!")
    async with client(cluster, transport="ws") as anyone:
        replies = await anyone.statuses()
        assert sorted(r.status.node for r in replies if r.status) == ["n1", "n2", "n3"]


async def test_the_transport_is_http_ws_or_grenex_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def rpc_class(**kw: Any) -> type:
        c = GrenexClient(node="n1", **kw)
        try:
            return type(c._rpc)
        finally:
            await c.close()

    monkeypatch.setenv("GRENEX_TRANSPORT", "ws")
    assert await rpc_class() is WsPeerRPCClient
    assert await rpc_class(transport="http") is PeerRPCClient
    monkeypatch.delenv("GRENEX_TRANSPORT")
    assert await rpc_class() is PeerRPCClient
    with pytest.raises(ValueError, match="transport is 'http' or 'ws'"):
        GrenexClient(node="n1", transport="tcp")
