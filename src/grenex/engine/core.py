"""The matching engine (SPEC §1–4).

Theory of operation
-------------------
The engine is a pure function of its state and one command: ``apply(command, seq)`` checks the
command in SPEC order, changes the books, and returns the events.  It has no clock, no
randomness and no I/O, so every replica that applies the same log gets the same events.

Data layout, chosen for speed in CPython and for a small footprint per resting order:

* A market has two :class:`BookSide` objects.  Each keeps its price levels in a dict keyed by
  a *sort key* and a sorted list of those keys, best last, so that the best level is
  ``keys[-1]`` and removing it is ``keys.pop()``.  The key of a bid is its price in ticks and
  the key of an ask is minus its price, so one ascending order serves both sides, and "the
  taker crosses the maker" is always ``maker_key >= limit_key`` with ``limit_key`` equal to
  ``-price`` for a buy and ``price`` for a sell (or :data:`_MARKET_LIMIT_KEY` for a market
  order).
* A :class:`Level` is an intrusive doubly linked FIFO of :class:`Order` objects, so a cancel
  anywhere in the queue is O(1) and time priority is the list order.
* Every client has a :class:`ClientState` whose ``ids`` dict maps each order id the client ever
  placed to its resting :class:`Order`, or to ``None`` once it no longer rests.  The keys are
  the "used ids" behind ``duplicate_id`` (ids are used up forever, SPEC §2); the values are
  the id index of the books.  Ids that no longer rest are moved, in batches, into a compact
  :class:`~grenex.engine.usedids.UsedIdArchive`, so that the memory of a long stream grows by
  a few bytes per order rather than by a dict entry and a string.
* Prices and quantities are integers (ticks and lots).  Decimal text is parsed once per
  distinct value through small bounded caches and formatted canonically for events.

The snapshot (:meth:`Engine.snapshot`) is canonical: markets by name, each side in priority
order, used ids sorted; equal states give equal bytes, and :meth:`Engine.restore` rebuilds a
state that continues exactly like the original.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, insort
from collections.abc import Callable
from itertools import pairwise
from typing import Any, Final, TypeGuard

import msgspec

from grenex.engine.decimal import JsonNumber, format_units, parse_decimal
from grenex.engine.events import (
    Accepted,
    Amended,
    Cancelled,
    Event,
    Filled,
    MarketAdded,
    Rejected,
    Resting,
    Trade,
)
from grenex.engine.usedids import UsedIdArchive

__all__ = ["Engine", "SnapshotError", "is_name"]

_NAME_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")

# Steps (price/tick, qty/lot) must be below 2**63 (SPEC §1).
_STEPS_LIMIT: Final = 1 << 63
# Crosses every maker key: keys are within (-2**63, 2**63).
_MARKET_LIMIT_KEY: Final = -(1 << 64)

# Self-trade prevention modes.
STP_CANCEL_MAKER: Final = 0
STP_CANCEL_TAKER: Final = 1
STP_CANCEL_BOTH: Final = 2
_STP_CODES: Final[dict[str, int]] = {"cancel_maker": 0, "cancel_taker": 1, "cancel_both": 2}
_TIFS: Final[dict[str, str]] = {"GTC": "GTC", "IOC": "IOC", "FOK": "FOK"}

# Distinct decimal texts remembered per market; the cache is cleared when full.
_PARSE_CACHE_MAX: Final = 4096
# Distinct prices/quantities whose canonical text is remembered per market; cleared when full.
_TEXT_CACHE_MAX: Final = 4096
# Ids no longer resting, per client, before they are folded into the compact archive.
_RETIRED_IDS_BATCH: Final = 256

_SNAPSHOT_VERSION: Final = 1


class SnapshotError(ValueError):
    """A snapshot that is not one this engine wrote."""


def is_name(value: object) -> TypeGuard[str]:
    """SPEC §1 name: an exact ``str`` of 1–64 of ``A-Z a-z 0-9 . _ : -``."""
    if type(value) is not str:
        return False
    # fast path for the common all-alphanumeric name; the pattern decides the rest
    if value.isalnum() and value.isascii():
        return len(value) <= 64
    # names with . _ : - : a set check is about twice as fast as the pattern
    return 0 < len(value) <= 64 and _NAME_CHARS.issuperset(value)


class ClientState:
    """One client's order ids: resting orders, and ids used up but no longer resting."""

    __slots__ = ("archive", "ids", "name", "retired")

    def __init__(self, name: str) -> None:
        self.name = name
        # id -> resting Order, or None when the id is used but the order no longer rests.
        self.ids: dict[str, Order | None] = {}
        # how many values of ``ids`` are None (folded into ``archive`` in batches)
        self.retired = 0
        self.archive: UsedIdArchive | None = None

    def is_used(self, order_id: str) -> bool:
        if order_id in self.ids:
            return True
        archive = self.archive
        return archive is not None and order_id in archive

    def fold_retired(self) -> None:
        """Move ids that no longer rest from ``ids`` into the compact archive."""
        archive = self.archive
        if archive is None:
            archive = self.archive = UsedIdArchive()
        ids = self.ids
        gone = [k for k, v in ids.items() if v is None]
        archive.add_many(gone)
        for k in gone:
            del ids[k]
        self.retired = 0

    def used_ids(self) -> list[str]:
        out = list(self.ids)
        if self.archive is not None:
            out.extend(self.archive)
        out.sort()
        return out


