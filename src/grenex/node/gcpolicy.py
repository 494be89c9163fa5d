"""How a node process uses Python's cyclic garbage collector.

Why: a node's heap is mostly long-lived objects that never form reference cycles — log entries,
recent outcomes, resting orders, session records — and its cyclic garbage is a trickle (a few
dozen objects a second from asyncio and the HTTP stack). CPython's default collector keeps
re-scanning that whole heap: each full (generation 2) collection walked ~300,000 objects for
~250 ms, and under load collections took about half of every node's CPU time (measured with
``gc.callbacks`` on the EXB-1R benchmark; collections reclaimed ~600 objects in 25 s). Since
reference counting frees everything that is not in a cycle, the collector is only needed for
the trickle.

Policy (:class:`GcPolicy`):

* the youngest generation is collected every ``young_threshold`` net allocations (a few ms per
  collection: short-lived cycles are still found while they are young);
* every ``freeze_every_s`` the survivors are moved to the permanent generation with
  :func:`gc.freeze`, so no collection walks them again (objects there are still freed by
  reference counting the moment they are no longer used);
* the older generations are never collected automatically; instead, every ``full_every_s``
  everything is unfrozen and collected once (one pause proportional to the heap: 133 ms over
  the 230,000 objects left by 600,000 EXB-1R orders, measured on an idle core), which bounds
  what a cycle that became garbage after it was frozen can hold on to. Young cycles frozen
  before a young collection saw them wait for it too: at the ~20–60 cyclic objects a second
  measured under load, at most a few tens of thousands of objects.

Only the ``grenex node`` process applies it (it is process-wide state); a library user who runs
a :class:`~grenex.node.node.Node` in their own process keeps their own collector settings.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import dataclass

__all__ = ["GcPolicy"]

log = logging.getLogger("grenex.node.gc")

# the older generations' thresholds: large enough that they never trigger between freezes
_NEVER = 1_000_000


@dataclass(frozen=True, slots=True)
class GcPolicy:
    young_threshold: int = 20_000
    freeze_every_s: float = 1.0
    full_every_s: float = 600.0

    def __post_init__(self) -> None:
        if self.young_threshold < 100 or self.freeze_every_s <= 0:
            raise ValueError("young_threshold >= 100 and freeze_every_s > 0")
        if self.full_every_s < self.freeze_every_s:
            raise ValueError("full_every_s >= freeze_every_s")

    def install(self) -> None:
        """Collect what startup left, freeze the rest, and set the thresholds."""
        gc.collect()
        gc.freeze()
        gc.set_threshold(self.young_threshold, _NEVER, _NEVER)

    async def run(self) -> None:
        """Freeze survivors periodically and collect fully now and then; runs until cancelled."""
        loop = asyncio.get_running_loop()
        last_full = loop.time()
        while True:
            await asyncio.sleep(self.freeze_every_s)
            if loop.time() - last_full >= self.full_every_s:
                started = time.perf_counter()
                gc.unfreeze()
                found = gc.collect()
                gc.freeze()
                last_full = loop.time()
                log.info(
                    "full collection: %d unreachable objects, %.0f ms",
                    found,
                    (time.perf_counter() - started) * 1000,
                )
            else:
                gc.freeze()
