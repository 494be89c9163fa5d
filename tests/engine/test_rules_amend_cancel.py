"""SPEC §2 ``cancel`` and ``amend``, one scenario per rule.

Against the real engine (``check_invariants()`` after every command) and the naive reference,
these prove: the checks of ``cancel`` and ``amend`` and their order; that cancel removes exactly
the client's resting order and reports its remainder; that an amend to the same price (compared
as numbers) and no more quantity than remains changes the order in place and keeps its priority,
emitting only ``amended``; that any other amend leaves the book and re-enters with fresh priority
as a taker first, under the order's own ``stp`` and ``post_only``; and that a post-only re-entry
that would cross is rejected and leaves the order exactly as it was.
"""

from __future__ import annotations

from .harness import (
    Harness,
    accepted,
    amend,
    amended,
    cancel,
    cancelled,
    filled,
    place,
    rejected,
    resting,
    trade,
)

# ---------------------------------------------------------------------- cancel


def test_cancel_removes_the_resting_order_and_reports_its_remainder(h: Harness) -> None:
    h.market()
    h.ok(place("a", "1", "sell", "5", "100"))
    h.ok(place("b", "1", "buy", "2", "100"))  # a:1 keeps 3
    assert h.send(cancel("a", "1")) == [cancelled("a", "1", "user", "3")]
    assert h.book() == {"bids": [], "asks": []}
    assert h.send(cancel("a", "1")) == [rejected("cancel", "unknown_order", "a", "1")]


def test_cancel_client_or_id_not_a_name_is_invalid_command(h: Harness) -> None:
    h.market()
    h.ok(place("a", "1", "sell", "5", "100"))
    for client, oid in [("a", None), (None, "1"), ("a", 1), ("a", "1 "), ("", "1")]:
        assert h.send(cancel(client, oid)) == [rejected("cancel", "invalid_command")]
    assert h.send('{"type":"cancel","id":"1"}') == [rejected("cancel", "invalid_command")]
    assert h.book()["asks"] == [("a", "1", "100", "5")]


def test_cancel_of_an_order_that_is_not_resting_is_unknown_order(h: Harness) -> None:
    h.market()
    h.ok(place("a", "1", "sell", "1", "100"))
    h.ok(place("b", "f", "buy", "1", "100"))  # fills a:1 (and b:f)
    h.ok(place("a", "ioc", "sell", "1", "100", tif="IOC"))  # never rests
    h.ok(place("a", "2", "sell", "1", "100"))
    assert h.send(cancel("a", "1")) == [rejected("cancel", "unknown_order", "a", "1")]
    assert h.send(cancel("b", "f")) == [rejected("cancel", "unknown_order", "b", "f")]
    assert h.send(cancel("a", "ioc")) == [rejected("cancel", "unknown_order", "a", "ioc")]
    assert h.send(cancel("a", "never")) == [rejected("cancel", "unknown_order", "a", "never")]
    # ids are per client: b cannot cancel a's order 2
    assert h.send(cancel("b", "2")) == [rejected("cancel", "unknown_order", "b", "2")]
    assert h.book()["asks"] == [("a", "2", "100", "1")]


def test_cancel_finds_the_order_in_whichever_market_it_rests(h: Harness) -> None:
    h.market("M")
    h.market("N", tick="0.5", lot="0.1")
    h.ok(place("a", "1", "buy", "0.3", "2.5", market="N"))
    assert h.send(cancel("a", "1")) == [cancelled("a", "1", "user", "0.3", market="N")]


# ---------------------------------------------------------------------- amend: checks


def test_amend_checks_run_in_spec_order(h: Harness) -> None:
    h.market()
    h.ok(place("m", "ask", "sell", "1", "105"))
    h.ok(place("a", "1", "buy", "5", "100", post_only=True))
    assert h.send(amend("a", 1)) == [rejected("amend", "invalid_command")]
    assert h.send(amend("a", "nope")) == [rejected("amend", "unknown_order", "a", "nope")]
    assert h.send(amend("a", "1")) == [rejected("amend", "invalid_amend", "a", "1")]
    assert h.send(amend("a", "1", qty="0", price="0")) == [
        rejected("amend", "invalid_qty", "a", "1")
    ]
    assert h.send(amend("a", "1", qty="6", price="0")) == [
        rejected("amend", "invalid_price", "a", "1")
    ]
    assert h.send(amend("a", "1", qty="6", price="105")) == [
        rejected("amend", "post_only_would_cross", "a", "1")
    ]
    assert h.book()["bids"] == [("a", "1", "100", "5")]


