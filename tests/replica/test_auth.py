"""replica.auth: SPEC §8 checks 3–6 as a pure state machine.

What it proves and how: unit tests walk each rule with real Ed25519 signatures (the SPEC
vector's cluster among them); hypothesis drives the nonce window against a model of §8 check 5
(the kept set is always the top ``limits.nonces`` of the consumed ones, and a nonce is fresh
exactly when the model says so), and drives whole histories — new envelopes, retries of any
earlier one (re-signed or not), key rotations, evictions from a small window, snapshot/restore —
asserting that no (client, nonce) ever executes twice and that every duplicate answer is the
first outcome.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from grenex.codec.envelope import Envelope, decode_envelope_json, sign_envelope
from grenex.codec.genesis import Limits, make_genesis, parse_genesis
from grenex.codec.keys import SecretKey, b64url_encode
from grenex.engine import Engine, Rejected
from grenex.replica.auth import (
    Applied,
    Auth,
    AuthSnapshotError,
    Duplicate,
    Fresh,
    Reject,
    verify_envelope,
)

SEED = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
VECTOR_GENESIS = (
    b'{"cluster":"main","operator":{"client":"op","key":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},'
    b'"voters":[{"id":"n1","key":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}],"join":"operator"}\n'
)
VECTOR_ENVELOPE = (
    b'{"cmd":"{\\"type\\":\\"cancel\\",\\"client\\":\\"op\\",\\"id\\":\\"o1\\",\\"nonce\\":1}",'
    b'"sig":"cVVf34L4Um7rhob_nBV9_RGB0spyJ4KQ9ZwslWhjBkaI2G3u0bC2rjWUhNGHcNsQWglJ8yN9AoLDPL9CS-63Bg"}'
)
OP = SecretKey.from_text(SEED)
KEYS = [SecretKey(bytes([i]) * 32) for i in range(1, 12)]
ALICE, BOB, EVE, N2, N3 = KEYS[:5]
CERT = b64url_encode(b"\x30\x03cert")
T0 = 1_700_000_000_000  # ms


@dataclass
class Counts:
    markets_n: int = 0
    resting: dict[str, int] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)

    def markets(self) -> int:
        return self.markets_n

    def resting_orders(self, client: str) -> int:
        return self.resting.get(client, 0)

    def used_ids(self, client: str) -> int:
        return self.ids.get(client, 0)

    def client_counts(self, client: str) -> tuple[int, int]:
        return self.resting_orders(client), self.used_ids(client)


def genesis(**kw: Any) -> Any:
    return parse_genesis(make_genesis("main", ("op", OP.public_key), [("n1", OP.public_key)], **kw))


class Harness:
    """An Auth plus an engine, applying envelopes at increasing seq."""

    def __init__(self, g: Any = None, **kw: Any) -> None:
        self.g = g if g is not None else genesis()
        self.auth = Auth(self.g, **kw)
        self.engine = Engine()
        self.counts = Counts()
        self.seq = 0
        self.time = T0
        self.runs: list[dict[str, Any]] = []

    def env(self, key: SecretKey, cmd: dict[str, Any]) -> Envelope:
        e = decode_envelope_json(sign_envelope(key, self.g.cluster_id, json.dumps(cmd)))
        assert isinstance(e, Envelope), e
        return e

    def run(self, cmd: dict[str, Any]) -> list[Any]:
        self.runs.append(cmd)
        return self.engine.apply(cmd, self.seq)

    def apply(self, e: Envelope, **kw: Any) -> Applied:
        self.seq += 1
        self.time += 1
        return self.auth.apply(e, self.seq, self.time, self.run, self.counts, **kw)

    def send(self, key: SecretKey, cmd: dict[str, Any]) -> Applied:
        return self.apply(self.env(key, cmd))

    def register(self, key: SecretKey, name: str, nonce: int = 1) -> Applied:
        a = self.send(
            key, {"type": "register", "client": name, "key": key.public_key, "nonce": nonce}
        )
        assert type(a.verdict) is Fresh and etype(a.results[0][0]) == "registered", a
        return a


def etype(ev: Any) -> str:
    """An event's ``type`` (its msgspec tag)."""
    tag = ev.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def reason(a: Applied) -> str:
    v = a.verdict
    if type(v) is Reject:
        return v.reason
    assert type(v) is Fresh, v
    (ev,) = a.results[0]
    assert isinstance(ev, Rejected), ev
    return ev.reason


