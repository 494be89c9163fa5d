"""EXB-1, the engine workload of ``shared/BENCHMARKS.md``: a seeded, streaming generator.

One market ``EXB`` (tick 1, lot 1), accounts ``a0``…``a999``, prices around 10,000.

* **Setup**: ``add_market``, then passive GTC orders until 1,000 rest.
* **Measured phase**: each command draws ``u`` uniformly; ``u < 0.45`` a GTC place (a quarter
  of them marketable, 0–3 ticks through the opposite best), ``< 0.50`` an IOC place (always
  marketable), ``< 0.85`` a cancel of a uniformly chosen live order, ``< 0.95`` an amend that
  halves its quantity (``max(1, qty // 2)``, priority kept), else an amend to a new passive
  price (priority lost).  Feedback: with fewer than 800 live orders the command is a GTC place
  (drawn like any GTC, so a quarter of these are marketable too), with more than 1,200 it is a
  cancel.
* A **passive price** is ``1 + min(Exp(mean 8), 200)`` ticks (truncated) from the mid on the
  order's own side; the mid is ``(best bid + best ask) // 2``, ``best bid + 1`` with no asks,
  ``best ask - 1`` with no bids and 10,000 on an empty book.  A **size** is
  ``1 + U{0..5}·U{0..5}·U{0..5}`` lots.  Order ids are ``o1``, ``o2``, … in placing order.

Live orders are tracked from the events of a real :class:`grenex.engine.Engine` that applies
every command as it is generated (trades shrink makers, ``filled``/``cancelled`` remove them),
in the order in which they first rested (an amend to a new price keeps the order's place in
that list).  With these rules and the exact sequence of ``random.Random(seed)`` draws below,
``--seed 1 --commands 200000`` reproduces ``shared/bench/exb1.jsonl.gz`` byte for byte; other
seeds and sizes give fresh streams of the same mix.

Note: BENCHMARKS.md says the feedback "forces a passive GTC"; the canonical file (the
reference) forces a GTC drawn with the usual quarter-marketable rule, and so does this
generator.

Usage::

    .venv/bin/python benchmarks/exb1.py --seed 1 --commands 200000 --out /tmp/exb1.jsonl.gz

The output is written as it is generated (plain, or gzip when the name ends in ``.gz``), so ten
million lines need no more memory than the book.
"""

from __future__ import annotations

import argparse
import gzip
import random
import sys
import time
from bisect import bisect_left, insort
from collections.abc import Iterator
from typing import Any, Final, Protocol

import msgspec

from grenex.engine import Amended, Cancelled, Engine, Filled, Rejected, Resting, Trade

__all__ = [
    "CANONICAL_MEASURED",
    "CANONICAL_SEED",
    "MARKET",
    "Exb1Generator",
    "main",
    "write_stream",
]

MARKET: Final = "EXB"
ACCOUNTS: Final = 1000
START_MID: Final = 10_000
SETUP_RESTING: Final = 1000
LIVE_LOW: Final = 800
LIVE_HIGH: Final = 1200
# cumulative thresholds of the measured mix
_P_GTC: Final = 0.45
_P_IOC: Final = 0.50
_P_CANCEL: Final = 0.85
_P_AMEND_QTY: Final = 0.95
MARKETABLE_GTC: Final = 0.25
THROUGH_TICKS: Final = 4  # 0..3 ticks through the opposite best
DISTANCE_RATE: Final = 1 / 8  # Exp(mean 8)
DISTANCE_CAP: Final = 200
CANONICAL_SEED: Final = 1
CANONICAL_MEASURED: Final = 200_000

_SIDES: Final = ("buy", "sell")
_CLIENTS: Final = tuple(f"a{i}" for i in range(ACCOUNTS))
_PRICE_TEXT: Final[dict[int, str]] = {}


def _ptext(price: int) -> str:
    text = _PRICE_TEXT.get(price)
    if text is None:
        text = _PRICE_TEXT[price] = str(price)
    return text


class _Live:
    """A resting order as the generator sees it."""

    __slots__ = ("client", "id", "ordinal", "price", "qty", "side")

    def __init__(self, client: str, oid: str, side: str, *, price: int, qty: int, ordinal: int):
        self.client = client
        self.id = oid
        self.side = side
        self.price = price
        self.qty = qty
        self.ordinal = ordinal


class _Prices:
    """Prices with live orders on one side: a count per price and the sorted prices."""

    __slots__ = ("count", "sorted")

    def __init__(self) -> None:
        self.count: dict[int, int] = {}
        self.sorted: list[int] = []  # ascending

    def add(self, price: int) -> None:
        n = self.count.get(price, 0)
        self.count[price] = n + 1
        if not n:
            insort(self.sorted, price)

    def remove(self, price: int) -> None:
        n = self.count[price] - 1
        if n:
            self.count[price] = n
        else:
            del self.count[price]
            s = self.sorted
            del s[bisect_left(s, price)]