class Order:
    """A resting order: a node of its level's FIFO."""

    __slots__ = ("client", "id", "level", "next", "post_only", "prev", "qty", "stp")

    def __init__(
        self, client: ClientState, order_id: str, qty: int, post_only: bool, stp: int
    ) -> None:
        self.client = client
        self.id = order_id
        self.qty = qty
        self.post_only = post_only
        self.stp = stp
        # set when the order rests; left pointing at its last level when it leaves
        self.level: Level
        self.prev: Order | None = None
        self.next: Order | None = None


class Level:
    """All resting orders at one price on one side, oldest first."""

    __slots__ = ("head", "key", "price", "pstr", "side", "tail")

    def __init__(self, side: BookSide, key: int, price: int, pstr: str) -> None:
        self.side = side
        self.key = key
        self.price = price
        self.pstr = pstr
        self.head: Order | None = None
        self.tail: Order | None = None


class BookSide:
    """One side of one market's book."""

    __slots__ = ("keys", "levels", "market", "name", "sign")

    def __init__(self, market: Market, name: str, sign: int) -> None:
        self.market = market
        self.name = name  # "buy" or "sell"
        self.sign = sign  # key = sign * price
        self.levels: dict[int, Level] = {}
        self.keys: list[int] = []  # ascending; best level last

    def remove_level(self, level: Level) -> None:
        key = level.key
        del self.levels[key]
        keys = self.keys
        if keys[-1] == key:
            keys.pop()
        else:
            del keys[bisect_left(keys, key)]


class Market:
    __slots__ = (
        "asks",
        "bids",
        "lot_text",
        "lot_units",
        "name",
        "pcache",
        "pfmt",
        "pscale",
        "ptexts",
        "qcache",
        "qfmt",
        "qscale",
        "qtexts",
        "tick_text",
        "tick_units",
    )

    def __init__(self, name: str, tick: tuple[int, int], lot: tuple[int, int]) -> None:
        self.name = name
        self.tick_units, self.pscale = tick
        self.lot_units, self.qscale = lot
        self.tick_text = format_units(self.tick_units, self.pscale)
        self.lot_text = format_units(self.lot_units, self.qscale)
        self.bids = BookSide(self, "buy", 1)
        self.asks = BookSide(self, "sell", -1)
        # decimal value -> steps (0 when not a whole multiple below the limit); bounded
        self.pcache: dict[object, int] = {}
        self.qcache: dict[object, int] = {}
        self.pfmt = _formatter(self.tick_units, self.pscale)
        self.qfmt = _formatter(self.lot_units, self.qscale)
        # lots -> canonical text; most quantities repeat, and formatting is the costly part
        self.qtexts: dict[int, str] = {}
        self.ptexts: dict[int, str] = {}

    def ptext(self, ticks: int) -> str:
        text = self.ptexts.get(ticks)
        if text is None:
            text = self.pfmt(ticks)
            if len(self.ptexts) >= _TEXT_CACHE_MAX:
                self.ptexts.clear()
            self.ptexts[ticks] = text
        return text

    def qtext(self, lots: int) -> str:
        text = self.qtexts.get(lots)
        if text is None:
            text = self.qfmt(lots)
            if len(self.qtexts) >= _TEXT_CACHE_MAX:
                self.qtexts.clear()
            self.qtexts[lots] = text
        return text