def cancel(client: str, nonce: int, oid: str = "o1") -> dict[str, Any]:
    return {"type": "cancel", "client": client, "id": oid, "nonce": nonce}


# -- the SPEC vector ---------------------------------------------------------------------------


def test_spec_vector_verifies_against_vector_genesis() -> None:
    g = parse_genesis(VECTOR_GENESIS)
    auth = Auth(g)
    e = decode_envelope_json(VECTOR_ENVELOPE)
    assert isinstance(e, Envelope)
    v = auth.check(e, T0)
    assert type(v) is Fresh and v.signer == OP.public_bytes
    assert verify_envelope(g.cluster_id, e, OP.public_bytes)
    assert not verify_envelope("0" * 64, e, OP.public_bytes)
    a = auth.apply(e, 1, T0, lambda c: Engine().apply(c, 1), Counts())
    assert [ev.reason for ev in a.results[0]] == ["unknown_order"]
    assert type(auth.check(e, T0)) is Duplicate


# -- check 2 (time) and 3 (signer, signature) ---------------------------------------------------


def test_nonce_more_than_a_day_ahead() -> None:
    h = Harness()
    ahead = T0 * 1000 + 86_400_000_000 + 10_000
    assert reason(h.send(OP, cancel("op", ahead))) == "invalid_nonce"
    assert h.auth.kept("op") == []  # nothing consumed
    ok = T0 * 1000 + 86_400_000_000
    assert type(h.send(OP, cancel("op", ok)).verdict) is Fresh


def test_unknown_client_and_bad_signature() -> None:
    h = Harness()
    assert reason(h.send(ALICE, cancel("alice", 1))) == "unknown_client"
    assert reason(h.send(ALICE, cancel("op", 1))) == "bad_signature"  # op's account, alice's key
    e = h.env(OP, cancel("op", 2))
    for sig in (
        "",
        "x",
        e.sig + "A",
        e.sig[:-2] + "AA",
        e.sig.replace(e.sig[5], "_" if e.sig[5] != "_" else "-", 1),
    ):
        bad = msgspec.structs.replace(e, sig=sig)
        assert reason(h.apply(bad)) == "bad_signature"
    assert h.auth.kept("op") == []
    # another cluster's signature
    other = Harness(genesis(join="open"))
    e2 = other.env(OP, cancel("op", 3))
    assert reason(h.apply(e2)) == "bad_signature"
    assert type(h.apply(e).verdict) is Fresh


def test_earlier_verdict_reused_only_for_the_same_key() -> None:
    h = Harness()
    e = h.env(ALICE, cancel("op", 1))  # not op's signature
    assert type(h.auth.check(e, T0, verified=True, verified_key=OP.public_bytes)) is Fresh
    assert h.auth.check(e, T0, verified=True, verified_key=ALICE.public_bytes) == Reject(
        "bad_signature"
    )  # key changed since: verified again now
    good = h.env(OP, cancel("op", 1))
    assert h.auth.check(good, T0, verified=False) == Reject("bad_signature")
    signer = h.auth.signer(good)
    assert signer == OP.public_bytes
    assert (
        type(
            h.auth.check(
                good,
                T0,
                verified=verify_envelope(h.g.cluster_id, good, signer),
                verified_key=signer,
            )
        )
        is Fresh
    )


# -- register (checks 3-4) ----------------------------------------------------------------------


