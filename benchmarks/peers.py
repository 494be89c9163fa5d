"""Peer order books, driven by the same EXB-1 commands as grenex, for ratios in the same run.

Commands are first translated (not timed) into compact operations, :data:`Op` tuples
``(op, key, is_buy, price, qty)`` with integer ticks and lots and an integer key per placed
order, so that every peer pays only for its own work: building its order objects, matching,
and telling us its trades.  Each peer gets the subset of the commands it supports:

* ``GTC`` limit place, ``IOC`` limit place, cancel, amend of the quantity down (priority
  kept), amend to a new price (priority lost, may match).  EXB-1 uses nothing else, but no
  peer has self-trade prevention (grenex's default ``cancel_maker``), so a peer trades an
  order against one of the same account where grenex cancels the maker; their trade counts
  differ slightly from grenex's and :attr:`PeerBook.misses` counts commands about orders the
  peer no longer has.
* ``pyorderbook`` (pure Python): no IOC, so an IOC is matched and its remainder cancelled; no
  amend, so an amend of the quantity sets the resting order's ``quantity`` in place and an
  amend of the price is a cancel plus a new order.
* :class:`BareBook`: a dict-and-deque price-time book that only adds, cancels (lazily) and
  fills, the ceiling BENCHMARKS.md names; amends as for pyorderbook.
* ``orderly-chaos`` (C++ through ctypes, optional): IOC as limit plus cancel of the rest,
  amend of the quantity through ``reduce``, of the price as cancel plus limit.
* ``liquibook`` (C++ through SWIG, optional): IOC is native, amends are native ``replace``;
  its order listener (a Python director) accepts, fills, cancels and replaces the
  ``SimpleOrder`` objects, as the library requires.

The optional peers are used when importable (they are not project dependencies).
"""

from __future__ import annotations

import importlib
from bisect import insort
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Protocol

__all__ = [
    "AMEND_PRICE",
    "AMEND_QTY",
    "CANCEL",
    "GTC",
    "IOC",
    "BareBook",
    "Op",
    "PeerBook",
    "PyOrderBook",
    "available_peers",
    "translate",
]

GTC: Final = 0
IOC: Final = 1
CANCEL: Final = 2
AMEND_QTY: Final = 3
AMEND_PRICE: Final = 4

Op = tuple[int, int, bool, int, int]
"""``(op, key, is_buy, price, qty)``; ``price``/``qty`` are 0 where they do not apply."""

_NO_KEY: Final = -1


def _int(value: object) -> int | None:
    """A whole number of ticks/lots from a decimal (EXB-1 has tick 1 and lot 1)."""
    if type(value) is str and value.isdigit():
        return int(value)
    if type(value) is int:
        return value
    return None


def translate(
    commands: Iterable[Any], keys: dict[tuple[str, str], int] | None = None
) -> tuple[list[Op], int]:
    """The operations for ``commands`` and how many commands had no translation.

    Keys are assigned per ``place`` (ids are never reused, SPEC §2) and remembered in
    ``keys``: pass the same dict to translate a stream in pieces.  A cancel or amend of an
    ``(client, id)`` never placed gets key -1.  ``add_market`` is dropped silently (every peer
    has one book).
    """
    if keys is None:
        keys = {}
    ops: list[Op] = []
    skipped = 0
    for cmd in commands:
        kind = cmd.get("type") if type(cmd) is dict else None
        if kind == "add_market":
            continue
        if kind == "place":
            price = _int(cmd.get("price"))
            qty = _int(cmd.get("qty"))
            tif = cmd.get("tif") or "GTC"
            if (
                price is None
                or qty is None
                or tif not in ("GTC", "IOC")
                or cmd.get("post_only")
                or cmd.get("stp") not in (None, "cancel_maker")
                or cmd.get("side") not in ("buy", "sell")
            ):
                skipped += 1
                continue
            key = len(keys) + 1
            keys[(cmd["client"], cmd["id"])] = key
            ops.append((GTC if tif == "GTC" else IOC, key, cmd["side"] == "buy", price, qty))
        elif kind == "cancel":
            ops.append((CANCEL, keys.get((cmd.get("client"), cmd.get("id")), _NO_KEY), False, 0, 0))
        elif kind == "amend":
            key = keys.get((cmd.get("client"), cmd.get("id")), _NO_KEY)
            price = _int(cmd.get("price")) if cmd.get("price") is not None else 0
            qty = _int(cmd.get("qty")) if cmd.get("qty") is not None else 0
            if price is None or qty is None:
                skipped += 1
                continue
            ops.append((AMEND_PRICE if price else AMEND_QTY, key, False, price, qty))
        else:
            skipped += 1
    return ops, skipped


class PeerBook(Protocol):
    """What the benchmark needs from a peer."""

    name: str
    trades: int
    misses: int

    def play(self, ops: Sequence[Op]) -> None:
        """Apply ``ops`` in order."""

    def resting(self) -> int:
        """Orders resting now."""


# ---------------------------------------------------------------------------------- bare


