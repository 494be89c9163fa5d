"""Exactly-once: the session table that answers a retried command with its first outcome.

Theory of operation
-------------------
A client retries a command it got no answer for (timeout, leader change, lost reply), so the
same command can be committed more than once.  Every replica applies the log in the same
order and keeps the same table, so every replica decides the same way which copy *executes*
(the first) and which are *duplicates* (answered from the table, the engine never sees them).

Keys, per client (a SPEC name):

* ``place`` with a name ``id``: key ``("i", id)`` — a retried place returns the original
  ``accepted``/``trade``/... events, never ``duplicate_id``;
* any command with a name ``req`` (SPEC §6): key ``("r", req)``.

A command with both keys is recorded under both and matches on either.  Commands without a key
(a ``cancel``/``amend`` without ``req``, ``add_market``, garbage) always execute: SPEC says a
repeated cancel or amend carries absolute values.

Bounds (deterministic, so every replica evicts the same entries at the same index):

* at most ``outcomes_per_client_max`` keys per client; the oldest is evicted first;
* at most ``clients_max`` clients; the client least recently used (by log order) goes first.

After eviction a retry is no longer recognised here: a retried ``place`` then reaches the
engine, which rejects it as ``duplicate_id`` (ids are used up forever, the last line of
defence), and a retried ``cancel``/``amend`` executes again (for ``cancel`` harmless; for
``amend`` it re-applies the same absolute values).  Clients retry within seconds, long before
hundreds of their later commands could push an outcome out.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Final, NamedTuple

from grenex.engine.events import Event

__all__ = ["Outcome", "Sessions", "session_keys"]

_NAME: Final = re.compile(r"[A-Za-z0-9._:\-]{1,64}\Z")


def _name(v: object) -> str | None:
    return v if type(v) is str and _NAME.match(v) is not None else None


class Outcome(NamedTuple):
    """The first execution of a command: its log index and the events it produced."""

    index: int  # type: ignore[assignment]  # shadows tuple.index, on purpose
    events: list[Event]


def session_keys(cmd: Any) -> tuple[str, tuple[str, ...]] | None:
    """(client, keys) under which ``cmd``'s outcome is remembered, or None."""
    if type(cmd) is not dict:
        return None
    client = _name(cmd.get("client"))
    if client is None:
        return None
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

    __slots__ = ("_clients", "clients_max", "evictions", "outcomes_per_client_max")

    def __init__(self, outcomes_per_client_max: int = 64, clients_max: int = 1024) -> None:
        assert outcomes_per_client_max >= 1 and clients_max >= 1
        self.outcomes_per_client_max = outcomes_per_client_max
        self.clients_max = clients_max
        # client -> (key -> outcome), both in least-recently-used-first order
        self._clients: OrderedDict[str, OrderedDict[str, Outcome]] = OrderedDict()
        self.evictions = 0  # outcomes forgotten so far (observability; in snapshots too)

    def __len__(self) -> int:
        return sum(len(t) for t in self._clients.values())

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
        clients = self._clients
        table = clients.get(client)
        if table is None:
            table = OrderedDict()
            clients[client] = table
            if len(clients) > self.clients_max:
                _, gone = clients.popitem(last=False)
                self.evictions += len(gone)
        else:
            clients.move_to_end(client)
        for k in keys:
            table[k] = outcome
            table.move_to_end(k)
        while len(table) > self.outcomes_per_client_max:
            table.popitem(last=False)
            self.evictions += 1

    # -- canonical form (for snapshots) -------------------------------------------------------

    def to_state(self) -> list[Any]:
        """Plain values in eviction order: [evictions, [[client, [[key, index, events]...]]...]].

        The order *is* state: it decides what is evicted next, so it is kept, not sorted.
        """
        return [
            self.evictions,
            [
                [c, [[k, o.index, o.events] for k, o in table.items()]]
                for c, table in self._clients.items()
            ],
        ]

    @classmethod
    def from_state(
        cls,
        evictions: int,
        clients: list[tuple[str, list[tuple[str, int, list[Event]]]]],
        outcomes_per_client_max: int,
        clients_max: int,
    ) -> Sessions:
        s = cls(outcomes_per_client_max, clients_max)
        s.evictions = evictions
        for c, items in clients:
            table: OrderedDict[str, Outcome] = OrderedDict()
            shared: dict[int, Outcome] = {}
            for k, index, events in items:
                # keys of one command share one Outcome object (as when recorded)
                out = shared.get(index)
                if out is None:
                    out = shared[index] = Outcome(index, events)
                table[k] = out
            s._clients[c] = table
        return s