class Exb1Generator:
    """Generates EXB-1 commands (decoded JSON dicts) and applies each to its own engine.

    ``mix`` counts what was generated: ``gtc``, ``gtc_marketable``, ``ioc``, ``cancel``,
    ``amend_qty``, ``amend_price``, ``forced_gtc``, ``forced_cancel``, plus ``trades``
    (trade events) and ``setup`` (setup lines).
    """

    def __init__(self, seed: int = CANONICAL_SEED) -> None:
        self.rng = random.Random(seed)
        self.engine = Engine()
        self.seq = 0
        self.next_id = 0
        self.mix: dict[str, int] = dict.fromkeys(
            (
                "setup",
                "gtc",
                "gtc_marketable",
                "ioc",
                "cancel",
                "amend_qty",
                "amend_price",
                "forced_gtc",
                "forced_cancel",
                "trades",
                "rejected",
            ),
            0,
        )
        self._by_id: dict[str, _Live] = {}
        self._by_ordinal: dict[int, _Live] = {}
        self._ordinals: list[int] = []  # ascending: the live orders in the order they rested
        self._next_ordinal = 0
        self._bids = _Prices()
        self._asks = _Prices()

    # ------------------------------------------------------------------ state

    @property
    def live(self) -> int:
        return len(self._ordinals)

    def _mid(self) -> int:
        bids = self._bids.sorted
        asks = self._asks.sorted
        if bids and asks:
            return (bids[-1] + asks[0]) // 2
        if bids:
            return bids[-1] + 1
        if asks:
            return asks[0] - 1
        return START_MID

    def _passive(self, side: str) -> int:
        d = int(1 + min(self.rng.expovariate(DISTANCE_RATE), DISTANCE_CAP))
        return self._mid() - d if side == "buy" else self._mid() + d

    def _size(self) -> int:
        r = self.rng.randrange
        return 1 + r(6) * r(6) * r(6)

    def _add(self, client: str, oid: str, side: str, price: int, qty: int) -> None:
        ordinal = self._next_ordinal
        self._next_ordinal = ordinal + 1
        lv = _Live(client, oid, side, price=price, qty=qty, ordinal=ordinal)
        self._by_id[oid] = lv
        self._by_ordinal[ordinal] = lv
        self._ordinals.append(ordinal)
        (self._bids if side == "buy" else self._asks).add(price)

    def _remove(self, oid: str) -> None:
        lv = self._by_id.pop(oid, None)
        if lv is None:
            return
        del self._by_ordinal[lv.ordinal]
        ordinals = self._ordinals
        del ordinals[bisect_left(ordinals, lv.ordinal)]
        (self._bids if lv.side == "buy" else self._asks).remove(lv.price)

    def _apply(self, cmd: dict[str, Any], side: str) -> None:
        """Apply ``cmd`` to the engine and follow its events.  ``side`` is a place's side."""
        self.seq += 1
        events = self.engine.apply(cmd, self.seq)
        by_id = self._by_id
        for ev in events:
            t = type(ev)
            if t is Trade:
                assert isinstance(ev, Trade)
                self.mix["trades"] += 1
                maker = by_id.get(ev.maker)
                if maker is not None:
                    maker.qty -= int(ev.qty)
            elif t is Resting:
                assert isinstance(ev, Resting)
                lv = by_id.get(ev.id)
                price = int(ev.price)
                if lv is None:
                    self._add(ev.client, ev.id, side, price, int(ev.remaining))
                else:  # an amend that re-entered the book keeps its place in the list
                    prices = self._bids if lv.side == "buy" else self._asks
                    prices.remove(lv.price)
                    prices.add(price)
                    lv.price = price
                    lv.qty = int(ev.remaining)
            elif t is Filled or t is Cancelled:
                assert isinstance(ev, Filled | Cancelled)
                if ev.id in by_id:
                    self._remove(ev.id)
            elif t is Amended:
                assert isinstance(ev, Amended)
                if len(events) == 1:  # in place: only the quantity changed
                    by_id[ev.id].qty = int(ev.qty)
            elif t is Rejected:
                self.mix["rejected"] += 1

    # ------------------------------------------------------------------ commands

    def _place(self, tif: str, marketable: bool) -> dict[str, Any]:
        rng = self.rng
        side = rng.choice(_SIDES)
        client = _CLIENTS[rng.randrange(ACCOUNTS)]
        if marketable:
            through = rng.randrange(THROUGH_TICKS)
            if side == "buy":
                asks = self._asks.sorted
                price = (asks[0] if asks else self._mid()) + through
            else:
                bids = self._bids.sorted
                price = (bids[-1] if bids else self._mid()) - through
        else:
            price = self._passive(side)
        qty = self._size()
        self.next_id += 1
        cmd: dict[str, Any] = {
            "type": "place",
            "client": client,
            "id": f"o{self.next_id}",
            "market": MARKET,
            "side": side,
            "price": _ptext(price),
            "qty": str(qty),
        }
        if tif != "GTC":
            cmd["tif"] = tif
        self._apply(cmd, side)
        return cmd

    def _pick(self) -> _Live:
        ordinals = self._ordinals
        return self._by_ordinal[ordinals[self.rng.randrange(len(ordinals))]]

    def setup(self) -> Iterator[dict[str, Any]]:
        """``add_market``, then passive GTC places until 1,000 orders rest."""
        cmd: dict[str, Any] = {"type": "add_market", "market": MARKET, "tick": "1", "lot": "1"}
        self._apply(cmd, "")
        self.mix["setup"] += 1
        yield cmd
        rng = self.rng
        while self.live < SETUP_RESTING:
            side = rng.choice(_SIDES)
            client = _CLIENTS[rng.randrange(ACCOUNTS)]
            price = self._passive(side)
            qty = self._size()
            self.next_id += 1
            cmd = {
                "type": "place",
                "client": client,
                "id": f"o{self.next_id}",
                "market": MARKET,
                "side": side,
                "price": _ptext(price),
                "qty": str(qty),
            }
            self._apply(cmd, side)
            self.mix["setup"] += 1
            yield cmd

    def measured(self, n: int) -> Iterator[dict[str, Any]]:
        """``n`` commands of the measured mix."""
        rng = self.rng
        mix = self.mix
        for _ in range(n):
            u = rng.random()
            live = len(self._ordinals)
            if live < LIVE_LOW:
                mix["forced_gtc"] += 1
                u = 0.0
            elif live > LIVE_HIGH:
                mix["forced_cancel"] += 1
                u = _P_IOC  # a cancel
            if u < _P_GTC:
                marketable = rng.random() < MARKETABLE_GTC
                mix["gtc"] += 1
                mix["gtc_marketable"] += marketable
                yield self._place("GTC", marketable)
            elif u < _P_IOC:
                mix["ioc"] += 1
                yield self._place("IOC", True)
            elif u < _P_CANCEL:
                lv = self._pick()
                cmd: dict[str, Any] = {"type": "cancel", "client": lv.client, "id": lv.id}
                mix["cancel"] += 1
                self._apply(cmd, "")
                yield cmd
            elif u < _P_AMEND_QTY:
                lv = self._pick()
                cmd = {
                    "type": "amend",
                    "client": lv.client,
                    "id": lv.id,
                    "qty": str(max(1, lv.qty // 2)),
                }
                mix["amend_qty"] += 1
                self._apply(cmd, "")
                yield cmd
            else:
                lv = self._pick()
                cmd = {
                    "type": "amend",
                    "client": lv.client,
                    "id": lv.id,
                    "price": _ptext(self._passive(lv.side)),
                }
                mix["amend_price"] += 1
                self._apply(cmd, "")
                yield cmd

    def commands(self, measured: int) -> Iterator[dict[str, Any]]:
        """The whole stream: setup, then ``measured`` commands."""
        yield from self.setup()
        yield from self.measured(measured)


class Writer(Protocol):
    """Where :func:`write_stream` writes: a binary file, gzip file or stdout."""

    def write(self, data: bytes | bytearray, /) -> int: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def _open_out(path: str) -> Writer:
    if path == "-":
        return sys.stdout.buffer
    if path.endswith(".gz"):
        return gzip.open(path, "wb", compresslevel=6)
    return open(path, "wb")


def write_stream(out: Writer, seed: int, measured: int, progress: bool = False) -> Exb1Generator:
    """Write the EXB-1 stream as JSON lines to ``out`` as it is generated."""
    gen = Exb1Generator(seed)
    encode_into = msgspec.json.Encoder().encode_into
    buf = bytearray()
    write = out.write
    total = measured + SETUP_RESTING + 1
    step = max(total // 20, 1)
    t0 = time.monotonic()
    for i, cmd in enumerate(gen.commands(measured), 1):
        encode_into(cmd, buf, -1)
        buf += b"\n"
        if len(buf) >= 1 << 20:
            write(buf)
            buf.clear()
        if progress and i % step == 0:
            rate = i / max(time.monotonic() - t0, 1e-9)
            print(f"exb1: {i:,} lines ({rate:,.0f}/s)", file=sys.stderr, flush=True)
    write(buf)
    out.flush()
    return gen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--seed", type=int, default=CANONICAL_SEED)
    p.add_argument(
        "--commands",
        type=int,
        default=CANONICAL_MEASURED,
        help="measured commands after the setup (default 200000)",
    )
    p.add_argument("--out", default="-", help="output file (gzip if it ends in .gz; - stdout)")
    p.add_argument("--progress", action="store_true", help="report progress on stderr")
    args = p.parse_args(argv)
    out = _open_out(args.out)
    try:
        gen = write_stream(out, args.seed, args.commands, progress=args.progress)
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    mix = msgspec.json.encode(gen.mix).decode()
    print(f"exb1: seed {args.seed} lines {gen.seq} live {gen.live} mix {mix}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
