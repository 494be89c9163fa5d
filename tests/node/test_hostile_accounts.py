"""Hostile participants on the client API (SPEC §8): nobody acts for an account without its key.

How: three voters on one Grape (real ``grenex node`` processes on loopback), the event stream
of n3 recorded from the first command; every command is recorded and the history checked at
the end of each test (``Harness.verify``).  ``alice`` and ``honest`` are honest accounts;
``mallory`` is a registered attacker with her own key; ``eve`` has a key but no account.

Proves, each attack while an honest client keeps trading through another node:

1. another participant's ``cancel``/``amend``/``place`` for alice — signed with mallory's own
   key under alice's name, unsigned (no ``sig``, a garbage ``sig``, a signature of other
   TEXT), by eve (no account), or as mallory's own command naming alice's order id — is
   refused before the log (``bad_signature``, ``unknown_client``, ``invalid_command``) or,
   for mallory's own, a logged ``unknown_order``; alice's order is untouched (still resting
   with its quantity, no event about it), and every honest order sent meanwhile is
   acknowledged (:data:`HONEST` of them);
2. market squatting: mallory's ``add_market`` is a logged ``rejected`` ``not_operator``
   (eve's is ``unknown_client``, before the log) and the market does not exist on any node;
3. session-table flooding: 5,000 made-up (unregistered) accounts' envelopes are each refused
   ``unknown_client`` before the log, and :data:`FLOOD_REGISTERED` registered accounts each
   send :data:`FLOOD_EACH` envelopes; none of it turns the honest client's retry of its
   envelope (sent before the flood) into anything but its first outcome (``duplicate``);
4. a captured envelope replayed later (its exact bytes, through another node) executes
   nothing new: the first outcome, marked duplicate, and no new event in the stream;
5. a forged ``admit``/``promote``/``remove`` by a non-operator is a logged ``not_operator``
   (under the operator's name with mallory's key: ``bad_signature`` before the log), and the
   membership is unchanged on every node.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from grenex.codec import encode_json
from grenex.codec.keys import SecretKey

from .conftest import started_harness
from .harness import Harness
from .history import FAILED, OK, Op

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

HONEST = 150  # honest orders sent while an attack runs (test 1)
FLOOD_UNREGISTERED = 5_000
FLOOD_REGISTERED = 200
FLOOD_EACH = 3
CONCURRENCY = 32


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def harness(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    async with started_harness(
        tmp_path_factory, "hostile", stream_node="n3", nodes=3, voters=3, grapes=1
    ) as h:
        for client in ("alice", "honest", "mallory"):
            await h.register("n1", client)
        yield h


def micros() -> int:
    return time.time_ns() // 1_000


def forged(
    h: Harness, node: str, cmd: dict[str, Any], key: SecretKey | None, sig: str | None = None
) -> Op:
    """An op for ``cmd`` (TEXT as given, a fresh nonce) signed with ``key`` — whoever's it is
    — or carrying ``sig`` as is (``key`` None and ``sig`` None: no ``sig`` at all)."""
    obj = {**cmd, "nonce": micros()}
    text = encode_json(obj)
    env: dict[str, Any] = {"cmd": text.decode()}
    if key is not None:
        env["sig"] = key.sign(h.signing.genesis.cluster_id, text)
    elif sig is not None:
        env["sig"] = sig
    raw = json.dumps(env, separators=(",", ":"))
    return Op(str(cmd.get("client")), str(cmd["type"]), obj, node, raw=raw)


def order(client: str, oid: str, side: str, qty: str, price: str) -> dict[str, Any]:
    return {
        "type": "place",
        "client": client,
        "id": oid,
        "market": "BTC-USD",
        "side": side,
        "qty": qty,
        "price": price,
    }


async def bounded(n: int, make: Callable[[int], Awaitable[Op]]) -> list[Op]:
    """``make(i)`` for i in range(n), at most CONCURRENCY at once."""
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> Op:
        async with slots:
            return await make(i)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def honest_orders(h: Harness, node: str, tag: str, n: int) -> list[Op]:
    """``n`` honest orders (they cross each other: buys and sells at 100) through ``node``."""

    async def one(i: int) -> Op:
        side = "buy" if i % 2 else "sell"
        return await h.send(h.signing.op(node, order("honest", f"{tag}{i}", side, "1", "100")))

    return await bounded(n, one)


def refused(op: Op, reason: str, what: str = "") -> None:
    """Refused before the log with the §8 reason (which may be followed by ``: detail``)."""
    assert op.status == FAILED, (what, op)
    want = f"ERR_GRENEX_BAD_REQUEST: {reason}"
    assert op.error == want or op.error.startswith(want + ":"), (what, op.error)


def logged_rejection(op: Op, reason: str) -> None:
    assert op.status == OK and op.events is not None, op
    got = [(e["type"], e.get("reason")) for e in op.events]
    assert got == [("rejected", reason)], op.events


async def test_nobody_acts_for_alice(harness: Harness) -> None:
    h = harness
    kr = h.cluster.keyring
    mallory, eve = kr.key("mallory"), kr.key("eve")
    a1 = await h.command("n1", "place", order("alice", "a1", "buy", "2", "90"))
    assert a1.status == OK and a1.events and a1.events[-1]["type"] == "resting"
    await h.sentinel()  # the stream has a1's entry
    before = len(h.stream.events) if h.stream else 0

    attacks: list[tuple[str, dict[str, Any], SecretKey | None, str | None, str]] = []
    for kind, cmd in (
        ("cancel", {"type": "cancel", "client": "alice", "id": "a1"}),
        ("amend", {"type": "amend", "client": "alice", "id": "a1", "qty": "1", "price": "1"}),
        ("place", order("alice", "a2", "sell", "2", "90")),  # would trade with a1
    ):
        attacks += [
            (f"{kind} under alice's name, mallory's key", cmd, mallory, None, "bad_signature"),
            (f"{kind} without a sig", cmd, None, None, "invalid_command"),
            (f"{kind} with a garbage sig", cmd, None, "x" * 86, "bad_signature"),
            (f"{kind} by eve, no account", {**cmd, "client": "eve"}, eve, None, "unknown_client"),
        ]
    # a valid signature of alice's, over another TEXT (captured and pasted on)
    stolen = json.loads(h.signing.envelope({"type": "cancel", "client": "alice", "id": "zz"}))
    attacks.append(
        (
            "cancel with alice's signature of another TEXT",
            {"type": "cancel", "client": "alice", "id": "a1"},
            None,
            stolen["sig"],
            "bad_signature",
        )
    )

    async def attack(i: int) -> Op:
        what, cmd, key, sig, reason = attacks[i % len(attacks)]
        op = await h.send(forged(h, "n1", cmd, key, sig))
        refused(op, reason, what)
        return op

    rounds = 10
    honest, attacked = await asyncio.gather(
        honest_orders(h, "n2", "t1-", HONEST), bounded(rounds * len(attacks), attack)
    )
    # mallory's own cancel/amend of "a1" names her own (non-existent) order
    for cmd in (
        {"type": "cancel", "client": "mallory", "id": "a1"},
        {"type": "amend", "client": "mallory", "id": "a1", "qty": "1"},
    ):
        logged_rejection(await h.send(h.signing.op("n1", cmd)), "unknown_order")

    assert len(attacked) == rounds * len(attacks)
    assert [op.status for op in honest] == [OK] * HONEST, [op for op in honest if op.status != OK]
    for node in ("n1", "n2", "n3"):
        st = await h.ask(node, "order", {"client": "alice", "id": "a1"})
        assert (st["state"], st["remaining"]) == ("resting", "2"), (node, st)
        st = await h.ask(node, "order", {"client": "alice", "id": "a2"})
        assert st["state"] == "unknown", (node, st)
    await h.sentinel()
    assert h.stream is not None
    about_alice = [e for e in h.stream.events[before:] if "alice" in json.dumps(e)]
    assert about_alice == [], about_alice
    await h.verify()


async def test_market_squatting(harness: Harness) -> None:
    h = harness
    squat = {"type": "add_market", "client": "mallory", "market": "SQUAT-USD"}
    op = await h.send(h.signing.op("n2", {**squat, "tick": "0.01", "lot": "0.01"}))
    logged_rejection(op, "not_operator")
    assert op.events is not None and op.events[0]["market"] == "SQUAT-USD"
    eve = forged(h, "n2", {**squat, "client": "eve", "tick": "1", "lot": "1"}, None)
    eve_signed = forged(
        h, "n2", {**squat, "client": "eve", "tick": "1", "lot": "1"}, h.cluster.keyring.key("eve")
    )
    refused(await h.send(eve), "invalid_command")
    refused(await h.send(eve_signed), "unknown_client")
    await h.verify()
    for node in ("n1", "n2", "n3"):
        markets = [m["market"] for m in (await h.ask(node, "markets"))["markets"]]
        assert markets == ["BTC-USD", "ETH-USD"], (node, markets)
        book = await h.ask(node, "book", {"market": "SQUAT-USD"})
        assert book["books"] == [], (node, book)


async def test_flooding_accounts_never_evicts_an_honest_outcome(harness: Harness) -> None:
    h = harness
    kr = h.cluster.keyring
    first = await h.send(h.signing.op("n1", order("honest", "keep", "buy", "1", "80")))
    assert first.status == OK and not first.duplicate
    applied_before = (await h.ask("n1", "status"))["applied"]

    async def unregistered(i: int) -> Op:
        name = f"ghost{i}"
        cmd = order(name, "x", "buy", "1", "80")
        return await h.send(forged(h, ("n1", "n2", "n3")[i % 3], cmd, kr.key(name)))

    flood = await bounded(FLOOD_UNREGISTERED, unregistered)
    for op in flood:
        refused(op, "unknown_client")
    applied_after = (await h.ask("n1", "status"))["applied"]
    # nothing of the flood reached the log (the cluster's own no-ops aside)
    assert applied_after - applied_before < 10, (applied_before, applied_after)

    names = [f"flood{i}" for i in range(FLOOD_REGISTERED)]
    await bounded(FLOOD_REGISTERED, lambda i: h.register(("n1", "n2", "n3")[i % 3], names[i]))

    async def registered(i: int) -> Op:
        name = names[i % FLOOD_REGISTERED]
        oid = f"f{i // FLOOD_REGISTERED}"
        op = await h.send(h.signing.op("n1", order(name, oid, "sell", "0.01", "200")))
        assert op.status == OK, op
        return op

    honest, _ = await asyncio.gather(
        honest_orders(h, "n2", "t3-", 40),
        bounded(FLOOD_REGISTERED * FLOOD_EACH, registered),
    )
    assert [op.status for op in honest] == [OK] * 40
    for node in ("n1", "n2", "n3"):
        again = await h.send(h.again(first, node))
        assert again.status == OK and again.duplicate, again
        assert (again.seq, again.events) == (first.seq, first.events), (first, again)
    await h.verify()


async def test_a_replayed_envelope_executes_nothing(harness: Harness) -> None:
    h = harness
    captured = await h.send(h.signing.op("n1", order("honest", "cap", "sell", "1", "120")))
    assert captured.status == OK and captured.events and captured.events[-1]["type"] == "resting"
    await honest_orders(h, "n1", "t4-", 10)  # time and other commands pass
    await h.sentinel()
    assert h.stream is not None
    seen = len(h.stream.events)
    for node in ("n2", "n3", "n1"):
        replayed = await h.send(h.again(captured, node))  # the same bytes
        assert replayed.status == OK and replayed.duplicate, replayed
        assert (replayed.seq, replayed.events) == (captured.seq, captured.events)
    await h.sentinel()
    new = [e for e in h.stream.events[seen:] if e.get("client") == "honest"]
    assert new == [], new  # only the sentinels' entries
    st = await h.ask("n2", "order", {"client": "honest", "id": "cap"})
    assert (st["state"], st["remaining"]) == ("resting", "1"), st
    await h.verify()


async def test_forged_membership_changes(harness: Harness) -> None:
    h = harness
    c = h.cluster
    kr = c.keyring
    before = {n: await h.ask(n, "members") for n in ("n1", "n2", "n3")}
    node_key = kr.node_key("n9").public_key
    admit = {"type": "admit", "node": "n9", "key": node_key, "cert": c.cert_of("n9")}
    for cmd in (admit, {"type": "promote", "node": "n3"}, {"type": "remove", "node": "n2"}):
        op = await h.send(h.signing.op("n1", {**cmd, "client": "mallory"}))
        logged_rejection(op, "not_operator")
        refused(
            await h.send(forged(h, "n2", {**cmd, "client": kr.operator}, kr.key("mallory"))),
            "bad_signature",
        )
    await h.verify()
    for n in ("n1", "n2", "n3"):
        after = await h.ask(n, "members")
        assert after["members"] == before[n]["members"], (n, after)
    st = await h.status_direct()
    assert all(s["members"]["voters"] == ["n1", "n2", "n3"] for s in st.values()), st
