"""The history checker itself: it passes a true history and catches each kind of violation.

How: no processes.  A small true history is made with the replicated state (signed envelopes
applied at log indexes with gaps, as a node publishes them); each test breaks one thing — a
lost entry, a reply that differs from the log, an entry nobody sent, a second execution, a
``duplicate_id``, an acknowledged-but-refused command, out-of-order events, an overfill the
engine would never produce — and checks that ``node.history.check`` reports it under the
right category; retries of one envelope (a duplicate answer, an inert ``stale_nonce``
rejection in the log) are not violations.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from grenex.codec.genesis import Genesis, parse_genesis
from grenex.codec.signer import Keyring
from grenex.replica.state import ReplicaState

from .history import FAILED, OK, UNKNOWN, Op, Signing, check

Json = Any

KEYS = Keyring("checker")
GENESIS = KEYS.genesis("main", ["n1"])

COMMANDS: list[tuple[int, str, dict[str, Json]]] = [
    (1, "register", {"client": "a"}),
    (2, "register", {"client": "b"}),
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
    (9, "amend", {"client": "a", "id": "a1", "qty": "3"}),
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
    (12, "cancel", {"client": "b", "id": "b2"}),
    (13, "cancel", {"client": "b", "id": "b2"}),
]


def history() -> tuple[list[Op], list[dict[str, Json]]]:
    signing = Signing(_genesis(), KEYS, nonces=None)  # counter nonces: entry times may be 0
    state = ReplicaState(_genesis())
    ops: list[Op] = []
    stream: list[dict[str, Json]] = []
    for seq, kind, args in COMMANDS:
        op = signing.op("n1", {"type": kind, **args})
        assert op.raw is not None
        events = json.loads(state.apply_command(seq, 1, op.raw.encode(), 0).events_json)
        stream += events
        op.status, op.seq, op.events, op.attempts = OK, seq, copy.deepcopy(events), 1
        ops.append(op)
    return ops, stream


def _genesis() -> Genesis:
    return parse_genesis(GENESIS)


def categories(ops: list[Op], stream: list[dict[str, Json]]) -> set[str]:
    return {c for c, _ in check(ops, stream, GENESIS).violations}


def test_a_true_history_passes() -> None:
    ops, stream = history()
    res = check(ops, stream, GENESIS)
    assert res.violations == []
    assert res.entries == len(COMMANDS) and res.acked == len(COMMANDS) and res.trades == 1
    assert [b["market"] for b in res.books] == ["BTC-USD"]
    assert res.books[0]["bids"] == [{"client": "a", "id": "a1", "price": "100", "qty": "3"}]


def test_unacknowledged_ops_that_executed_or_not() -> None:
    ops, stream = history()
    ops[5].status, ops[5].seq, ops[5].events = UNKNOWN, None, None  # executed, not answered
    never = Signing(_genesis(), KEYS, nonces=None)
    ops.append(never.op("n1", {"type": "place", "client": "a", "id": "zz", "market": "X"}))
    res = check(ops, stream, GENESIS)
    assert res.violations == [] and res.unknown == 2 and res.unknown_executed == 1


def test_lost_acknowledged_command() -> None:
    ops, stream = history()
    stream = [e for e in stream if e["seq"] != 6]
    assert "lost" in categories(ops, stream)


def test_reply_differs_from_the_log() -> None:
    ops, stream = history()
    assert ops[3].events is not None
    ops[3].events[0]["qty"] = "1"
    assert "mismatch" in categories(ops, stream)


def test_an_entry_nobody_sent() -> None:
    ops, stream = history()
    del ops[6]  # b2 was never sent, yet it is in the log
    assert "phantom" in categories(ops, stream)


def test_a_command_executed_twice() -> None:
    ops, stream = history()
    ops[7].status, ops[7].seq, ops[7].events = UNKNOWN, None, None
    # the first cancel appears at 12 and again at 14 (as an unknown_order rejection)
    again = {
        "type": "rejected",
        "seq": 14,
        "cmd": "cancel",
        "reason": "unknown_order",
        "client": "b",
        "id": "b2",
    }
    ops_twice = ops[:8]
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
    ops[3].seq, ops[3].events = 20, [dup]  # the retry was answered duplicate_id
    assert "reexecuted" in categories(ops, [*stream, dup])


def test_retries_of_one_envelope_are_no_violation() -> None:
    ops, stream = history()
    # the same envelope again, answered from the window: the first outcome, marked duplicate
    retry = copy.deepcopy(ops[4])
    retry.duplicate = True
    # and an unanswered retry that reached the log after the window moved on: stale_nonce,
    # consuming nothing
    late = copy.deepcopy(ops[6])
    late.status, late.seq, late.events = UNKNOWN, None, None
    stale = {
        "type": "rejected",
        "seq": 15,
        "cmd": "place",
        "reason": "stale_nonce",
        "client": "b",
        "id": "b2",
    }
    res = check([*ops, retry, late], [*stream, stale], GENESIS)
    assert res.violations == []
    # the same rejection of an id nobody sent is a phantom
    nobody = {**stale, "id": "zz"}
    assert "phantom" in categories(ops, [*stream, nobody])


def test_a_refused_command_in_the_log() -> None:
    ops, stream = history()
    ops[6].status, ops[6].seq, ops[6].events = FAILED, None, None
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
