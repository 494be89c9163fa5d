"""Exactly-once (SPEC §6) in the replicated state machine, and its documented bounds.

Commands are applied to a ReplicaState as committed log entries (the index is the event seq).
Proves: a retried place (same client and id) returns the original events — not duplicate_id —
and changes nothing; any command with a req is answered from the table when repeated; a
cancel or amend without req executes again (SPEC: absolute values); after the per-client or
the client bound evicts an outcome, a retried place falls through to the engine's
duplicate_id (the last line of defence) and a retried req executes again; eviction order
follows the log, so it is the same on every replica.
"""

from __future__ import annotations

import random
from typing import Any

import msgspec

from grenex.codec import encode_json
from grenex.replica import ReplicaState, Sessions, session_keys
from grenex.replica.sessions import Outcome


def cmd(**fields: Any) -> bytes:
    return encode_json(fields)


ADD_MARKET = cmd(type="add_market", market="M", tick="1", lot="1")


def place(oid: str, side: str = "buy", price: str = "100", client: str = "c", **kw: Any) -> bytes:
    return cmd(
        type="place", client=client, id=oid, market="M", side=side, qty="2", price=price, **kw
    )


class Log:
    """Applies commands at consecutive indexes, like committed entries."""

    def __init__(self, state: ReplicaState | None = None) -> None:
        self.state = state or ReplicaState()
        self.index = self.state.index

    def apply(self, data: bytes) -> tuple[list[dict[str, Any]], bool]:
        self.index += 1
        events, dup, _json, _t = self.state.apply_command(self.index, 1, data)
        return [msgspec.to_builtins(e) for e in events], dup


def test_retried_place_returns_the_original_outcome() -> None:
    log = Log()
    log.apply(ADD_MARKET)
    first, dup1 = log.apply(place("o1"))
    books = log.state.engine.books()
    again, dup2 = log.apply(place("o1"))
    assert not dup1 and dup2
    assert again == first  # same events, same seq (the original index)
    assert [e["type"] for e in again] == ["accepted", "resting"]
    assert all(e["seq"] == 2 for e in again)
    assert log.state.engine.books() == books  # nothing executed twice


def test_reused_id_with_other_fields_still_gets_the_first_outcome() -> None:
    log = Log()
    log.apply(ADD_MARKET)
    first, _ = log.apply(place("o1"))
    other, dup = log.apply(place("o1", side="sell", price="90"))
    assert dup and other == first


def test_req_makes_any_command_idempotent() -> None:
    log = Log()
    log.apply(ADD_MARKET)
    log.apply(place("o1"))
    c1, _ = log.apply(cmd(type="cancel", client="c", id="o1", req="r1"))
    c2, dup = log.apply(cmd(type="cancel", client="c", id="o1", req="r1"))
    assert dup and c2 == c1 and c1[0]["type"] == "cancelled"
    # the same cancel without req executes again: now there is nothing to cancel
    c3, dup3 = log.apply(cmd(type="cancel", client="c", id="o1"))
    assert not dup3 and c3[0]["reason"] == "unknown_order"


def test_amend_retry_with_req_does_not_lose_priority_again() -> None:
    log = Log()
    log.apply(ADD_MARKET)
    log.apply(place("o1", price="100"))
    log.apply(place("o2", price="100", client="d"))
    a1, _ = log.apply(cmd(type="amend", client="c", id="o1", price="101", req="a"))
    log.apply(place("o3", price="101", client="d"))
    a2, dup = log.apply(cmd(type="amend", client="c", id="o1", price="101", req="a"))
    assert dup and a2 == a1
    bids = log.state.engine.books()[0]["bids"]
    assert [b["id"] for b in bids][:2] == ["o1", "o3"]  # o1 kept its place at 101


def test_keys() -> None:
    assert session_keys({"type": "place", "client": "c", "id": "o", "req": "r"}) == (
        "c",
        ("i:o", "r:r"),
    )
    assert session_keys({"type": "cancel", "client": "c", "id": "o"}) is None
    assert session_keys({"type": "cancel", "client": "c", "id": "o", "req": "r"}) == (
        "c",
        ("r:r",),
    )
    assert session_keys({"type": "place", "client": "bad name", "id": "o"}) is None
    # add_market has no client: its req is kept for the cluster, under "" (never a client)
    assert session_keys({"type": "add_market", "market": "M", "req": "r"}) == ("", ("r:r",))
    assert session_keys({"type": "add_market", "market": "M"}) is None
    assert session_keys({"type": "cancel", "id": "o", "req": "r"}) is None
    assert session_keys({"type": "place", "client": "c", "id": 5}) is None
    assert session_keys([1, 2]) is None


def test_per_client_bound_evicts_oldest_then_engine_says_duplicate_id() -> None:
    state = ReplicaState(sessions=Sessions(outcomes_per_client_max=3, outcomes_max=100))
    log = Log(state)
    log.apply(ADD_MARKET)
    for i in range(5):
        log.apply(place(f"o{i}", price=str(90 + i)))
    assert state.sessions.evictions == 2 and len(state.sessions) == 3
    # o0's outcome is gone: the retry reaches the engine, which refuses it (used id)
    ev, dup = log.apply(place("o0", price="90"))
    assert not dup and ev[0]["type"] == "rejected" and ev[0]["reason"] == "duplicate_id"
    # o4's is still there
    _, dup = log.apply(place("o4", price="94"))
    assert dup


