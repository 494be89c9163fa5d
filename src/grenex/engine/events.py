"""Events: what applying a command yields (SPEC §3).

Events are msgspec Structs tagged by ``type`` so that ``msgspec.json.encode`` writes them in
SPEC order with ``type`` first, and ``msgspec.to_builtins`` turns them into plain dicts.  They
are created on the hot path, so they are positional-friendly, untracked by the GC (they hold
only strings and ints) and carry canonical decimal strings, never ticks.
"""

from __future__ import annotations

from typing import TypeAlias

import msgspec

__all__ = [
    "Accepted",
    "Amended",
    "Cancelled",
    "Event",
    "Filled",
    "MarketAdded",
    "Rejected",
    "Resting",
    "Trade",
]


class MarketAdded(msgspec.Struct, tag="market_added", tag_field="type", gc=False):
    seq: int
    market: str
    tick: str
    lot: str


class Rejected(msgspec.Struct, tag="rejected", tag_field="type", gc=False, omit_defaults=True):
    """``client``/``id`` are present only when both are names; ``market`` only for add_market."""

    seq: int
    cmd: str | None
    reason: str
    client: str | None = None
    id: str | None = None
    market: str | None = None


class Accepted(msgspec.Struct, tag="accepted", tag_field="type", gc=False):
    seq: int
    client: str
    id: str
    market: str
    side: str
    price: str | None
    qty: str
    tif: str


class Amended(msgspec.Struct, tag="amended", tag_field="type", gc=False):
    seq: int
    client: str
    id: str
    market: str
    price: str
    qty: str


class Trade(msgspec.Struct, tag="trade", tag_field="type", gc=False):
    seq: int
    market: str
    price: str
    qty: str
    maker: str
    maker_client: str
    taker: str
    taker_client: str
    taker_side: str


class Filled(msgspec.Struct, tag="filled", tag_field="type", gc=False):
    seq: int
    client: str
    id: str
    market: str


class Resting(msgspec.Struct, tag="resting", tag_field="type", gc=False):
    seq: int
    client: str
    id: str
    market: str
    price: str
    remaining: str


class Cancelled(msgspec.Struct, tag="cancelled", tag_field="type", gc=False):
    seq: int
    client: str
    id: str
    market: str
    reason: str
    remaining: str


Event: TypeAlias = (
    MarketAdded | Rejected | Accepted | Amended | Trade | Filled | Resting | Cancelled
)
