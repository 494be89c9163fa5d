"""Snapshots: ``Engine.snapshot()`` / ``Engine.restore()`` / ``state_hash()``.

What this proves, for every build of the engine:

* Round trip at random points: one engine runs a seeded random stream uninterrupted; a second
  one is replaced, at random points, by ``restore(snapshot())`` of itself. Both must emit exactly
  the same events for every later command and end with the same books, snapshot bytes and
  ``state_hash``; each restore gives back the very bytes it was made from; and the snapshot of
  a build restores identically in every other build.
* Canonical bytes: engines that reach the same state (same books in the same priority order,
  same used ids, as the reference engine confirms) through different histories produce equal
  bytes and hashes; different states produce different ones.
* Garbage is refused: empty, random, truncated or structurally damaged blobs raise
  ``grenex.engine.SnapshotError`` (never another exception), and a damaged blob that *is*
  accepted still yields an engine whose invariants hold and which keeps working.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from grenex.codec import decode_command
from grenex.engine import Engine

from .builds import BUILDS, engine_class, snapshot_error
from .gen import CommandGen
from .harness import add_market, cancel, place
from .reference import ReferenceEngine

Line = str | bytes


def _apply(eng: Engine, line: Line | dict[str, Any], seq: int) -> list[Any]:
    if isinstance(line, dict):
        line = json.dumps(line)
    events = [msgspec.to_builtins(e) for e in eng.apply(decode_command(line), seq)]
    eng.check_invariants()
    return events


def _run(build: str, lines: Sequence[Line | dict[str, Any]]) -> Engine:
    eng = engine_class(build)()
    for i, line in enumerate(lines):
        _apply(eng, line, i + 1)
    return eng


def _ref(lines: Sequence[Line | dict[str, Any]]) -> ReferenceEngine:
    ref = ReferenceEngine()
    for i, line in enumerate(lines):
        ref.apply(decode_command(line if not isinstance(line, dict) else json.dumps(line)), i + 1)
    return ref


# ---------------------------------------------------------------------- round trip


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("seed", range(4))
def test_restored_engine_continues_exactly_like_the_uninterrupted_one(
    build: str, seed: int
) -> None:
    lines = CommandGen(100 + seed).lines(3000)
    cls = engine_class(build)
    r = random.Random(seed)
    straight, hopping = cls(), cls()
    restores = 0
    for i, line in enumerate(lines):
        if r.random() < 0.01 or i == len(lines) - 1:
            blob = hopping.snapshot()
            hopping = cls.restore(blob)
            hopping.check_invariants()
            restores += 1
            assert hopping.snapshot() == blob, f"restore->snapshot changed the bytes at {i}"
            assert hopping.state_hash() == straight.state_hash()
        want = _apply(straight, line, i + 1)
        got = _apply(hopping, line, i + 1)
        assert got == want, f"seed {seed}, line {i}: {line!r}"
        assert hopping.books() == straight.books()
    assert restores > 10
    assert hopping.snapshot() == straight.snapshot()
    assert hopping.state_hash() == straight.state_hash()


def test_a_snapshot_restores_identically_in_every_build() -> None:
    lines = CommandGen(7).lines(2000)
    blobs = {build: _run(build, lines).snapshot() for build in BUILDS}
    assert len(set(blobs.values())) == 1
    blob = next(iter(blobs.values()))
    tail = CommandGen(8).lines(500)[4:]  # more commands (without its setup lines)
    outcomes = []
    for build in BUILDS:
        eng = engine_class(build).restore(blob)
        outcomes.append(
            ([_apply(eng, line, 5000 + i) for i, line in enumerate(tail)], eng.snapshot())
        )
    assert all(o == outcomes[0] for o in outcomes)


def test_state_hash_is_the_sha256_of_the_snapshot_and_changes_with_state() -> None:
    import hashlib

    for build in BUILDS:
        eng = engine_class(build)()
        hashes = {eng.state_hash()}
        assert eng.state_hash() == hashlib.sha256(eng.snapshot()).hexdigest()
        for i, cmd in enumerate(
            [
                add_market("M", "1", "1"),
                place("a", "1", "buy", "1", "5"),
                place("a", "2", "buy", "1", "5", market="NOPE"),  # only uses the id up
                place("b", "1", "sell", "1", "6"),
            ]
        ):
            _apply(eng, cmd, i + 1)
            assert eng.state_hash() not in hashes, cmd
            hashes.add(eng.state_hash())


# ---------------------------------------------------------------------- canonical bytes

Cmds = list[Line | dict[str, Any]]

SAME_STATE: list[tuple[str, Cmds, Cmds]] = [
    (
        "markets opened in another order",
        [add_market("A", "1", "1"), add_market("B", "0.1", "2")],
        [add_market("B", "0.10", "2.0"), add_market("A", "1", "1")],
    ),
    (
        "amended down in place vs placed with that quantity",
        [
            add_market("M", "1", "1"),
            place("a", "1", "buy", "5", "10"),
            {"type": "amend", "client": "a", "id": "1", "qty": "2"},
        ],
        [add_market("M", "1", "1"), place("a", "1", "buy", "2", "10")],
    ),
    (
        "partly filled vs placed with the remainder (ids used in another order)",
        [
            add_market("M", "1", "1"),
            place("a", "1", "sell", "5", "10"),
            place("b", "1", "buy", "2", "10"),
        ],
        [
            add_market("M", "1", "1"),
            place("b", "1", "buy", "2", "10", market="NOPE"),
            place("a", "1", "sell", "3", "10"),
        ],
    ),
    (
        "placed and cancelled vs rejected after the duplicate check",
        [add_market("M", "1", "1"), place("a", "1", "buy", "1", "10"), cancel("a", "1")],
        [add_market("M", "1", "1"), place("a", "1", "hold", "1", "10")],
    ),
    (
        "same priority order reached through more orders, re-entries and rejections",
        [
            add_market("M", "1", "1"),
            place("a", "z", "buy", "1", "10", market="NOPE"),
            place("a", "x", "buy", "1", "10"),
            place("a", "y", "buy", "1", "10"),
        ],
        [
            add_market("M", "1", "1"),
            b"garbage",
            place("a", "x", "buy", "1", "9"),
            place("a", "z", "buy", "1", "10"),
            {"type": "amend", "client": "a", "id": "x", "price": "10"},  # behind z
            cancel("a", "z"),
            {"type": "amend", "client": "a", "id": "x", "qty": "1"},  # in place
            place("a", "y", "buy", "1", "10"),
            cancel("a", "q"),
        ],
    ),
]


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize(("why", "first", "second"), SAME_STATE, ids=[s[0] for s in SAME_STATE])
def test_equal_states_reached_by_different_histories_give_equal_bytes(
    build: str, why: str, first: Cmds, second: Cmds
) -> None:
    # the reference confirms the states are equal (books in priority order and used ids)
    assert _ref(first).canonical_state() == _ref(second).canonical_state()
    a, b = _run(build, first), _run(build, second)
    assert a.books() == b.books()
    assert a.snapshot() == b.snapshot(), why
    assert a.state_hash() == b.state_hash()


@pytest.mark.parametrize("build", BUILDS)
def test_different_states_give_different_bytes(build: str) -> None:
    base: Cmds = [add_market("M", "1", "1"), place("a", "x", "buy", "1", "10")]
    variants: list[Cmds] = [
        base,
        [*base, place("a", "y", "buy", "1", "10")],  # one more order
        [
            add_market("M", "1", "1"),
            place("a", "y", "buy", "1", "10"),
            place("a", "x", "buy", "1", "10"),
        ],
        [*base, place("a", "y", "buy", "1", "10", market="NOPE")],  # one more used id
        [add_market("M", "1", "1"), place("a", "x", "buy", "1", "10", post_only=True)],
        [add_market("M", "1", "1"), place("a", "x", "buy", "1", "10", stp="cancel_both")],
        [add_market("M", "1", "2"), place("a", "x", "buy", "2", "10")],
        [add_market("M", "1", "1"), place("a", "x", "sell", "1", "10")],
        [add_market("M", "1", "1"), place("a", "x", "buy", "1", "11")],
        [add_market("M", "1", "1"), place("a", "x", "buy", "2", "10")],
        [add_market("M", "1", "1")],
        [],
    ]
    blobs = [_run(build, v).snapshot() for v in variants]
    assert len(set(blobs)) == len(blobs)


# ---------------------------------------------------------------------- garbage


@pytest.mark.parametrize("build", BUILDS)
def test_restoring_garbage_raises_snapshot_error(build: str) -> None:
    cls, error = engine_class(build), snapshot_error(build)
    good = _run(build, CommandGen(3).lines(400)).snapshot()
    r = random.Random(0)
    blobs = [
        b"",
        b"\x00",
        b"garbage",
        b"null",
        b"{}",
        b"[]",
        b"[1]",
        b"[1,2,3]",
        b'"snapshot"',
        b"\xff\xfe\xfd",
        b"[999,[],[]]",  # an unknown version
        good + b"x",
        good + good,
        *(good[:n] for n in sorted({1, 2, len(good) // 3, len(good) // 2, len(good) - 1})),
        *(r.randbytes(r.randint(1, 200)) for _ in range(50)),
    ]
    for blob in blobs:
        with pytest.raises(error):
            cls.restore(blob)


def _leaves(node: Any, path: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Paths to every element of every list in a JSON tree (lists are all a snapshot uses)."""
    out: list[tuple[int, ...]] = []
    if isinstance(node, list):
        for i, child in enumerate(node):
            out.append((*path, i))
            out += _leaves(child, (*path, i))
    return out