def test_register_and_its_retries() -> None:
    h = Harness()
    first = h.register(ALICE, "alice", nonce=5)
    assert h.auth.account_key("alice") == ALICE.public_key
    assert h.auth.account_of_key(ALICE.public_key) == "alice"
    assert [k.nonce for k in h.auth.kept("alice")] == [5]  # starts with the register's nonce
    reg = {"type": "register", "client": "alice", "key": ALICE.public_key, "nonce": 5}
    again = h.send(ALICE, reg)
    assert type(again.verdict) is Duplicate
    assert again.verdict.seq == 1 and again.verdict.time == T0 + 1
    assert again.verdict.events == first.outcome
    # the same name, another TEXT: client_taken, nothing consumed, by anyone
    assert reason(h.send(ALICE, {**reg, "nonce": 6})) == "client_taken"
    assert reason(h.send(EVE, {**reg, "key": EVE.public_key})) == "client_taken"
    assert [k.nonce for k in h.auth.kept("alice")] == [5]
    # a key bound elsewhere
    assert reason(h.send(ALICE, {**reg, "client": "alice2"})) == "key_taken"
    assert h.auth.account_key("alice2") is None
    # signed by another key than the one registered
    e = h.env(EVE, {**reg, "client": "mallory"})
    assert reason(h.apply(e)) == "bad_signature"
    # not a valid key
    bad = {
        "type": "register",
        "client": "x",
        "key": "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "nonce": 1,
    }
    assert reason(h.send(EVE, bad)) == "invalid_key"
    assert reason(h.send(EVE, {**bad, "key": None})) == "invalid_key"


def test_register_duplicate_survives_eviction_and_rotation() -> None:
    h = Harness(genesis(limits=Limits(nonces=2)))
    first = h.register(ALICE, "alice", nonce=1)
    for n in (2, 3, 4):
        h.send(ALICE, cancel("alice", n))
    assert [k.nonce for k in h.auth.kept("alice")] == [3, 4]
    rot = h.send(
        ALICE, {"type": "rotate_key", "client": "alice", "key": BOB.public_key, "nonce": 10}
    )
    assert [etype(e) for e in rot.results[0]] == ["key_rotated"]
    reg = {"type": "register", "client": "alice", "key": ALICE.public_key, "nonce": 1}
    again = h.send(ALICE, reg)
    assert type(again.verdict) is Duplicate and again.verdict.events == first.outcome
    assert again.verdict.seq == 1


def test_register_never_touches_an_existing_window() -> None:
    h = Harness()
    h.register(ALICE, "alice", 1)
    h.send(ALICE, cancel("alice", 2))
    before = h.auth.kept("alice")
    for n in (1, 2, 3, 100):
        h.send(EVE, {"type": "register", "client": "alice", "key": EVE.public_key, "nonce": n})
    assert h.auth.kept("alice") == before
    assert h.auth.account_key("alice") == ALICE.public_key


def test_register_limits_and_mode() -> None:
    h = Harness(genesis(limits=Limits(accounts=2)))
    h.register(ALICE, "alice")
    a = h.send(BOB, {"type": "register", "client": "bob", "key": BOB.public_key, "nonce": 1})
    assert reason(a) == "limit_accounts" and h.auth.account_key("bob") is None
    h2 = Harness(genesis(register="operator"))
    a = h2.send(BOB, {"type": "register", "client": "bob", "key": BOB.public_key, "nonce": 1})
    assert reason(a) == "not_operator" and h2.auth.account_key("bob") is None


# -- check 5: the window ------------------------------------------------------------------------


def test_window_rules() -> None:
    h = Harness(genesis(limits=Limits(nonces=3)))
    h.register(ALICE, "alice", 10)
    for n in (20, 15):
        assert type(h.send(ALICE, cancel("alice", n)).verdict) is Fresh
    assert [k.nonce for k in h.auth.kept("alice")] == [10, 15, 20]
    assert reason(h.send(ALICE, cancel("alice", 15, "other"))) == "stale_nonce"  # another TEXT
    assert type(h.send(ALICE, cancel("alice", 15)).verdict) is Duplicate
    assert reason(h.send(ALICE, cancel("alice", 9))) == "stale_nonce"  # below the smallest, full
    assert type(h.send(ALICE, cancel("alice", 12)).verdict) is Fresh  # between: fresh, evicts 10
    assert [k.nonce for k in h.auth.kept("alice")] == [12, 15, 20]
    assert reason(h.send(ALICE, cancel("alice", 10))) == "stale_nonce"
    assert reason(h.send(ALICE, cancel("alice", 11))) == "stale_nonce"


def test_rejections_after_consume_are_outcomes() -> None:
    h = Harness()
    h.register(ALICE, "alice")
    cmd = {
        "type": "add_market",
        "client": "alice",
        "market": "BTC-USD",
        "tick": "1",
        "lot": "1",
        "nonce": 2,
    }
    a = h.send(ALICE, cmd)
    assert reason(a) == "not_operator"
    assert a.results[0][0].market == "BTC-USD" and a.results[0][0].client == "alice"
    again = h.send(ALICE, cmd)
    assert type(again.verdict) is Duplicate and again.verdict.events == a.outcome
    assert h.runs == []


