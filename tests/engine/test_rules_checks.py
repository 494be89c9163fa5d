"""SPEC §1–2 input rules, one scenario per rule: what a command must look like and in which
order it is checked.

Every test feeds JSON text through ``grenex.codec.decode_command`` into a fresh engine (the real
one, with ``check_invariants()`` after every command, and the naive reference) and asserts the
exact events. Together they prove: every rejection reason of ``add_market``, ``place``,
``cancel`` and ``amend`` and the order of the checks; that a JSON value of the wrong type fails
the field's own check; that an id is used up from the duplicate check on; the decimal and name
grammars (including the 2^63 bound and exact, never-float parsing); ``null`` as absent; unknown
fields ignored; and non-JSON / non-object lines answered with ``rejected``/``invalid_command``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from .harness import (
    Harness,
    accepted,
    add_market,
    amend,
    amended,
    cancel,
    cancelled,
    market_added,
    place,
    rejected,
    resting,
)

# ---------------------------------------------------------------------- any command


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"not json",
        b"{",
        b'{"type":"add_market","market":"M","tick":"1","lot":"1"',
        b"NaN",
        b'{"type":"place","qty":NaN}',
        b'{"type":"place","qty":Infinity}',
        b"{'type':'place'}",
        b'{"type":"add_market","market":"M","tick":"1","lot":"1"} trailing',
        b'\xff\xfe{"type":"add_market"}',
        b'{"type":"add_market","market":"\xe9","tick":"1","lot":"1"}',  # latin-1, not UTF-8
    ],
)
def test_a_line_that_is_not_strict_json_or_not_utf8_is_rejected_with_cmd_null(
    h: Harness, line: bytes
) -> None:
    assert h.send(line) == [rejected(None, "invalid_command")]


@pytest.mark.parametrize(
    "line", ["[]", '[{"type":"add_market"}]', '"place"', "1", "1.5", "null", "true"]
)
def test_json_that_is_not_an_object_is_rejected_with_cmd_null(h: Harness, line: str) -> None:
    assert h.send(line) == [rejected(None, "invalid_command")]


@pytest.mark.parametrize(
    "command",
    [
        {},
        {"market": "M", "tick": "1", "lot": "1"},
        {"type": None, "market": "M", "tick": "1", "lot": "1"},
        {"type": "ADD_MARKET", "market": "M", "tick": "1", "lot": "1"},
        {"type": "add_market ", "market": "M", "tick": "1", "lot": "1"},
        {"type": "trade"},
        {"type": 5},
        {"type": ["place"]},
        {"type": {"place": True}},
        # Reading: an unknown type echoes no client/id, even when the object holds names.
        {"type": "buy", "client": "a", "id": "1", "market": "M", "side": "buy", "qty": "1"},
    ],
)
def test_missing_or_unknown_type_is_invalid_command_with_cmd_null(
    h: Harness, command: dict[str, Any]
) -> None:
    assert h.send(command) == [rejected(None, "invalid_command")]
    assert h.books() == []  # nothing was opened


def test_unknown_extra_fields_are_ignored(h: Harness) -> None:
    assert h.send(add_market("M", "1", "1", comment="x", nested={"a": [1, 2.5]})) == [
        market_added("M", "1", "1")
    ]
    assert h.send(place("a", "1", "sell", "2", "10", req="r1", seq=99, tif2="FOK")) == [
        accepted("a", "1", "sell", "2", "10"),
        resting("a", "1", "10", "2"),
    ]
    # cancel has no market field: a wrong one is just an unknown field
    assert h.send(cancel("a", "1", market="NOPE", side="buy")) == [cancelled("a", "1", "user", "2")]


def test_null_counts_as_absent(h: Harness) -> None:
    h.market()
    h.ok(place("m", "ask", "sell", "5", "10"))
    # price null: a market order, so tif defaults to IOC; post_only/stp null: the defaults
    assert h.send(
        '{"type":"place","client":"a","id":"1","market":"M","side":"buy","qty":"2",'
        '"price":null,"tif":null,"post_only":null,"stp":null,"extra":null}'
    )[0] == accepted("a", "1", "buy", "2", None, tif="IOC")
    # tif null on a limit order: GTC
    assert h.send(
        '{"type":"place","client":"a","id":"2","market":"M","side":"buy","qty":"1",'
        '"price":"5","tif":null}'
    ) == [accepted("a", "2", "buy", "1", "5"), resting("a", "2", "5", "1")]
    # a required field given as null is missing
    assert h.send(place("a", "3", "buy", None, "5")) == [rejected("place", "invalid_qty", "a", "3")]
    assert h.send(place("a", "4", None, "1", "5")) == [rejected("place", "invalid_side", "a", "4")]
    assert h.send(place(None, "5", "buy", "1", "5")) == [rejected("place", "invalid_command")]
    assert h.send(amend("a", "2", qty=None, price=None)) == [
        rejected("amend", "invalid_amend", "a", "2")
    ]
    assert h.send(amend("a", "2", qty="3", price=None)) == [
        amended("a", "2", "5", "3"),
        resting("a", "2", "5", "3"),
    ]
    assert h.send(add_market("N", None, "1")) == [
        rejected("add_market", "invalid_market", market="N")
    ]
    assert h.send('{"type":null,"client":"a","id":"2"}') == [rejected(None, "invalid_command")]


# ---------------------------------------------------------------------- add_market


def test_add_market_opens_a_market_and_echoes_canonical_tick_and_lot(h: Harness) -> None:
    assert h.send(add_market("BTC-USD", "0.010", "0.00010")) == [
        market_added("BTC-USD", "0.01", "0.0001")
    ]
    assert h.send('{"type":"add_market","market":"ETH-USD","tick":0.50,"lot":5}') == [
        market_added("ETH-USD", "0.5", "5")
    ]
    assert h.book("BTC-USD") == {"bids": [], "asks": []}


@pytest.mark.parametrize(
    "market",
    [None, "", "x" * 65, "BTC/USD", "BTC USD", "M\n", "é", 5, 1.5, ["M"], {"M": 1}, True],
)
def test_add_market_market_not_a_name_is_invalid_market(h: Harness, market: Any) -> None:
    cmd = add_market(market, "1", "1")
    if market is None:
        del cmd["market"]
    assert h.send(cmd) == [rejected("add_market", "invalid_market")]
    assert h.books() == []


def test_add_market_already_open_is_market_exists_checked_before_tick_and_lot(
    h: Harness,
) -> None:
    h.market("M", "1", "1")
    assert h.send(add_market("M", "1", "1")) == [
        rejected("add_market", "market_exists", market="M")
    ]
    assert h.send(add_market("M", "-1", "bad")) == [
        rejected("add_market", "market_exists", market="M")
    ]
    # the first market is untouched (same tick and lot)
    assert h.send(place("a", "1", "buy", "1", "3", market="M"))[0]["price"] == "3"


@pytest.mark.parametrize(
    ("tick", "lot"),
    [
        ("0", "1"),
        ("1", "0.000"),
        ("-1", "1"),
        ("1", "1e3"),
        ("1", None),
        (None, "1"),
        (True, "1"),
        ("1", [1]),
        ("1", ""),
        (" 1", "1"),
        (0, 1),
        (-1, 1),
    ],
)
def test_add_market_tick_or_lot_not_a_decimal_above_zero_is_invalid_market(
    h: Harness, tick: Any, lot: Any
) -> None:
    assert h.send(add_market("M", tick, lot)) == [
        rejected("add_market", "invalid_market", market="M")
    ]
    assert h.books() == []
    h.market("M", "1", "1")  # and the name is still free


# ---------------------------------------------------------------------- place: the checks


def test_place_checks_run_in_spec_order(h: Harness) -> None:
    """Start from a place that fails every check from 3 on, then repair one field at a time
    (with a fresh id each time, since every attempt uses its id up): each attempt is rejected
    with the next check's reason."""
    h.market()
    h.ok(place("other", "ask", "sell", "1", "100"))
    cmd: dict[str, Any] = place(
        "a", "", "hold", "0", "-1", market="NOPE", tif="DAY", stp="none", post_only=True
    )
    steps: list[tuple[dict[str, Any], str]] = [
        ({}, "unknown_market"),
        ({"market": "M"}, "invalid_side"),
        ({"side": "buy"}, "invalid_qty"),
        ({"qty": "1"}, "invalid_price"),
        ({"price": "100"}, "invalid_tif"),
        ({"tif": "GTC"}, "invalid_stp"),
        ({"stp": "cancel_taker"}, "post_only_would_cross"),
        ({"post_only": False, "tif": "FOK", "qty": "2"}, "fok_unfillable"),
    ]
    for n, (fix, reason) in enumerate(steps):
        cmd.update(fix, id=f"o{n}")
        assert h.send(cmd) == [rejected("place", reason, "a", f"o{n}")], (fix, reason)
    cmd.update(id="o-last", qty="1")
    assert h.send(cmd)[0] == accepted("a", "o-last", "buy", "1", "100", tif="FOK")


