"""SPEC §2 Matching and §3 event order, one scenario per rule.

Each test builds a small book on market ``M`` (tick 1, lot 1 unless said otherwise), sends one
taker and asserts the exact events in order, then the book that is left. Run against the real
engine (with ``check_invariants()`` after every command) and the naive reference. Together they
prove: price-time priority, trades at the maker's price for the smaller quantity, partial
fills, GTC/IOC/FOK and market-order remainders, FOK fillability (including how the walk treats
the taker's own orders per STP mode, and that a failed FOK changes nothing), post-only, and the
three self-trade-prevention modes with the taker's mode deciding.
"""

from __future__ import annotations

from .harness import (
    Harness,
    accepted,
    cancel,
    cancelled,
    filled,
    place,
    rejected,
    resting,
    trade,
)

# ---------------------------------------------------------------------- priority and price


def test_asks_match_lowest_price_first_then_oldest_first(h: Harness) -> None:
    h.market()
    h.ok(place("s1", "a", "sell", "1", "101"))
    h.ok(place("s2", "b", "sell", "1", "100"))
    h.ok(place("s3", "c", "sell", "1", "100"))
    assert h.send(place("b", "1", "buy", "3", "101")) == [
        accepted("b", "1", "buy", "3", "101"),
        trade(("s2", "b"), ("b", "1"), "buy", "100", "1"),
        filled("s2", "b"),
        trade(("s3", "c"), ("b", "1"), "buy", "100", "1"),
        filled("s3", "c"),
        trade(("s1", "a"), ("b", "1"), "buy", "101", "1"),
        filled("s1", "a"),
        filled("b", "1"),
    ]


def test_bids_match_highest_price_first_then_oldest_first(h: Harness) -> None:
    h.market()
    h.ok(place("b1", "a", "buy", "1", "99"))
    h.ok(place("b2", "b", "buy", "1", "100"))
    h.ok(place("b3", "c", "buy", "1", "100"))
    assert h.send(place("s", "1", "sell", "3", "99")) == [
        accepted("s", "1", "sell", "3", "99"),
        trade(("b2", "b"), ("s", "1"), "sell", "100", "1"),
        filled("b2", "b"),
        trade(("b3", "c"), ("s", "1"), "sell", "100", "1"),
        filled("b3", "c"),
        trade(("b1", "a"), ("s", "1"), "sell", "99", "1"),
        filled("b1", "a"),
        filled("s", "1"),
    ]


def test_a_trade_is_at_the_makers_price(h: Harness) -> None:
    h.market()
    h.ok(place("m", "ask", "sell", "1", "100"))
    h.ok(place("m", "bid", "buy", "1", "90"))
    assert h.send(place("t", "1", "buy", "1", "105"))[1] == trade(
        ("m", "ask"), ("t", "1"), "buy", "100", "1"
    )
    assert h.send(place("t", "2", "sell", "1", "80"))[1] == trade(
        ("m", "bid"), ("t", "2"), "sell", "90", "1"
    )


def test_a_buy_crosses_an_ask_at_its_limit_but_not_above(h: Harness) -> None:
    h.market()
    h.ok(place("m", "ask", "sell", "2", "100"))
    assert h.send(place("t", "1", "buy", "1", "99")) == [
        accepted("t", "1", "buy", "1", "99"),
        resting("t", "1", "99", "1"),
    ]
    assert h.send(place("t", "2", "buy", "1", "100"))[1:] == [
        trade(("m", "ask"), ("t", "2"), "buy", "100", "1"),
        filled("t", "2"),
    ]
    assert h.send(place("t", "3", "sell", "1", "100")) == [
        accepted("t", "3", "sell", "1", "100"),
        resting("t", "3", "100", "1"),
    ]
    assert h.book() == {
        "bids": [("t", "1", "99", "1")],
        "asks": [("m", "ask", "100", "1"), ("t", "3", "100", "1")],
    }


def test_partial_fill_of_a_maker_keeps_its_remainder_and_priority(h: Harness) -> None:
    h.market()
    h.ok(place("m1", "a", "sell", "5", "100"))
    h.ok(place("m2", "b", "sell", "5", "100"))
    assert h.send(place("t", "1", "buy", "2", "100")) == [
        accepted("t", "1", "buy", "2", "100"),
        trade(("m1", "a"), ("t", "1"), "buy", "100", "2"),
        filled("t", "1"),
    ]
    assert h.book()["asks"] == [("m1", "a", "100", "3"), ("m2", "b", "100", "5")]


