"""Exactly-once (SPEC §6, §8 check 5) in the replicated state machine: the nonce window.

What the removed session table protected, in terms of the per-account nonce window: envelopes
are applied to a :class:`ReplicaState` as committed log entries (index = the event seq).
Proves: a retried envelope (the same bytes) is answered with its first outcome — for a place,
an amend, an add_market — runs nothing and changes nothing but the applied index; a *new*
envelope placing a used id is the engine's ``duplicate_id`` (the last line of defence); the same
nonce with another TEXT is ``stale_nonce``; once 64 newer nonces were consumed a retry is
``stale_nonce`` before the log (precheck) and as a logged ``rejected`` event at apply, and
changes nothing; one account's traffic never evicts another's nonces; the window size is the
genesis' ``limits.nonces``; an account's outcome events beyond its byte bound are dropped
(``events`` null) while seq and time stay; the state (windows included) snapshots canonically
and restores equal.
"""

from __future__ import annotations

from typing import Any

import pytest

from grenex.codec.genesis import Limits
from grenex.engine import Rejected
from grenex.replica import ReplicaState
from grenex.replica.auth import Duplicate, Reject
from grenex.replica.state import Outcome, ReplicaSnapshotError

from .signed import GENESIS, OP, T0, Accounts, make_genesis, registered_state