def _mutate(tree: Any, r: random.Random) -> Any:
    tree = copy.deepcopy(tree)
    paths = _leaves(tree)
    if not paths:
        return tree
    path = r.choice(paths)
    parent = tree
    for i in path[:-1]:
        parent = parent[i]
    i = path[-1]
    k = r.randrange(4)
    if k == 0:
        parent[i] = r.choice(
            [None, True, False, -1, 0, 1, 2**63, 2**64, 1.5, "", "x", "é", "0", "-1", [], {}]
        )
    elif k == 1:
        parent.insert(i, copy.deepcopy(parent[i]))  # a duplicate
    elif k == 2:
        del parent[i]
    elif len(parent) > 1:
        j = r.randrange(len(parent))
        parent[i], parent[j] = parent[j], parent[i]
    return tree


@pytest.mark.parametrize("build", BUILDS)
def test_damaged_snapshots_are_refused_or_still_yield_a_sound_engine(build: str) -> None:
    """Any blob ``restore`` accepts must give an engine whose invariants hold, that keeps
    working, and whose own snapshot restores to itself; everything else is SnapshotError."""
    cls, error = engine_class(build), snapshot_error(build)
    good = _run(build, CommandGen(5).lines(600)).snapshot()
    tree = json.loads(good)
    r = random.Random(1)
    refused = 0
    tail = CommandGen(6).lines(150)
    for _ in range(400):
        blob = json.dumps(_mutate(tree, r), separators=(",", ":")).encode()
        try:
            eng = cls.restore(blob)
        except error:
            refused += 1
            continue
        eng.check_invariants()
        again = eng.snapshot()
        assert cls.restore(again).snapshot() == again
        for i, line in enumerate(tail):
            _apply(eng, line, i + 1)
    assert refused > 100