def test_amend_qty_and_price_are_checked_against_the_orders_own_market(h: Harness) -> None:
    h.market("M", tick="1", lot="1")
    h.market("N", tick="0.5", lot="0.1")
    h.ok(place("a", "1", "buy", "1", "1", market="N"))
    for qty in ["0.05", "0", "-1", "1e1", True]:
        assert h.send(amend("a", "1", qty=qty)) == [rejected("amend", "invalid_qty", "a", "1")]
    for price in ["0.25", "0", "-1", ".5", [1]]:
        assert h.send(amend("a", "1", price=price)) == [
            rejected("amend", "invalid_price", "a", "1")
        ]
    assert h.send(amend("a", "1", qty="0.7", price="1.5")) == [
        amended("a", "1", "1.5", "0.7", market="N"),
        resting("a", "1", "1.5", "0.7", market="N"),
    ]


def test_amend_of_an_order_that_is_not_resting_is_unknown_order(h: Harness) -> None:
    h.market()
    h.ok(place("a", "1", "sell", "1", "100"))
    h.ok(cancel("a", "1"))
    h.ok(place("a", "2", "sell", "1", "100", tif="IOC"))
    assert h.send(amend("a", "1", qty="1")) == [rejected("amend", "unknown_order", "a", "1")]
    assert h.send(amend("a", "2", qty="1")) == [rejected("amend", "unknown_order", "a", "2")]
    # unknown_order comes before invalid_amend and the field checks
    assert h.send(amend("b", "1", qty="bad")) == [rejected("amend", "unknown_order", "b", "1")]


# ---------------------------------------------------------------------- amend: in place


def test_amend_down_in_place_keeps_time_priority_and_emits_only_amended(h: Harness) -> None:
    h.market()
    h.ok(place("a", "1", "sell", "5", "100"))
    h.ok(place("b", "1", "sell", "5", "100"))
    assert h.send(amend("a", "1", qty="3")) == [amended("a", "1", "100", "3")]
    assert h.book()["asks"] == [("a", "1", "100", "3"), ("b", "1", "100", "5")]
    assert h.send(place("t", "1", "buy", "4", "100"))[1:] == [
        trade(("a", "1"), ("t", "1"), "buy", "100", "3"),
        filled("a", "1"),
        trade(("b", "1"), ("t", "1"), "buy", "100", "1"),
        filled("t", "1"),
    ]


def test_amend_to_the_same_price_written_differently_is_still_in_place(h: Harness) -> None:
    h.market("M", tick="0.01", lot="1")
    h.ok(place("a", "1", "buy", "5", "100.5"))
    h.ok(place("b", "1", "buy", "5", "100.5"))
    assert h.send('{"type":"amend","client":"a","id":"1","price":100.500,"qty":"5"}') == [
        amended("a", "1", "100.5", "5")
    ]
    assert h.send(amend("a", "1", price="0100.50")) == [amended("a", "1", "100.5", "5")]
    assert h.book()["bids"] == [("a", "1", "100.5", "5"), ("b", "1", "100.5", "5")]


def test_amend_compares_qty_with_the_remaining_quantity_not_the_original(h: Harness) -> None:
    h.market()
    h.ok(place("a", "1", "sell", "5", "100"))
    h.ok(place("b", "1", "sell", "5", "100"))
    h.ok(place("t", "1", "buy", "2", "100"))  # a:1 has 3 left of 5
    assert h.send(amend("a", "1", qty="3")) == [amended("a", "1", "100", "3")]
    assert h.book()["asks"][0] == ("a", "1", "100", "3")
    # 4 is below the original 5 but above the remaining 3: it re-enters, behind b:1
    assert h.send(amend("a", "1", qty="4")) == [
        amended("a", "1", "100", "4"),
        resting("a", "1", "100", "4"),
    ]
    assert h.book()["asks"] == [("b", "1", "100", "5"), ("a", "1", "100", "4")]


# ---------------------------------------------------------------------- amend: re-entry


def test_amend_up_in_quantity_reenters_at_the_back(h: Harness) -> None:
    h.market()
    h.ok(place("a", "1", "sell", "5", "100"))
    h.ok(place("b", "1", "sell", "5", "100"))
    assert h.send(amend("a", "1", qty="6")) == [
        amended("a", "1", "100", "6"),
        resting("a", "1", "100", "6"),
    ]
    assert h.book()["asks"] == [("b", "1", "100", "5"), ("a", "1", "100", "6")]


