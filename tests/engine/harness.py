"""Shared test support: one harness over the real engine or the reference, and builders for
commands and events so that scenario tests read like the SPEC.

``Harness.send`` takes a command as a dict (sent as JSON text) or as raw JSON text/bytes,
decodes it with :func:`grenex.codec.decode_command` exactly as ``grenex replay`` would, applies it
with the next ``seq``, checks that every event carries that ``seq`` (and, on the real engine,
``check_invariants()``), and returns the events as dicts *without* ``seq``.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import msgspec

from grenex.codec import decode_command
from grenex.engine import Engine

from .reference import ReferenceEngine

__all__ = [
    "Harness",
    "RealSubject",
    "ReferenceSubject",
    "Subject",
    "accepted",
    "add_market",
    "amend",
    "amended",
    "cancel",
    "cancelled",
    "filled",
    "market_added",
    "place",
    "rejected",
    "resting",
    "trade",
]

Event = dict[str, Any]


class Subject(Protocol):
    """What a scenario needs from an engine."""

    def apply(self, command: Any, seq: int) -> list[Event]: ...

    def books(self) -> list[dict[str, Any]]: ...


class RealSubject:
    """``grenex.engine.Engine``, events as dicts, invariants checked after every command."""

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine if engine is not None else Engine()

    def apply(self, command: Any, seq: int) -> list[Event]:
        events = [msgspec.to_builtins(e) for e in self.engine.apply(command, seq)]
        self.engine.check_invariants()
        return events

    def books(self) -> list[dict[str, Any]]:
        return self.engine.books()


class ReferenceSubject:
    """The naive reference engine of ``reference.py``."""

    def __init__(self) -> None:
        self.engine = ReferenceEngine()

    def apply(self, command: Any, seq: int) -> list[Event]:
        return self.engine.apply(command, seq)

    def books(self) -> list[dict[str, Any]]:
        return self.engine.books()


class Harness:
    """Feeds commands to one subject with consecutive ``seq`` numbers (1, 2, …)."""

    def __init__(self, subject: Subject) -> None:
        self.subject = subject
        self.seq = 0

    def send_with_seq(self, command: dict[str, Any] | str | bytes) -> list[Event]:
        """Apply one command; the events exactly as the subject gives them."""
        if isinstance(command, dict):
            command = json.dumps(command)
        self.seq += 1
        return self.subject.apply(decode_command(command), self.seq)

    def send(self, command: dict[str, Any] | str | bytes) -> list[Event]:
        """Apply one command; its events without ``seq`` (checked to be this command's)."""
        events = self.send_with_seq(command)
        assert [e.get("seq") for e in events] == [self.seq] * len(events), events
        return [{k: v for k, v in e.items() if k != "seq"} for e in events]

    def ok(self, command: dict[str, Any] | str | bytes) -> list[Event]:
        """Apply a command that must not be rejected (scenario set-up)."""
        events = self.send(command)
        assert events and events[0]["type"] != "rejected", events
        return events

    def market(self, name: str = "M", tick: str = "1", lot: str = "1") -> None:
        assert self.send(add_market(name, tick, lot)) == [market_added(name, tick, lot)]

    def books(self) -> list[dict[str, Any]]:
        return self.subject.books()

    def book(self, market: str = "M") -> dict[str, list[tuple[str, str, str, str]]]:
        """One market's book, each order as ``(client, id, price, qty)``, in priority order."""
        for b in self.books():
            if b["market"] == market:
                return {
                    side: [(o["client"], o["id"], o["price"], o["qty"]) for o in b[side]]
                    for side in ("bids", "asks")
                }
        raise AssertionError(f"no book for {market!r}")


# ---------------------------------------------------------------------- command builders


def add_market(market: Any, tick: Any, lot: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "add_market", "market": market, "tick": tick, "lot": lot, **extra}


def place(
    client: Any,
    oid: Any,
    side: Any,
    qty: Any,
    price: Any = None,
    *,
    market: Any = "M",
    **extra: Any,
) -> dict[str, Any]:
    """A place command; ``price=None`` leaves it out (a market order)."""
    cmd: dict[str, Any] = {
        "type": "place",
        "client": client,
        "id": oid,
        "market": market,
        "side": side,
        "qty": qty,
    }
    if price is not None:
        cmd["price"] = price
    cmd.update(extra)
    return cmd


def cancel(client: Any, oid: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "cancel", "client": client, "id": oid, **extra}


def amend(client: Any, oid: Any, **fields: Any) -> dict[str, Any]:
    return {"type": "amend", "client": client, "id": oid, **fields}


# ---------------------------------------------------------------------- event builders
# Events as the tests expect them (without ``seq``), field names exactly as in SPEC §3.


def market_added(market: str, tick: str, lot: str) -> Event:
    return {"type": "market_added", "market": market, "tick": tick, "lot": lot}


def rejected(
    cmd: str | None,
    reason: str,
    client: str | None = None,
    oid: str | None = None,
    market: str | None = None,
) -> Event:
    ev: Event = {"type": "rejected", "cmd": cmd, "reason": reason}
    if client is not None:
        ev["client"] = client
    if oid is not None:
        ev["id"] = oid
    if market is not None:
        ev["market"] = market
    return ev


def accepted(
    client: str,
    oid: str,
    side: str,
    qty: str,
    price: str | None,
    *,
    tif: str = "GTC",
    market: str = "M",
) -> Event:
    return {
        "type": "accepted",
        "client": client,
        "id": oid,
        "market": market,
        "side": side,
        "price": price,
        "qty": qty,
        "tif": tif,
    }


def amended(client: str, oid: str, price: str, qty: str, market: str = "M") -> Event:
    return {
        "type": "amended",
        "client": client,
        "id": oid,
        "market": market,
        "price": price,
        "qty": qty,
    }


def trade(
    maker: tuple[str, str],
    taker: tuple[str, str],
    taker_side: str,
    price: str,
    qty: str,
    *,
    market: str = "M",
) -> Event:
    """``maker`` and ``taker`` are ``(client, id)``."""
    return {
        "type": "trade",
        "market": market,
        "price": price,
        "qty": qty,
        "maker": maker[1],
        "maker_client": maker[0],
        "taker": taker[1],
        "taker_client": taker[0],
        "taker_side": taker_side,
    }


def filled(client: str, oid: str, market: str = "M") -> Event:
    return {"type": "filled", "client": client, "id": oid, "market": market}


def resting(client: str, oid: str, price: str, remaining: str, market: str = "M") -> Event:
    return {
        "type": "resting",
        "client": client,
        "id": oid,
        "market": market,
        "price": price,
        "remaining": remaining,
    }


def cancelled(client: str, oid: str, reason: str, remaining: str, market: str = "M") -> Event:
    return {
        "type": "cancelled",
        "client": client,
        "id": oid,
        "market": market,
        "reason": reason,
        "remaining": remaining,
    }
