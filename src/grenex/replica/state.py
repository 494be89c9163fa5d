"""The replicated state machine: the engine plus the session table, at a log position.

A committed NORMAL entry's data is one SPEC §2 command as JSON bytes (optionally with ``req``);
its events get ``seq`` = the entry's log index.  :meth:`ReplicaState.apply_command` is the only
way commands reach the engine, so every replica runs the same exactly-once decisions.

The snapshot is canonical MessagePack::

    [version, index, term, engine_snapshot_bytes, sessions_evictions,
     [[client, [[key, index, events_json_bytes], ...]], ...],   (clients by name)
     outcomes_per_client_max, outcomes_max]                      (version 2)

Equal states give equal bytes, so :meth:`ReplicaState.state_hash` (sha256 of them) lets two
replicas at the same index prove they are equal.  The session bounds are part of the state
machine's definition: every replica of a cluster must use the same values, so they are
recorded in the snapshot (version 2) and a restored state keeps the recorded bounds, whatever
the restoring node's configuration says (a version-1 snapshot takes the configured ones).
"""

from __future__ import annotations

import hashlib
from typing import Final

import msgspec

from grenex.codec import decode_command
from grenex.engine import Engine
from grenex.engine.events import Event
from grenex.replica.sessions import Outcome, Sessions, session_keys

__all__ = ["SNAPSHOT_VERSION", "ReplicaError", "ReplicaSnapshotError", "ReplicaState"]

SNAPSHOT_VERSION: Final = 2
_VERSIONS: Final = (1, 2)


class ReplicaError(Exception):
    """Root of the replica package's errors (operational failures; broken invariants are
    assertions)."""


class ReplicaSnapshotError(ReplicaError, ValueError):
    """Snapshot bytes that are not a valid replica snapshot."""


class _SessionItem(msgspec.Struct, array_like=True, gc=False):
    key: str
    index: int
    events: bytes  # canonical JSON of the event list
    time: int | None = None  # the entry's time stamp (version 2)


class _ClientItems(msgspec.Struct, array_like=True, gc=False):
    client: str
    items: list[_SessionItem]


class _Snap(msgspec.Struct, array_like=True, gc=False):
    v: int
    index: int
    term: int
    engine: bytes
    evictions: int
    sessions: list[_ClientItems]
    outcomes_per_client_max: int = 0  # version 2
    outcomes_max: int = 0  # version 2


_enc: Final = msgspec.msgpack.Encoder()
_dec: Final = msgspec.msgpack.Decoder(_Snap)
_json_enc: Final = msgspec.json.Encoder()
_events_dec: Final = msgspec.json.Decoder(list[Event])


class ReplicaState:
    """Engine + sessions + the position of the last applied entry."""

    __slots__ = ("engine", "index", "sessions", "term")

    def __init__(
        self,
        engine: Engine | None = None,
        sessions: Sessions | None = None,
        index: int = 0,
        term: int = 0,
    ) -> None:
        self.engine = engine if engine is not None else Engine()
        self.sessions = sessions if sessions is not None else Sessions()
        self.index = index
        self.term = term

    def apply_command(
        self, index: int, term: int, data: bytes, time_ms: int | None = None
    ) -> tuple[list[Event], bool, bytes, int | None]:
        """Apply one committed command; returns (events, duplicate, events as JSON, time).

        ``duplicate`` means a retry answered from the session table with the *original*
        outcome: its events (their ``seq`` is the original index) and the time stamp of the
        entry that executed it; the engine did not run.  Otherwise the time is ``time_ms``.
        The JSON is encoded once here and shared (sessions, reply, events stream).
        """
        assert index > self.index, (index, self.index)
        self.index = index
        self.term = term
        cmd = decode_command(data)
        sk = session_keys(cmd)
        if sk is not None:
            out = self.sessions.lookup(sk[0], sk[1])
            if out is not None:
                return _events_dec.decode(out.events_json), True, out.events_json, out.time
        events = self.engine.apply(cmd, index)
        events_json = _json_enc.encode(events)
        if sk is not None:
            self.sessions.record(sk[0], sk[1], Outcome(index, events_json, time_ms))
        return events, False, events_json, time_ms

    def skip(self, index: int, term: int) -> None:
        """An entry that is not a command (no-op, membership change) was applied."""
        assert index > self.index, (index, self.index)
        self.index = index
        self.term = term

    # -- snapshots ----------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        state = self.sessions.to_state()
        sessions = [
            _ClientItems(c, [_SessionItem(k, i, evs, t) for k, i, evs, t in items])
            for c, items in state[1]
        ]
        ss = self.sessions
        return _enc.encode(
            _Snap(
                SNAPSHOT_VERSION,
                self.index,
                self.term,
                self.engine.snapshot(),
                state[0],
                sessions,
                ss.outcomes_per_client_max,
                ss.outcomes_max,
            )
        )

    def state_hash(self) -> str:
        return hashlib.sha256(self.snapshot()).hexdigest()

    @classmethod
    def restore(
        cls, blob: bytes, outcomes_per_client_max: int = 4096, outcomes_max: int = 131_072
    ) -> ReplicaState:
        """The state a :meth:`snapshot` wrote (``b""``: the empty state at index 0)."""
        if not blob:
            return cls(Engine(), Sessions(outcomes_per_client_max, outcomes_max))
        try:
            s = _dec.decode(blob)
            if s.v not in _VERSIONS:
                raise ReplicaSnapshotError(f"unsupported replica snapshot version {s.v}")
            if s.v >= 2:
                if s.outcomes_per_client_max < 1 or s.outcomes_max < 1:
                    raise ReplicaSnapshotError("session bounds must be positive")
                outcomes_per_client_max = s.outcomes_per_client_max
                outcomes_max = s.outcomes_max
            engine = Engine.restore(s.engine)
            for ci in s.sessions:
                for it in ci.items:
                    _events_dec.decode(it.events)  # validated now, decoded again when needed
        except (msgspec.DecodeError, ValueError) as e:
            raise ReplicaSnapshotError(f"bad replica snapshot: {e}") from None
        clients = [
            (ci.client, [(it.key, it.index, it.events, it.time) for it in ci.items])
            for ci in s.sessions
        ]
        sessions = Sessions.from_state(s.evictions, clients, outcomes_per_client_max, outcomes_max)
        return cls(engine, sessions, s.index, s.term)
