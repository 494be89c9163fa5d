"""A simulated network between named endpoints, in ticks.

Every packet gets a delivery tick ``now + delay`` (``delay`` drawn in ``[1, delay_max_ticks]``,
so packets overtake each other: reordering), may be lost (``loss``) or duplicated
(``duplication``, the copy with its own delay).  Links are directed ``(src, dst)`` pairs:

* *cut*: packets sent or due on the link are dropped (symmetric partitions cut both
  directions, one-way partitions one);
* *clogged*: packets due on the link wait; when the link is released they are delivered
  (possibly long after they were sent: stale messages are part of the test).

Delivery order at one tick is the order of (delivery tick, send sequence), so runs are
reproducible.  Payloads are opaque to the network: consensus messages travel encoded by
``grenex.codec.raft``, the gateway's forwards and their answers as ``grenex.codec.peer``
payloads, client requests and replies as tuples.  ``send(..., delay_extra_ticks=)`` makes one
packet slower than the link (a slow RPC answer).
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Network", "Packet"]


@dataclass(order=True, slots=True)
class Packet:
    due: int
    seq: int
    src: str = field(compare=False)
    dst: str = field(compare=False)
    payload: Any = field(compare=False)


class Network:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.now = 0
        self.loss = 0.0
        self.duplication = 0.0
        self.delay_max_ticks = 1
        self.cut: set[tuple[str, str]] = set()
        self.clogged: set[tuple[str, str]] = set()
        self._queue: list[Packet] = []
        self._held: list[Packet] = []  # due on a clogged link
        self._seq = 0
        self.sent = 0
        self.delivered = 0
        self.dropped = 0

    def send(self, src: str, dst: str, payload: Any, delay_extra_ticks: int = 0) -> None:
        """Queue ``payload``; ``delay_extra_ticks`` is added to its delay (a slow answer)."""
        self.sent += 1
        rng = self.rng
        if self.loss and rng.random() < self.loss:
            self.dropped += 1
            return
        copies = 2 if self.duplication and rng.random() < self.duplication else 1
        for _ in range(copies):
            self._seq += 1
            due = (
                self.now
                + 1
                + delay_extra_ticks
                + (rng.randrange(self.delay_max_ticks) if self.delay_max_ticks > 1 else 0)
            )
            heapq.heappush(self._queue, Packet(due, self._seq, src, dst, payload))

    def due(self) -> list[Packet]:
        """Packets to deliver at ``now`` (cut links dropped, clogged links held)."""
        out: list[Packet] = []
        q = self._queue
        while q and q[0].due <= self.now:
            p = heapq.heappop(q)
            link = (p.src, p.dst)
            if link in self.cut:
                self.dropped += 1
            elif link in self.clogged:
                self._held.append(p)
            else:
                out.append(p)
        self.delivered += len(out)
        return out

    def release(self, link: tuple[str, str]) -> None:
        """Unclog one link: its held packets become due now, in their original order."""
        self.clogged.discard(link)
        keep: list[Packet] = []
        for p in self._held:
            if (p.src, p.dst) == link:
                p.due = self.now
                heapq.heappush(self._queue, p)
            else:
                keep.append(p)
        self._held = keep

    def heal(self) -> None:
        self.cut.clear()
        for link in sorted(self.clogged):
            self.release(link)

    def in_flight(self) -> int:
        return len(self._queue) + len(self._held)