class BareBook:
    """The ceiling: a dict-and-deque price-time book that only adds, cancels and fills.

    A side maps a sort key (price for bids, minus price for asks, so the best is always the
    largest) to a deque of ``[qty, key]`` entries, with the keys in a sorted list.  Cancel is
    lazy: it zeroes the entry, which matching drops when it reaches it.  No events, no
    validation, no self-trade prevention: it counts trades and nothing else.
    """

    name = "bare dict+deque"

    def __init__(self) -> None:
        self.trades = 0
        self.misses = 0
        self._levels: tuple[dict[int, deque[list[int]]], dict[int, deque[list[int]]]] = ({}, {})
        self._keys: tuple[list[int], list[int]] = ([], [])  # [bids, asks], ascending
        self._orders: dict[int, list[int]] = {}  # key -> [qty, key, side, price]

    def resting(self) -> int:
        return len(self._orders)

    def _place(self, key: int, is_buy: bool, price: int, qty: int, rest: bool) -> None:
        # own side 0 = bids (sort key price), 1 = asks (sort key -price)
        own, opp = (0, 1) if is_buy else (1, 0)
        opp_levels = self._levels[opp]
        opp_keys = self._keys[opp]
        orders = self._orders
        limit = -price if is_buy else price
        while qty and opp_keys and opp_keys[-1] >= limit:
            lkey = opp_keys[-1]
            queue = opp_levels[lkey]
            while queue:
                entry = queue[0]
                mqty = entry[0]
                if not mqty:  # cancelled
                    queue.popleft()
                    continue
                self.trades += 1
                if mqty > qty:
                    entry[0] = mqty - qty
                    qty = 0
                    break
                qty -= mqty
                entry[0] = 0
                queue.popleft()
                del orders[entry[1]]
                if not qty:
                    break
            if not queue:
                del opp_levels[lkey]
                opp_keys.pop()
        if qty and rest:
            lkey = price if is_buy else -price
            levels = self._levels[own]
            own_queue = levels.get(lkey)
            if own_queue is None:
                own_queue = levels[lkey] = deque()
                insort(self._keys[own], lkey)
            entry = [qty, key, own, price]
            own_queue.append(entry)
            orders[key] = entry

    def _cancel(self, key: int) -> list[int] | None:
        entry = self._orders.pop(key, None)
        if entry is None:
            self.misses += 1
            return None
        entry[0] = 0
        return entry

    def play(self, ops: Sequence[Op]) -> None:
        place = self._place
        orders = self._orders
        for op, key, is_buy, price, qty in ops:
            if op == GTC:
                place(key, is_buy, price, qty, True)
            elif op == CANCEL:
                self._cancel(key)
            elif op == AMEND_QTY:
                entry = orders.get(key)
                if entry is None:
                    self.misses += 1
                else:
                    entry[0] = qty
            elif op == IOC:
                place(key, is_buy, price, qty, False)
            else:
                entry = orders.get(key)
                if entry is None:
                    self.misses += 1
                else:
                    new_qty = qty or entry[0]
                    self._cancel(key)
                    place(key, entry[2] == 0, price, new_qty, True)

    def check(self) -> None:
        """Assert that the book is not crossed and the index agrees (for tests)."""
        live = 0
        for side in (0, 1):
            keys = self._keys[side]
            assert keys == sorted(self._levels[side])
            for q in self._levels[side].values():
                live += sum(1 for e in q if e[0])
        assert live == len(self._orders)


# ---------------------------------------------------------------------------------- pyorderbook


class PyOrderBook:
    """pyorderbook's ``Book`` (see the module docstring for the translation)."""

    name = "pyorderbook"

    def __init__(self) -> None:
        import pyorderbook

        self._mod = pyorderbook
        self._book = pyorderbook.Book()
        self._orders: dict[int, Any] = {}
        self.trades = 0
        self.misses = 0

    def resting(self) -> int:
        return len(self._book.order_map)

    def play(self, ops: Sequence[Op]) -> None:
        mod = self._mod
        order_cls = mod.Order
        bid, ask = mod.Side.BID, mod.Side.ASK
        book = self._book
        match = book.match
        cancel = book.cancel
        order_map = book.order_map
        orders = self._orders
        trades = self.trades
        misses = self.misses
        for op, key, is_buy, price, qty in ops:
            if op == GTC:
                o = order_cls(bid if is_buy else ask, "EXB", price, qty)
                orders[key] = o
                trades += len(match(o).trades)
            elif op == CANCEL:
                o = orders.get(key)
                if o is not None and o.id in order_map:
                    cancel(o)
                else:
                    misses += 1
            elif op == AMEND_QTY:
                o = orders.get(key)
                if o is not None and o.id in order_map:
                    o.quantity = qty
                else:
                    misses += 1
            elif op == IOC:
                o = order_cls(bid if is_buy else ask, "EXB", price, qty)
                trades += len(match(o).trades)
                if o.quantity:
                    cancel(o)
            else:
                old = orders.get(key)
                if old is not None and old.id in order_map:
                    cancel(old)
                    o = order_cls(old.side, "EXB", price, qty or old.quantity)
                    orders[key] = o
                    trades += len(match(o).trades)
                else:
                    misses += 1
        self.trades = trades
        self.misses = misses


