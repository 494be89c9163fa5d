"""The lab's checker catches what it must (no root needed: a made-up history and log)."""

from __future__ import annotations

import json
from typing import Any

from grenex.lab.checker import Op, check, check_export, group_log, load_history

MARKET = {"market": "BTC-USD", "tick": "0.01", "lot": "0.0001"}


def _market_op() -> Op:
    return Op(
        "lab",
        "n1",
        "add_market",
        {**MARKET, "client": "lab", "req": "m"},
        "ok",
        1,
        [{"type": "market_added", "seq": 1, **MARKET}],
    )


def _place(oid: str, price: str = "100") -> dict[str, Any]:
    return {
        "client": "c1",
        "id": oid,
        "market": "BTC-USD",
        "side": "buy",
        "qty": "0.001",
        "price": price,
    }


def _placed(seq: int, oid: str, price: str = "100") -> list[dict[str, Any]]:
    return [
        {
            "type": "accepted",
            "seq": seq,
            "client": "c1",
            "id": oid,
            "market": "BTC-USD",
            "side": "buy",
            "price": price,
            "qty": "0.001",
            "tif": "GTC",
        },
        {
            "type": "resting",
            "seq": seq,
            "client": "c1",
            "id": oid,
            "market": "BTC-USD",
            "price": price,
            "remaining": "0.001",
        },
    ]


def _log(*entries: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    views = {"n1": (1, [ev for entry in entries for ev in entry])}
    return group_log(views, [])


def test_a_clean_history_passes() -> None:
    ops = [
        Op("c1", "n1", "place", _place("a"), "ok", 2, _placed(2, "a")),
        Op("c1", "n1", "place", _place("b"), "unknown"),
    ]
    res, lines = check(
        ops, _log(_market_op().events or [], _placed(2, "a"), _placed(3, "b")), [_market_op()]
    )
    assert res.violations == []
    assert res.unknown_executed == 1 and res.acked == 1 and res.entries == 3
    assert lines.count(b"\n") == 3


def test_lost_mismatch_phantom_and_reexecution_are_caught() -> None:
    ops = [
        Op("c1", "n1", "place", _place("a"), "ok", 2, _placed(2, "a")),
        Op("c1", "n1", "place", _place("b"), "ok", 3, _placed(3, "b", "99")),  # lied
        Op("c1", "n1", "place", _place("c"), "ok", 9, _placed(9, "c")),  # lost
        Op("c1", "n1", "place", _place("d"), "failed"),
    ]
    log = _log(
        _market_op().events or [],
        _placed(2, "a"),
        _placed(3, "b"),
        _placed(4, "a"),
        _placed(5, "zz"),
        _placed(6, "d"),
    )
    res, _ = check(ops, log, [_market_op()])
    cats = {c for c, _ in res.violations}
    assert {"lost", "mismatch", "reexecuted", "phantom", "failed_in_log"} <= cats


def test_nodes_that_disagree_are_caught() -> None:
    violations: list[tuple[str, str]] = []
    group_log({"n1": (1, _placed(2, "a")), "n2": (1, _placed(2, "b"))}, violations)
    assert [c for c, _ in violations] == ["diverged"]


def test_history_files_survive_a_killed_client(tmp_path: Any) -> None:
    p = tmp_path / "history-n1.jsonl"
    recs = [
        {"rec": "invoke", "op": 1, "t": 1.0, "node": "n1", "kind": "place", "args": _place("a")},
        {"rec": "done", "op": 1, "t": 1.1, "status": "ok", "seq": 2, "events": _placed(2, "a")},
        {"rec": "invoke", "op": 2, "t": 1.2, "node": "n1", "kind": "place", "args": _place("b")},
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"rec": "do')  # torn by a kill
    ops = load_history([p])
    assert [(o.status, o.seq) for o in ops] == [("ok", 2), ("unknown", None)]


def test_the_export_is_held_against_the_history_and_a_replay() -> None:
    market = json.dumps({"type": "add_market", **MARKET, "client": "lab", "req": "m"})
    a = json.dumps({"type": "place", **_place("a")})
    log = _log(_market_op().events or [], _placed(2, "a"))
    lines = (market + "\n" + a + "\n").encode()
    # a place that reached the log twice is absorbed by the session table (no events)
    v, books = check_export({"n1": {1: market, 2: a, 3: a}}, log, lines)
    assert [c for c, _ in v] == ["note"] and books and books[0]["bids"]
    # two nodes exporting different commands at one index
    b = json.dumps({"type": "place", **_place("b")})
    v, _ = check_export({"n1": {1: market, 2: a}, "n2": {1: market, 2: b}}, log, lines)
    assert "diverged" in [c for c, _ in v]
    # an export whose replay gives other events than the nodes applied
    v, _ = check_export({"n1": {1: market, 2: b}}, log, lines)
    assert "export" in [c for c, _ in v]
