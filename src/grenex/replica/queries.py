"""The client API's account reads (SPEC §7 ``markets``, ``orders``, ``order``): pure functions of
a replica's state at its applied index.

Every replica at the same index answers the same, since they read only replicated state: the
engine (open markets, resting orders, used ids) and the accounts' nonce windows (the outcomes
of an account's recent envelopes, SPEC §8).  Nothing here writes, and nothing walks more than
one account's orders.

What can be known, and what cannot
----------------------------------
The engine keeps resting orders (their remaining quantity, price, side) and every order id a
client ever used, but no history: when an order leaves the book it forgets it, so *filled* and
*cancelled* can no longer be told apart from the engine alone.  An account's nonce window keeps
the outcomes of its last ``limits.nonces`` envelopes (see :mod:`grenex.replica.auth`), so
an order that never rested (filled at once, IOC/FOK remainder cancelled, self-trade, rejected)
is reported as such while that outcome is kept.  Otherwise ``order`` answers:

* ``resting``: the order rests now (``remaining``, ``price``, ``side``, ``market``);
* ``filled`` / ``cancelled`` (with ``reason`` and the unfilled ``remaining``) / ``rejected``
  (with ``reason``): the order never rested, and its ``place`` outcome is still kept;
* ``used``: the id is used up (a ``place`` carried it) and the order does not rest, but whether
  it was filled, cancelled or rejected is no longer known here (an extension of SPEC §7: telling
  them apart needs a per-order history the replicated state does not keep yet);
* ``unknown``: the id was never used by that client.

In ``orders``, ``qty`` is the quantity the order was placed with while its ``place`` outcome is
kept, else ``null``; ``remaining`` is always exact.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final

import msgspec

from grenex.engine import Accepted, Cancelled, Event, Filled, Rejected, Resting, is_name
from grenex.replica.state import ReplicaState

__all__ = [
    "QUERY_ACTIONS",
    "QueryError",
    "account",
    "answer",
    "markets",
    "members",
    "order",
    "orders",
]

QUERY_ACTIONS: Final = ("account", "markets", "members", "orders", "order")

_outcome_dec: Final = msgspec.json.Decoder(list[list[Any]], float_hook=str)
_ENGINE_TYPES: Final = (
    "accepted",
    "amended",
    "cancelled",
    "filled",
    "market_added",
    "rejected",
    "resting",
    "trade",
)


class QueryError(ValueError):
    """A read request with bad arguments; sent as ``ERR_GRENEX_BAD_REQUEST: <why>``."""

    def __str__(self) -> str:
        return f"ERR_GRENEX_BAD_REQUEST: {self.args[0]}"


# ------------------------------------------------------------------------------ the reads


def markets(state: ReplicaState) -> dict[str, Any]:
    """``{"markets": [{"market", "tick", "lot"}...]}``, by market name (code point order)."""
    return {
        "markets": [
            {"market": m, "tick": tick, "lot": lot} for m, tick, lot in state.engine.market_steps()
        ]
    }


def account(state: ReplicaState, client: str | None, key: str | None) -> dict[str, Any]:
    """SPEC §7 ``account``: ``{"client", "key"}`` of the account named (or bound to ``key``),
    or ``{"state": "unknown"}``."""
    auth = state.auth
    if client is None and key is not None:
        client = auth.account_of_key(key)
    k = auth.account_key(client) if client is not None else None
    if client is None or k is None:
        return {"state": "unknown"}
    return {"client": client, "key": k}


def members(state: ReplicaState) -> dict[str, Any]:
    """SPEC §7 ``members``: the current members (voters and learners) by id, at the applied
    index: each with its key, certificate (base64url DER, or null) and role."""
    return {
        "index": state.index,
        "members": [
            {"id": m.id, "key": m.key, "cert": m.cert, "role": m.role} for m in state.auth.members()
        ],
    }


def orders(state: ReplicaState, client: str, market: str | None = None) -> dict[str, Any]:
    """``{"orders": [{"id", "market", "side", "price", "qty", "remaining"}...]}``: the client's
    resting orders (in one market, or all), by market, side (buy first), best price first,
    then id.  ``qty`` is the placed quantity while the place's outcome is kept, else null."""
    rows = [
        o for o in state.engine.client_orders(client) if market is None or o["market"] == market
    ]
    rows.sort(key=_priority)
    placed = _placed_map(state, client) if rows else {}
    return {
        "orders": [
            {
                "id": o["id"],
                "market": o["market"],
                "side": o["side"],
                "price": o["price"],
                "qty": _accepted_qty(placed.get(o["id"])),
                "remaining": o["remaining"],
            }
            for o in rows
        ]
    }