def test_place_client_or_id_not_a_name_is_invalid_command_first(h: Harness) -> None:
    # Check 1 comes before everything else, even before an unknown market; the rejection
    # carries client/id only when both are names.
    for client, oid in [
        ("a", None),
        (None, "1"),
        ("a", ""),
        ("a", 1),
        ("a", 1.5),
        ("a b", "1"),
        ("a", "1\n"),
        (["a"], "1"),
        ("a", "x" * 65),
    ]:
        cmd = place(client, oid, "hold", "0", market="NOPE")
        assert h.send(cmd) == [rejected("place", "invalid_command")], (client, oid)


def test_place_duplicate_id_comes_second_and_ids_are_per_client_across_markets(
    h: Harness,
) -> None:
    h.market("M")
    h.market("N")
    h.ok(place("a", "1", "buy", "1", "5", market="M"))
    # same client and id: duplicate, whatever else is wrong and whichever market
    assert h.send(place("a", "1", "hold", "0", market="NOPE")) == [
        rejected("place", "duplicate_id", "a", "1")
    ]
    assert h.send(place("a", "1", "buy", "1", "5", market="N")) == [
        rejected("place", "duplicate_id", "a", "1")
    ]
    # another client may use the same id
    assert h.send(place("b", "1", "buy", "1", "5", market="N")) == [
        accepted("b", "1", "buy", "1", "5", market="N"),
        resting("b", "1", "5", "1", market="N"),
    ]
    # the duplicate changed nothing
    assert h.book("M") == {"bids": [("a", "1", "5", "1")], "asks": []}