def _formatter(step_units: int, scale: int) -> Callable[[int], str]:
    if step_units == 1 and scale == 0:
        return str

    def fmt(steps: int) -> str:
        return format_units(steps * step_units, scale)

    return fmt


def _steps(value: object, step_units: int, scale: int) -> int:
    """Whole number of steps in a decimal, or 0 when it is not a valid price/quantity."""
    parsed = parse_decimal(value)
    if parsed is None:
        return 0
    units, s = parsed
    if s > scale:
        return 0
    units *= int(10 ** (scale - s))
    steps, rest = divmod(units, step_units)
    if rest or steps <= 0 or steps >= _STEPS_LIMIT:
        return 0
    return steps


def _parse_steps(cache: dict[object, int], value: object, step_units: int, scale: int) -> int:
    """Cached :func:`_steps`.  Only exact ``str``, ``JsonNumber`` and ``int`` are looked up:
    ``True == 1`` and unhashable values must never reach the cache."""
    t = type(value)
    if t is str or t is int or t is JsonNumber:
        steps: int | None = cache.get(value)
        if steps is None:
            steps = _steps(value, step_units, scale)
            if len(cache) >= _PARSE_CACHE_MAX:
                cache.clear()
            cache[value] = steps
        return steps
    return 0


class Engine:
    """A deterministic price-time priority matching engine for many markets."""

    def __init__(self) -> None:
        self._markets: dict[str, Market] = {}
        self._clients: dict[str, ClientState] = {}
        self._resting = 0

    # ------------------------------------------------------------------ commands

    def apply(self, command: Any, seq: int) -> list[Event]:
        """Apply one decoded command at log position ``seq`` and return its events."""
        if type(command) is dict:
            kind = command.get("type")
            # most frequent first; `==` on an exact str is cheaper than a dispatch table
            if type(kind) is str:
                if kind == "place":
                    return self._place(command, seq)
                if kind == "cancel":
                    return self._cancel(command, seq)
                if kind == "amend":
                    return self._amend(command, seq)
                if kind == "add_market":
                    return self._add_market(command, seq)
        return [Rejected(seq, None, "invalid_command")]

    def _add_market(self, cmd: dict[str, object], seq: int) -> list[Event]:
        name = cmd.get("market")
        if not is_name(name):
            return [Rejected(seq, "add_market", "invalid_market")]
        assert isinstance(name, str)
        if name in self._markets:
            return [Rejected(seq, "add_market", "market_exists", market=name)]
        tick = parse_decimal(cmd.get("tick"))
        lot = parse_decimal(cmd.get("lot"))
        if tick is None or lot is None or tick[0] == 0 or lot[0] == 0:
            return [Rejected(seq, "add_market", "invalid_market", market=name)]
        market = Market(name, tick, lot)
        self._markets[name] = market
        return [MarketAdded(seq, name, market.tick_text, market.lot_text)]

    def _client(self, name: str) -> ClientState:
        state = self._clients.get(name)
        if state is None:
            state = self._clients[name] = ClientState(name)
        return state

    def _place(self, cmd: dict[str, object], seq: int) -> list[Event]:
        client = cmd.get("client")
        oid = cmd.get("id")
        if not is_name(oid):
            return [Rejected(seq, "place", "invalid_command")]
        # Only names ever become clients, so a known client is a valid name; the exact type
        # check keeps a JsonNumber that equals a client's name from passing as that name.
        cs = self._clients.get(client) if type(client) is str else None
        if cs is None:
            if not is_name(client):
                return [Rejected(seq, "place", "invalid_command")]
            cs = self._clients[client] = ClientState(client)
        else:
            ids = cs.ids
            if oid in ids or (cs.archive is not None and oid in cs.archive):
                return [Rejected(seq, "place", "duplicate_id", cs.name, oid)]
            if cs.retired >= _RETIRED_IDS_BATCH and cs.retired * 2 >= len(ids):
                # folded only here, between commands of this client, never mid-match
                cs.fold_retired()
        name = cs.name
        # From here on the id is used up, whatever the outcome (SPEC §2 check 2).
        cs.ids[oid] = None
        cs.retired += 1

        mname = cmd.get("market")
        market = self._markets.get(mname) if type(mname) is str else None
        if market is None:
            return [Rejected(seq, "place", "unknown_market", name, oid)]
        side = cmd.get("side")
        if side == "buy":
            is_buy = True
            side_name = "buy"
        elif side == "sell":
            is_buy = False
            side_name = "sell"
        else:
            return [Rejected(seq, "place", "invalid_side", name, oid)]
        qty = _parse_steps(market.qcache, cmd.get("qty"), market.lot_units, market.qscale)
        if not qty:
            return [Rejected(seq, "place", "invalid_qty", name, oid)]
        pval = cmd.get("price")
        is_limit = pval is not None
        if is_limit:
            price = _parse_steps(market.pcache, pval, market.tick_units, market.pscale)
            if not price:
                return [Rejected(seq, "place", "invalid_price", name, oid)]
        else:
            price = 0
        if len(cmd) == (7 if is_limit else 6):
            # Only type, client, id, market, side, qty (and price) are present: tif, post_only
            # and stp are absent, so skip three dict lookups on the hottest path.
            tif = "GTC" if is_limit else "IOC"
            post_only = False
            stp = STP_CANCEL_MAKER
        else:
            tval = cmd.get("tif")
            if tval is None:
                tif = "GTC" if is_limit else "IOC"
            elif type(tval) is str and tval in _TIFS:
                tif = _TIFS[tval]
            else:
                return [Rejected(seq, "place", "invalid_tif", name, oid)]
            pov = cmd.get("post_only")
            if pov is None or pov is False:
                post_only = False
            elif pov is True and tif == "GTC":
                post_only = True
            else:  # not a JSON boolean, or post-only with IOC/FOK
                return [Rejected(seq, "place", "invalid_tif", name, oid)]
            if not is_limit and tif == "GTC":
                return [Rejected(seq, "place", "invalid_tif", name, oid)]
            sval = cmd.get("stp")
            if sval is None:
                stp = STP_CANCEL_MAKER
            elif type(sval) is str and sval in _STP_CODES:
                stp = _STP_CODES[sval]
            else:
                return [Rejected(seq, "place", "invalid_stp", name, oid)]

        if is_buy:
            opp = market.asks
            limit_key = -price if is_limit else _MARKET_LIMIT_KEY
        else:
            opp = market.bids
            limit_key = price if is_limit else _MARKET_LIMIT_KEY
        okeys = opp.keys
        crosses = len(okeys) > 0 and okeys[-1] >= limit_key
        if post_only and crosses:
            return [Rejected(seq, "place", "post_only_would_cross", name, oid)]
        if tif == "FOK" and not _fok_fillable(opp, limit_key, qty, cs, stp):
            return [Rejected(seq, "place", "fok_unfillable", name, oid)]

        mname = market.name
        pstr = market.ptext(price) if is_limit else None
        events: list[Event] = [
            Accepted(seq, name, oid, mname, side_name, pstr, market.qtext(qty), tif)
        ]
        if crosses:
            qty, stopped = self._match(events, seq, market, opp, limit_key, qty, cs, oid, stp)
            if stopped:
                events.append(Cancelled(seq, name, oid, mname, "self_trade", market.qtext(qty)))
                return events
            if not qty:
                events.append(Filled(seq, name, oid, mname))
                return events
        if tif == "GTC":
            assert pstr is not None
            order = Order(cs, oid, qty, post_only, stp)
            self._rest(order, market.bids if is_buy else market.asks, price, pstr)
            cs.ids[oid] = order
            cs.retired -= 1
            events.append(Resting(seq, name, oid, mname, pstr, market.qtext(qty)))
        else:
            events.append(Cancelled(seq, name, oid, mname, "unfilled", market.qtext(qty)))
        return events

    def _rest(self, order: Order, side: BookSide, price: int, pstr: str) -> None:
        """Put ``order`` at the back of its price level, creating the level if needed."""
        key = price * side.sign
        level = side.levels.get(key)
        if level is None:
            level = side.levels[key] = Level(side, key, price, pstr)
            keys = side.keys
            if not keys or key > keys[-1]:
                keys.append(key)
            else:
                insort(keys, key)
            level.head = order
            order.prev = None
        else:
            tail = level.tail
            assert tail is not None
            tail.next = order
            order.prev = tail
        order.next = None
        level.tail = order
        order.level = level
        self._resting += 1

    def _unlink(self, order: Order) -> None:
        """Take ``order`` out of its level (and the level out of the book when empty)."""
        level = order.level
        prev, nxt = order.prev, order.next
        if prev is None:
            level.head = nxt
        else:
            prev.next = nxt
        if nxt is None:
            level.tail = prev
        else:
            nxt.prev = prev
        if level.head is None:
            level.side.remove_level(level)
        order.prev = order.next = None
        self._resting -= 1

    def _retire(self, order: Order) -> None:
        """Forget a maker that left the book; its id stays used."""
        cs = order.client
        cs.ids[order.id] = None
        cs.retired += 1

    def _match(
        self,
        events: list[Event],
        seq: int,
        market: Market,
        opp: BookSide,
        limit_key: int,
        qty: int,
        cs: ClientState,
        oid: str,
        stp: int,
    ) -> tuple[int, bool]:
        """Fill a taker against ``opp`` while it crosses.

        Returns the taker's remaining quantity and whether self-trade prevention stopped it.
        """
        keys = opp.keys
        levels = opp.levels
        mname = market.name
        taker_client = cs.name
        taker_side = "sell" if opp.sign == 1 else "buy"
        while keys and keys[-1] >= limit_key:
            level = levels[keys[-1]]
            maker = level.head
            pstr = level.pstr
            while maker is not None:
                mcs = maker.client
                if mcs is cs:
                    if stp != STP_CANCEL_TAKER:  # cancel_maker / cancel_both drop the maker
                        nxt = maker.next
                        events.append(
                            Cancelled(
                                seq,
                                mcs.name,
                                maker.id,
                                mname,
                                "self_trade",
                                market.qtext(maker.qty),
                            )
                        )
                        self._unlink(maker)
                        self._retire(maker)
                        if stp == STP_CANCEL_BOTH:
                            return qty, True
                        maker = nxt
                        continue
                    return qty, True
                mqty = maker.qty
                if mqty > qty:
                    maker.qty = mqty - qty
                    events.append(
                        Trade(
                            seq,
                            mname,
                            pstr,
                            market.qtext(qty),
                            maker.id,
                            mcs.name,
                            oid,
                            taker_client,
                            taker_side,
                        )
                    )
                    return 0, False
                # the maker is filled: it leaves the head of the queue
                events.append(
                    Trade(
                        seq,
                        mname,
                        pstr,
                        market.qtext(mqty),
                        maker.id,
                        mcs.name,
                        oid,
                        taker_client,
                        taker_side,
                    )
                )
                events.append(Filled(seq, mcs.name, maker.id, mname))
                qty -= mqty
                nxt = maker.next
                mcs.ids[maker.id] = None
                mcs.retired += 1
                maker.next = None
                self._resting -= 1
                if nxt is None:
                    # the level is empty; it is the best one, hence the last key
                    del levels[keys.pop()]
                    if not qty:
                        return 0, False
                    break
                nxt.prev = None
                level.head = nxt
                if not qty:
                    return 0, False
                maker = nxt
        return qty, False

    def _resting_order(self, client: str, oid: str) -> Order | None:
        cs = self._clients.get(client)
        return cs.ids.get(oid) if cs is not None else None

    def _cancel(self, cmd: dict[str, object], seq: int) -> list[Event]:
        client = cmd.get("client")
        oid = cmd.get("id")
        if not is_name(client) or not is_name(oid):
            return [Rejected(seq, "cancel", "invalid_command")]
        order = self._resting_order(client, oid)
        if order is None:
            return [Rejected(seq, "cancel", "unknown_order", client, oid)]
        market = order.level.side.market
        remaining = market.qtext(order.qty)
        self._unlink(order)
        self._retire(order)
        return [Cancelled(seq, order.client.name, order.id, market.name, "user", remaining)]

    def _amend(self, cmd: dict[str, object], seq: int) -> list[Event]:
        client = cmd.get("client")
        oid = cmd.get("id")
        if not is_name(client) or not is_name(oid):
            return [Rejected(seq, "amend", "invalid_command")]
        order = self._resting_order(client, oid)
        if order is None:
            return [Rejected(seq, "amend", "unknown_order", client, oid)]
        qval = cmd.get("qty")
        pval = cmd.get("price")
        if qval is None and pval is None:
            return [Rejected(seq, "amend", "invalid_amend", client, oid)]
        level = order.level
        side = level.side
        market = side.market
        if qval is None:
            qty = order.qty
        else:
            qty = _parse_steps(market.qcache, qval, market.lot_units, market.qscale)
            if not qty:
                return [Rejected(seq, "amend", "invalid_qty", client, oid)]
        if pval is None:
            price = level.price
        else:
            price = _parse_steps(market.pcache, pval, market.tick_units, market.pscale)
            if not price:
                return [Rejected(seq, "amend", "invalid_price", client, oid)]
        name = order.client.name
        mname = market.name
        if price == level.price and qty <= order.qty:
            # In place: priority kept.
            order.qty = qty
            return [Amended(seq, name, oid, mname, level.pstr, market.qtext(qty))]

        # Re-entry: leaves the book, then comes back as a taker with fresh time priority,
        # its own post_only and stp (SPEC §2 Amend).
        if side.sign == 1:
            opp = market.asks
            limit_key = -price
        else:
            opp = market.bids
            limit_key = price
        okeys = opp.keys
        crosses = len(okeys) > 0 and okeys[-1] >= limit_key
        if crosses and order.post_only:
            return [Rejected(seq, "amend", "post_only_would_cross", client, oid)]
        pstr = level.pstr if price == level.price else market.ptext(price)
        self._unlink(order)
        events: list[Event] = [Amended(seq, name, oid, mname, pstr, market.qtext(qty))]
        if crosses:
            qty, stopped = self._match(
                events, seq, market, opp, limit_key, qty, order.client, oid, order.stp
            )
            if stopped:
                self._retire(order)
                events.append(Cancelled(seq, name, oid, mname, "self_trade", market.qtext(qty)))
                return events
            if not qty:
                self._retire(order)
                events.append(Filled(seq, name, oid, mname))
                return events
        order.qty = qty
        self._rest(order, side, price, pstr)
        events.append(Resting(seq, name, oid, mname, pstr, market.qtext(qty)))
        return events

    # ------------------------------------------------------------------ reads

    def markets(self) -> list[str]:
        """Open markets, by name (code point order)."""
        return sorted(self._markets)

    @property
    def resting_orders(self) -> int:
        return self._resting

    def market_count(self) -> int:
        """How many markets are open."""
        return len(self._markets)

    def client_counts(self, client: str) -> tuple[int, int]:
        """``(resting orders, used ids)`` of ``client``, in constant time."""
        cs = self._clients.get(client)
        if cs is None:
            return 0, 0
        archived = len(cs.archive) if cs.archive is not None else 0
        return len(cs.ids) - cs.retired, len(cs.ids) + archived

    def books(self, market: str | None = None, depth: int | None = None) -> list[dict[str, Any]]:
        """SPEC §4 snapshots of every open market (or one), markets by name; with ``depth``,
        at most that many orders per side (the work is bounded by it, not by the book)."""
        names = self.markets() if market is None else [market]
        out: list[dict[str, Any]] = []
        for name in names:
            m = self._markets.get(name)
            if m is None:
                continue
            out.append(
                {
                    "type": "book",
                    "market": name,
                    "bids": _side_view(m.bids, depth),
                    "asks": _side_view(m.asks, depth),
                }
            )
        return out

    def market_steps(self) -> list[tuple[str, str, str]]:
        """``(market, tick, lot)`` of every open market, by name; tick and lot canonical."""
        return [(n, self._markets[n].tick_text, self._markets[n].lot_text) for n in self.markets()]

    def client_orders(self, client: str) -> list[dict[str, str]]:
        """The resting orders of ``client`` (id, market, side, price, remaining), in no
        particular order; costs about the client's resting orders plus recently used ids."""
        cs = self._clients.get(client)
        if cs is None:
            return []
        return [_order_view(o) for o in cs.ids.values() if o is not None]

    def resting_order(self, client: str, order_id: str) -> dict[str, str] | None:
        """One resting order as :meth:`client_orders` shows it, or None when not resting."""
        o = self._resting_order(client, order_id)
        return None if o is None else _order_view(o)

    def id_used(self, client: str, order_id: str) -> bool:
        """Whether a ``place`` of ``client`` used ``order_id`` (ids are used up forever)."""
        cs = self._clients.get(client)
        return cs is not None and cs.is_used(order_id)

    # ------------------------------------------------------------------ invariants

    def check_invariants(self) -> None:
        """Assert the books are consistent: never crossed at rest, no empty levels, positive
        quantities, and the id index agrees with the levels."""
        seen = 0
        for m in self._markets.values():
            for side in (m.bids, m.asks):
                keys = side.keys
                assert all(a < b for a, b in pairwise(keys)), "keys unsorted"
                assert sorted(side.levels) == keys, "levels and keys disagree"
                for key in keys:
                    level = side.levels[key]
                    assert level.key == key and level.side is side
                    assert level.price * side.sign == key and level.price > 0
                    assert level.pstr == m.pfmt(level.price)
                    assert level.head is not None, "empty level"
                    prev = None
                    o: Order | None = level.head
                    while o is not None:
                        assert o.prev is prev, "broken back link"
                        assert o.level is level, "order points at another level"
                        assert 0 < o.qty < _STEPS_LIMIT, "bad quantity"
                        assert o.client.ids.get(o.id) is o, "id index disagrees"
                        assert o.stp in (0, 1, 2)
                        seen += 1
                        prev = o
                        o = o.next
                    assert level.tail is prev, "bad tail"
            if m.bids.keys and m.asks.keys:
                best_bid = m.bids.keys[-1]
                best_ask = -m.asks.keys[-1]
                assert best_bid < best_ask, "book crossed at rest"
        assert seen == self._resting, "resting count disagrees"
        indexed = 0
        for name, cs in self._clients.items():
            assert cs.name == name
            none = 0
            for v in cs.ids.values():
                if v is None:
                    none += 1
                else:
                    indexed += 1
            assert none == cs.retired, "retired count disagrees"
        assert indexed == self._resting, "id index has orders not in the books"

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        """Canonical bytes of the whole state: equal states give equal bytes."""
        markets = []
        for name in sorted(self._markets):
            m = self._markets[name]
            markets.append(
                [name, m.tick_text, m.lot_text, _side_state(m.bids), _side_state(m.asks)]
            )
        clients = [[name, self._clients[name].used_ids()] for name in sorted(self._clients)]
        return msgspec.json.encode([_SNAPSHOT_VERSION, markets, clients])

    def state_hash(self) -> str:
        return hashlib.sha256(self.snapshot()).hexdigest()

    @classmethod
    def restore(cls, blob: bytes) -> Engine:
        """An engine in the state that :meth:`snapshot` wrote."""
        try:
            return cls._restore(msgspec.json.decode(blob))
        except SnapshotError:
            raise
        except (msgspec.DecodeError, ValueError, TypeError, KeyError, AssertionError) as e:
            raise SnapshotError(f"not an engine snapshot: {e}") from None

    @classmethod
    def _restore(cls, state: Any) -> Engine:
        if not (isinstance(state, list) and len(state) == 3 and state[0] == _SNAPSHOT_VERSION):
            raise SnapshotError("not an engine snapshot (version)")
        eng = cls()
        _, markets, clients = state
        for name, ids in clients:
            if not is_name(name) or not isinstance(ids, list):
                raise SnapshotError("bad client")
            cs = eng._client(name)
            for oid in ids:
                if not is_name(oid) or oid in cs.ids:
                    raise SnapshotError("bad used id")
                cs.ids[oid] = None
                cs.retired += 1
        for name, tick, lot, bids, asks in markets:
            events = eng._add_market({"market": name, "tick": tick, "lot": lot}, 0)
            if not isinstance(events[0], MarketAdded):
                raise SnapshotError("bad market")
            m = eng._markets[name]
            for side, rows in ((m.bids, bids), (m.asks, asks)):
                for client, oid, price, qty, post_only, stp in rows:
                    cs = eng._clients[client]
                    if cs.ids.get(oid, 0) is not None:
                        raise SnapshotError("resting order with an unused or repeated id")
                    if not (
                        type(price) is int
                        and type(qty) is int
                        and 0 < price < _STEPS_LIMIT
                        and 0 < qty < _STEPS_LIMIT
                        and type(post_only) is bool
                        and stp in (0, 1, 2)
                    ):
                        raise SnapshotError("bad order")
                    keys = side.keys
                    key = price * side.sign
                    if keys and key > keys[0]:
                        raise SnapshotError("side out of priority order")
                    order = Order(cs, oid, qty, post_only, stp)
                    eng._rest(order, side, price, m.pfmt(price))
                    cs.ids[oid] = order
                    cs.retired -= 1
        for cs in eng._clients.values():
            if cs.retired >= _RETIRED_IDS_BATCH:
                cs.fold_retired()
        try:
            eng.check_invariants()
        except AssertionError as e:
            raise SnapshotError(f"inconsistent snapshot: {e}") from None
        return eng