# -- rotate_key ---------------------------------------------------------------------------------


def test_rotate_key() -> None:
    h = Harness()
    h.register(ALICE, "alice", 1)
    h.register(BOB, "bob", 1)
    rot = {"type": "rotate_key", "client": "alice", "nonce": 2}
    assert reason(h.send(ALICE, {**rot, "key": BOB.public_key})) == "key_taken"
    assert reason(h.send(ALICE, {**rot, "nonce": 3, "key": "nope"})) == "invalid_key"
    assert reason(h.send(ALICE, {**rot, "nonce": 4})) == "invalid_key"
    same = h.send(ALICE, {**rot, "nonce": 5, "key": ALICE.public_key})
    assert etype(same.results[0][0]) == "key_rotated"
    a = h.send(ALICE, {**rot, "nonce": 6, "key": EVE.public_key})
    assert etype(a.results[0][0]) == "key_rotated"
    assert h.auth.account_key("alice") == EVE.public_key
    assert h.auth.account_of_key(ALICE.public_key) is None
    assert h.auth.account_of_key(EVE.public_key) == "alice"
    assert [k.nonce for k in h.auth.kept("alice")] == [1, 2, 3, 4, 5, 6]  # kept across rotation
    assert reason(h.send(ALICE, cancel("alice", 7))) == "bad_signature"  # the old key
    # a retry of an old envelope: re-signed with the new key it is the same TEXT: duplicate
    assert type(h.send(EVE, {**rot, "nonce": 6, "key": EVE.public_key}).verdict) is Duplicate
    # the freed key can be registered again
    h.register(ALICE, "alice-new")
    # rotate_key is never batched (codec) and is signed by the current key
    assert reason(h.send(BOB, {**rot, "nonce": 8, "key": KEYS[6].public_key})) == "bad_signature"


# -- operator, membership, limits -----------------------------------------------------------------


def test_operator_only_commands() -> None:
    h = Harness()
    h.register(ALICE, "alice")
    for i, cmd in enumerate(
        [
            {"type": "add_market", "market": "M", "tick": "1", "lot": "1"},
            {"type": "admit", "node": "n9", "key": N2.public_key, "cert": CERT},
            {"type": "promote", "node": "n1"},
            {"type": "remove", "node": "n1"},
        ]
    ):
        assert reason(h.send(ALICE, {**cmd, "client": "alice", "nonce": 10 + i})) == "not_operator"
    a = h.send(
        OP,
        {"type": "add_market", "client": "op", "market": "M", "tick": "1", "lot": "1", "nonce": 1},
    )
    assert etype(a.results[0][0]) == "market_added"
    h.counts.markets_n = 1000
    a = h.send(
        OP,
        {"type": "add_market", "client": "op", "market": "N", "tick": "1", "lot": "1", "nonce": 2},
    )
    assert reason(a) == "limit_markets"