class Log:
    """Registered accounts ``al`` and ``bo`` and market M; then envelopes at index+1."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.acc = Accounts(make_genesis(limits) if limits is not None else GENESIS)
        self.state = registered_state(self.acc, ["al", "bo"])
        self.apply(self.acc.add_market())

    def apply(self, env: bytes) -> Outcome:
        st = self.state
        return st.apply_command(st.index + 1, 1, env, T0 + st.index)

    def books(self) -> tuple[str, str]:
        return self.state.engine.state_hash(), self.state.auth.state_hash()


def kinds(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_a_retried_place_answers_its_first_outcome_and_runs_nothing() -> None:
    lg = Log()
    env = lg.acc.place("al", "o1", qty="3")
    first = lg.apply(env)
    assert kinds(first.events) == ["Accepted", "Resting"] and not first.duplicate
    before = lg.books()
    again = lg.apply(env)
    assert again.duplicate and again.events == [] and again.events_json == b"[]"
    assert (again.seq, again.time) == (first.seq, first.time)
    assert again.results_json == b"[" + first.events_json + b"]"
    assert lg.books() == before  # nothing ran, nothing was consumed
    _env, v = lg.state.precheck(env, T0)
    assert v == Duplicate(first.seq, first.time or 0, again.results_json)


def test_a_new_envelope_for_a_used_id_is_duplicate_id() -> None:
    lg = Log()
    lg.apply(lg.acc.place("al", "o1"))
    o = lg.apply(lg.acc.place("al", "o1", price="99"))  # another nonce: a new command
    assert not o.duplicate
    assert o.events == [Rejected(o.seq, "place", "duplicate_id", "al", "o1")]


def test_a_retried_amend_does_not_lose_priority_again() -> None:
    lg = Log()
    lg.apply(lg.acc.place("al", "a1", price="100"))
    lg.apply(lg.acc.place("bo", "b1", price="100"))
    amend = lg.acc.cmd("al", type="amend", id="a1", qty="2")  # more: re-enters behind b1
    lg.apply(amend)
    lg.apply(lg.acc.place("bo", "b2", price="100"))
    order = [o["id"] for o in lg.state.engine.books("M")[0]["bids"]]
    assert order == ["b1", "a1", "b2"]
    assert lg.apply(amend).duplicate
    assert [o["id"] for o in lg.state.engine.books("M")[0]["bids"]] == order


def test_a_retried_add_market_answers_its_first_outcome() -> None:
    lg = Log()
    env = lg.acc.add_market("N")
    first = lg.apply(env)
    assert kinds(first.events) == ["MarketAdded"]
    again = lg.apply(env)
    assert again.duplicate and again.seq == first.seq


def test_the_same_nonce_with_another_text_is_stale() -> None:
    lg = Log()
    lg.apply(lg.acc.cmd("al", type="cancel", id="x", nonce=50))
    other = lg.acc.cmd("al", type="cancel", id="y", nonce=50)
    _env, v = lg.state.precheck(other, T0)
    assert v == Reject("stale_nonce")
    o = lg.apply(other)
    assert o.events == [Rejected(o.seq, "cancel", "stale_nonce", "al", "y")]


def test_after_64_newer_nonces_a_retry_is_stale_and_changes_nothing() -> None:
    lg = Log()
    assert lg.state.genesis.limits.nonces == 64
    env = lg.acc.place("al", "o0")
    first = lg.apply(env)
    for i in range(1, 64):  # with the register's and o0's: 65 nonces, the window keeps 64
        lg.apply(lg.acc.place("al", f"o{i}", price=str(50 + i % 10)))
    assert lg.apply(env).duplicate  # o0 is still kept: the register's nonce went first
    lg.apply(lg.acc.place("al", "o64"))
    kept = [k.nonce for k in lg.state.auth.kept("al")]
    assert len(kept) == 64 and first.seq not in [k.seq for k in lg.state.auth.kept("al")]
    _env, v = lg.state.precheck(env, T0)
    assert v == Reject("stale_nonce")
    before = lg.books()
    o = lg.apply(env)
    assert not o.duplicate
    assert o.events == [Rejected(o.seq, "place", "stale_nonce", "al", "o0")]
    assert lg.books() == before


def test_no_accounts_traffic_evicts_another_accounts_nonces() -> None:
    lg = Log()
    env = lg.acc.place("al", "o1")
    first = lg.apply(env)
    for i in range(200):
        lg.apply(lg.acc.cmd("bo", type="cancel", id=f"x{i}"))
    again = lg.apply(env)
    assert again.duplicate and again.seq == first.seq
    assert len(lg.state.auth.kept("bo")) == 64 and len(lg.state.auth.kept("al")) == 2


def test_the_window_is_the_genesis_limit() -> None:
    lg = Log(Limits(nonces=3))
    env = lg.acc.place("al", "o1")
    lg.apply(env)
    for i in range(3):
        lg.apply(lg.acc.cmd("al", type="cancel", id=f"x{i}"))
    assert [type(e).__name__ for e in lg.apply(env).events] == ["Rejected"]
    assert lg.state.cluster_id != GENESIS.cluster_id  # another genesis, another cluster


def test_dropped_outcome_events_keep_seq_and_time() -> None:
    lg = Log()
    lg.state.auth.events_bytes_per_account_max = 600  # a few outcomes' worth
    env = lg.acc.place("al", "o1")
    first = lg.apply(env)
    for i in range(2, 12):
        lg.apply(lg.acc.place("al", f"o{i}"))
    again = lg.apply(env)
    assert again.duplicate and (again.seq, again.time) == (first.seq, first.time)
    assert again.results_json is None  # the reply says "events": null


def test_the_state_with_its_windows_snapshots_canonically() -> None:
    lg = Log()
    for i in range(70):
        lg.apply(lg.acc.place("al" if i % 3 else "bo", f"o{i}", price=str(90 + i % 20)))
    blob = lg.state.snapshot()
    back = ReplicaState.restore(GENESIS, blob)
    assert back.snapshot() == blob and back.state_hash() == lg.state.state_hash()
    env = lg.acc.place("al", "late")
    assert lg.apply(env).events == back.apply_command(back.index + 1, 1, env, T0 + 70).events
    with pytest.raises(ReplicaSnapshotError):
        ReplicaState.restore(GENESIS, b"\x93garbage")
    with pytest.raises(ReplicaSnapshotError):  # another cluster's state
        ReplicaState.restore(make_genesis(Limits(nonces=3)), blob)


def test_the_operator_needs_no_register() -> None:
    lg = Log()
    o = lg.apply(lg.acc.place(OP, "p1"))
    assert kinds(o.events) == ["Accepted", "Resting"]