def _fok_fillable(opp: BookSide, limit_key: int, qty: int, cs: ClientState, stp: int) -> bool:
    """Can a FOK taker fill completely now?  Walks the makers in priority order while the price
    crosses; the taker's own orders are skipped under cancel_maker and end the walk otherwise.
    """
    levels = opp.levels
    for key in reversed(opp.keys):
        if key < limit_key:
            return False
        o = levels[key].head
        while o is not None:
            if o.client is cs:
                if stp != STP_CANCEL_MAKER:
                    return False
            else:
                qty -= o.qty
                if qty <= 0:
                    return True
            o = o.next
    return False


def _side_view(side: BookSide, depth: int | None = None) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    qfmt = side.market.qfmt
    for key in reversed(side.keys):
        level = side.levels[key]
        o = level.head
        while o is not None:
            if depth is not None and len(out) >= depth:
                return out
            out.append(
                {"client": o.client.name, "id": o.id, "price": level.pstr, "qty": qfmt(o.qty)}
            )
            o = o.next
    return out


def _order_view(o: Order) -> dict[str, str]:
    level = o.level
    market = level.side.market
    return {
        "id": o.id,
        "market": market.name,
        "side": level.side.name,
        "price": level.pstr,
        "remaining": market.qfmt(o.qty),
    }


def _side_state(side: BookSide) -> list[list[Any]]:
    """Orders of a side in priority order, as they must be restored."""
    out: list[list[Any]] = []
    for key in reversed(side.keys):
        level = side.levels[key]
        o = level.head
        while o is not None:
            out.append([o.client.name, o.id, level.price, o.qty, o.post_only, o.stp])
            o = o.next
    return out
