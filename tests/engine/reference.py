"""A deliberately naive reference engine, written straight from SPEC §1–4.

It exists to be obviously right, not fast: numbers are :class:`fractions.Fraction` parsed from
text that first passed the SPEC's decimal grammar, every book is one plain list of resting
orders per market, and "priority order" is recomputed by sorting that list whenever it is
needed. Events are plain dicts shaped like ``msgspec.to_builtins`` of the real engine's events.

It accepts exactly what :func:`grenex.codec.decode_command` produces: dicts, lists, ``str``,
``int``, ``bool``, ``None``, :class:`grenex.engine.JsonNumber` (the literal text of a JSON
number that is not a plain integer) and :data:`grenex.codec.NOT_JSON`.

Readings of places where the SPEC is open (each also noted where it is used):

* A ``rejected`` ``add_market`` carries ``market`` only when it is a name (a non-name cannot
  be echoed as a name; ``cmd`` is the only field the SPEC makes nullable).
* ``client``/``id`` appear in ``rejected`` only for the commands that have them (``place``,
  ``cancel``, ``amend``), and then only when both are names. An unknown ``type`` carries
  neither, even if the object happens to hold ``client`` and ``id``.
* A rejected ``cancel``/``amend`` carries no ``market`` (§3: ``market`` for ``add_market``).
* An amend that re-enters the book does so as ``GTC``: only ``GTC`` orders ever rest, and the
  SPEC gives the re-entry "its own ``post_only`` and ``stp``" (and no other tif).
* An amend's ``amended`` event carries the order's price and quantity after the amend (the
  old price when ``price`` is absent, the remaining quantity when ``qty`` is absent).
* An amend with only ``price`` equal to the current one is an in-place amend to the same
  quantity: it emits ``amended`` and changes nothing.
* Time priority is the order in which orders (re-)entered the book, i.e. log order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from grenex.engine import JsonNumber

__all__ = [
    "ReferenceEngine",
    "canonical",
    "is_name",
    "parse_decimal",
]

_NAME = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_LIMIT = 2**63

_TIFS = ("GTC", "IOC", "FOK")
_STPS = ("cancel_maker", "cancel_taker", "cancel_both")
_SIDES = ("buy", "sell")


def is_name(value: object) -> bool:
    """SPEC §1: a JSON string (exactly ``str``, never a JSON number's text) of 1–64 allowed
    characters. ``fullmatch`` so that a trailing newline is not forgiven."""
    return type(value) is str and _NAME.fullmatch(value) is not None


def parse_decimal(value: object) -> Fraction | None:
    """SPEC §1: the exact value of a decimal, or None when ``value`` is not one.

    A JSON string or the literal text of a JSON number must match ``[0-9]+(\\.[0-9]+)?``; a
    JSON integer arrives as ``int`` and is a decimal when not negative. ``bool`` (an ``int``
    subclass in Python) is never a number.
    """
    if type(value) is int:
        return Fraction(value) if value >= 0 else None
    if type(value) is str or type(value) is JsonNumber:
        assert isinstance(value, str)
        if _DECIMAL.fullmatch(value) is None:
            return None
        whole, _, frac = value.partition(".")
        frac = frac.rstrip("0")
        # Built from integers; leading zeros dropped so long runs of them cost nothing.
        return Fraction(int((whole + frac).lstrip("0") or "0"), 10 ** len(frac))
    return None


def canonical(value: Fraction) -> str:
    """SPEC §1 output form: plain notation, no trailing fractional zeros, no trailing point."""
    assert value >= 0
    k = 0
    while (value * 10**k).denominator != 1:
        k += 1
    digits = str((value * 10**k).numerator).rjust(k + 1, "0")
    if k == 0:
        return digits
    return digits[:-k] + "." + digits[-k:]


def _steps(value: object, step: Fraction) -> int | None:
    """A valid price (step = tick) or quantity (step = lot) as a whole number of steps."""
    d = parse_decimal(value)
    if d is None or d <= 0:
        return None
    n = d / step
    if n.denominator != 1 or n >= _LIMIT:
        return None
    return n.numerator


@dataclass(eq=False)  # identity: list.remove must take this very order
class _Order:
    client: str
    id: str
    market: str
    side: str
    price: int  # ticks
    qty: int  # remaining lots
    post_only: bool
    stp: str
    time: int  # when it (re-)entered the book; smaller is older


@dataclass(eq=False)
class _Market:
    name: str
    tick: Fraction
    lot: Fraction
    orders: list[_Order]  # every resting order of this market, both sides, any order


def _crosses(side: str, limit: int | None, maker_price: int) -> bool:
    """SPEC §2 Matching: does a taker on ``side`` with ``limit`` (None: market) cross?"""
    if limit is None:
        return True
    return maker_price <= limit if side == "buy" else maker_price >= limit


class ReferenceEngine:
    """Same surface as :class:`grenex.engine.Engine` for the parts the tests compare."""

    def __init__(self) -> None:
        self._markets: dict[str, _Market] = {}
        self._used: set[tuple[str, str]] = set()
        self._clock = 0
        self._seq = 0

    # ------------------------------------------------------------------ reads

    def books(self) -> list[dict[str, Any]]:
        """SPEC §4: one snapshot per open market, markets by code point."""
        out: list[dict[str, Any]] = []
        for name in sorted(self._markets):
            m = self._markets[name]
            out.append(
                {
                    "type": "book",
                    "market": name,
                    "bids": [self._entry(m, o) for o in self._priority(m, "buy")],
                    "asks": [self._entry(m, o) for o in self._priority(m, "sell")],
                }
            )
        return out

    def used_ids(self) -> list[tuple[str, str]]:
        """Every ``(client, id)`` a ``place`` has used up, sorted."""
        return sorted(self._used)

    def canonical_state(self) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
        """Everything that determines future behaviour: the books and the used ids."""
        return self.books(), self.used_ids()

    @staticmethod
    def _entry(m: _Market, o: _Order) -> dict[str, Any]:
        return {
            "client": o.client,
            "id": o.id,
            "price": canonical(o.price * m.tick),
            "qty": canonical(o.qty * m.lot),
        }

    @staticmethod
    def _priority(m: _Market, side: str) -> list[_Order]:
        """One side of a book in priority order: best price first, then oldest first."""
        orders = [o for o in m.orders if o.side == side]
        if side == "buy":
            return sorted(orders, key=lambda o: (-o.price, o.time))
        return sorted(orders, key=lambda o: (o.price, o.time))

    def _find(self, client: str, oid: str) -> tuple[_Market, _Order] | None:
        for m in self._markets.values():
            for o in m.orders:
                if o.client == client and o.id == oid:
                    return m, o
        return None

    # ------------------------------------------------------------------ apply

    def apply(self, command: Any, seq: int) -> list[dict[str, Any]]:
        self._seq = seq
        if not isinstance(command, dict):
            return [self._rejected(None, "invalid_command")]
        kind = command.get("type")
        if kind == "add_market" and type(kind) is str:
            return self._add_market(command)
        if kind == "place" and type(kind) is str:
            return self._place(command)
        if kind == "cancel" and type(kind) is str:
            return self._cancel(command)
        if kind == "amend" and type(kind) is str:
            return self._amend(command)
        # Unknown or missing type (a JSON null counts as missing): no client/id echoed.
        return [self._rejected(None, "invalid_command")]

    def _rejected(
        self,
        cmd: str | None,
        reason: str,
        client: object = None,
        oid: object = None,
        market: object = None,
    ) -> dict[str, Any]:
        ev: dict[str, Any] = {"type": "rejected", "seq": self._seq, "cmd": cmd, "reason": reason}
        if is_name(client) and is_name(oid):
            ev["client"] = client
            ev["id"] = oid
        if cmd == "add_market" and is_name(market):
            ev["market"] = market
        return ev

    def _add_market(self, c: dict[str, Any]) -> list[dict[str, Any]]:
        name = c.get("market")
        if not is_name(name):
            return [self._rejected("add_market", "invalid_market")]
        assert isinstance(name, str)
        if name in self._markets:
            return [self._rejected("add_market", "market_exists", market=name)]
        tick = parse_decimal(c.get("tick"))
        lot = parse_decimal(c.get("lot"))
        if tick is None or lot is None or tick <= 0 or lot <= 0:
            return [self._rejected("add_market", "invalid_market", market=name)]
        self._markets[name] = _Market(name, tick, lot, [])
        return [
            {
                "type": "market_added",
                "seq": self._seq,
                "market": name,
                "tick": canonical(tick),
                "lot": canonical(lot),
            }
        ]

    def _place(self, c: dict[str, Any]) -> list[dict[str, Any]]:
        client, oid = c.get("client"), c.get("id")

        def reject(reason: str) -> list[dict[str, Any]]:
            return [self._rejected("place", reason, client, oid)]

        # 1.
        if not (is_name(client) and is_name(oid)):
            return reject("invalid_command")
        assert isinstance(client, str) and isinstance(oid, str)
        # 2. From here on the id is used up, whatever the outcome.
        if (client, oid) in self._used:
            return reject("duplicate_id")
        self._used.add((client, oid))
        # 3. An open market is named by a JSON string (never a JSON number's text).
        name = c.get("market")
        if not (type(name) is str and name in self._markets):
            return reject("unknown_market")
        m = self._markets[name]
        # 4.
        side = c.get("side")
        if not (type(side) is str and side in _SIDES):
            return reject("invalid_side")
        # 5.
        qty = _steps(c.get("qty"), m.lot)
        if qty is None:
            return reject("invalid_qty")
        # 6.
        raw_price = c.get("price")
        price: int | None = None
        if raw_price is not None:
            price = _steps(raw_price, m.tick)
            if price is None:
                return reject("invalid_price")
        # 7.
        raw_tif = c.get("tif")
        if raw_tif is None:
            tif = "IOC" if price is None else "GTC"
        elif type(raw_tif) is str and raw_tif in _TIFS:
            tif = raw_tif
        else:
            return reject("invalid_tif")
        raw_post_only = c.get("post_only")
        if raw_post_only is None:
            post_only = False
        elif type(raw_post_only) is bool:
            post_only = raw_post_only
        else:
            return reject("invalid_tif")
        if price is None and tif == "GTC":
            return reject("invalid_tif")
        if post_only and tif != "GTC":
            return reject("invalid_tif")
        # 8.
        raw_stp = c.get("stp")
        if raw_stp is None:
            stp = "cancel_maker"
        elif type(raw_stp) is str and raw_stp in _STPS:
            stp = raw_stp
        else:
            return reject("invalid_stp")
        # 9. Against the best opposite price, whoever owns it.
        opposite = self._priority(m, "sell" if side == "buy" else "buy")
        if post_only and opposite:
            assert price is not None
            if _crosses(side, price, opposite[0].price):
                return reject("post_only_would_cross")
        # 10. Walk as matching would; own orders are skipped (cancel_maker) or end the walk.
        if tif == "FOK":
            available = 0
            for maker in opposite:
                if not _crosses(side, price, maker.price):
                    break
                if maker.client == client:
                    if stp == "cancel_maker":
                        continue
                    break
                available += maker.qty
                if available >= qty:
                    break
            if available < qty:
                return reject("fok_unfillable")
        events: list[dict[str, Any]] = [
            {
                "type": "accepted",
                "seq": self._seq,
                "client": client,
                "id": oid,
                "market": m.name,
                "side": side,
                "price": None if price is None else canonical(price * m.tick),
                "qty": canonical(qty * m.lot),
                "tif": tif,
            }
        ]
        taker = _Order(client, oid, m.name, side, 0, qty, post_only, stp, -1)
        events += self._match(m, taker, price, tif)
        return events

    def _match(
        self, m: _Market, taker: _Order, limit: int | None, tif: str
    ) -> list[dict[str, Any]]:
        """SPEC §2 Matching, then the taker's one closing event (§3 order)."""
        events: list[dict[str, Any]] = []
        opposite_side = "sell" if taker.side == "buy" else "buy"
        while taker.qty > 0:
            opposite = self._priority(m, opposite_side)
            if not opposite or not _crosses(taker.side, limit, opposite[0].price):
                break
            maker = opposite[0]
            if maker.client == taker.client:
                if taker.stp in ("cancel_maker", "cancel_both"):
                    m.orders.remove(maker)
                    events.append(self._cancelled(m, maker, "self_trade"))
                if taker.stp in ("cancel_taker", "cancel_both"):
                    events.append(self._cancelled(m, taker, "self_trade"))
                    return events
                continue
            q = min(maker.qty, taker.qty)
            maker.qty -= q
            taker.qty -= q
            events.append(
                {
                    "type": "trade",
                    "seq": self._seq,
                    "market": m.name,
                    "price": canonical(maker.price * m.tick),
                    "qty": canonical(q * m.lot),
                    "maker": maker.id,
                    "maker_client": maker.client,
                    "taker": taker.id,
                    "taker_client": taker.client,
                    "taker_side": taker.side,
                }
            )
            if maker.qty == 0:
                m.orders.remove(maker)
                events.append(self._filled(m, maker))
        if taker.qty == 0:
            events.append(self._filled(m, taker))
        elif tif == "GTC":
            assert limit is not None
            self._clock += 1
            taker.price = limit
            taker.time = self._clock
            m.orders.append(taker)
            events.append(
                {
                    "type": "resting",
                    "seq": self._seq,
                    "client": taker.client,
                    "id": taker.id,
                    "market": m.name,
                    "price": canonical(limit * m.tick),
                    "remaining": canonical(taker.qty * m.lot),
                }
            )
        else:
            events.append(self._cancelled(m, taker, "unfilled"))
        return events

    def _filled(self, m: _Market, o: _Order) -> dict[str, Any]:
        return {
            "type": "filled",
            "seq": self._seq,
            "client": o.client,
            "id": o.id,
            "market": m.name,
        }

    def _cancelled(self, m: _Market, o: _Order, reason: str) -> dict[str, Any]:
        return {
            "type": "cancelled",
            "seq": self._seq,
            "client": o.client,
            "id": o.id,
            "market": m.name,
            "reason": reason,
            "remaining": canonical(o.qty * m.lot),
        }

    def _cancel(self, c: dict[str, Any]) -> list[dict[str, Any]]:
        client, oid = c.get("client"), c.get("id")
        if not (is_name(client) and is_name(oid)):
            return [self._rejected("cancel", "invalid_command", client, oid)]
        assert isinstance(client, str) and isinstance(oid, str)
        found = self._find(client, oid)
        if found is None:
            return [self._rejected("cancel", "unknown_order", client, oid)]
        m, o = found
        m.orders.remove(o)
        return [self._cancelled(m, o, "user")]

    def _amend(self, c: dict[str, Any]) -> list[dict[str, Any]]:
        client, oid = c.get("client"), c.get("id")

        def reject(reason: str) -> list[dict[str, Any]]:
            return [self._rejected("amend", reason, client, oid)]

        if not (is_name(client) and is_name(oid)):
            return reject("invalid_command")
        assert isinstance(client, str) and isinstance(oid, str)
        found = self._find(client, oid)
        if found is None:
            return reject("unknown_order")
        m, o = found
        raw_qty, raw_price = c.get("qty"), c.get("price")
        if raw_qty is None and raw_price is None:
            return reject("invalid_amend")
        qty = o.qty
        if raw_qty is not None:
            parsed_qty = _steps(raw_qty, m.lot)
            if parsed_qty is None:
                return reject("invalid_qty")
            qty = parsed_qty
        price = o.price
        if raw_price is not None:
            parsed_price = _steps(raw_price, m.tick)
            if parsed_price is None:
                return reject("invalid_price")
            price = parsed_price
        amended = {
            "type": "amended",
            "seq": self._seq,
            "client": client,
            "id": oid,
            "market": m.name,
            "price": canonical(price * m.tick),
            "qty": canonical(qty * m.lot),
        }
        if price == o.price and qty <= o.qty:
            o.qty = qty  # in place: time priority kept
            return [amended]
        opposite = self._priority(m, "sell" if o.side == "buy" else "buy")
        if o.post_only and opposite and _crosses(o.side, price, opposite[0].price):
            return reject("post_only_would_cross")  # and the order stays as it was
        m.orders.remove(o)
        o.qty = qty
        # Re-entry as GTC (the only tif that rests), fresh time priority when it rests.
        return [amended, *self._match(m, o, price, "GTC")]