def test_amend_to_a_new_price_reenters_with_fresh_priority(h: Harness) -> None:
    h.market()
    h.ok(place("a", "1", "buy", "5", "100"))
    h.ok(place("b", "1", "buy", "5", "100"))
    assert h.send(amend("a", "1", price="99")) == [
        amended("a", "1", "99", "5"),
        resting("a", "1", "99", "5"),
    ]
    assert h.send(amend("a", "1", price="100", qty="1")) == [
        amended("a", "1", "100", "1"),
        resting("a", "1", "100", "1"),
    ]
    assert h.book()["bids"] == [("b", "1", "100", "5"), ("a", "1", "100", "1")]


def test_an_amend_that_reenters_across_the_spread_trades_as_taker(h: Harness) -> None:
    h.market()
    h.ok(place("m", "x", "sell", "2", "101"))
    h.ok(place("m", "y", "sell", "2", "102"))
    h.ok(place("a", "1", "buy", "3", "99"))
    assert h.send(amend("a", "1", price="101")) == [
        amended("a", "1", "101", "3"),
        trade(("m", "x"), ("a", "1"), "buy", "101", "2"),
        filled("m", "x"),
        resting("a", "1", "101", "1"),
    ]
    assert h.send(amend("a", "1", price="102", qty="2")) == [
        amended("a", "1", "102", "2"),
        trade(("m", "y"), ("a", "1"), "buy", "102", "2"),
        filled("m", "y"),
        filled("a", "1"),
    ]
    assert h.book() == {"bids": [], "asks": []}
    assert h.send(cancel("a", "1")) == [rejected("cancel", "unknown_order", "a", "1")]


def test_an_amend_reentry_uses_the_orders_own_stp(h: Harness) -> None:
    h.market()
    h.ok(place("a", "ask", "sell", "1", "101"))
    h.ok(place("a", "taker", "buy", "1", "99", stp="cancel_taker"))
    h.ok(place("a", "maker", "buy", "1", "98"))  # stp defaults to cancel_maker
    assert h.send(amend("a", "taker", price="101")) == [
        amended("a", "taker", "101", "1"),
        cancelled("a", "taker", "self_trade", "1"),
    ]
    assert h.send(amend("a", "maker", price="101")) == [
        amended("a", "maker", "101", "1"),
        cancelled("a", "ask", "self_trade", "1"),
        resting("a", "maker", "101", "1"),
    ]
    assert h.book() == {"bids": [("a", "maker", "101", "1")], "asks": []}


def test_a_post_only_amend_that_would_cross_is_rejected_and_the_order_stays(
    h: Harness,
) -> None:
    h.market()
    h.ok(place("m", "ask", "sell", "1", "101"))
    h.ok(place("a", "po", "buy", "5", "99", post_only=True))
    h.ok(place("b", "1", "buy", "5", "99"))
    assert h.send(amend("a", "po", price="101", qty="1")) == [
        rejected("amend", "post_only_would_cross", "a", "po")
    ]
    # unchanged: same quantity, same priority ahead of b:1
    assert h.book()["bids"] == [("a", "po", "99", "5"), ("b", "1", "99", "5")]
    # a post-only order also may not cross its own client's order on re-entry
    h.ok(place("a", "own", "sell", "1", "100"))
    assert h.send(amend("a", "po", price="100")) == [
        rejected("amend", "post_only_would_cross", "a", "po")
    ]
    # one that does not cross re-enters as usual
    assert h.send(amend("a", "po", price="98", qty="6")) == [
        amended("a", "po", "98", "6"),
        resting("a", "po", "98", "6"),
    ]


def test_a_post_only_order_amended_in_place_needs_no_cross_check(h: Harness) -> None:
    h.market()
    h.ok(place("a", "po", "buy", "5", "99", post_only=True))
    assert h.send(amend("a", "po", qty="2", price="99")) == [amended("a", "po", "99", "2")]


def test_amend_keeps_side_and_market_and_placing_ids_stay_used(h: Harness) -> None:
    h.market("M")
    h.market("N")
    h.ok(place("a", "1", "sell", "1", "100", market="N"))
    assert h.send(amend("a", "1", price="101", side="buy", market="M")) == [
        amended("a", "1", "101", "1", market="N"),
        resting("a", "1", "101", "1", market="N"),
    ]
    assert h.book("N")["asks"] == [("a", "1", "101", "1")]
    assert h.send(place("a", "1", "buy", "1", "1")) == [rejected("place", "duplicate_id", "a", "1")]
    assert h.send(place("a", "2", "buy", "1", "1"))[0] == accepted("a", "2", "buy", "1", "1")
