"""SPEC §2 "from here on the id is used up, whatever the outcome", at scale.

A long life means many thousands of ids per client that no longer rest, yet every one of them
must still answer ``duplicate_id`` forever, across snapshots, and no id that was never placed
may ever be mistaken for a used one. Ids in real streams look like ``prefix + counter``, and
an engine may well store them that way, so this test draws ids that are hard for any such
scheme: counters with leading zeros, ``0`` and ``00``, 17- to 25-digit counters (around 10^18
and 2^63), ids that are all digits, ids that end in a letter, and near misses of used ids.

Two clients (so that orders trade and self-trade) place tens of thousands of orders that are
rejected after the duplicate check, rest and get cancelled, trade away, or are amended, with
restores from snapshots along the way. Every event is compared with the naive reference, and at
the end every id named and every near miss of it is probed for ``duplicate_id``.
"""

from __future__ import annotations

import json
import random

import msgspec
import pytest

from grenex.codec import decode_command
from grenex.engine import Engine

from .builds import BUILDS, engine_class
from .reference import ReferenceEngine

PREFIXES = ["", "o", "o0", "0", "x-", "A.b:", "9", "o00", "id_"]
COUNTERS = [
    *range(0, 40),
    *range(10**17 - 3, 10**17 + 3),
    *range(10**18 - 3, 10**18 + 3),
    *range(2**63 - 3, 2**63 + 3),
    10**24,
]


def _random_id(r: random.Random) -> str:
    prefix = r.choice(PREFIXES)
    k = r.random()
    if k < 0.7:
        n = r.randrange(5000)  # a dense counter, as in real streams
    elif k < 0.9:
        n = r.choice(COUNTERS)
    else:
        return prefix + r.choice(["a", "z", "-", ".", ":", "_", "0a", "1b"])
    zeros = "0" * r.choice([0, 0, 0, 1, 2])
    oid = f"{prefix}{zeros}{n}"
    return oid if len(oid) <= 64 else oid[:64]


def _near_misses(oid: str) -> list[str]:
    out = [oid + "0", "0" + oid, oid[:-1], oid + "1", "o" + oid]
    digits = len(oid) - len(oid.rstrip("0123456789"))
    if digits:
        head = oid[: len(oid) - digits]
        out.append(head + "0" + oid[len(head) :])
        if oid[len(head)] == "0":
            out.append(head + oid[len(head) + 1 :])
    return [x for x in out if 1 <= len(x) <= 64]


@pytest.mark.parametrize("build", BUILDS)
def test_used_ids_stay_used_forever_and_unused_ones_stay_free(build: str) -> None:
    cls = engine_class(build)
    r = random.Random(2024)
    eng: Engine = cls()
    ref = ReferenceEngine()
    seq = 0
    named: set[tuple[str, str]] = set()
    live: list[tuple[str, str]] = []

    def send(cmd: dict[str, object]) -> list[dict[str, object]]:
        nonlocal seq
        seq += 1
        line = json.dumps(cmd)
        want = ref.apply(decode_command(line), seq)
        got = [msgspec.to_builtins(e) for e in eng.apply(decode_command(line), seq)]
        assert got == want, f"line {seq}: {line}"
        return want

    send({"type": "add_market", "market": "M", "tick": "1", "lot": "1"})
    for n in range(16000):
        client = "c" if r.random() < 0.8 else "d"
        oid = _random_id(r)
        named.add((client, oid))
        k = r.random()
        if k < 0.55:  # used up at once: rejected after the duplicate check
            send({"type": "place", "client": client, "id": oid, "market": "NOPE"})
        else:  # an order that rests, trades or self-trades
            side = r.choice(["buy", "sell"])
            events = send(
                {
                    "type": "place",
                    "client": client,
                    "id": oid,
                    "market": "M",
                    "side": side,
                    "qty": str(r.randint(1, 3)),
                    "price": str(100 + r.randint(-2, 2)),
                    "stp": r.choice(["cancel_maker", "cancel_taker", "cancel_both"]),
                }
            )
            if events[-1]["type"] == "resting":
                live.append((client, oid))
        if live and r.random() < 0.3:  # cancel or amend a resting order
            c, i = live.pop(r.randrange(len(live)))
            if r.random() < 0.7:
                send({"type": "cancel", "client": c, "id": i})
            else:
                events = send({"type": "amend", "client": c, "id": i, "price": "102", "qty": "2"})
                if events[-1]["type"] == "resting":
                    live.append((c, i))
        if n % 5000 == 4999:  # continue from a snapshot
            blob = eng.snapshot()
            eng = cls.restore(blob)
            assert eng.snapshot() == blob
        if n % 1000 == 999:
            eng.check_invariants()
            assert eng.books() == ref.books()
    used = set(ref.used_ids())
    assert sum(1 for c, _ in used if c == "c") > 8000  # many ids no longer rest
    probes = sorted(named | {(c, m) for c, i in named for m in _near_misses(i)})
    copy = cls.restore(eng.snapshot())
    wrong = []
    for n, (client, oid) in enumerate(probes):
        cmd = {"type": "place", "client": client, "id": oid, "market": "probe-none"}
        reasons = [msgspec.to_builtins(e)["reason"] for e in copy.apply(cmd, seq + n + 1)]
        expected = "duplicate_id" if (client, oid) in used else "unknown_market"
        if reasons != [expected]:
            wrong.append((client, oid, reasons, expected))
    assert not wrong, wrong[:20]
