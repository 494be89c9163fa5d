"""The replicated state machine: the engine and the §8 accounts, at a log position.

A committed NORMAL entry's data is one SPEC §8 envelope as JSON bytes.  :meth:`ReplicaState.
apply_command` is the only way commands reach the engine: it runs §8 checks 1–2
(:func:`grenex.codec.envelope.decode_envelope_json`), then 2–6 and the commands themselves
through :class:`~grenex.replica.auth.Auth` (accounts, nonce windows, membership), with the
engine as the callback for §2 commands; so every replica takes the same decisions.

What an entry produced (:class:`Outcome`): the events for the stream (a batch's events carry
``n``, their command's position), and what a reply needs: for a batch the per-command event
lists, for a duplicate (the envelope was executed before) the first outcome, kept in the
account's window.

The snapshot is canonical MessagePack ``[3, index, term, engine_snapshot, auth_snapshot]``;
equal states give equal bytes, so :meth:`ReplicaState.state_hash` lets two replicas at the same
index prove they are equal (books, accounts, nonces and outcomes, membership).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Final, NamedTuple

import msgspec

from grenex.codec import encode_json
from grenex.codec.envelope import Envelope, Rejection, decode_envelope_json
from grenex.codec.genesis import CertCheck, Genesis
from grenex.engine import Engine, Rejected
from grenex.replica.auth import Auth, AuthSnapshotError, Duplicate, Fresh, Reject

__all__ = [
    "SNAPSHOT_VERSION",
    "Decoder",
    "Outcome",
    "ReplicaError",
    "ReplicaSnapshotError",
    "ReplicaState",
    "Verifier",
]

SNAPSHOT_VERSION: Final = 3

Decoder = Callable[[bytes], Envelope | Rejection]
"""``log entry bytes -> its envelope``: :func:`~grenex.codec.envelope.decode_envelope_json` or
a cache of it (decoding is a pure function)."""

Verifier = Callable[[Envelope, bytes], bool]
"""``(envelope, signer key) -> the signature verifies``: a pure function (a cache of verdicts
computed earlier, in threads, is one)."""


class ReplicaError(Exception):
    """Root of the replica package's errors (operational failures; broken invariants are
    assertions)."""


class ReplicaSnapshotError(ReplicaError, ValueError):
    """Snapshot bytes that are not a valid replica snapshot."""


class Outcome(NamedTuple):
    """What one entry produced (see the module docstring)."""

    events: list[Any]  # this entry's events, for the stream (none for a duplicate)
    duplicate: bool  # answered from the account's window: nothing ran
    events_json: bytes  # the stream's ``events`` array (a batch's events with ``n``)
    time: int | None  # the outcome's time: the entry's, or the first execution's
    seq: int  # the outcome's log index: the entry's, or the first execution's
    # a batch's (or a duplicate's) per-command event lists as one JSON array of arrays; None
    # for a single command (its reply is ``events_json``) or a duplicate whose events were
    # dropped from the window (its reply says ``"events": null``)
    results_json: bytes | None
    batch: bool


class _Snap(msgspec.Struct, array_like=True, gc=False):
    v: int
    index: int
    term: int
    engine: bytes
    auth: bytes


_enc: Final = msgspec.msgpack.Encoder()
_dec: Final = msgspec.msgpack.Decoder(_Snap)


class _Counters:
    """What §8 check 6's limits read from the engine."""

    __slots__ = ("engine",)

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def markets(self) -> int:
        return self.engine.market_count()

    def resting_orders(self, client: str) -> int:
        return self.engine.client_counts(client)[0]

    def used_ids(self, client: str) -> int:
        return self.engine.client_counts(client)[1]

    def client_counts(self, client: str) -> tuple[int, int]:
        return self.engine.client_counts(client)


class _Encoded:
    """One entry's events encoded once: the window's outcome (one list per command), the
    reply and the stream all share the bytes (a batch's stream events carry ``n``)."""

    __slots__ = ("_events", "_lists")

    def __init__(self) -> None:
        self._lists: list[bytes] | None = None  # per command: its event list's JSON
        self._events: list[list[bytes]] | None = None  # per command, per event (batches)

    def _encode(self, results: list[list[Any]]) -> list[bytes]:
        if self._lists is None:
            if len(results) == 1:
                self._lists = [encode_json(results[0])]
            else:
                self._events = [[encode_json(e) for e in evs] for evs in results]
                self._lists = [b"[" + b",".join(evs) + b"]" for evs in self._events]
        return self._lists

    def outcome(self, results: list[list[Any]]) -> bytes:
        """``encode_json(results)``, byte for byte."""
        return b"[" + b",".join(self._encode(results)) + b"]"

    def first(self, results: list[list[Any]]) -> bytes:
        """The single command's event list."""
        return self._encode(results)[0]

    def stream(self, results: list[list[Any]]) -> bytes:
        """A batch's events for the stream, each with ``n`` (its command's position)."""
        self._encode(results)
        if self._events is None:  # a batch of one command
            self._events = [[encode_json(e) for e in evs] for evs in results]
        parts = [b'{"n":%d,' % n + ev[1:] for n, evs in enumerate(self._events) for ev in evs]
        return b"[" + b",".join(parts) + b"]"


