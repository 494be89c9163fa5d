"""SPEC §1 output decimals, §3 ``seq`` and §4 book snapshots, plus markets side by side.

Against the real engine (``check_invariants()`` after every command) and the naive reference,
these prove: every event carries the ``seq`` it was applied with; output decimals are canonical;
``books()`` lists every open market (empty ones too) by code point with each side in priority
order and remaining quantities; and several markets keep their own tick, lot and book while
order ids stay per client across all of them.
"""

from __future__ import annotations

import pytest

from grenex.codec import decode_command

from .harness import (
    Harness,
    accepted,
    add_market,
    market_added,
    place,
    rejected,
    resting,
    trade,
)


@pytest.mark.parametrize("seq", [1, 7, 123456789])
def test_every_event_carries_the_seq_it_was_applied_with(h: Harness, seq: int) -> None:
    subject = h.subject
    subject.apply(decode_command(b'{"type":"add_market","market":"M","tick":"1","lot":"1"}'), 1)
    subject.apply(
        decode_command(
            b'{"type":"place","client":"a","id":"1","market":"M","side":"sell","qty":"1",'
            b'"price":"5"}'
        ),
        2,
    )
    events = subject.apply(
        decode_command(
            b'{"type":"place","client":"b","id":"1","market":"M","side":"buy","qty":"2",'
            b'"price":"5"}'
        ),
        seq,
    )
    assert [(e["type"], e["seq"]) for e in events] == [
        ("accepted", seq),
        ("trade", seq),
        ("filled", seq),
        ("resting", seq),
    ]
    assert subject.apply(decode_command(b"garbage"), seq + 1) == [
        {"type": "rejected", "seq": seq + 1, "cmd": None, "reason": "invalid_command"}
    ]


def test_output_decimals_are_canonical(h: Harness) -> None:
    assert h.send(add_market("M", "0.0010", "000.50")) == [market_added("M", "0.001", "0.5")]
    assert h.send(place("a", "1", "sell", "2.50", "1.000")) == [
        accepted("a", "1", "sell", "2.5", "1"),
        resting("a", "1", "1", "2.5"),
    ]
    assert h.send(place("b", "1", "buy", "1.0", "1.0010")) == [
        accepted("b", "1", "buy", "1", "1.001"),
        trade(("a", "1"), ("b", "1"), "buy", "1", "1"),
        {"type": "filled", "client": "b", "id": "1", "market": "M"},
    ]
    assert h.send(place("c", "1", "buy", "0.5", "0.001")) == [
        accepted("c", "1", "buy", "0.5", "0.001"),
        resting("c", "1", "0.001", "0.5"),
    ]
    assert h.book() == {"bids": [("c", "1", "0.001", "0.5")], "asks": [("a", "1", "1", "1.5")]}


def test_books_lists_every_open_market_by_code_point_empty_ones_too(h: Harness) -> None:
    for name in ["b", "B", "a", "_x", "A-1", "9", ".", ":", "-", "Z"]:
        h.market(name)
    assert [b["market"] for b in h.books()] == ["-", ".", "9", ":", "A-1", "B", "Z", "_x", "a", "b"]
    assert h.books()[0] == {"type": "book", "market": "-", "bids": [], "asks": []}


def test_book_sides_are_in_priority_order_with_remaining_quantities(h: Harness) -> None:
    h.market("M", tick="0.5", lot="1")
    h.ok(place("a", "1", "buy", "1", "9.5"))
    h.ok(place("a", "2", "buy", "2", "10"))
    h.ok(place("b", "3", "buy", "3", "9.5"))
    h.ok(place("a", "4", "sell", "4", "11"))
    h.ok(place("b", "5", "sell", "5", "10.5"))
    h.ok(place("a", "6", "sell", "6", "11"))
    h.ok(place("c", "7", "buy", "3", "10.5"))  # takes 3 of b:5
    assert h.books() == [
        {
            "type": "book",
            "market": "M",
            "bids": [
                {"client": "a", "id": "2", "price": "10", "qty": "2"},
                {"client": "a", "id": "1", "price": "9.5", "qty": "1"},
                {"client": "b", "id": "3", "price": "9.5", "qty": "3"},
            ],
            "asks": [
                {"client": "b", "id": "5", "price": "10.5", "qty": "2"},
                {"client": "a", "id": "4", "price": "11", "qty": "4"},
                {"client": "a", "id": "6", "price": "11", "qty": "6"},
            ],
        }
    ]


def test_markets_keep_their_own_tick_lot_and_book(h: Harness) -> None:
    h.market("FINE", tick="0.01", lot="0.001")
    h.market("COARSE", tick="5", lot="10")
    assert h.send(place("a", "1", "buy", "0.001", "0.01", market="FINE"))[0]["type"] == ("accepted")
    assert h.send(place("a", "2", "buy", "10", "0.01", market="COARSE")) == [
        rejected("place", "invalid_price", "a", "2")
    ]
    assert h.send(place("a", "3", "buy", "0.001", "5", market="COARSE")) == [
        rejected("place", "invalid_qty", "a", "3")
    ]
    h.ok(place("a", "4", "buy", "20", "15", market="COARSE"))
    # a sell in FINE at a price that would cross COARSE's bid only meets FINE's book
    assert h.send(place("b", "1", "sell", "20", "10", market="FINE")) == [
        accepted("b", "1", "sell", "20", "10", market="FINE"),
        resting("b", "1", "10", "20", market="FINE"),
    ]
    # ids are per client across markets
    assert h.send(place("a", "1", "buy", "10", "5", market="COARSE")) == [
        rejected("place", "duplicate_id", "a", "1")
    ]
    assert h.book("COARSE") == {"bids": [("a", "4", "15", "20")], "asks": []}
    assert h.book("FINE") == {
        "bids": [("a", "1", "0.01", "0.001")],
        "asks": [("b", "1", "10", "20")],
    }
