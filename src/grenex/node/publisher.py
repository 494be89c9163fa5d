"""The events publisher (``grenex:<cluster>:events`` and ``…:events:<id>``).

Fed by the driver with every applied entry, in log order; publishes the entry's events only
when someone subscribes (encoding costs nothing otherwise).  The publisher endpoint itself
bounds every subscriber's queue and drops one that does not keep up (it may reconnect and
fill the gap with the ``events`` action).
"""

from __future__ import annotations

from grenex.codec import encode_event
from grenex.consensus import EntryKind
from grenex.node.io import Publisher
from grenex.replica import Applied

__all__ = ["EventsPublisher"]


class EventsPublisher:
    def __init__(self, pub: Publisher) -> None:
        self.pub = pub
        self.published = 0

    def record(self, applied: list[Applied]) -> None:
        pub = self.pub
        if pub.subscribers <= 0:
            return
        for a in applied:
            if a.kind != EntryKind.NORMAL or a.duplicate:
                continue
            for ev in a.events:
                pub.pub(encode_event(ev).decode())
                self.published += 1