@pytest.mark.parametrize(
    ("bad_fields", "reason"),
    [
        ({"market": "NOPE"}, "unknown_market"),
        ({"side": "hold"}, "invalid_side"),
        ({"qty": "0"}, "invalid_qty"),
        ({"price": "0"}, "invalid_price"),
        ({"tif": "DAY"}, "invalid_tif"),
        ({"stp": "never"}, "invalid_stp"),
        ({"post_only": True, "price": "10"}, "post_only_would_cross"),
        ({"tif": "FOK", "qty": "100"}, "fok_unfillable"),
    ],
)
def test_every_check_after_duplicate_id_still_uses_the_id_up(
    h: Harness, bad_fields: dict[str, Any], reason: str
) -> None:
    h.market()
    h.ok(place("m", "ask", "sell", "5", "10"))
    assert h.send({**place("a", "x", "buy", "1", "9"), **bad_fields}) == [
        rejected("place", reason, "a", "x")
    ]
    # the retried, now perfect, order never executes
    assert h.send(place("a", "x", "buy", "1", "9")) == [rejected("place", "duplicate_id", "a", "x")]
    assert h.book() == {"bids": [], "asks": [("m", "ask", "10", "5")]}


def test_an_id_stays_used_after_its_order_is_filled_or_cancelled(h: Harness) -> None:
    h.market()
    h.ok(place("a", "1", "sell", "1", "10"))
    h.ok(cancel("a", "1"))
    assert h.send(place("a", "1", "sell", "1", "10")) == [
        rejected("place", "duplicate_id", "a", "1")
    ]
    h.ok(place("a", "2", "sell", "1", "10"))
    h.ok(place("b", "1", "buy", "1", "10"))  # fills a:2
    assert h.send(place("a", "2", "sell", "1", "10")) == [
        rejected("place", "duplicate_id", "a", "2")
    ]
    # an invalid_command place uses nothing up: there was no (client, id) to use
    assert h.send(place("a", 3, "sell", "1", "10")) == [rejected("place", "invalid_command")]
    assert h.send(place("a", "3", "sell", "1", "10"))[0]["type"] == "accepted"


