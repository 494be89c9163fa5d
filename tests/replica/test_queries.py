"""The account reads (``markets``, ``orders``, ``order``) as pure functions of a replica state.

Proves: markets come by name with canonical tick and lot; ``orders`` lists exactly one
account's resting orders (filtered by market, in book priority), with the placed ``qty`` while
the place's outcome is kept and the exact ``remaining`` after partial fills and amends;
``order`` tells resting / filled / cancelled (IOC remainder, with reason and unfilled quantity)
/ rejected / used (left the book later, or its outcome left the account's nonce window) /
unknown (never used) apart as far as the state can; ``account`` by name or key follows a key
rotation; ``members`` lists the genesis voters; bad arguments are ``ERR_GRENEX_BAD_REQUEST``;
and a state restored from a snapshot answers exactly as the original (they are replicated
reads).  Commands are SPEC §8 envelopes; the accounts register first (indices 1..4).
"""

from __future__ import annotations

from typing import Any

import pytest

from grenex.codec.genesis import Limits
from grenex.replica import ReplicaState
from grenex.replica.queries import QueryError, account, answer, markets, members, order, orders

from .signed import GENESIS, KEYRING, OP, T0, Accounts, make_genesis, registered_state

CLIENTS = ["al", "bo", "mk", "tk"]


class Log:
    """A replica state fed signed commands in log order (index = position, from 1); the
    accounts of :data:`CLIENTS` registered at 1..4."""

    def __init__(self, accounts: Accounts | None = None) -> None:
        self.accounts = accounts if accounts is not None else Accounts()
        self.state = registered_state(self.accounts, CLIENTS)
        self.index = self.state.index

    def __call__(self, client: str = OP, **cmd: Any) -> list[Any]:
        self.index += 1
        o = self.state.apply_command(self.index, 1, self.accounts.cmd(client, **cmd), T0)
        return o.events


def place(log: Log, client: str, oid: str, market: str, side: str, qty: str, **kw: Any) -> None:
    log(client, type="place", id=oid, market=market, side=side, qty=qty, **kw)


@pytest.fixture
def log() -> Log:
    lg = Log()
    lg(type="add_market", market="ETH-USD", tick="0.010", lot="0.001")
    lg(type="add_market", market="BTC-USD", tick="0.5", lot="1")
    return lg


def test_markets_by_name_with_canonical_steps(log: Log) -> None:
    assert markets(log.state) == {
        "markets": [
            {"market": "BTC-USD", "tick": "0.5", "lot": "1"},
            {"market": "ETH-USD", "tick": "0.01", "lot": "0.001"},
        ]
    }
    assert markets(ReplicaState(GENESIS)) == {"markets": []}
    assert answer(log.state, "markets", {"ignored": 1}) == markets(log.state)


def test_orders_one_account_in_priority_with_exact_remaining(log: Log) -> None:
    place(log, "al", "b1", "BTC-USD", "buy", "3", price="100")
    place(log, "al", "b2", "BTC-USD", "buy", "2", price="100.5")
    place(log, "al", "s1", "BTC-USD", "sell", "4", price="120")
    place(log, "al", "e1", "ETH-USD", "sell", "0.5", price="10")
    place(log, "bo", "x1", "BTC-USD", "buy", "9", price="99")  # someone else's
    # bo sells 1 into al's best bid (b2 at 100.5): b2 keeps 1 of 2
    place(log, "bo", "x2", "BTC-USD", "sell", "1", price="100.5")
    log("al", type="amend", id="e1", qty="0.25")

    got = orders(log.state, "al")["orders"]
    assert [o["id"] for o in got] == ["b2", "b1", "s1", "e1"]  # BTC bids best first, asks, ETH
    b2 = got[0]
    assert b2 == {
        "id": "b2",
        "market": "BTC-USD",
        "side": "buy",
        "price": "100.5",
        "qty": "2",
        "remaining": "1",
    }
    assert got[3]["qty"] == "0.5" and got[3]["remaining"] == "0.25"
    assert [o["id"] for o in orders(log.state, "al", "ETH-USD")["orders"]] == ["e1"]
    assert orders(log.state, "al", "SOL-USD") == {"orders": []}
    assert orders(log.state, "nobody") == {"orders": []}
    assert [o["id"] for o in orders(log.state, "bo")["orders"]] == ["x1"]

    log("al", type="cancel", id="b1")
    assert [o["id"] for o in orders(log.state, "al")["orders"]] == ["b2", "s1", "e1"]
    assert answer(log.state, "orders", {"client": "al", "market": "BTC-USD"}) == orders(
        log.state, "al", "BTC-USD"
    )


