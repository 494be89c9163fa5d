"""The history checker itself: it passes a true history and catches each kind of violation.

How: no processes.  A small true history is made with the engine (commands at log indexes
with gaps, as a node publishes them); each test breaks one thing — a lost entry, a reply
that differs from the log, an entry nobody sent, a second execution, a ``duplicate_id``, an
acknowledged-but-refused command, out-of-order events, an overfill the engine would never
produce — and checks that ``node.history.check`` reports it under the right category.
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec

from grenex.codec import decode_command
from grenex.engine import Engine

from .history import FAILED, OK, UNKNOWN, Op, check

Json = Any

COMMANDS: list[tuple[int, str, dict[str, Json]]] = [
    (3, "add_market", {"market": "BTC-USD", "tick": "0.01", "lot": "0.0001"}),
    (
        5,
        "place",
        {"client": "a", "id": "a1", "market": "BTC-USD", "side": "buy", "qty": "2", "price": "100"},
    ),
    (
        6,
        "place",
        {
            "client": "b",
            "id": "b1",
            "market": "BTC-USD",
            "side": "sell",
            "qty": "1",
            "price": "100",
        },
    ),
    (9, "amend", {"client": "a", "id": "a1", "qty": "3", "req": "r1"}),
    (
        10,
        "place",
        {
            "client": "b",
            "id": "b2",
            "market": "BTC-USD",
            "side": "sell",
            "qty": "5",
            "price": "101",
        },
    ),
    (12, "cancel", {"client": "b", "id": "b2", "req": "r2"}),
    (13, "cancel", {"client": "b", "id": "b2", "req": "r3"}),
]


def history() -> tuple[list[Op], list[dict[str, Json]]]:
    eng = Engine()
    ops: list[Op] = []
    stream: list[dict[str, Json]] = []
    for seq, kind, args in COMMANDS:
        cmd = {"type": kind, **args}
        events = [
            msgspec.to_builtins(e) for e in eng.apply(decode_command(msgspec.json.encode(cmd)), seq)
        ]
        stream += events
        ops.append(
            Op(
                str(args.get("client", "h")),
                kind,
                dict(args),
                "n1",
                OK,
                seq,
                copy.deepcopy(events),
                1,
            )
        )
    return ops, stream


def categories(ops: list[Op], stream: list[dict[str, Json]]) -> set[str]:
    return {c for c, _ in check(ops, stream).violations}


def test_a_true_history_passes() -> None:
    ops, stream = history()
    res = check(ops, stream)
    assert res.violations == []
    assert res.entries == len(COMMANDS) and res.acked == len(COMMANDS) and res.trades == 1
    assert [b["market"] for b in res.books] == ["BTC-USD"]
    assert res.books[0]["bids"] == [{"client": "a", "id": "a1", "price": "100", "qty": "3"}]


def test_unacknowledged_ops_that_executed_or_not() -> None:
    ops, stream = history()
    ops[3].status, ops[3].seq, ops[3].events = UNKNOWN, None, None  # executed, not answered
    ops.append(Op("a", "place", {"client": "a", "id": "zz", "market": "BTC-USD"}, "n1"))  # lost
    res = check(ops, stream)
    assert res.violations == [] and res.unknown == 2 and res.unknown_executed == 1


def test_lost_acknowledged_command() -> None:
    ops, stream = history()
    stream = [e for e in stream if e["seq"] != 6]
    assert "lost" in categories(ops, stream)


def test_reply_differs_from_the_log() -> None:
    ops, stream = history()
    assert ops[1].events is not None
    ops[1].events[0]["qty"] = "1"
    assert "mismatch" in categories(ops, stream)


def test_an_entry_nobody_sent() -> None:
    ops, stream = history()
    del ops[4]  # b2 was never sent, yet it is in the log
    assert "phantom" in categories(ops, stream)


def test_a_command_executed_twice() -> None:
    ops, stream = history()
    ops[5].status, ops[5].seq, ops[5].events = UNKNOWN, None, None
    # the cancel r2 appears at 12 and again at 14 (as an unknown_order rejection)
    again = {
        "type": "rejected",
        "seq": 14,
        "cmd": "cancel",
        "reason": "unknown_order",
        "client": "b",
        "id": "b2",
    }
    ops_twice = [op for op in ops if op.args.get("req") != "r3"]
    stream_twice = [e for e in stream if e["seq"] != 13] + [again]
    assert "reexecuted" in categories(ops_twice, stream_twice)


def test_duplicate_id_for_a_retry() -> None:
    ops, stream = history()
    dup = {
        "type": "rejected",
        "seq": 20,
        "cmd": "place",
        "reason": "duplicate_id",
        "client": "a",
        "id": "a1",
    }
    ops[1].seq, ops[1].events = 20, [dup]  # the retry was answered duplicate_id
    cats = categories(ops, [*stream, dup])
    assert "reexecuted" in cats or "evicted_retry" in cats


def test_a_refused_command_in_the_log() -> None:
    ops, stream = history()
    ops[4].status, ops[4].seq, ops[4].events = FAILED, None, None
    assert "failed_in_log" in categories(ops, stream)


def test_events_out_of_order() -> None:
    ops, stream = history()
    stream = copy.deepcopy(stream)
    i = next(i for i, e in enumerate(stream) if e["seq"] == 10)
    stream[i], stream[i - 1] = stream[i - 1], stream[i]
    assert "stream" in categories(ops, stream)


def test_an_overfill_the_engine_never_makes() -> None:
    ops, stream = history()
    stream = copy.deepcopy(stream)
    trade = next(e for e in stream if e["type"] == "trade")
    trade["qty"] = "7"
    for op in ops:  # keep the replies consistent, so only the model and the replay object
        if op.seq == trade["seq"]:
            op.events = [e for e in stream if e["seq"] == op.seq]
    cats = categories(ops, stream)
    assert {"quantity", "replay"} <= cats