def test_place_market_not_open_is_unknown_market(h: Harness) -> None:
    h.market("M")
    h.market("1.5")
    h.market("15")
    for n, market in enumerate([None, "N", "m", "M ", 5, 15, 1.5, ["M"], True]):
        cmd = place("a", f"o{n}", "buy", "1", "1", market=market)
        if market is None:
            del cmd["market"]
        assert h.send(cmd) == [rejected("place", "unknown_market", "a", f"o{n}")], market


def test_a_name_is_a_json_string_never_a_json_number(h: Harness) -> None:
    h.market("1.5")
    h.market("7")
    assert h.send('{"type":"add_market","market":2.5,"tick":"1","lot":"1"}') == [
        rejected("add_market", "invalid_market")
    ]
    assert h.send(
        '{"type":"place","client":"a","id":"1","market":1.5,"side":"buy","qty":"1","price":"1"}'
    ) == [rejected("place", "unknown_market", "a", "1")]
    assert h.send(
        '{"type":"place","client":"a","id":"2","market":7,"side":"buy","qty":"1","price":"1"}'
    ) == [rejected("place", "unknown_market", "a", "2")]
    h.ok(place("a", "1.5", "buy", "1", "1", market="1.5"))
    assert h.send('{"type":"cancel","client":"a","id":1.5}') == [
        rejected("cancel", "invalid_command")
    ]
    assert h.send('{"type":"amend","client":"a","id":1.5,"qty":"2"}') == [
        rejected("amend", "invalid_command")
    ]
    assert h.send(
        '{"type":"place","client":7,"id":"9","market":"7","side":"buy","qty":"1","price":"1"}'
    ) == [rejected("place", "invalid_command")]
    assert h.book("1.5") == {"bids": [("a", "1.5", "1", "1")], "asks": []}


@pytest.mark.parametrize("side", [None, "BUY", "Sell", "bid", "", 1, True, ["buy"]])
def test_place_side_not_buy_or_sell_is_invalid_side(h: Harness, side: Any) -> None:
    h.market()
    assert h.send(place("a", "1", side, "1", "1")) == [rejected("place", "invalid_side", "a", "1")]


@pytest.mark.parametrize(
    "qty", [None, "0", "0.0", "1.5", "-1", "1e3", "", True, False, [1], {"v": 1}, 0, -2]
)
def test_place_qty_not_a_valid_quantity_is_invalid_qty(h: Harness, qty: Any) -> None:
    h.market("M", tick="1", lot="1")
    assert h.send(place("a", "1", "buy", qty, "1")) == [rejected("place", "invalid_qty", "a", "1")]