def test_membership() -> None:
    h = Harness(genesis(limits=Limits(learners=1)))
    admit = {"type": "admit", "client": "op", "node": "n2", "key": N2.public_key, "cert": CERT}
    assert (
        reason(
            h.send(OP, {**admit, "nonce": 1, "key": "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"})
        )
        == "invalid_key"
    )
    assert reason(h.send(OP, {**admit, "nonce": 2, "cert": None})) == "invalid_key"
    assert reason(h.send(OP, {**admit, "nonce": 3, "node": "n 2"})) == "invalid_command"
    assert reason(h.send(OP, {**admit, "nonce": 4, "node": "n1"})) == "node_exists"
    assert (
        reason(h.send(OP, {**admit, "nonce": 5, "key": OP.public_key})) == "node_exists"
    )  # n1's key
    a = h.send(OP, {**admit, "nonce": 6})
    assert [etype(e) for e in a.results[0]] == ["member_added"] and a.results[0][
        0
    ].role == "learner"
    assert h.auth.learners_count == 1
    assert (
        reason(h.send(OP, {**admit, "nonce": 7, "node": "n3", "key": N3.public_key}))
        == "limit_learners"
    )
    assert (
        reason(h.send(OP, {"type": "promote", "client": "op", "node": "n1", "nonce": 8}))
        == "unknown_node"
    )  # a voter
    assert (
        reason(h.send(OP, {"type": "promote", "client": "op", "node": "zz", "nonce": 9}))
        == "unknown_node"
    )
    assert (
        reason(h.send(OP, {"type": "promote", "client": "op", "node": 5, "nonce": 10}))
        == "unknown_node"
    )
    p = h.send(OP, {"type": "promote", "client": "op", "node": "n2", "nonce": 11})
    assert etype(p.results[0][0]) == "member_promoted" and h.auth.learners_count == 0
    r = h.send(OP, {"type": "remove", "client": "op", "node": "n2", "nonce": 12})
    assert etype(r.results[0][0]) == "member_removed"
    assert [m.id for m in h.auth.members()] == ["n1"]
    assert (
        reason(h.send(OP, {"type": "remove", "client": "op", "node": "n2", "nonce": 13}))
        == "unknown_node"
    )
    # ids are never reused, but a removed node's key may come back under a new id
    assert reason(h.send(OP, {**admit, "nonce": 14})) == "node_exists"
    assert etype(h.send(OP, {**admit, "node": "n2b", "nonce": 15}).results[0][0]) == "member_added"


def test_join() -> None:
    closed = Harness()
    j = {
        "type": "join",
        "client": "n2",
        "node": "n2",
        "key": N2.public_key,
        "cert": CERT,
        "nonce": 1,
    }
    assert reason(closed.send(N2, j)) == "not_operator"
    h = Harness(genesis(join="open"))
    assert reason(h.send(N3, j)) == "bad_signature"  # not signed by the joining node's key
    assert reason(h.send(N2, {**j, "node": "n3"})) == "invalid_command"  # client is the node id
    assert reason(h.send(N2, {**j, "key": "bad"})) == "invalid_key"
    a = h.send(N2, j)
    assert etype(a.results[0][0]) == "member_added"
    assert h.auth.member("n2") is not None and h.auth.account_key("n2") is None
    again = h.send(N2, j)
    assert type(again.verdict) is Duplicate
    assert json.loads(again.verdict.events or b"") == [
        [
            {
                "type": "member_added",
                "seq": a.results[0][0].seq,
                "node": "n2",
                "key": N2.public_key,
                "role": "learner",
            }
        ]
    ]
    assert reason(h.send(N2, {**j, "nonce": 2})) == "node_exists"
    # a join never touches an account of the same name
    h.register(ALICE, "n5")
    h.send(N3, {**j, "client": "n5", "node": "n5", "key": N3.public_key})
    assert [k.nonce for k in h.auth.kept("n5")] == [1]


def test_order_limits_read_counters() -> None:
    h = Harness(genesis(limits=Limits(orders=2, ids=3)))
    h.register(ALICE, "alice")
    place = {
        "type": "place",
        "client": "alice",
        "id": "a",
        "market": "M",
        "side": "buy",
        "qty": "1",
        "price": "1",
    }
    h.counts.resting["alice"] = 2
    assert reason(h.send(ALICE, {**place, "nonce": 2})) == "limit_orders"
    h.counts.resting["alice"] = 1
    h.counts.ids["alice"] = 3
    assert reason(h.send(ALICE, {**place, "nonce": 3})) == "limit_ids"
    h.counts.ids["alice"] = 2
    assert reason(h.send(ALICE, {**place, "nonce": 4})) == "unknown_market"  # on to §2
    assert len(h.runs) == 1