# ---------------------------------------------------------------------------------- optional


class OrderlyChaosBook:
    """orderly-chaos's ``LimitOrderBook`` (C++ through ctypes), trades through ``on_trade``."""

    name = "orderly-chaos"

    def __init__(self) -> None:
        mod: Any = importlib.import_module("orderly_chaos")
        self._mod = mod
        self.trades = 0
        self.misses = 0
        self._book = mod.LimitOrderBook(on_trade=self._on_trade)

    def _on_trade(self, _trade: object) -> None:
        self.trades += 1

    def resting(self) -> int:
        return int(self._book.count())

    def play(self, ops: Sequence[Op]) -> None:
        mod = self._mod
        buy, sell = mod.Side.BUY, mod.Side.SELL
        unknown = mod.UnknownOrderIdError
        book = self._book
        limit = book.limit
        for op, key, is_buy, price, qty in ops:
            if op == GTC:
                limit(buy if is_buy else sell, key, qty, price)
            elif op == CANCEL:
                try:
                    book.cancel(key)
                except unknown:
                    self.misses += 1
            elif op == AMEND_QTY:
                try:
                    cur = book.get(key).quantity
                except unknown:
                    self.misses += 1
                    continue
                if qty < cur:
                    book.reduce(key, cur - qty)
            elif op == IOC:
                if limit(buy if is_buy else sell, key, qty, price) < qty:
                    book.cancel(key)
            else:
                try:
                    old = book.get(key)
                except unknown:
                    self.misses += 1
                    continue
                book.cancel(key)
                limit(old.side, key, qty or old.quantity, price)


class LiquibookBook:
    """liquibook's ``OrderBook`` of ``SimpleOrder`` (C++ through SWIG)."""

    name = "liquibook"

    def __init__(self) -> None:
        lb: Any = importlib.import_module("liquibook")
        self._lb = lb
        peer = self

        class Listener(lb.OrderListener):  # type: ignore[misc]
            """The director the library calls back; it keeps the orders' state."""

            def on_accept(self, order: Any) -> None:
                order.accept()

            def on_reject(self, order: Any, reason: str) -> None:
                peer.misses += 1
                peer.reasons["reject: " + str(reason)] += 1

            def on_fill(self, passive: Any, aggressive: Any, qty: int, cost: int) -> None:
                peer.trades += 1
                passive.fill(qty, cost, 0)
                aggressive.fill(qty, cost, 0)

            def on_cancel(self, order: Any) -> None:
                order.cancel()

            def on_cancel_reject(self, order: Any, reason: str) -> None:
                peer.misses += 1
                peer.reasons["cancel_reject: " + str(reason)] += 1

            def on_replace(self, order: Any, size_delta: int, new_price: int) -> None:
                order.replace(size_delta, new_price)

            def on_replace_reject(self, order: Any, reason: str) -> None:
                peer.misses += 1
                peer.reasons["replace_reject: " + str(reason)] += 1

        self.trades = 0
        self.misses = 0
        self.reasons: Counter[str] = Counter()
        self._listener = Listener()
        self._book = lb.liquibook_book_OrderBook()
        self._book.set_order_listener(self._listener)
        self._orders: dict[int, Any] = {}

    def resting(self) -> int:
        accepted = self._lb.os_accepted
        n = 0
        for o in self._orders.values():
            if o.open_qty() and o.state() == accepted:
                n += 1
        return n

    def play(self, ops: Sequence[Op]) -> None:
        lb = self._lb
        order_cls = lb.SimpleOrder
        ioc = lb.oc_immediate_or_cancel
        book = self._book
        add = book.add
        orders = self._orders
        for op, key, is_buy, price, qty in ops:
            if op == GTC:
                o = order_cls(is_buy, price, qty)
                orders[key] = o
                add(o)
            elif op == CANCEL:
                o = orders.get(key)
                if o is None:
                    self.misses += 1
                else:
                    book.cancel(o)
            elif op == AMEND_QTY:
                o = orders.get(key)
                if o is None:
                    self.misses += 1
                else:
                    delta = qty - o.open_qty()
                    if delta < 0:
                        book.replace(o, delta, 0)
            elif op == IOC:
                add(order_cls(is_buy, price, qty), ioc)
            else:
                o = orders.get(key)
                if o is None:
                    self.misses += 1
                else:
                    book.replace(o, (qty - o.open_qty()) if qty else 0, price)


_OPTIONAL: Final[tuple[tuple[str, Callable[[], PeerBook]], ...]] = (
    ("orderly_chaos", OrderlyChaosBook),
    ("liquibook", LiquibookBook),
)


def available_peers(optional: bool = True) -> list[Callable[[], PeerBook]]:
    """Factories of the peers importable here: pyorderbook (when installed), the bare book,
    then the optional C++ peers."""
    out: list[Callable[[], PeerBook]] = []
    try:
        importlib.import_module("pyorderbook")
    except ImportError:
        pass
    else:
        out.append(PyOrderBook)
    out.append(BareBook)
    if optional:
        for module, factory in _OPTIONAL:
            try:
                importlib.import_module(module)
            except ImportError:
                continue
            out.append(factory)
    return out
