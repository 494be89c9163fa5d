"""Checkers that watch the replicas from outside, and the model they are held to.

The model is the committed log replayed, in order, through a fresh
:class:`~grenex.engine.Engine`, with SPEC §8's accounts and exactly-once rule written again
here, independently of ``grenex.replica.auth``: per account its key and its nonce window (the
``limits.nonces`` highest consumed nonces, each with its TEXT digest and first outcome); an
envelope signed by a key that is not the account's is ``bad_signature``, a kept nonce with the
same TEXT answers its first outcome (``duplicate``), another TEXT or a nonce below a full
window's smallest is ``stale_nonce``, a fresh nonce is consumed whatever follows.  The model
never decodes envelopes nor checks signatures itself: every envelope in the simulation is made
by the simulator, which registers it (:meth:`Watch.register`: client, nonce, command, TEXT
digest and the public key that signed it), so "the signature verifies" is "the signing key is
the account's key at that point of the log".  An entry the simulator never made is a failure.

What is checked, and where:

* ``record_leader``: at most one leader per term.
* ``record_applied``: every applied entry equals (term, kind, bytes, time stamp) the one any
  other replica applied at that index (log matching on the committed prefix), and its outcome
  equals the model's: the events, the duplicate flag, and for a duplicate the first outcome's
  log index and time (and its events, unless the window dropped them: SPEC §8 allows
  ``"events": null``).
* ``record_precheck``: every §8 pre-log verdict other than "fresh" (the receiving node's and the
  leader's checks 1–5, which answer ``ERR_GRENEX_BAD_REQUEST`` or a duplicate without touching
  the log) is the model's verdict *at the applied index the checking node was at*: a Reject
  with the same reason, or the first outcome.  (A wrong "fresh" is harmless: the entry is
  checked again at apply, and that is held to the model above.)
* ``record_hash``: replicas at the same applied index have the same state hash.
* ``check_history`` (end of run): every acknowledged command is in the committed log at the
  index *and term* it was acknowledged with, and its acknowledged answer is the model's first
  outcome of its ``(client, nonce)`` (the events of the entry, or — answered as a duplicate —
  the seq, time and events of the first execution); every duplicate answered before the log is
  the model's first outcome of an envelope with the same TEXT; no ``(client, nonce)`` and no
  ``(client, place id)`` executed twice.
* deferred snapshots: their state hash at their index goes through ``record_hash`` like every
  other replica's.
"""

from __future__ import annotations

import bisect
import heapq
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from grenex.codec import encode_json
from grenex.codec.envelope import NONCE_AHEAD_US, KeyRotated, Registered
from grenex.codec.genesis import Genesis
from grenex.consensus import EntryKind
from grenex.engine import Engine, Rejected, is_name
from grenex.replica import Applied
from grenex.replica.auth import KNOWN_TYPES, Duplicate, Fresh, Reject

__all__ = ["EnvInfo", "First", "Model", "SimFailure", "Watch"]


class SimFailure(AssertionError):  # noqa: N818 (a verdict, raised like an assertion)
    """A checker found a broken guarantee."""


class EnvInfo(NamedTuple):
    """What the simulator knows of an envelope it made."""

    client: str
    nonce: int
    cmd: dict[str, Any]  # the TEXT object (with client and nonce)
    digest: bytes  # sha256(TEXT)
    signer: str  # the public key that signed it


class First(NamedTuple):
    """The first outcome of a ``(client, nonce)``: as kept by the account's window."""

    digest: bytes
    seq: int
    time: int
    results: bytes  # JSON of [[events]] (one list per command)


# a model verdict: ("reject", reason) | ("dup", First) | ("fresh", None)
MVerdict = tuple[str, Any]


@dataclass
class _Account:
    name: str
    created: int  # the register's index (0: the genesis operator)
    created_time: int
    register_digest: bytes | None
    keys: list[tuple[int, str]]  # (index from which it holds, key), ascending
    # every consumed nonce, in log order: (index, nonce)
    consumed: list[tuple[int, int]] = field(default_factory=list)
    firsts: dict[int, First] = field(default_factory=dict)  # nonce -> first outcome
    # the current window (the nonces_max highest consumed), ascending
    window: list[int] = field(default_factory=list)

    def key_at(self, index: int) -> str:
        i = bisect.bisect_right(self.keys, (index, "\U0010ffff")) - 1
        return self.keys[i][1]