@pytest.mark.parametrize(
    "price", ["0", "0.00", "10.5", "-5", "1e2", "", True, ["10"], {"p": "10"}, 0, -10]
)
def test_place_price_present_and_not_valid_is_invalid_price(h: Harness, price: Any) -> None:
    h.market("M", tick="1", lot="1")
    assert h.send(place("a", "1", "buy", "1", price)) == [
        rejected("place", "invalid_price", "a", "1")
    ]


@pytest.mark.parametrize(
    "fields",
    [
        {"tif": "gtc"},
        {"tif": "DAY"},
        {"tif": ""},
        {"tif": 1},
        {"tif": ["GTC"]},
        {"post_only": "true"},
        {"post_only": 1},
        {"post_only": 0},
        {"post_only": True, "tif": "IOC"},
        {"post_only": True, "tif": "FOK"},
        {"price": None, "tif": "GTC"},
        {"price": None, "post_only": True},  # a market order defaults to IOC
    ],
)
def test_place_bad_tif_or_post_only_or_gtc_market_order_is_invalid_tif(
    h: Harness, fields: dict[str, Any]
) -> None:
    h.market()
    cmd = {**place("a", "1", "buy", "1", "1"), **fields}
    if cmd["price"] is None:
        del cmd["price"]  # a market order
    assert h.send(cmd) == [rejected("place", "invalid_tif", "a", "1")]


@pytest.mark.parametrize("stp", ["CANCEL_MAKER", "cancel", "none", "", 1, False, ["cancel_maker"]])
def test_place_stp_not_one_of_the_three_is_invalid_stp(h: Harness, stp: Any) -> None:
    h.market()
    assert h.send(place("a", "1", "buy", "1", "1", stp=stp)) == [
        rejected("place", "invalid_stp", "a", "1")
    ]


def test_a_wrong_json_type_fails_the_fields_own_check_not_invalid_command(h: Harness) -> None:
    h.market()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"market": 1}, "unknown_market"),
        ({"side": 1}, "invalid_side"),
        ({"qty": True}, "invalid_qty"),
        ({"qty": {"n": 1}}, "invalid_qty"),
        ({"price": False}, "invalid_price"),
        ({"price": [1]}, "invalid_price"),
        ({"tif": 3}, "invalid_tif"),
        ({"post_only": "yes"}, "invalid_tif"),
        ({"stp": {}}, "invalid_stp"),
    ]
    for n, (fields, reason) in enumerate(cases):
        cmd = {**place("a", f"o{n}", "buy", "1", "1"), **fields}
        assert h.send(cmd) == [rejected("place", reason, "a", f"o{n}")], fields
    assert h.send(add_market("N", True, "1")) == [
        rejected("add_market", "invalid_market", market="N")
    ]
    h.ok(place("a", "r", "buy", "1", "1"))
    assert h.send(amend("a", "r", qty=[2])) == [rejected("amend", "invalid_qty", "a", "r")]
    assert h.send(amend("a", "r", price=True)) == [rejected("amend", "invalid_price", "a", "r")]


# ---------------------------------------------------------------------- decimals (SPEC §1)


@pytest.mark.parametrize(
    "price",
    [
        '"1e3"',
        '"1E3"',
        "1E2",
        "1e2",
        "1.0e2",
        '"-5"',
        "-5",
        "-0.5",
        '".5"',
        '"+1"',
        '" 1"',
        '"1 "',
        '"1."',
        '"1,5"',
        '"1_000"',
        '"0x10"',
        '"Infinity"',
        '"NaN"',
        '"１"',  # a fullwidth digit
        '"٣"',  # an Arabic-Indic digit
        '"1\\n"',
    ],
)
def test_decimal_grammar_no_sign_exponent_space_or_bare_point(h: Harness, price: str) -> None:
    h.market("M", tick="0.5", lot="1")
    line = (
        '{"type":"place","client":"a","id":"1","market":"M","side":"buy","qty":"1",'
        f'"price":{price}}}'
    )
    assert h.send(line) == [rejected("place", "invalid_price", "a", "1")]