class ReplicaState:
    """Engine + accounts (:class:`Auth`) + the position of the last applied entry."""

    __slots__ = ("_counters", "auth", "engine", "genesis", "index", "term")

    def __init__(
        self,
        genesis: Genesis,
        engine: Engine | None = None,
        auth: Auth | None = None,
        index: int = 0,
        term: int = 0,
        cert_check: CertCheck | None = None,
    ) -> None:
        self.genesis = genesis
        self.engine = engine if engine is not None else Engine()
        self.auth = auth if auth is not None else Auth(genesis, cert_check=cert_check)
        self._counters = _Counters(self.engine)
        self.index = index
        self.term = term

    @property
    def cluster_id(self) -> str:
        return self.genesis.cluster_id

    def apply_command(
        self,
        index: int,
        term: int,
        data: bytes,
        time_ms: int | None = None,
        verifier: Verifier | None = None,
        decoder: Decoder | None = None,
    ) -> Outcome:
        """Apply one committed envelope at ``index`` with the entry's time (SPEC §8 checks in
        order, then §2).  ``verifier`` may supply signature verdicts computed earlier."""
        assert index > self.index, (index, self.index)
        self.index = index
        self.term = term
        t = time_ms if time_ms is not None else 0
        env = decoder(data) if decoder is not None else decode_envelope_json(data)
        if type(env) is Rejection:
            ev = Rejected(index, env.cmd, env.reason, env.client)
            evs: list[Any] = [ev]
            return Outcome(evs, False, encode_json(evs), time_ms, index, None, False)
        assert type(env) is Envelope
        engine = self.engine
        enc = _Encoded()
        a = self.auth.apply(
            env,
            index,
            t,
            lambda cmd: engine.apply(cmd, index),
            self._counters,
            encode=enc.outcome,
            verify=verifier,
        )
        v = a.verdict
        if type(v) is Duplicate:
            return Outcome([], True, b"[]", v.time, v.seq, v.events, env.batch)
        results = a.results
        if type(v) is Reject and env.batch:
            # the whole batch failed a check: one rejected event, the same answer for each
            rej = results[0]
            ej = encode_json(rej)
            rj = b"[" + b",".join([ej] * len(env.commands)) + b"]"
            return Outcome(rej, False, ej, time_ms, index, rj, True)
        if env.batch:
            flat = [e for evs2 in results for e in evs2]
            rj = a.outcome if a.outcome is not None else enc.outcome(results)
            return Outcome(flat, False, enc.stream(results), time_ms, index, rj, True)
        events = results[0]
        return Outcome(events, False, enc.first(results), time_ms, index, None, False)

    def precheck(
        self,
        data: bytes,
        now_ms: int,
        verifier: Verifier | None = None,
        decoder: Decoder | None = None,
    ) -> tuple[Envelope | None, Reject | Duplicate | Fresh]:
        """SPEC §8 checks 1–5 of envelope JSON ``data`` against this (applied) state, at
        ``now_ms`` (the node's clock), changing nothing: what the receiving node and the
        leader run before a command may enter the log.  The envelope (None when checks 1–2
        failed) and the verdict (a :class:`Reject`'s reason is the §8 reason code)."""
        env = decoder(data) if decoder is not None else decode_envelope_json(data)
        if type(env) is Rejection:
            return None, Reject(env.reason)
        assert type(env) is Envelope
        return env, self.auth.check(env, now_ms, verify=verifier)

    def skip(self, index: int, term: int) -> None:
        """An entry that is not a command (no-op, membership change) was applied."""
        assert index > self.index, (index, self.index)
        self.index = index
        self.term = term

    # -- snapshots ----------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        return _enc.encode(
            _Snap(
                SNAPSHOT_VERSION,
                self.index,
                self.term,
                self.engine.snapshot(),
                self.auth.snapshot(),
            )
        )

    def state_hash(self) -> str:
        return hashlib.sha256(self.snapshot()).hexdigest()

    @classmethod
    def restore(
        cls, genesis: Genesis, blob: bytes, cert_check: CertCheck | None = None
    ) -> ReplicaState:
        """The state a :meth:`snapshot` wrote (``b""``: the genesis state at index 0)."""
        if not blob:
            return cls(genesis, cert_check=cert_check)
        try:
            s = _dec.decode(blob)
            if s.v != SNAPSHOT_VERSION:
                raise ReplicaSnapshotError(f"unsupported replica snapshot version {s.v}")
            engine = Engine.restore(s.engine)
            auth = Auth.restore(genesis, s.auth, cert_check=cert_check)
        except (msgspec.DecodeError, ValueError, AuthSnapshotError) as e:
            if isinstance(e, ReplicaSnapshotError):
                raise
            raise ReplicaSnapshotError(f"bad replica snapshot: {e}") from None
        return cls(genesis, engine, auth, s.index, s.term, cert_check)
