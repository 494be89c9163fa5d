"""The events publisher (``grenex:<cluster>:events`` and ``…:events:<id>``).

Fed by the driver with every applied entry, in log order.  One text frame per entry that has
events (SPEC §7): ``{"seq": N, "time": T, "events": [...]}``, built around the entry's events
JSON that was encoded once when it was applied (the reply and the session table share the same
bytes); nothing is built when nobody subscribes.  The publisher endpoint itself
bounds every subscriber's queue and drops one that does not keep up (it may reconnect and
fill the gap with the ``events`` action).
"""

from __future__ import annotations

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
            if a.kind != EntryKind.NORMAL or a.duplicate or not a.events:
                continue
            at = "" if a.time is None else f',"time":{a.time}'
            pub.pub(f'{{"seq":{a.index}{at},"events":{a.events_json.decode()}}}')
            self.published += 1