@pytest.mark.parametrize(
    ("literal", "printed"),
    [
        ('"100.50"', "100.5"),
        ("100.50", "100.5"),
        ('"100"', "100"),
        ("100", "100"),
        ('"100.000"', "100"),
        ("100.000", "100"),
        ('"0100.5"', "100.5"),
        ('"0.01"', "0.01"),
        ("0.010", "0.01"),
    ],
)
def test_decimals_as_strings_or_json_numbers_trailing_zeros_printed_canonically(
    h: Harness, literal: str, printed: str
) -> None:
    h.market("M", tick="0.01", lot="1")
    line = (
        '{"type":"place","client":"a","id":"1","market":"M","side":"buy","qty":1,'
        f'"price":{literal}}}'
    )
    assert h.send(line) == [
        accepted("a", "1", "buy", "1", printed),
        resting("a", "1", printed, "1"),
    ]


def test_json_numbers_are_read_exactly_never_through_a_float(h: Harness) -> None:
    h.market("M", tick="0.1", lot="0.1")
    # 0.3 / 0.1 is not 3 in binary floating point; 0.30000000000000001 is 0.3 as a float
    assert h.send(
        '{"type":"place","client":"a","id":"1","market":"M","side":"buy","qty":0.3,"price":0.3}'
    ) == [accepted("a", "1", "buy", "0.3", "0.3"), resting("a", "1", "0.3", "0.3")]
    assert h.send(
        '{"type":"place","client":"a","id":"2","market":"M","side":"buy","qty":0.1,'
        '"price":0.30000000000000001}'
    ) == [rejected("place", "invalid_price", "a", "2")]
    assert h.send(
        '{"type":"place","client":"a","id":"3","market":"M","side":"buy",'
        '"qty":"0.10000000000000000001","price":"0.3"}'
    ) == [rejected("place", "invalid_qty", "a", "3")]
    # 9007199254740993 is not representable as a float
    assert h.send(
        '{"type":"place","client":"a","id":"4","market":"M","side":"buy","qty":0.1,'
        '"price":9007199254740993.0}'
    ) == [
        accepted("a", "4", "buy", "0.1", "9007199254740993"),
        resting("a", "4", "9007199254740993", "0.1"),
    ]


def test_price_over_tick_and_qty_over_lot_must_be_below_2_pow_63(h: Harness) -> None:
    h.market("M", tick="1", lot="1")
    h.market("H", tick="0.5", lot="0.001")
    top = str(2**63 - 1)
    assert h.send(place("a", "1", "buy", "1", str(2**63))) == [
        rejected("place", "invalid_price", "a", "1")
    ]
    assert h.send(place("a", "2", "buy", str(2**63), "1")) == [
        rejected("place", "invalid_qty", "a", "2")
    ]
    assert h.send(
        f'{{"type":"place","client":"a","id":"3","market":"M","side":"buy",'
        f'"qty":1,"price":{2**64}}}'
    ) == [rejected("place", "invalid_price", "a", "3")]
    assert h.send(place("a", "4", "sell", top, top)) == [
        accepted("a", "4", "sell", top, top),
        resting("a", "4", top, top),
    ]
    # H: 2^63 ticks of 0.5 is 4611686018427387904; one tick less is fine
    assert h.send(place("a", "5", "buy", "1", "4611686018427387904", market="H")) == [
        rejected("place", "invalid_price", "a", "5")
    ]
    assert h.send(place("a", "6", "buy", "9223372036854775.808", "1", market="H")) == [
        rejected("place", "invalid_qty", "a", "6")
    ]
    assert h.send(
        place("a", "7", "buy", "9223372036854775.807", "4611686018427387903.5", market="H")
    ) == [
        accepted("a", "7", "buy", "9223372036854775.807", "4611686018427387903.5", market="H"),
        resting("a", "7", "4611686018427387903.5", "9223372036854775.807", market="H"),
    ]
    # the same bound holds for an amend
    assert h.send(amend("a", "4", qty=str(2**63))) == [rejected("amend", "invalid_qty", "a", "4")]
    assert h.send(amend("a", "4", price=str(2**63))) == [
        rejected("amend", "invalid_price", "a", "4")
    ]