def test_a_gtc_remainder_rests_at_its_own_limit_after_taking_liquidity(h: Harness) -> None:
    h.market()
    h.ok(place("m1", "a", "sell", "2", "100"))
    h.ok(place("m2", "b", "sell", "2", "101"))
    h.ok(place("m3", "c", "sell", "2", "103"))
    assert h.send(place("t", "1", "buy", "7", "102")) == [
        accepted("t", "1", "buy", "7", "102"),
        trade(("m1", "a"), ("t", "1"), "buy", "100", "2"),
        filled("m1", "a"),
        trade(("m2", "b"), ("t", "1"), "buy", "101", "2"),
        filled("m2", "b"),
        resting("t", "1", "102", "3"),
    ]
    assert h.book() == {"bids": [("t", "1", "102", "3")], "asks": [("m3", "c", "103", "2")]}


def test_a_gtc_remainder_rests_at_the_back_of_its_level(h: Harness) -> None:
    h.market()
    h.ok(place("m", "a", "buy", "1", "100"))
    h.ok(place("m", "b", "buy", "1", "101"))
    h.ok(place("n", "ask", "sell", "1", "102"))
    assert h.send(place("t", "1", "buy", "3", "102")) == [
        accepted("t", "1", "buy", "3", "102"),
        trade(("n", "ask"), ("t", "1"), "buy", "102", "1"),
        filled("n", "ask"),
        resting("t", "1", "102", "2"),
    ]
    h.ok(place("m", "c", "buy", "1", "100"))
    h.ok(place("m", "d", "buy", "1", "102"))
    assert h.book()["bids"] == [
        ("t", "1", "102", "2"),
        ("m", "d", "102", "1"),
        ("m", "b", "101", "1"),
        ("m", "a", "100", "1"),
        ("m", "c", "100", "1"),
    ]


# ---------------------------------------------------------------------- IOC, market orders


def test_ioc_trades_what_it_can_and_cancels_the_rest_as_unfilled(h: Harness) -> None:
    h.market()
    h.ok(place("m", "a", "sell", "2", "100"))
    h.ok(place("m", "b", "sell", "2", "102"))
    assert h.send(place("t", "1", "buy", "5", "101", tif="IOC")) == [
        accepted("t", "1", "buy", "5", "101", tif="IOC"),
        trade(("m", "a"), ("t", "1"), "buy", "100", "2"),
        filled("m", "a"),
        cancelled("t", "1", "unfilled", "3"),
    ]
    assert h.send(place("t", "2", "buy", "1", "90", tif="IOC")) == [
        accepted("t", "2", "buy", "1", "90", tif="IOC"),
        cancelled("t", "2", "unfilled", "1"),
    ]
    assert h.send(place("t", "3", "buy", "1", "102", tif="IOC")) == [
        accepted("t", "3", "buy", "1", "102", tif="IOC"),
        trade(("m", "b"), ("t", "3"), "buy", "102", "1"),
        filled("t", "3"),
    ]
    assert h.book() == {"bids": [], "asks": [("m", "b", "102", "1")]}


def test_a_market_order_is_ioc_by_default_and_crosses_any_price(h: Harness) -> None:
    h.market()
    h.ok(place("m", "a", "sell", "1", "100"))
    h.ok(place("m", "b", "sell", "1", "1000000"))
    assert h.send(place("t", "1", "buy", "5")) == [
        accepted("t", "1", "buy", "5", None, tif="IOC"),
        trade(("m", "a"), ("t", "1"), "buy", "100", "1"),
        filled("m", "a"),
        trade(("m", "b"), ("t", "1"), "buy", "1000000", "1"),
        filled("m", "b"),
        cancelled("t", "1", "unfilled", "3"),
    ]
    assert h.send(place("t", "2", "sell", "2")) == [
        accepted("t", "2", "sell", "2", None, tif="IOC"),
        cancelled("t", "2", "unfilled", "2"),
    ]
    assert h.book() == {"bids": [], "asks": []}


def test_a_market_order_may_be_ioc_or_fok_but_not_gtc(h: Harness) -> None:
    h.market()
    h.ok(place("m", "a", "buy", "2", "50"))
    assert h.send(place("t", "1", "sell", "1", tif="GTC")) == [
        rejected("place", "invalid_tif", "t", "1")
    ]
    assert h.send(place("t", "2", "sell", "3", tif="FOK")) == [
        rejected("place", "fok_unfillable", "t", "2")
    ]
    assert h.send(place("t", "3", "sell", "2", tif="FOK")) == [
        accepted("t", "3", "sell", "2", None, tif="FOK"),
        trade(("m", "a"), ("t", "3"), "sell", "50", "2"),
        filled("m", "a"),
        filled("t", "3"),
    ]