def test_batch() -> None:
    h = Harness()
    h.register(ALICE, "alice")
    text = json.dumps(
        {
            "client": "alice",
            "nonce": 2,
            "batch": [
                {"type": "cancel", "id": "x"},
                {"type": "add_market", "market": "M", "tick": "1", "lot": "1"},
                {"type": "frob"},
            ],
        }
    )
    e = decode_envelope_json(sign_envelope(ALICE, h.g.cluster_id, text))
    assert isinstance(e, Envelope)
    a = h.apply(e)
    assert [[ev.reason for ev in r] for r in a.results] == [
        ["unknown_order"],
        ["not_operator"],
        ["invalid_command"],
    ]
    assert a.results[1][0].cmd == "add_market" and a.results[1][0].client == "alice"
    assert [c["client"] for c in h.runs] == ["alice", "alice"]
    assert type(h.apply(e).verdict) is Duplicate and len(h.runs) == 2
    # a batch failing check 3 gets one rejected event with cmd null
    forged = text.replace('"nonce": 2', '"nonce": 3')
    e3 = decode_envelope_json(sign_envelope(EVE, h.g.cluster_id, forged))
    assert isinstance(e3, Envelope)
    bad = h.apply(e3)
    assert reason(bad) == "bad_signature" and bad.results[0][0].cmd is None


def test_rejected_event_shape() -> None:
    h = Harness()
    a = h.send(ALICE, {"type": "place", "client": "ghost", "id": "o1", "nonce": 1})
    ev = a.results[0][0]
    assert (ev.cmd, ev.reason, ev.client, ev.id) == ("place", "unknown_client", "ghost", "o1")
    a = h.send(ALICE, {"type": "weird", "client": "ghost", "id": "o 1", "nonce": 1})
    ev = a.results[0][0]
    assert (ev.cmd, ev.client, ev.id) == (None, "ghost", None)


# -- outcomes' bytes bound ----------------------------------------------------------------------


def test_events_dropped_beyond_the_bound() -> None:
    h = Harness(events_bytes_per_account_max=400)
    h.register(ALICE, "alice")
    outs = [h.send(ALICE, cancel("alice", n, f"order-{n}")).outcome for n in range(2, 8)]
    kept = h.auth.kept("alice")
    total = sum(len(k.events) for k in kept if k.events is not None)
    assert 0 < total <= 400
    assert kept[-1].events == outs[-1]  # the newest kept
    assert kept[0].events is None  # the lowest dropped first
    d = h.send(ALICE, cancel("alice", 2, "order-2"))
    assert type(d.verdict) is Duplicate and d.verdict.events is None and d.verdict.seq == 2
    tiny = Harness(events_bytes_per_account_max=10)
    tiny.register(ALICE, "alice")
    assert tiny.send(ALICE, cancel("alice", 2)).outcome is None


# -- snapshots ------------------------------------------------------------------------------------


def test_snapshot_round_trip_and_errors() -> None:
    h = Harness(genesis(join="open", limits=Limits(nonces=3)))
    h.register(ALICE, "alice")
    h.register(BOB, "bob")
    for n in range(2, 7):
        h.send(ALICE, cancel("alice", n))
    h.send(
        N2,
        {
            "type": "join",
            "client": "n2",
            "node": "n2",
            "key": N2.public_key,
            "cert": CERT,
            "nonce": 1,
        },
    )
    h.send(OP, {"type": "remove", "client": "op", "node": "n2", "nonce": 1})
    blob = h.auth.snapshot()
    r = Auth.restore(h.g, blob)
    assert r.snapshot() == blob and r.state_hash() == h.auth.state_hash()
    assert r.kept("alice") == h.auth.kept("alice")
    assert r.learners_count == h.auth.learners_count and [m.id for m in r.members()] == ["n1"]
    assert Auth.restore(h.g, b"").snapshot() == Auth(h.g).snapshot()
    with pytest.raises(AuthSnapshotError):
        Auth.restore(genesis(), blob)  # another cluster id
    with pytest.raises(AuthSnapshotError):
        Auth.restore(h.g, b"\x00garbage")
    with pytest.raises(AuthSnapshotError):
        Auth.restore(h.g, blob[:-3])
    import msgspec.msgpack as mp

    raw = mp.decode(blob)
    raw[0] = 99
    with pytest.raises(AuthSnapshotError, match="version"):
        Auth.restore(h.g, mp.encode(raw))
    raw = mp.decode(blob)
    raw[2] = list(reversed(raw[2]))  # accounts out of order
    with pytest.raises(AuthSnapshotError):
        Auth.restore(h.g, mp.encode(raw))


# -- properties -----------------------------------------------------------------------------------