def test_tick_and_lot_are_exact_decimals_of_any_size(h: Harness) -> None:
    big, tiny = "1" + "0" * 30, "0." + "0" * 29 + "1"
    h.market("M", tick=big, lot=tiny)
    price, qty = "3" + "0" * 30, "0." + "0" * 28 + "25"
    assert h.send(place("a", "1", "sell", qty, price)) == [
        accepted("a", "1", "sell", qty, price),
        resting("a", "1", price, qty),
    ]
    assert h.send(place("b", "1", "buy", "0." + "0" * 29 + "7", "5" + "0" * 30)) == [
        accepted("b", "1", "buy", "0." + "0" * 29 + "7", "5" + "0" * 30),
        *_one_trade_and_fill(price, "0." + "0" * 29 + "7"),
    ]


def _one_trade_and_fill(price: str, qty: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "trade",
            "market": "M",
            "price": price,
            "qty": qty,
            "maker": "1",
            "maker_client": "a",
            "taker": "1",
            "taker_client": "b",
            "taker_side": "buy",
        },
        {"type": "filled", "client": "b", "id": "1", "market": "M"},
    ]


def test_leading_and_trailing_zeros_of_any_length_are_still_a_decimal(h: Harness) -> None:
    h.market("M", tick="0.01", lot="1")
    long_price = "0" * 300 + "12.3" + "0" * 300  # 12.3, written with 600 zeros
    assert h.send(place("a", "1", "buy", "1", long_price)) == [
        accepted("a", "1", "buy", "1", "12.3"),
        resting("a", "1", "12.3", "1"),
    ]


def test_a_tick_has_no_upper_bound(h: Harness) -> None:
    # (the engine's only limit: 4,000 significant digits, CPython's int/str conversion bound)
    # SPEC §1 bounds price/tick and qty/lot, not the tick or the lot themselves
    tick = "1" + "0" * 450
    assert h.send(add_market("M", tick, "1")) == [market_added("M", tick, "1")]
    assert h.send(place("a", "1", "buy", "1", "2" + "0" * 450)) == [
        accepted("a", "1", "buy", "1", "2" + "0" * 450),
        resting("a", "1", "2" + "0" * 450, "1"),
    ]


# ---------------------------------------------------------------------- names (SPEC §1)


def test_a_name_is_1_to_64_of_the_allowed_ascii_characters(h: Harness) -> None:
    h.market()
    longest = "Az09._:-" * 8  # 64 characters, every kind allowed
    assert h.send(place(longest, longest, "buy", "1", "1")) == [
        accepted(longest, longest, "buy", "1", "1"),
        resting(longest, longest, "1", "1"),
    ]
    for n, bad in enumerate(
        ["", "a" * 65, "a\n", "\na", "a b", "a/b", "a@b", "é", "ａ", "a\u0000", "a\t", "日本"]
    ):
        assert h.send(place(bad, f"o{n}", "buy", "1", "1")) == [
            rejected("place", "invalid_command")
        ], bad
        assert h.send(add_market(bad, "1", "1")) == [rejected("add_market", "invalid_market")]
    assert h.send(add_market("x" * 64, "1", "1")) == [market_added("x" * 64, "1", "1")]