def order(state: ReplicaState, client: str, order_id: str) -> dict[str, Any]:
    """One order's state, as far as the replicated state can tell (see the module doc)."""
    resting = state.engine.resting_order(client, order_id)
    placed = _placed(state, client, order_id)
    if resting is not None:
        out: dict[str, Any] = {"state": "resting"}
        if placed is not None:
            out["seq"] = placed[0]
        out.update(
            market=resting["market"],
            side=resting["side"],
            price=resting["price"],
            qty=_accepted_qty(placed),
            remaining=resting["remaining"],
        )
        return out
    if not state.engine.id_used(client, order_id):
        return {"state": "unknown"}
    if placed is not None:
        seq, events = placed
        final = _final(events, client, order_id)
        if type(final) is Rejected:
            return {"state": "rejected", "seq": seq, "reason": final.reason}
        if type(final) is Filled:
            return {"state": "filled", "seq": seq, "market": final.market, "remaining": "0"}
        if type(final) is Cancelled:
            return {
                "state": "cancelled",
                "seq": seq,
                "market": final.market,
                "reason": final.reason,
                "remaining": final.remaining,
            }
        # it rested when placed and left the book later: filled or cancelled, not known here
    return {"state": "used"}


# ------------------------------------------------------------------------------ the request


def answer(state: ReplicaState, action: str, args: dict[str, Any]) -> dict[str, Any]:
    """The reply to a read request ``{"action": action, "args": [args]}``; :class:`QueryError`
    when its arguments are not as SPEC §7 says (unknown extra fields are ignored)."""
    if action == "markets":
        return markets(state)
    if action == "members":
        return members(state)
    if action == "account":
        key = args.get("key")
        if args.get("client") is None and type(key) is str and len(key) <= 64:
            return account(state, None, key)
        return account(state, _name(args, "client"), None)
    if action == "orders":
        return orders(state, _name(args, "client"), _name(args, "market", optional=True))
    if action == "order":
        return order(state, _name(args, "client"), _name(args, "id"))
    raise QueryError(f"unknown read {action[:40]!r}")


def _name(args: dict[str, Any], key: str, *, optional: bool = False) -> Any:
    v = args.get(key)
    if v is None:
        if optional:
            return None
        raise QueryError(f"{key} is needed (a name)")
    if not is_name(v):
        raise QueryError(f"{key} must be a name: 1-64 of A-Z a-z 0-9 . _ : -")
    return v


# ------------------------------------------------------------------------------ helpers


def _priority(o: dict[str, str]) -> tuple[str, int, Decimal, str]:
    price = Decimal(o["price"])
    if o["side"] == "buy":
        return o["market"], 0, -price, o["id"]
    return o["market"], 1, price, o["id"]


def _placed_map(state: ReplicaState, client: str) -> dict[str, tuple[int, list[Event]]]:
    """order id -> (seq, events) of the ``place`` commands whose outcomes the account's nonce
    window still keeps (at most ``limits.nonces`` outcomes, decoded once per call)."""
    out: dict[str, tuple[int, list[Event]]] = {}
    for k in state.auth.kept(client):
        if k.events is None:
            continue
        try:
            per_command = _outcome_dec.decode(k.events)
        except (msgspec.DecodeError, ValueError):
            continue
        for raw in per_command:
            events = _engine_events(raw)
            for e in events:
                if type(e) is Accepted and e.client == client:
                    out[e.id] = (k.seq, events)
                    break
                if type(e) is Rejected and e.cmd == "place" and e.client == client and e.id:
                    # a retry that reached the engine: not the order's fate
                    if e.reason != "duplicate_id":
                        out.setdefault(e.id, (k.seq, events))
                    break
    return out


def _engine_events(raw: list[Any]) -> list[Event]:
    """The engine's events in one command's outcome (§8 events such as ``registered`` skipped)."""
    out: list[Event] = []
    for d in raw:
        if type(d) is dict and d.get("type") in _ENGINE_TYPES:
            try:
                out.append(msgspec.convert(d, Event))
            except msgspec.ValidationError:
                continue
    return out


def _placed(state: ReplicaState, client: str, order_id: str) -> tuple[int, list[Event]] | None:
    """(seq, events) of the ``place`` that used the id, while the account's window keeps it."""
    return _placed_map(state, client).get(order_id)


def _accepted_qty(placed: tuple[int, list[Event]] | None) -> str | None:
    if placed is not None:
        for e in placed[1]:
            if type(e) is Accepted:
                return e.qty
    return None


def _final(events: list[Event], client: str, order_id: str) -> Event | None:
    """The taker's last word in its place's events: rejected, filled, resting or cancelled."""
    for e in reversed(events):
        if type(e) is Rejected:
            return e
        if isinstance(e, Filled | Resting | Cancelled) and (e.client, e.id) == (client, order_id):
            return e
    return None