def test_global_bound_evicts_the_oldest_outcome_in_log_order() -> None:
    state = ReplicaState(sessions=Sessions(outcomes_per_client_max=8, outcomes_max=3))
    log = Log(state)
    log.apply(ADD_MARKET)
    log.apply(place("x", client="a"))  # oldest
    log.apply(place("x", client="b"))
    log.apply(place("y", client="a"))
    log.apply(place("x", client="c"))  # a:x goes
    assert len(state.sessions) == 3 and state.sessions.evictions == 1
    assert log.apply(place("x", client="b"))[1]
    assert log.apply(place("y", client="a"))[1]
    ev, dup = log.apply(place("x", client="a"))  # forgotten: the engine answers
    assert not dup and ev[0]["reason"] == "duplicate_id"


def test_a_busy_client_keeps_outcomes_for_thousands_of_later_commands() -> None:
    """The default bounds: a retry after 4,000 later commands of the same client still gets
    its first outcome (a client trading fast while it retries a lost command)."""
    log = Log()
    log.apply(ADD_MARKET)
    first, _ = log.apply(place("first", price="50"))
    cancel, _ = log.apply(cmd(type="cancel", client="c", id="first", req="cx"))
    for i in range(4000):
        log.apply(place(f"o{i}", side="sell", price=str(200 + i % 7)))
    assert log.apply(place("first", price="50")) == (first, True)
    assert log.apply(cmd(type="cancel", client="c", id="first", req="cx")) == (cancel, True)


def test_snapshot_is_canonical_and_restores_an_equal_state() -> None:
    log = Log(ReplicaState(sessions=Sessions(outcomes_per_client_max=4, outcomes_max=7)))
    log.apply(ADD_MARKET)
    for i in range(12):
        log.apply(place(f"o{i}", side="buy" if i % 2 else "sell", price=str(99 + i % 3)))
        log.apply(cmd(type="cancel", client="d" if i % 3 else "c", id=f"o{i - 2}", req=f"r{i}"))
    blob = log.state.snapshot()
    copy = ReplicaState.restore(blob, 4, 7)
    assert copy.snapshot() == blob
    assert copy.state_hash() == log.state.state_hash()
    assert (copy.index, copy.sessions.evictions) == (log.state.index, log.state.sessions.evictions)
    # and both continue identically, eviction order included
    other = Log(copy)
    for i in range(12, 30):
        data = (
            place(f"o{i % 14}", price="100")
            if i % 2
            else cmd(type="cancel", client="d", id="o1", req=f"r{i % 15}")
        )
        assert log.apply(data) == other.apply(data)
        assert copy.state_hash() == log.state.state_hash()


def test_bad_snapshot_bytes_are_refused() -> None:
    import pytest

    from grenex.replica import ReplicaSnapshotError

    with pytest.raises(ReplicaSnapshotError):
        ReplicaState.restore(b"\x93\x01\x02")
    with pytest.raises(ReplicaSnapshotError):
        ReplicaState.restore(b"not msgpack at all \xff")


def test_a_retried_add_market_with_req_gets_its_first_outcome() -> None:
    state = ReplicaState()
    cmd = b'{"type":"add_market","market":"M","tick":"1","lot":"1","req":"open-m"}'
    first, dup, _json, _t = state.apply_command(1, 1, cmd)
    assert not dup and first[0].__struct_config__.tag == "market_added"
    again, dup, _json, _t = state.apply_command(2, 1, cmd)
    assert dup and again == first  # not market_exists
    other, dup, _json, _t = state.apply_command(3, 1, cmd.replace(b"open-m", b"open-m2"))
    assert not dup and other[0].__struct_config__.tag == "rejected"  # market_exists


def test_both_bounds_evict_like_a_model_over_many_records() -> None:
    """Random records from a few clients with both bounds active, against a model: a list of
    every live (index, client, key) in log order, where the per-client bound drops the client's
    oldest and the global bound drops the oldest overall. Long enough that the fifo's stale
    entries (left by per-client evictions and re-recorded keys) are filtered many times."""
    rng = random.Random(5)
    per_client, total = 5, 12
    s = Sessions(outcomes_per_client_max=per_client, outcomes_max=total)
    model: list[tuple[int, str, str]] = []
    evictions = 0
    for index in range(1, 5_000):
        client = rng.choice("abcd")
        live = {(c, k) for _, c, k in model}
        keys = tuple(
            k
            for k in {f"k{rng.randrange(40)}" for _ in range(rng.randrange(1, 3))}
            if (client, k) not in live
        )
        keys = tuple(sorted(keys))
        if not keys:
            continue
        s.record(client, keys, Outcome(index, b"[]"))
        model.extend((index, client, k) for k in keys)
        mine = [e for e in model if e[1] == client]
        for e in mine[: max(0, len(mine) - per_client)]:
            model.remove(e)
            evictions += 1
        while len(model) > total:
            model.pop(0)
            evictions += 1
        assert len(s) == len(model) and s.evictions == evictions
        for i, c, k in model:
            out = s.lookup(c, (k,))
            assert out is not None and out.index == i
    assert len(s._fifo) <= 2 * len(s) + 64 + 2