def test_order_states(log: Log) -> None:
    place(log, "mk", "ask", "BTC-USD", "sell", "5", price="100")
    place(log, "tk", "all", "BTC-USD", "buy", "2", price="100")  # filled at once
    place(log, "tk", "ioc", "BTC-USD", "buy", "4", price="100", tif="IOC")  # 3 of 4
    place(log, "tk", "bad", "NOPE", "buy", "1", price="1")  # rejected, id used
    place(log, "tk", "rest", "BTC-USD", "buy", "1", price="99")

    assert order(log.state, "tk", "all") == {
        "state": "filled",
        "seq": 8,
        "market": "BTC-USD",
        "remaining": "0",
    }
    assert order(log.state, "tk", "ioc") == {
        "state": "cancelled",
        "seq": 9,
        "market": "BTC-USD",
        "reason": "unfilled",
        "remaining": "1",
    }
    assert order(log.state, "tk", "bad") == {
        "state": "rejected",
        "seq": 10,
        "reason": "unknown_market",
    }
    assert order(log.state, "tk", "rest") == {
        "state": "resting",
        "seq": 11,
        "market": "BTC-USD",
        "side": "buy",
        "price": "99",
        "qty": "1",
        "remaining": "1",
    }
    # the maker rested when placed and was then filled by others: filled or cancelled is not
    # known from the state, so it is "used", never a guess
    assert order(log.state, "mk", "ask") == {"state": "used"}
    assert order(log.state, "tk", "never") == {"state": "unknown"}
    assert order(log.state, "nobody", "x") == {"state": "unknown"}
    log("tk", type="cancel", id="rest")
    assert order(log.state, "tk", "rest") == {"state": "used"}


def test_evicted_outcomes_leave_what_the_engine_knows() -> None:
    """With a window of one nonce, each envelope evicts the account's previous outcome."""
    log = Log(Accounts(make_genesis(Limits(nonces=1))))
    log(type="add_market", market="M", tick="1", lot="1")
    place(log, "al", "o1", "M", "buy", "5", price="10")
    place(log, "al", "o2", "M", "buy", "1", price="1", tif="IOC")  # evicts o1's outcome
    assert orders(log.state, "al")["orders"] == [
        {"id": "o1", "market": "M", "side": "buy", "price": "10", "qty": None, "remaining": "5"}
    ]
    assert order(log.state, "al", "o1")["qty"] is None
    place(log, "al", "o3", "M", "buy", "1", price="1", tif="IOC")  # evicts o2's outcome
    assert order(log.state, "al", "o2") == {"state": "used"}
    # a new envelope placing o2 again (another nonce) is rejected duplicate_id and kept: that
    # is not o2's fate, so the answer stays "used"
    place(log, "al", "o2", "M", "buy", "1", price="1", tif="IOC")
    assert order(log.state, "al", "o2") == {"state": "used"}


def test_account_and_members() -> None:
    acc = Accounts()
    lg = Log(acc)
    al = KEYRING.key("al").public_key
    assert account(lg.state, "al", None) == {"client": "al", "key": al}
    assert account(lg.state, None, al) == {"client": "al", "key": al}
    assert account(lg.state, "zz", None) == {"state": "unknown"}
    assert account(lg.state, None, KEYRING.key("zz").public_key) == {"state": "unknown"}
    new = KEYRING.key("al-2")
    lg.index += 1
    lg.state.apply_command(lg.index, 1, acc.rotate("al", new), T0)
    assert account(lg.state, "al", None) == {"client": "al", "key": new.public_key}
    assert account(lg.state, None, al) == {"state": "unknown"}  # the old key is free
    assert answer(lg.state, "account", {"key": new.public_key}) == account(lg.state, "al", None)
    got = members(lg.state)
    assert got["index"] == lg.index
    assert [(m["id"], m["role"]) for m in got["members"]] == [
        ("a", "voter"),
        ("b", "voter"),
        ("c", "voter"),
    ]
    assert got["members"][0]["key"] == KEYRING.node_key("a").public_key


def test_a_restored_state_answers_the_same(log: Log) -> None:
    place(log, "al", "b1", "BTC-USD", "buy", "3", price="100")
    place(log, "al", "b2", "BTC-USD", "buy", "3", price="100")
    place(log, "al", "i1", "BTC-USD", "sell", "1", price="100", tif="IOC", stp="cancel_taker")
    copy = ReplicaState.restore(GENESIS, log.state.snapshot())
    for st in (log.state, copy):
        assert [o["id"] for o in orders(st, "al")["orders"]] == ["b1", "b2"]
    for oid in ("b1", "b2", "i1", "zz"):
        assert order(copy, "al", oid) == order(log.state, "al", oid)
    assert order(copy, "al", "i1")["reason"] == "self_trade"
    assert markets(copy) == markets(log.state)


@pytest.mark.parametrize(
    ("action", "args", "why"),
    [
        ("orders", {}, "client is needed"),
        ("orders", {"client": 7}, "client must be a name"),
        ("orders", {"client": "a", "market": "bad market"}, "market must be a name"),
        ("order", {"client": "a"}, "id is needed"),
        ("order", {"client": "a/b", "id": "x"}, "client must be a name"),
        ("nope", {}, "unknown read"),
    ],
)
def test_bad_arguments_are_bad_requests(action: str, args: dict[str, Any], why: str) -> None:
    with pytest.raises(QueryError) as e:
        answer(ReplicaState(GENESIS), action, args)
    assert str(e.value).startswith("ERR_GRENEX_BAD_REQUEST: ") and why in str(e.value)
