"""Exactly-once: the session table that answers a retried command with its first outcome.

Theory of operation
-------------------
A client retries a command it got no answer for (timeout, leader change, lost reply), so the
same command can be committed more than once.  Every replica applies the log in the same
order and keeps the same table, so every replica decides the same way which copy *executes*
(the first) and which are *duplicates* (answered from the table, the engine never sees them).

Keys, per client (a SPEC name):

* ``place`` with a name ``id``: key ``"i:" + id`` — a retried place returns the original
  ``accepted``/``trade``/... events, never ``duplicate_id``;
* any command with a name ``req`` (SPEC §6): key ``"r:" + req``; ``add_market`` has no
  client, so its ``req`` is kept under the pseudo-client ``""`` (no client can be named so).

A command with both keys is recorded under both and matches on either.  Commands without a key
(a ``cancel``/``amend``/``add_market`` without ``req``, garbage) always execute: SPEC says a
repeated cancel or amend carries absolute values (a repeated add_market is ``market_exists``).

An outcome is stored compactly, as its events' canonical JSON (a few hundred bytes), and
decoded again only when a duplicate needs it.

Bounds, both in *log order* (so every replica evicts the same outcomes at the same index):

* ``outcomes_per_client_max`` (default 4,096): a client's oldest outcome goes first;
* ``outcomes_max`` (default 131,072, about 40 MB): the cluster-wide oldest goes first.

So a retry is recognised as long as fewer than 4,096 later keyed commands of the same client
and 131,072 keyed commands in all were committed after the original: at 1,000 commands/s from
one client that is 4 s, at 10,000/s cluster-wide 13 s — clients retry well within that.  After
eviction a retried ``place`` reaches the engine, which rejects it as ``duplicate_id`` (ids are
used up forever: the last line of defence, never a second execution), and a retried ``req``
executes again (a cancel then says ``unknown_order``; an amend re-applies its absolute values).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any, NamedTuple

from grenex.engine import is_name

__all__ = ["Outcome", "Sessions", "session_keys"]


def _name(v: object) -> str | None:
    return v if is_name(v) else None


class Outcome(NamedTuple):
    """The first execution of a command: its log index and its events as canonical JSON."""

    index: int  # type: ignore[assignment]  # shadows tuple.index, on purpose
    events_json: bytes
    time: int | None = None  # the leader's stamp on the entry that executed it


def session_keys(cmd: Any) -> tuple[str, tuple[str, ...]] | None:
    """(client, keys) under which ``cmd``'s outcome is remembered, or None."""
    if type(cmd) is not dict:
        return None
    client = _name(cmd.get("client"))
    if client is None:
        # add_market has no client: its req is remembered for the cluster as a whole, under
        # "", which no client can be (a client is a name of at least one character)
        if cmd.get("type") != "add_market":
            return None
        req = _name(cmd.get("req"))
        return ("", ("r:" + req,)) if req is not None else None
    keys: list[str] = []
    if cmd.get("type") == "place":
        oid = _name(cmd.get("id"))
        if oid is not None:
            keys.append("i:" + oid)
    req = _name(cmd.get("req"))
    if req is not None:
        keys.append("r:" + req)
    if not keys:
        return None
    return client, tuple(keys)


class Sessions:
    """Per-client outcome tables; see the module docstring for keys and bounds."""

    __slots__ = (
        "_clients",
        "_count",
        "_fifo",
        "evictions",
        "outcomes_max",
        "outcomes_per_client_max",
    )

    def __init__(self, outcomes_per_client_max: int = 4096, outcomes_max: int = 131_072) -> None:
        assert outcomes_per_client_max >= 1 and outcomes_max >= 1
        self.outcomes_per_client_max = outcomes_per_client_max
        self.outcomes_max = outcomes_max
        # client -> (key -> outcome), keys oldest first (log order)
        self._clients: dict[str, OrderedDict[str, Outcome]] = {}
        # every recorded (index, client, key), oldest first; entries whose outcome is already
        # gone are skipped when met, and the deque is rebuilt when they pile up
        self._fifo: deque[tuple[int, str, str]] = deque()
        self._count = 0
        self.evictions = 0  # outcomes forgotten so far (observability; in snapshots too)

    def __len__(self) -> int:
        return self._count

    def lookup(self, client: str, keys: tuple[str, ...]) -> Outcome | None:
        table = self._clients.get(client)
        if table is None:
            return None
        for k in keys:
            out = table.get(k)
            if out is not None:
                return out
        return None

    def record(self, client: str, keys: tuple[str, ...], outcome: Outcome) -> None:
        table = self._clients.get(client)
        if table is None:
            table = self._clients[client] = OrderedDict()
        for k in keys:
            assert k not in table, (client, k)  # recorded only when first executed
            table[k] = outcome
            self._fifo.append((outcome.index, client, k))
            self._count += 1
        while len(table) > self.outcomes_per_client_max:
            table.popitem(last=False)
            self._count -= 1
            self.evictions += 1
        fifo = self._fifo
        while self._count > self.outcomes_max:
            index, c, k = fifo.popleft()
            t = self._clients.get(c)
            if t is not None and k in t and t[k].index == index:
                del t[k]
                if not t:
                    del self._clients[c]
                self._count -= 1
                self.evictions += 1
        if len(fifo) > 2 * self._count + 64:
            self._drop_stale()

    def _drop_stale(self) -> None:
        """Forget fifo entries whose outcome is gone (evicted per client, or recorded again
        later).  The fifo is in log order already, so this is a filter, not a sort."""
        clients = self._clients
        live = []
        for entry in self._fifo:
            t = clients.get(entry[1])
            if t is not None:
                o = t.get(entry[2])
                if o is not None and o.index == entry[0]:
                    live.append(entry)
        self._fifo = deque(live)

    def _rebuild_fifo(self) -> None:
        items = [
            (o.index, pos, c, k)
            for c, t in self._clients.items()
            for pos, (k, o) in enumerate(t.items())
        ]
        items.sort()
        self._fifo = deque((i, c, k) for i, _, c, k in items)

    # -- canonical form (for snapshots) -------------------------------------------------------

    def to_state(
        self,
    ) -> tuple[int, list[tuple[str, list[tuple[str, int, bytes, int | None]]]]]:
        """(evictions, [(client, [(key, index, events_json, time), ...]), ...]): clients by
        name, keys oldest first.  Eviction order follows from the indexes: canonical."""
        return self.evictions, [
            (c, [(k, o.index, o.events_json, o.time) for k, o in self._clients[c].items()])
            for c in sorted(self._clients)
        ]

    @classmethod
    def from_state(
        cls,
        evictions: int,
        clients: list[tuple[str, list[tuple[str, int, bytes, int | None]]]],
        outcomes_per_client_max: int,
        outcomes_max: int,
    ) -> Sessions:
        s = cls(outcomes_per_client_max, outcomes_max)
        s.evictions = evictions
        for c, items in clients:
            table: OrderedDict[str, Outcome] = OrderedDict()
            for k, index, events_json, time_ms in items:
                table[k] = Outcome(index, events_json, time_ms)
            if table:
                s._clients[c] = table
                s._count += len(table)
        s._rebuild_fifo()
        return s
