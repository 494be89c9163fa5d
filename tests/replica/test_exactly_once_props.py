"""Exactly-once under SPEC §8, as properties of the replicated state machine (hypothesis).

Hypothesis draws a history: several accounts (and the operator) make envelopes — places,
cancels, amends, key rotations, envelopes signed by a key the account no longer (or not yet)
holds — into a pool, and the log is built by appending pool members in any order, any number
of times: retries are the *same bytes* again, reordering is the order of appends, eviction
comes from a small genesis window (``limits.nonces`` of 2, 3 or 5, so a few dozen envelopes
evict often) and rotations make earlier signatures go stale.  The log is applied through
:class:`ReplicaState` on two independent replicas: one verifies every signature at apply, the
other reuses a :class:`Verdicts` cache and is now and then replaced by the restore of its own
snapshot.  Per account, a third replica applies only that account's entries (plus the setup).

Properties, after every entry:

(a) both replicas give identical outcomes (events, duplicate flag, seq, time, per-command
    results) and identical state hashes; and what the pre-log check (§8 checks 1–5, run on the
    first replica just before) said is what apply did: a Reject there is the same ``rejected``
    reason at apply, a Duplicate the same first outcome, a Fresh never a check 2–5 failure;
(b) no envelope executes twice: a ``(client, nonce)`` runs at most once (another TEXT under a
    used nonce is refused, never run), a place id is accepted
    at most once, and a duplicate's answer is its first execution's seq, time and events (or
    ``null`` events) of the very same TEXT;
(c) an envelope whose signing key is not the account's key when it is applied (followed here
    independently: the key of its register, then of each rotate_key that ran) is rejected
    ``bad_signature`` — a logged ``rejected`` event — and changes nothing else: the books and
    the accounts (keys, windows, outcomes) are byte for byte what they were;
(d) one account's traffic never turns another account's envelope into ``stale_nonce`` (or
    anything else): each entry's verdict (executed, duplicate, or the §8 reason) is the one the
    account's own replica, which never saw the other accounts, gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from grenex.codec import decode_command, encode_json
from grenex.codec.genesis import Genesis, Limits
from grenex.codec.keys import SecretKey
from grenex.codec.signer import Signer
from grenex.engine import Accepted, Rejected
from grenex.replica import ReplicaState
from grenex.replica.auth import Duplicate, Reject
from grenex.replica.state import Outcome
from grenex.replica.verdicts import Verdicts

from .signed import KEYRING, OP, T0, make_genesis

NAMES = ("al", "bo", "cy")
# §8 checks 2–5: a rejection there consumes nothing (the envelope did not execute)
PRE_EXECUTION = (
    "bad_signature",
    "client_taken",
    "invalid_key",
    "invalid_nonce",
    "key_taken",
    "stale_nonce",
    "unknown_client",
)


def key(name: str, gen: int) -> SecretKey:
    return KEYRING.key(name if gen == 0 else f"{name}/{gen}")


@dataclass(frozen=True)
class Env:
    """An envelope of the pool and what the test knows of it."""

    data: bytes
    client: str
    nonce: int
    text: bytes
    signer: str  # the public key that signed it
    type: str


@dataclass
class History:
    """Makes the pool's envelopes (counter nonces per account; a client believes its newest
    rotation at once, so reordering makes its next envelopes precede their key)."""

    genesis: Genesis
    pool: list[Env] = field(default_factory=list)
    gen: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NAMES, 0))
    ids: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NAMES, 0))
    signer: Signer = field(init=False)

    def __post_init__(self) -> None:
        self.signer = Signer(self.genesis.cluster_id, lambda n: key(n, self.gen[n]))

    def make(
        self, client: str, cmd: dict[str, Any], by: SecretKey, nonce: int | None = None
    ) -> Env:
        if nonce is None:
            nonce = self.signer.next_nonce(client)
        text = encode_json(dict(cmd, client=client, nonce=nonce))
        env = Env(
            self.signer.sign_text(client, text, by),
            client,
            nonce,
            text,
            by.public_key,
            cmd["type"],
        )
        self.pool.append(env)
        return env

    def register(self, name: str) -> Env:
        k = key(name, 0)
        return self.make(name, {"type": "register", "key": k.public_key}, k)

    def order(self, name: str, x: int, gen: int | None = None) -> Env:
        g = self.gen[name] if gen is None else gen
        kind = x % 4
        if kind <= 1 or self.ids[name] == 0:
            self.ids[name] += 1
            side = "buy" if x % 2 else "sell"
            cmd: dict[str, Any] = {
                "type": "place",
                "id": f"o{self.ids[name]}",
                "market": "M",
                "side": side,
                "qty": str(1 + x % 3),
                "price": str(99 + x % 3),
            }
        elif kind == 2:
            cmd = {"type": "cancel", "id": f"o{1 + x % self.ids[name]}"}
        else:
            cmd = {"type": "amend", "id": f"o{1 + x % self.ids[name]}", "qty": str(1 + x % 4)}
        return self.make(name, cmd, key(name, g))

    def reuse(self, name: str, x: int) -> Env:
        """Another command under a nonce the account used already (``stale_nonce`` while it
        is kept: never executed)."""
        mine = [e for e in self.pool if e.client == name]
        nonce = mine[x % len(mine)].nonce
        cmd = {"type": "cancel", "id": f"r{x}"}
        return self.make(name, cmd, key(name, self.gen[name]), nonce)

    def rotate(self, name: str) -> Env:
        by = key(name, self.gen[name])
        self.gen[name] += 1
        return self.make(
            name, {"type": "rotate_key", "key": key(name, self.gen[name]).public_key}, by
        )


_NEW = st.tuples(st.just("new"), st.sampled_from(NAMES), st.integers(0, 1000))
_BURST = st.tuples(st.just("burst"), st.sampled_from(NAMES), st.integers(1, 8))  # k new in a row
_APPEND = st.tuples(st.just("append"), st.integers(0, 10_000), st.just(0))  # a pool member again
ACTION = st.one_of(
    _NEW,
    _NEW,
    _BURST,
    _APPEND,
    _APPEND,
    # the account's envelope made ``x`` envelopes ago, again (evicted once enough newer ran)
    st.tuples(st.just("back"), st.sampled_from(NAMES), st.integers(1, 8)),
    st.tuples(st.just("append_last"), st.just(""), st.just(0)),  # the newest, once more
    st.tuples(st.just("reuse"), st.sampled_from(NAMES), st.integers(0, 1000)),
    st.tuples(st.just("rotate"), st.sampled_from(NAMES), st.just(0)),
    st.tuples(st.just("old"), st.sampled_from(NAMES), st.integers(0, 1000)),
    st.tuples(st.just("snap"), st.just(""), st.just(0)),
)


def verdict_class(o: Outcome) -> str:
    """What §8 decided for a single-command entry: duplicate, a check 2–5 reason, or run."""
    if o.duplicate:
        return "duplicate"
    ev = o.events
    if len(ev) == 1 and type(ev[0]) is Rejected and ev[0].reason in PRE_EXECUTION:
        return ev[0].reason
    return "executed"


def books(s: ReplicaState) -> tuple[str, str]:
    return s.engine.state_hash(), s.auth.state_hash()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.sampled_from((2, 3, 5)), st.lists(ACTION, min_size=5, max_size=60))
def test_exactly_once_under_retries_reordering_evictions_and_rotations(
    window: int, actions: list[tuple[str, Any, int]]
) -> None:
    genesis = make_genesis(Limits(nonces=window))
    h = History(genesis)
    log: list[Env] = [h.register(n) for n in NAMES]
    market = h.make(OP, {"type": "add_market", "market": "M", "tick": "1", "lot": "1"}, key(OP, 0))
    log.append(market)
    for what, arg, x in actions:
        if what == "new":
            log.append(h.order(arg, x))
        elif what == "burst":
            log.extend(h.order(arg, x * 7 + i) for i in range(x))
        elif what == "rotate":
            log.append(h.rotate(arg))
        elif what == "old":  # signed by any other generation than the believed one
            gens = [g for g in range(h.gen[arg] + 2) if g != h.gen[arg]]
            log.append(h.order(arg, x, gens[x % len(gens)]))
        elif what == "append":
            log.append(h.pool[arg % len(h.pool)])
        elif what == "back":
            mine = [e for e in h.pool if e.client == arg]
            log.append(mine[max(0, len(mine) - 1 - x)])
        elif what == "reuse":
            log.append(h.reuse(arg, x))
        elif what == "append_last":
            log.append(log[-1])
        else:
            log.append(Env(b"", "", 0, b"", "", "snap"))

    one = ReplicaState(genesis)
    verdicts = Verdicts(genesis.cluster_id)
    two = ReplicaState(genesis)
    alone = {n: ReplicaState(genesis) for n in (*NAMES, OP)}
    executed: dict[tuple[str, int], Outcome] = {}  # (client, nonce) -> its execution
    texts: dict[tuple[str, int], bytes] = {}
    accepted: set[tuple[str, str]] = set()
    # the key each account holds, followed independently: set by its register and by every
    # rotate_key that executed
    holds: dict[str, str] = {OP: genesis.operator.key}
    index = 0
    for e in log:
        if e.type == "snap":
            two = ReplicaState.restore(genesis, two.snapshot())
            continue
        index += 1
        t = T0 + index
        _env, pre = one.precheck(e.data, t)
        holder = holds.get(e.client)
        before = books(one)
        o1 = one.apply_command(index, 1, e.data, t)
        o2 = two.apply_command(index, 1, e.data, t, verdicts)
        # (a) identical replicas, and the pre-log verdict is the apply verdict
        assert o1 == o2, (e.text, o1, o2)
        assert one.state_hash() == two.state_hash()
        cls = verdict_class(o1)
        event(f"verdict {cls}")
        if type(pre) is Reject:
            assert cls == pre.reason, (e.text, pre, o1.events)
        elif type(pre) is Duplicate:
            assert o1.duplicate and (o1.seq, o1.time, o1.results_json) == (
                pre.seq,
                pre.time,
                pre.events,
            )
        else:
            assert cls == "executed", (e.text, o1.events)
        # (b) exactly once
        k = (e.client, e.nonce)
        if cls == "executed":
            assert k not in executed, f"{k} executed twice"
            executed[k] = o1
            texts[k] = e.text
            if e.type in ("register", "rotate_key"):
                holds[e.client] = decode_command(e.text)["key"]
            for ev in o1.events:
                if type(ev) is Accepted:
                    assert (ev.client, ev.id) not in accepted, f"{ev.id} accepted twice"
                    accepted.add((ev.client, ev.id))
        elif cls == "duplicate":
            first = executed[k]
            assert texts[k] == e.text
            assert (o1.seq, o1.time) == (first.seq, first.time)
            assert o1.events == [] and o1.events_json == b"[]"
            assert o1.results_json in (None, b"[" + first.events_json + b"]")
        # (c) a key the account does not hold signs nothing
        if e.type != "register" and holder is not None and holder != e.signer:
            assert o1.events == [
                Rejected(
                    index,
                    e.type,
                    "bad_signature",
                    e.client,
                    _id_of(e),
                )
            ], (e.text, o1.events)
            assert books(one) == before
        assert one.auth.account_key(e.client) == holds.get(e.client)
        # (d) the account's own replica, which never saw the other accounts, agrees
        solo = alone[e.client]
        osolo = solo.apply_command(index, 1, e.data, t)
        assert verdict_class(osolo) == cls, (e.text, osolo, o1)
        if e.client == OP:  # the operator's market: every account's replica needs it
            for n in NAMES:
                alone[n].apply_command(index, 1, e.data, t)
    assert executed  # the setup at least


def _id_of(e: Env) -> str | None:
    oid = decode_command(e.text).get("id")
    return oid if isinstance(oid, str) else None