class Model:
    """The committed log replayed through a fresh engine and §8 accounts (module docstring)."""

    def __init__(self, genesis: Genesis, envelopes: dict[bytes, EnvInfo]) -> None:
        self.genesis = genesis
        self.nonces_max = genesis.limits.nonces
        self.envelopes = envelopes
        self.engine = Engine()
        self.index = 0
        op = genesis.operator
        self.accounts: dict[str, _Account] = {
            op.client: _Account(op.client, 0, 0, None, [(0, op.key)])
        }
        # index -> (events, duplicate, first outcome when a duplicate) for NORMAL entries
        self.outcomes: dict[int, tuple[list[Any], bool, First | None]] = {}
        self.executions: dict[tuple[str, int], int] = {}
        self.placed: dict[tuple[str, str], int] = {}  # (client, id) -> accepted/rejected count

    # -- the verdict of checks 2–5 ------------------------------------------------------------

    def verdict(self, info: EnvInfo, at: int, time_ms: int) -> MVerdict:
        """Checks 2–5 for ``info`` against the state after entry ``at`` (at <= self.index)."""
        if info.nonce > time_ms * 1000 + NONCE_AHEAD_US:
            return ("reject", "invalid_nonce")
        t = info.cmd.get("type")
        acct = self.accounts.get(info.client)
        if acct is not None and acct.created > at:
            acct = None
        if t == "register":
            key = info.cmd.get("key")
            if info.signer != key:
                return ("reject", "bad_signature")
            if acct is not None:
                if acct.register_digest == info.digest:
                    first = acct.firsts[acct.consumed[0][1]]
                    return ("dup", first)
                return ("reject", "client_taken")
            for a in self.accounts.values():
                if a.created <= at and a.key_at(at) == key:
                    return ("reject", "key_taken")
            return ("fresh", None)
        if acct is None:
            return ("reject", "unknown_client")
        if acct.key_at(at) != info.signer:
            return ("reject", "bad_signature")
        if at == self.index:
            window = acct.window
        else:
            n = bisect.bisect_right(acct.consumed, (at, 1 << 62))
            window = sorted(heapq.nlargest(self.nonces_max, (x for _, x in acct.consumed[:n])))
        return self._window_verdict(acct, window, info)

    def _window_verdict(self, acct: _Account, window: list[int], info: EnvInfo) -> MVerdict:
        nonce = info.nonce
        i = bisect.bisect_left(window, nonce)
        if i < len(window) and window[i] == nonce:
            first = acct.firsts[nonce]
            return ("dup", first) if first.digest == info.digest else ("reject", "stale_nonce")
        if len(window) >= self.nonces_max and nonce < window[0]:
            return ("reject", "stale_nonce")
        return ("fresh", None)

    # -- applying the log ---------------------------------------------------------------------

    def apply(self, index: int, kind: int, data: bytes, time_ms: int | None) -> None:
        assert index == self.index + 1, (index, self.index)
        if kind != EntryKind.NORMAL:
            self.index = index
            return
        info = self.envelopes.get(data)
        if info is None:
            raise SimFailure(f"entry {index} is no envelope the simulation made: {data[:80]!r}")
        t = time_ms if time_ms is not None else 0
        v = self.verdict(info, index - 1, t)
        self.index = index
        if v[0] == "reject":
            ev = self._rejected(info, index, v[1])
            self.outcomes[index] = ([ev], False, None)
            return
        if v[0] == "dup":
            self.outcomes[index] = ([], True, v[1])
            return
        events = self._execute(info, index, t)
        self.outcomes[index] = (events, False, None)
        key = (info.client, info.nonce)
        self.executions[key] = self.executions.get(key, 0) + 1
        acct = self.accounts.get(info.client)
        if acct is not None and acct.consumed and acct.consumed[-1] == (index, info.nonce):
            acct.firsts[info.nonce] = First(info.digest, index, t, encode_json([events]))

    def _execute(self, info: EnvInfo, index: int, t: int) -> list[Any]:
        """Consume the nonce, then check 6 and the command (one per envelope here)."""
        cmd = info.cmd
        ty = cmd.get("type")
        client = info.client
        g = self.genesis
        if ty == "register":  # its nonce starts the new account's window
            if g.register != "open" and client != g.operator.client:
                return [self._rejected(info, index, "not_operator")]
            if len(self.accounts) >= g.limits.accounts:
                return [self._rejected(info, index, "limit_accounts")]
            acct = _Account(client, index, t, info.digest, [(index, cmd["key"])])
            self.accounts[client] = acct
            self._consume(acct, index, info.nonce)
            return [Registered(index, client, cmd["key"])]
        acct = self.accounts[client]
        self._consume(acct, index, info.nonce)
        if ty in ("add_market", "admit", "promote", "remove") and client != g.operator.client:
            return [self._rejected(info, index, "not_operator")]
        if ty == "rotate_key":
            key = str(cmd.get("key"))
            for a in self.accounts.values():
                if a is not acct and a.key_at(index) == key:
                    return [self._rejected(info, index, "key_taken")]
            acct.keys.append((index, key))
            return [KeyRotated(index, client, key)]
        if ty == "place":
            resting, used = self.engine.client_counts(client)
            if resting >= g.limits.orders:
                return [self._rejected(info, index, "limit_orders")]
            if used >= g.limits.ids:
                return [self._rejected(info, index, "limit_ids")]
        if ty == "add_market" and self.engine.market_count() >= g.limits.markets:
            return [self._rejected(info, index, "limit_markets")]
        events = self.engine.apply(cmd, index)
        if ty == "place":
            oid = cmd.get("id")
            if events and not (type(events[0]) is Rejected and events[0].reason == "duplicate_id"):
                k = (client, str(oid))
                self.placed[k] = self.placed.get(k, 0) + 1
        return events

    def _consume(self, acct: _Account, index: int, nonce: int) -> None:
        acct.consumed.append((index, nonce))
        w = acct.window
        bisect.insort(w, nonce)
        if len(w) > self.nonces_max:
            del w[0]

    @staticmethod
    def _rejected(info: EnvInfo, index: int, reason: str) -> Rejected:
        cmd = info.cmd
        t = cmd.get("type")
        oid = cmd.get("id")
        market = cmd.get("market") if t == "add_market" else None
        return Rejected(
            index,
            t if t in KNOWN_TYPES else None,
            reason,
            info.client,
            oid if is_name(oid) else None,
            market if is_name(market) else None,
        )

    def key_of(self, client: str) -> str | None:
        a = self.accounts.get(client)
        return a.keys[-1][1] if a is not None else None


