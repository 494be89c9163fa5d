"""The lab's checker catches what it must (no root needed: a made-up history and log of
signed envelopes; the replays run ``grenex replay`` on an export carrying the genesis)."""

from __future__ import annotations

import json
from typing import Any

from grenex.codec.genesis import parse_genesis
from grenex.codec.signer import Keyring, Signer
from grenex.lab.checker import Op, check, check_export, group_log, load_history

MARKET = {"market": "BTC-USD", "tick": "0.01", "lot": "0.0001"}
KEYS = Keyring("lab-checker")
GENESIS = KEYS.genesis("lab1", ["n1"])
SIGNER = Signer(parse_genesis(GENESIS).cluster_id, KEYS)  # counter nonces: entry times unused


def _signed(
    kind: str,
    cmd: dict[str, Any],
    status: str = "unknown",
    seq: int | None = None,
    events: list[dict[str, Any]] | None = None,
) -> Op:
    """An op whose envelope is ``cmd`` signed by its client (``register``: its own)."""
    raw = (
        SIGNER.register(cmd["client"])
        if kind == "register"
        else SIGNER.command({"type": kind, **cmd})
    )
    env = json.loads(raw)
    op = Op(cmd["client"], "n1", kind, json.loads(env["cmd"]), status, seq, events)
    op.env = env
    return op


_MARKET = _signed(
    "add_market",
    {**MARKET, "client": KEYS.operator},
    "ok",
    1,
    [{"type": "market_added", "seq": 1, **MARKET}],
)
_REGISTER = _signed(
    "register",
    {"client": "c1"},
    "ok",
    2,
    [{"type": "registered", "seq": 2, "client": "c1", "key": KEYS.key("c1").public_key}],
)
_PLACES: dict[str, Op] = {}


def _market_op() -> Op:
    return _MARKET


def _admin() -> list[Op]:
    return [_MARKET, _REGISTER]


def _setup() -> list[list[dict[str, Any]]]:
    return [_MARKET.events or [], _REGISTER.events or []]


def _op(
    oid: str,
    status: str = "unknown",
    seq: int | None = None,
    events: list[dict[str, Any]] | None = None,
    price: str = "100",
) -> Op:
    """The op of place ``oid`` (one envelope per id, made once)."""
    base = _PLACES.get(oid)
    if base is None:
        base = _PLACES[oid] = _signed("place", _place(oid, price))
    op = Op(base.client, "n1", "place", dict(base.args), status, seq, events)
    op.env = base.env
    return op


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
    ops = [_op("a", "ok", 3, _placed(3, "a")), _op("b")]
    res, lines = check(
        ops, _log(*_setup(), _placed(3, "a"), _placed(4, "b")), _admin(), genesis=GENESIS
    )
    assert res.violations == []
    assert res.unknown_executed == 1 and res.acked == 1 and res.entries == 4
    assert lines.count(b"\n") == 5  # the export's header and four entries


def test_lost_mismatch_phantom_and_reexecution_are_caught() -> None:
    ops = [
        _op("a", "ok", 3, _placed(3, "a")),
        _op("b", "ok", 4, _placed(4, "b", "99")),  # lied
        _op("c", "ok", 9, _placed(9, "c")),  # lost
        _op("d", "failed"),
    ]
    log = _log(
        *_setup(),
        _placed(3, "a"),
        _placed(4, "b"),
        _placed(5, "a"),
        _placed(6, "zz"),
        _placed(7, "d"),
    )
    res, _ = check(ops, log, _admin(), genesis=GENESIS)
    cats = {c for c, _ in res.violations}
    assert {"lost", "mismatch", "reexecuted", "phantom", "failed_in_log"} <= cats


def test_a_stale_retry_in_the_log_is_no_execution() -> None:
    # an unanswered retry of a's envelope that reached the log after the window moved on
    stale = {"type": "rejected", "seq": 4, "cmd": "place", "reason": "stale_nonce"}
    stale |= {"client": "c1", "id": "a"}
    ops = [_op("a", "ok", 3, _placed(3, "a")), _op("a")]
    res, _ = check(ops, _log(*_setup(), _placed(3, "a"), [stale]), _admin(), genesis=GENESIS)
    assert res.violations == []


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
    def text(op: Op) -> str:
        return json.dumps(op.env, separators=(",", ":"))

    a, b = _op("a"), _op("b")
    market, reg = text(_MARKET), text(_REGISTER)
    log = _log(*_setup(), _placed(3, "a"))
    ops = [_op("a", "ok", 3, _placed(3, "a"))]
    _res, lines = check(ops, log, _admin(), genesis=GENESIS)
    # the same envelope reached the log twice: the nonce window absorbs it (no events)
    v, books = check_export(
        {"n1": {1: market, 2: reg, 3: text(a), 4: text(a)}}, log, lines, genesis=GENESIS
    )
    assert v == [] and books and books[0]["bids"]
    # two nodes exporting different commands at one index
    v, _ = check_export(
        {"n1": {1: market, 2: reg, 3: text(a)}, "n2": {1: market, 2: reg, 3: text(b)}},
        log,
        lines,
        genesis=GENESIS,
    )
    assert "diverged" in [c for c, _ in v]
    # an export whose replay gives other events than the nodes applied
    v, _ = check_export({"n1": {1: market, 2: reg, 3: text(b)}}, log, lines, genesis=GENESIS)
    assert "export" in [c for c, _ in v]
