"""Checkers that watch the replicas from outside, and the model they are held to.

The model is the engine itself: the committed log replayed, in order, through a fresh
:class:`~grenex.engine.Engine` with the plain exactly-once rule written again here,
independently of ``grenex.replica.sessions`` (first occurrence of a ``(client, place id)`` or
``(client, req)`` key executes, later ones answer with its outcome; no eviction — the
simulator sizes the session tables so nothing is evicted, and checks that).

What is checked, and where:

* ``record_leader``: at most one leader per term.
* ``record_applied``: every applied entry equals the one any other replica applied at that
  index (log matching on the committed prefix), and its outcome (events, duplicate or not)
  equals the model's.
* ``record_hash``: replicas at the same applied index have the same state hash.
* ``check_history`` (end of run): every acknowledged command is in the committed log at the
  index *and term* it was acknowledged with, and its acknowledged events are the model's; no
  key executed twice.  "Acknowledged" is an APPLIED outcome of a node's gateway, whether the
  node proposed the command itself or forwarded it to the leader and matched the answer's
  ``(index, term)`` against its own apply (the simulator also checks, as each
  acknowledgement arrives, that the entry it carries is the client's command).  Commands
  whose outcome stayed unknown (or were refused) are not held to anything but exactly-once:
  they may or may not be in the log, at most once per key.
* deferred snapshots: their state hash at their index goes through ``record_hash`` like every
  other replica's.
"""

from __future__ import annotations

from typing import Any

from grenex.codec import decode_command
from grenex.consensus import EntryKind
from grenex.engine import Engine, is_name
from grenex.engine.events import Event

__all__ = ["Model", "SimFailure", "Watch"]


class SimFailure(AssertionError):  # noqa: N818 (a verdict, raised like an assertion)
    """A checker found a broken guarantee."""


def _keys(cmd: Any) -> list[tuple[str, str, str]]:
    if not isinstance(cmd, dict):
        return []
    client = cmd.get("client")
    if not is_name(client):
        return []
    out = []
    oid = cmd.get("id")
    if cmd.get("type") == "place" and is_name(oid):
        out.append(("id", client, oid))
    req = cmd.get("req")
    if is_name(req):
        out.append(("req", client, req))
    return out


class Model:
    """The committed log replayed through a fresh engine (see the module docstring)."""

    def __init__(self) -> None:
        self.engine = Engine()
        self.index = 0
        self._first: dict[tuple[str, str, str], int] = {}
        # index -> (events, duplicate) for NORMAL entries
        self.outcomes: dict[int, tuple[list[Event], bool]] = {}
        self.executions: dict[tuple[str, str, str], int] = {}

    def apply(self, index: int, kind: int, data: bytes) -> None:
        assert index == self.index + 1, (index, self.index)
        self.index = index
        if kind != EntryKind.NORMAL:
            return
        cmd = decode_command(data)
        keys = _keys(cmd)
        for k in keys:
            first = self._first.get(k)
            if first is not None:
                self.outcomes[index] = (self.outcomes[first][0], True)
                return
        events = self.engine.apply(cmd, index)
        self.outcomes[index] = (events, False)
        for k in keys:
            self._first[k] = index
            self.executions[k] = self.executions.get(k, 0) + 1


class Watch:
    """The outside observer: the global committed log, the model, leaders and hashes."""

    def __init__(self) -> None:
        self.log: dict[int, tuple[int, int, bytes]] = {}  # index -> (term, kind, data)
        self.model = Model()
        self.leaders: dict[int, str] = {}
        self.hashes: dict[int, tuple[str, str]] = {}  # index -> (hash, who)
        self.checked_hashes = 0

    def record_leader(self, term: int, node: str) -> None:
        other = self.leaders.setdefault(term, node)
        if other != node:
            raise SimFailure(f"two leaders in term {term}: {other} and {node}")

    def record_applied(
        self,
        node: str,
        index: int,
        term: int,
        kind: int,
        data: bytes,
        events: list[Event],
        duplicate: bool,
    ) -> None:
        got = (term, kind, data)
        known = self.log.setdefault(index, got)
        if known != got:
            raise SimFailure(
                f"{node} applied {index}: term {term} kind {kind} {data[:60]!r}, but another"
                f" replica applied term {known[0]} kind {known[1]} {known[2][:60]!r}"
            )
        model = self.model
        while model.index < index:
            i = model.index + 1
            e = self.log.get(i)
            if e is None:
                raise SimFailure(f"{node} applied {index} but no replica applied {i}")
            model.apply(i, e[1], e[2])
        if kind == EntryKind.NORMAL:
            want = model.outcomes[index]
            if (events, duplicate) != want:
                raise SimFailure(
                    f"{node} applied {index} {data[:80]!r} with outcome"
                    f" {_short(events)} duplicate={duplicate}; the model says"
                    f" {_short(want[0])} duplicate={want[1]}"
                )

    def record_hash(self, index: int, node: str, state_hash: str) -> None:
        self.checked_hashes += 1
        known = self.hashes.setdefault(index, (state_hash, node))
        if known[0] != state_hash:
            raise SimFailure(
                f"state hashes differ at index {index}: {known[1]} {known[0][:12]},"
                f" {node} {state_hash[:12]}"
            )

    def check_history(self, acked: list[tuple[str, bytes, int, int, list[Event]]]) -> None:
        """``acked``: (who, command, index, term, events) of every acknowledged command."""
        for who, data, index, term, events in acked:
            e = self.log.get(index)
            if e is None or e[0] != term or e[2] != data:
                raise SimFailure(
                    f"acknowledged command lost: {who} {data!r} at {index}/{term};"
                    f" the log holds {e!r}"
                )
            if self.model.outcomes[index][0] != events:
                raise SimFailure(
                    f"acknowledged result of {who} {data!r} at {index} was {_short(events)};"
                    f" the model says {_short(self.model.outcomes[index][0])}"
                )
        for k, n in sorted(self.model.executions.items()):
            if n > 1:
                raise SimFailure(f"{k} executed {n} times")


def _short(events: list[Event]) -> str:
    names = [type(e).__name__ for e in events]
    return "[" + ",".join(names[:8]) + (",..." if len(names) > 8 else "") + "]"