class Watch:
    """The outside observer: the global committed log, the model, leaders and hashes."""

    def __init__(self, genesis: Genesis) -> None:
        # index -> (term, kind, data, time)
        self.log: dict[int, tuple[int, int, bytes, int | None]] = {}
        self.envelopes: dict[bytes, EnvInfo] = {}
        self.model = Model(genesis, self.envelopes)
        self.leaders: dict[int, str] = {}
        self.hashes: dict[int, tuple[str, str]] = {}  # index -> (hash, who)
        self.checked_hashes = 0
        self.checked_prechecks = 0

    def register(self, data: bytes, info: EnvInfo) -> None:
        """An envelope the simulator made (see the module docstring)."""
        self.envelopes[data] = info

    def record_leader(self, term: int, node: str) -> None:
        other = self.leaders.setdefault(term, node)
        if other != node:
            raise SimFailure(f"two leaders in term {term}: {other} and {node}")

    def _advance(self, node: str, index: int) -> None:
        model = self.model
        while model.index < index:
            i = model.index + 1
            e = self.log.get(i)
            if e is None:
                raise SimFailure(f"{node} is at {index} but no replica applied {i}")
            model.apply(i, e[1], e[2], e[3])

    def record_applied(self, node: str, a: Applied) -> None:
        index, term, kind, data, time_ms = a.index, a.term, a.kind, a.data, a.time
        events, duplicate, results_json = a.events, a.duplicate, a.results_json
        outcome_seq, outcome_time = a.outcome_seq, a.outcome_time
        got = (term, kind, data, time_ms)
        known = self.log.setdefault(index, got)
        if known != got:
            raise SimFailure(
                f"{node} applied {index}: term {term} kind {kind} {data[:60]!r} at {time_ms},"
                f" but another replica applied term {known[0]} kind {known[1]}"
                f" {known[2][:60]!r} at {known[3]}"
            )
        self._advance(node, index)
        if kind != EntryKind.NORMAL:
            return
        want_events, want_dup, first = self.model.outcomes[index]
        if events != want_events or duplicate != want_dup:
            raise SimFailure(
                f"{node} applied {index} {data[:80]!r} with outcome"
                f" {_short(events)} duplicate={duplicate}; the model says"
                f" {_short(want_events)} duplicate={want_dup}"
            )
        if first is not None:
            if (outcome_seq, outcome_time) != (first.seq, first.time) or (
                results_json is not None and results_json != first.results
            ):
                raise SimFailure(
                    f"{node} answered the duplicate at {index} with the outcome of"
                    f" {outcome_seq}/{outcome_time}; the model says {first.seq}/{first.time}"
                )
        elif outcome_seq != index:
            raise SimFailure(f"{node} applied {index} with outcome seq {outcome_seq}")

    def record_precheck(
        self, node: str, at: int, time_ms: int, data: bytes, verdict: Reject | Duplicate | Fresh
    ) -> None:
        """A §8 pre-log verdict of ``node`` at its applied index ``at`` (module docstring)."""
        if type(verdict) is Fresh:
            return
        self.checked_prechecks += 1
        info = self.envelopes.get(data)
        if info is None:
            raise SimFailure(f"{node} prechecked an envelope the simulation never made")
        self._advance(node, at)
        want = self.model.verdict(info, at, time_ms)
        if type(verdict) is Reject:
            ok = want == ("reject", verdict.reason)
        else:
            assert type(verdict) is Duplicate
            f = want[1]
            ok = (
                want[0] == "dup"
                and (verdict.seq, verdict.time) == (f.seq, f.time)
                and (verdict.events is None or verdict.events == f.results)
            )
        if not ok:
            raise SimFailure(
                f"{node} at {at} prechecked {info.client}#{info.nonce} as {verdict!r};"
                f" the model says {want[0]} {want[1]!r}"
            )

    def record_hash(self, index: int, node: str, state_hash: str) -> None:
        self.checked_hashes += 1
        known = self.hashes.setdefault(index, (state_hash, node))
        if known[0] != state_hash:
            raise SimFailure(
                f"state hashes differ at index {index}: {known[1]} {known[0][:12]},"
                f" {node} {state_hash[:12]}"
            )

    def first_outcome(self, data: bytes) -> First | None:
        """The model's first outcome of this envelope's ``(client, nonce)`` when it was this
        envelope (the same TEXT) that executed."""
        info = self.envelopes[data]
        acct = self.model.accounts.get(info.client)
        f = acct.firsts.get(info.nonce) if acct is not None else None
        return f if f is not None and f.digest == info.digest else None

    def check_history(self, acked: list[Acked]) -> None:
        """Every acknowledged answer (see :class:`Acked`) against the log and the model."""
        for a in acked:
            first = self.first_outcome(a.data)
            if a.index:  # acknowledged from an applied entry
                e = self.log.get(a.index)
                if e is None or e[0] != a.term or e[2] != a.data:
                    raise SimFailure(
                        f"acknowledged command lost: {a.who} {a.data[:80]!r} at"
                        f" {a.index}/{a.term}; the log holds {e!r}"
                    )
                events = self.model.outcomes[a.index][0]
                if not a.duplicate:
                    if a.seq != a.index or a.events != events:
                        raise SimFailure(
                            f"acknowledged result of {a.who} at {a.index} was {_short(a.events)}"
                            f" (seq {a.seq}); the model says {_short(events)}"
                        )
                    continue
            if first is None:
                raise SimFailure(
                    f"{a.who} was answered as a duplicate of {a.seq}, but the model never"
                    " executed that envelope"
                )
            if (a.seq, a.time) != (first.seq, first.time) or (
                a.results is not None and a.results != first.results
            ):
                raise SimFailure(
                    f"{a.who} was answered the outcome of {a.seq}/{a.time}; its first outcome"
                    f" is {first.seq}/{first.time}"
                )
        for k, n in sorted(self.model.executions.items()):
            if n > 1:
                raise SimFailure(f"{k} executed {n} times")
        for k2, n in sorted(self.model.placed.items()):
            if n > 1:
                raise SimFailure(f"order {k2} placed {n} times")


class Acked(NamedTuple):
    """An answer a client took as its command's outcome.

    From an applied entry (``index`` > 0, ``term``): ``duplicate`` False with ``events`` the
    entry's and ``seq == index``, or ``duplicate`` True with the first outcome's ``seq``,
    ``time`` and ``results`` (None when dropped).  From the receiving node's window before the
    log (``index`` 0): always a duplicate."""

    who: str
    data: bytes
    index: int  # type: ignore[assignment]  # shadows tuple.index, on purpose
    term: int
    duplicate: bool
    seq: int
    time: int | None
    events: list[Any]
    results: bytes | None

    @classmethod
    def of(cls, who: str, data: bytes, a: Applied) -> Acked:
        """The answer built from the applied entry the node acknowledged."""
        return cls(
            who,
            data,
            a.index,
            a.term,
            a.duplicate,
            a.outcome_seq,
            a.outcome_time,
            list(a.events),
            a.results_json,
        )


def _short(events: list[Any]) -> str:
    names = [type(e).__name__ for e in events]
    return "[" + ",".join(names[:8]) + (",..." if len(names) > 8 else "") + "]"
