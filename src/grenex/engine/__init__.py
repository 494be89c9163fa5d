"""The matching engine: a pure, deterministic function from (state, command) to events.

Public surface (SPEC §1–4)::

    eng = Engine()
    events = eng.apply(command, seq)   # command: a decoded JSON value (see grenex.codec)
    eng.books()                        # SPEC §4 snapshot dicts, markets by name
    blob = eng.snapshot()              # canonical bytes of the whole state
    eng2 = Engine.restore(blob)        # continues exactly like eng
    eng.state_hash()                   # sha256 hex of snapshot()
    eng.check_invariants()             # AssertionError when the books are broken
"""

from grenex.engine import native as _native

_native.load_core()  # the compiled build of .core, when a fresh one exists (see .native)

from grenex.engine.core import Engine, SnapshotError, is_name  # noqa: E402
from grenex.engine.decimal import JsonNumber  # noqa: E402
from grenex.engine.events import (  # noqa: E402
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

__all__ = [
    "Accepted",
    "Amended",
    "Cancelled",
    "Engine",
    "Event",
    "Filled",
    "JsonNumber",
    "MarketAdded",
    "Rejected",
    "Resting",
    "SnapshotError",
    "Trade",
    "is_name",
]