# ---------------------------------------------------------------------- FOK


def test_fok_that_can_fill_completely_fills_across_makers(h: Harness) -> None:
    h.market()
    h.ok(place("m1", "a", "sell", "2", "100"))
    h.ok(place("m2", "b", "sell", "2", "101"))
    assert h.send(place("t", "1", "buy", "3", "101", tif="FOK")) == [
        accepted("t", "1", "buy", "3", "101", tif="FOK"),
        trade(("m1", "a"), ("t", "1"), "buy", "100", "2"),
        filled("m1", "a"),
        trade(("m2", "b"), ("t", "1"), "buy", "101", "1"),
        filled("t", "1"),
    ]
    assert h.book()["asks"] == [("m2", "b", "101", "1")]


def test_fok_that_cannot_fill_within_its_limit_is_rejected_and_changes_nothing(
    h: Harness,
) -> None:
    h.market()
    h.ok(place("m1", "a", "sell", "2", "100"))
    h.ok(place("m2", "b", "sell", "5", "102"))
    before = h.books()
    assert h.send(place("t", "1", "buy", "3", "101", tif="FOK")) == [
        rejected("place", "fok_unfillable", "t", "1")
    ]
    assert h.books() == before


def test_failed_fok_cancels_no_self_trade_makers_either(h: Harness) -> None:
    h.market()
    h.ok(place("t", "own", "sell", "5", "100"))
    h.ok(place("m", "a", "sell", "1", "100"))
    before = h.books()
    # under cancel_maker the walk skips t:own and finds only 1 of the 2 wanted
    assert h.send(place("t", "1", "buy", "2", "100", tif="FOK")) == [
        rejected("place", "fok_unfillable", "t", "1")
    ]
    assert h.books() == before


def test_fok_walk_skips_own_orders_under_cancel_maker(h: Harness) -> None:
    h.market()
    h.ok(place("t", "own", "sell", "5", "100"))
    h.ok(place("m", "a", "sell", "2", "101"))
    assert h.send(place("t", "1", "buy", "2", "101", tif="FOK", stp="cancel_maker")) == [
        accepted("t", "1", "buy", "2", "101", tif="FOK"),
        cancelled("t", "own", "self_trade", "5"),
        trade(("m", "a"), ("t", "1"), "buy", "101", "2"),
        filled("m", "a"),
        filled("t", "1"),
    ]
    assert h.book()["asks"] == []


def test_fok_walk_ends_at_own_order_under_cancel_taker_and_cancel_both(h: Harness) -> None:
    h.market()
    h.ok(place("t", "own", "sell", "5", "100"))
    h.ok(place("m", "a", "sell", "2", "101"))
    before = h.books()
    for n, stp in enumerate(["cancel_taker", "cancel_both"]):
        assert h.send(place("t", f"f{n}", "buy", "2", "101", tif="FOK", stp=stp)) == [
            rejected("place", "fok_unfillable", "t", f"f{n}")
        ]
    assert h.books() == before


def test_fok_filled_before_reaching_own_order_never_self_trades(h: Harness) -> None:
    h.market()
    h.ok(place("m", "a", "sell", "2", "100"))
    h.ok(place("t", "own", "sell", "5", "100"))
    assert h.send(place("t", "1", "buy", "2", "100", tif="FOK", stp="cancel_both")) == [
        accepted("t", "1", "buy", "2", "100", tif="FOK"),
        trade(("m", "a"), ("t", "1"), "buy", "100", "2"),
        filled("m", "a"),
        filled("t", "1"),
    ]
    assert h.book()["asks"] == [("t", "own", "100", "5")]


# ---------------------------------------------------------------------- post-only


def test_post_only_that_does_not_cross_is_accepted_and_rests(h: Harness) -> None:
    h.market()
    h.ok(place("m", "ask", "sell", "1", "100"))
    assert h.send(place("a", "1", "buy", "1", "99", post_only=True)) == [
        accepted("a", "1", "buy", "1", "99"),
        resting("a", "1", "99", "1"),
    ]
    assert h.send(place("a", "2", "sell", "1", "101", post_only=True, tif="GTC")) == [
        accepted("a", "2", "sell", "1", "101"),
        resting("a", "2", "101", "1"),
    ]