N_WINDOW = 4


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(1, 30), st.integers(0, 1)), max_size=60))
def test_window_matches_the_model(ops: list[tuple[int, int]]) -> None:
    """The kept set is the top N of all consumed nonces; check() agrees with §8 check 5."""
    h = Harness(genesis(limits=Limits(nonces=N_WINDOW)))
    assert h.auth.kept("op") == []  # the operator's window starts empty
    consumed: dict[int, int] = {}  # nonce -> variant that consumed it
    for nonce, variant in ops:
        kept = sorted(consumed)[-N_WINDOW:]
        if nonce in kept:
            want = "dup" if consumed[nonce] == variant else "stale"
        elif len(kept) == N_WINDOW and nonce < kept[0]:
            want = "stale"
        else:
            want = "fresh"
            assert nonce not in consumed  # exactly once: an evicted nonce is never fresh again
        a = h.send(OP, cancel("op", nonce, f"v{variant}"))
        got = {Fresh: "fresh", Duplicate: "dup", Reject: "stale"}[type(a.verdict)]
        event(got)
        assert got == want, (nonce, variant, kept)
        if want == "fresh":
            consumed[nonce] = variant
        assert [k.nonce for k in h.auth.kept("op")] == sorted(consumed)[-N_WINDOW:]


_op = st.one_of(
    st.tuples(st.just("new"), st.sampled_from(["alice", "bob"]), st.integers(1, 40)),
    st.tuples(st.just("retry"), st.integers(0, 1000), st.booleans()),
    st.tuples(st.just("rotate"), st.sampled_from(["alice", "bob"]), st.integers(5, 10)),
    st.tuples(st.just("snapshot"), st.just(""), st.just(0)),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_op, max_size=50))
def test_exactly_once_with_retries_evictions_and_rotations(ops: list[tuple[str, Any, Any]]) -> None:
    h = Harness(genesis(limits=Limits(nonces=N_WINDOW)))
    keys = {"alice": ALICE, "bob": BOB}
    for name, k in keys.items():
        h.register(k, name, 1)
    sent: list[tuple[str, dict[str, Any], SecretKey]] = []  # every envelope ever sent
    executed: dict[tuple[str, int], bytes] = {}  # (client, nonce) -> the TEXT that executed
    first: dict[tuple[str, int], Applied] = {}
    f_seq: dict[tuple[str, int], int] = {}
    for kind, a, b in ops:
        if kind == "snapshot":
            blob = h.auth.snapshot()
            h.auth = Auth.restore(h.g, blob)
            assert h.auth.snapshot() == blob
            continue
        if kind == "new":
            cmd = cancel(a, b, f"o{len(sent)}")
            key = keys[a]
        elif kind == "rotate":
            new = KEYS[b]
            nonce = 100 + len(sent)
            cmd = {"type": "rotate_key", "client": a, "key": new.public_key, "nonce": nonce}
            key = keys[a]
        else:
            if not sent:
                continue
            client, cmd, key = sent[a % len(sent)]
            if b:  # the client re-signs the same TEXT with the account's current key
                key = keys[client]
        client = cmd["client"]
        e = h.env(key, cmd)
        runs_before = len(h.runs)
        out = h.apply(e)
        v = out.verdict
        event(type(v).__name__ + (f" {v.reason}" if type(v) is Reject else ""))
        ident = (client, cmd["nonce"])
        if type(v) is Fresh:
            assert ident not in executed, ident  # never twice
            executed[ident] = e.text
            first[ident] = out
            f_seq[ident] = h.seq
            if cmd["type"] == "rotate_key" and etype(out.results[0][0]) == "key_rotated":
                keys[client] = next(k for k in KEYS if k.public_key == cmd["key"])
                event("rotated")
        else:
            assert len(h.runs) == runs_before  # nothing ran
            if type(v) is Duplicate:
                assert executed.get(ident) == e.text
                f = first[ident]
                assert v.seq == f_seq[ident]  # the first outcome's position
                assert v.events is None or v.events == f.outcome
            else:
                assert isinstance(v, Reject)
                assert v.reason in ("stale_nonce", "bad_signature"), v
                if v.reason == "bad_signature":
                    assert key.public_key != h.auth.account_key(client)
        sent.append((client, cmd, key))
    # the window invariant holds for every account
    for name in keys:
        nonces = [k.nonce for k in h.auth.kept(name)]
        assert nonces == sorted(nonces) and len(nonces) <= N_WINDOW