def test_json_escapes_in_names_are_decoded_before_the_name_check(h: Harness) -> None:
    h.market()
    # "\u0041" is "A": a name; "\u00e9" is "é": not a name
    assert h.send(
        '{"type":"place","client":"\\u0041","id":"1","market":"M","side":"buy","qty":"1",'
        '"price":"1"}'
    )[0] == accepted("A", "1", "buy", "1", "1")
    assert h.send(
        '{"type":"place","client":"\\u00e9","id":"1","market":"M","side":"buy","qty":"1",'
        '"price":"1"}'
    ) == [rejected("place", "invalid_command")]


def test_rejected_carries_client_and_id_only_when_both_are_names(h: Harness) -> None:
    assert h.send(place("a", "1", "buy", "1", "1", market="NOPE")) == [
        rejected("place", "unknown_market", "a", "1")
    ]
    assert h.send(cancel("a", "é")) == [rejected("cancel", "invalid_command")]
    assert h.send(cancel("a", "1")) == [rejected("cancel", "unknown_order", "a", "1")]
    assert h.send(amend(5, "1", qty="1")) == [rejected("amend", "invalid_command")]
    # market only for add_market (reading: only when it is a name), and client/id never
    # for add_market, which has no such fields
    assert h.send(add_market("M", "0", "1", client="a", id="1")) == [
        rejected("add_market", "invalid_market", market="M")
    ]
    assert h.send(cancel("a", "1", market="M")) == [rejected("cancel", "unknown_order", "a", "1")]


# ---------------------------------------------------------------------- every character


def _tricky_characters() -> list[str]:
    """Characters an implementation could mistake for an allowed one: everything below
    U+0800, every Unicode digit/numeric/space, dashes, fullwidth forms, and every character
    whose case mapping contains ASCII (such as the Kelvin sign U+212A)."""
    import unicodedata

    out = []
    for cp in range(0x110000):
        ch = chr(cp)
        if 0xD800 <= cp <= 0xDFFF:
            continue  # not encodable in JSON text
        if (
            cp < 0x800
            or 0xFF00 <= cp <= 0xFFEF
            or ch.isdigit()
            or ch.isnumeric()
            or ch.isspace()
            or unicodedata.category(ch) in ("Pd", "Po")
            or any(c.isascii() for c in ch.lower() + ch.upper() + ch.casefold())
        ):
            out.append(ch)
    return out


TRICKY = _tricky_characters()
NAME_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")


def test_only_the_listed_ascii_characters_make_a_name(h: Harness) -> None:
    assert len(TRICKY) > 3000
    for ch in TRICKY:
        for name in (ch, "a" + ch + "b"):
            events = h.send(json.dumps(cancel(name, "1")))
            want = (
                [rejected("cancel", "unknown_order", name, "1")]
                if ch in NAME_CHARS
                else [rejected("cancel", "invalid_command")]
            )
            assert events == want, f"U+{ord(ch):04X}"


def test_only_ascii_digits_and_one_point_make_a_decimal(h: Harness) -> None:
    h.market("M", tick="0.1", lot="0.1")
    digits = set("0123456789")
    for n, ch in enumerate(TRICKY):
        oid = f"o{n}"
        price = "1" + ch + "5"  # a decimal only for an ASCII digit or "."
        events = h.send(json.dumps(place("a", oid, "buy", "1", price, market="NOPE")))
        assert events == [rejected("place", "unknown_market", "a", oid)]  # market first
        events = h.send(json.dumps(place("a", oid + "p", "buy", "1", price, tif="IOC")))
        if ch in digits or ch == ".":
            assert events[0]["type"] == "accepted", f"U+{ord(ch):04X}"
        else:
            assert events == [rejected("place", "invalid_price", "a", oid + "p")], (
                f"U+{ord(ch):04X}"
            )
        events = h.send(json.dumps(place("a", oid + "q", "buy", ch, "1", tif="IOC")))
        if ch in digits - {"0"}:
            assert events[0]["type"] == "accepted", f"U+{ord(ch):04X}"
        else:
            assert events == [rejected("place", "invalid_qty", "a", oid + "q")], f"U+{ord(ch):04X}"