def test_post_only_that_would_cross_the_best_price_is_rejected(h: Harness) -> None:
    h.market()
    h.ok(place("m", "ask", "sell", "1", "100"))
    h.ok(place("m", "bid", "buy", "1", "90"))
    before = h.books()
    assert h.send(place("a", "1", "buy", "1", "100", post_only=True)) == [
        rejected("place", "post_only_would_cross", "a", "1")
    ]
    assert h.send(place("a", "2", "sell", "1", "85", post_only=True)) == [
        rejected("place", "post_only_would_cross", "a", "2")
    ]
    assert h.books() == before


def test_post_only_is_rejected_even_when_the_best_price_is_its_own_order(h: Harness) -> None:
    h.market()
    h.ok(place("a", "ask", "sell", "1", "100"))
    assert h.send(place("a", "1", "buy", "1", "100", post_only=True)) == [
        rejected("place", "post_only_would_cross", "a", "1")
    ]
    assert h.book() == {"bids": [], "asks": [("a", "ask", "100", "1")]}


# ---------------------------------------------------------------------- self-trade prevention


def test_stp_cancel_maker_cancels_each_own_maker_and_goes_on_matching(h: Harness) -> None:
    h.market()
    h.ok(place("a", "own1", "sell", "2", "100"))
    h.ok(place("m", "x", "sell", "1", "100"))
    h.ok(place("a", "own2", "sell", "3", "101"))
    h.ok(place("m", "y", "sell", "1", "102"))
    assert h.send(place("a", "t", "buy", "3", "101")) == [  # stp defaults to cancel_maker
        accepted("a", "t", "buy", "3", "101"),
        cancelled("a", "own1", "self_trade", "2"),
        trade(("m", "x"), ("a", "t"), "buy", "100", "1"),
        filled("m", "x"),
        cancelled("a", "own2", "self_trade", "3"),
        resting("a", "t", "101", "2"),
    ]
    assert h.book() == {"bids": [("a", "t", "101", "2")], "asks": [("m", "y", "102", "1")]}


def test_stp_cancel_taker_stops_matching_and_cancels_the_taker(h: Harness) -> None:
    h.market()
    h.ok(place("m", "x", "sell", "1", "100"))
    h.ok(place("a", "own", "sell", "2", "100"))
    h.ok(place("m", "y", "sell", "1", "100"))
    assert h.send(place("a", "t", "buy", "5", "100", stp="cancel_taker")) == [
        accepted("a", "t", "buy", "5", "100"),
        trade(("m", "x"), ("a", "t"), "buy", "100", "1"),
        filled("m", "x"),
        cancelled("a", "t", "self_trade", "4"),
    ]
    assert h.book() == {
        "bids": [],
        "asks": [("a", "own", "100", "2"), ("m", "y", "100", "1")],
    }


def test_stp_cancel_both_cancels_the_maker_then_the_taker(h: Harness) -> None:
    h.market()
    h.ok(place("m", "x", "sell", "1", "100"))
    h.ok(place("a", "own", "sell", "2", "100"))
    h.ok(place("m", "y", "sell", "1", "100"))
    assert h.send(place("a", "t", "buy", "5", "100", stp="cancel_both")) == [
        accepted("a", "t", "buy", "5", "100"),
        trade(("m", "x"), ("a", "t"), "buy", "100", "1"),
        filled("m", "x"),
        cancelled("a", "own", "self_trade", "2"),
        cancelled("a", "t", "self_trade", "4"),
    ]
    assert h.book() == {"bids": [], "asks": [("m", "y", "100", "1")]}


def test_a_taker_stopped_by_stp_is_cancelled_as_self_trade_whatever_its_tif(
    h: Harness,
) -> None:
    h.market()
    h.ok(place("a", "own", "buy", "10", "100"))
    assert h.send(place("a", "ioc", "sell", "1", "100", tif="IOC", stp="cancel_taker")) == [
        accepted("a", "ioc", "sell", "1", "100", tif="IOC"),
        cancelled("a", "ioc", "self_trade", "1"),
    ]
    assert h.send(place("a", "mkt", "sell", "1", stp="cancel_both")) == [
        accepted("a", "mkt", "sell", "1", None, tif="IOC"),
        cancelled("a", "own", "self_trade", "10"),
        cancelled("a", "mkt", "self_trade", "1"),
    ]
    h.ok(place("a", "own2", "buy", "1", "100"))
    assert h.send(place("a", "gtc", "sell", "1", "100", stp="cancel_taker")) == [
        accepted("a", "gtc", "sell", "1", "100"),
        cancelled("a", "gtc", "self_trade", "1"),  # a GTC taker stopped this way never rests
    ]
    assert h.book() == {"bids": [("a", "own2", "100", "1")], "asks": []}


def test_stp_follows_the_takers_mode_not_the_makers(h: Harness) -> None:
    h.market()
    h.ok(place("a", "own", "sell", "1", "100", stp="cancel_taker"))
    assert h.send(place("a", "t", "buy", "1", "100", stp="cancel_maker")) == [
        accepted("a", "t", "buy", "1", "100"),
        cancelled("a", "own", "self_trade", "1"),
        resting("a", "t", "100", "1"),
    ]


def test_self_trade_prevention_is_per_client_not_per_id(h: Harness) -> None:
    h.market()
    h.ok(place("a", "1", "sell", "1", "100"))
    assert h.send(place("b", "1", "buy", "1", "100", stp="cancel_both")) == [
        accepted("b", "1", "buy", "1", "100"),
        trade(("a", "1"), ("b", "1"), "buy", "100", "1"),
        filled("a", "1"),
        filled("b", "1"),
    ]


def test_stp_only_considers_makers_that_cross(h: Harness) -> None:
    h.market()
    h.ok(place("m", "x", "sell", "1", "100"))
    h.ok(place("a", "own", "sell", "1", "101"))
    assert h.send(place("a", "t", "buy", "2", "100", stp="cancel_both")) == [
        accepted("a", "t", "buy", "2", "100"),
        trade(("m", "x"), ("a", "t"), "buy", "100", "1"),
        filled("m", "x"),
        resting("a", "t", "100", "1"),
    ]
    assert h.book()["asks"] == [("a", "own", "101", "1")]


# ---------------------------------------------------------------------- event order


def test_place_events_accepted_then_per_maker_then_one_closing_event(h: Harness) -> None:
    """A maker's ``filled`` comes right after its last trade; the taker's closing event last."""
    h.market()
    h.ok(place("m1", "a", "sell", "1", "100"))
    h.ok(place("a", "own", "sell", "1", "100"))
    h.ok(place("m2", "b", "sell", "3", "100"))
    assert [e["type"] for e in h.send(place("a", "t", "buy", "3", "100"))] == [
        "accepted",
        "trade",
        "filled",  # m1:a
        "cancelled",  # a:own, self-trade
        "trade",
        "filled",  # the taker; m2:b keeps 1 and emits nothing more
    ]
    assert h.book()["asks"] == [("m2", "b", "100", "1")]


def test_quantities_and_prices_near_2_pow_63_match_exactly(h: Harness) -> None:
    """No fixed-width arithmetic: sums of quantities may pass 2^63 during a FOK walk."""
    h.market("M", tick="0.5", lot="0.001")
    half = str(2**62 // 1000) + "." + str(2**62 % 1000).rjust(3, "0")  # 2^62 lots
    top_price = str((2**63 - 1) // 2) + ".5"  # 2^63 - 1 ticks
    top_qty = str((2**63 - 1) // 1000) + "." + str((2**63 - 1) % 1000).rjust(3, "0")
    h.ok(place("m1", "a", "sell", half, top_price))
    h.ok(place("m2", "b", "sell", half, top_price))
    h.ok(place("m3", "c", "sell", half, top_price))
    rest = str((2**62 - 1) // 1000) + "." + str((2**62 - 1) % 1000).rjust(3, "0")
    assert h.send(place("t", "1", "buy", top_qty, top_price, tif="FOK")) == [
        accepted("t", "1", "buy", top_qty, top_price, tif="FOK"),
        trade(("m1", "a"), ("t", "1"), "buy", top_price, half),
        filled("m1", "a"),
        trade(("m2", "b"), ("t", "1"), "buy", top_price, rest),
        filled("t", "1"),
    ]
    assert h.book()["asks"] == [("m2", "b", top_price, "0.001"), ("m3", "c", top_price, half)]
    # and a market sell meets a bid at the top price for the top quantity
    h.ok(cancel("m2", "b"))
    h.ok(cancel("m3", "c"))
    h.ok(place("m4", "d", "buy", top_qty, top_price, post_only=True))
    assert h.send(place("t", "2", "sell", top_qty)) == [
        accepted("t", "2", "sell", top_qty, None, tif="IOC"),
        trade(("m4", "d"), ("t", "2"), "sell", top_price, top_qty),
        filled("m4", "d"),
        filled("t", "2"),
    ]
