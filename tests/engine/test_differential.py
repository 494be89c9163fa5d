"""Differential test: the real engine against the naive reference over seeded random streams.

For each seed, :class:`~.gen.CommandGen` produces a stream of JSON lines (every command type,
several markets and clients, self-trades, amends of both kinds, cancels of live and dead ids,
duplicate ids and plenty of malformed input). Each line is decoded with
:func:`grenex.codec.decode_command` and applied to both engines; after *every* command the events
must be equal, the books must be equal and the real engine's ``check_invariants()`` must pass.
At the end, the used ids must agree too: each id the stream ever named is probed with a place on
a copy of the engine (restored from its snapshot): ``duplicate_id`` exactly when the reference
has used it.

On a mismatch the failure names the seed, the command index and the first differing event, and
shrinks the stream (delta debugging, bounded in time) to a short sequence that still disagrees.

Every build of the engine is compared (see ``builds.py``: the compiled core and its source).
The total number of random commands is ``GRENEX_DIFF_COMMANDS`` (default 50,000, split over
``GRENEX_DIFF_SEEDS`` seeds, default 10, starting at ``GRENEX_DIFF_SEED``, default 0); raise them
for a soak, e.g. ``GRENEX_DIFF_COMMANDS=2000000 GRENEX_DIFF_SEED=1000``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from grenex.codec import decode_command
from grenex.engine import Engine

from .builds import BUILDS, engine_class
from .gen import CommandGen
from .reference import ReferenceEngine, is_name

TOTAL = int(os.environ.get("GRENEX_DIFF_COMMANDS", "50000"))
N_SEEDS = int(os.environ.get("GRENEX_DIFF_SEEDS", "10"))
FIRST_SEED = int(os.environ.get("GRENEX_DIFF_SEED", "0"))
PER_SEED = max(1, TOTAL // N_SEEDS)
SHRINK_SECONDS = float(os.environ.get("GRENEX_DIFF_SHRINK_SECONDS", "30"))

Line = str | bytes
Events = list[dict[str, Any]]


@dataclass
class Mismatch:
    index: int  # of the line where the engines first disagree
    detail: str


def _show(line: Line) -> str:
    return line if isinstance(line, str) else repr(line)


def _events_diff(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> str:
    at = next(
        (i for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w),
        min(len(got), len(want)),
    )
    lines = [f"first differing event at position {at}:"]
    lines.append(f"  engine:    {json.dumps(got[at]) if at < len(got) else '(none)'}")
    lines.append(f"  reference: {json.dumps(want[at]) if at < len(want) else '(none)'}")
    lines.append("  all engine events:    " + json.dumps(got))
    lines.append("  all reference events: " + json.dumps(want))
    return "\n".join(lines)


def _books_diff(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> str:
    out = ["books differ:"]
    for g, w in zip(got, want, strict=False):
        if g != w:
            out.append(f"  engine:    {json.dumps(g)}")
            out.append(f"  reference: {json.dumps(w)}")
    if len(got) != len(want):
        out.append(f"  markets: engine {[b['market'] for b in got]}")
        out.append(f"           reference {[b['market'] for b in want]}")
    return "\n".join(out)


def step(
    engines: dict[str, Engine], ref: ReferenceEngine, line: Line, seq: int
) -> tuple[str | None, Events]:
    """Apply one line to every engine build and the reference.

    Returns what differs (or None) and the reference's events.
    """
    want = ref.apply(decode_command(line), seq)
    want_books: list[dict[str, Any]] | None = None
    for build, eng in engines.items():
        try:
            got = [msgspec.to_builtins(e) for e in eng.apply(decode_command(line), seq)]
        except Exception as e:  # bad input must never stop the engine
            return f"[{build}] engine.apply raised {e!r}", want
        if got != want:
            return f"[{build}] " + _events_diff(got, want), want
        try:
            eng.check_invariants()
        except AssertionError as e:
            return f"[{build}] check_invariants failed: {e}", want
        if want_books is None:
            want_books = ref.books()
        got_books = eng.books()
        if got_books != want_books:
            return f"[{build}] " + _books_diff(got_books, want_books), want
    return None, want


def new_engines() -> dict[str, Engine]:
    return {build: engine_class(build)() for build in BUILDS}


def first_mismatch(lines: list[Line]) -> Mismatch | None:
    """Run ``lines`` (seq = position + 1) through all engines, comparing after each one."""
    engines, ref = new_engines(), ReferenceEngine()
    for i, line in enumerate(lines):
        detail, _ = step(engines, ref, line, i + 1)
        if detail is not None:
            return Mismatch(i, detail)
    return None


def shrink(lines: list[Line], budget_s: float) -> list[Line]:
    """A shorter list of lines on which the engines still disagree (ddmin, time-bounded)."""
    deadline = time.monotonic() + budget_s
    current = list(lines)
    chunk = max(1, len(current) // 2)
    while chunk >= 1 and time.monotonic() < deadline:
        i, removed_any = 0, False
        while i < len(current) and time.monotonic() < deadline:
            candidate = current[:i] + current[i + chunk :]
            mismatch = first_mismatch(candidate)
            if candidate and mismatch is not None:
                current = candidate[: mismatch.index + 1]
                removed_any = True
            else:
                i += chunk
        if not removed_any:
            chunk //= 2
    return current


def report(seed: int, lines: list[Line], mismatch: Mismatch) -> str:
    small = shrink(lines[: mismatch.index + 1], SHRINK_SECONDS)
    final = first_mismatch(small)
    assert final is not None
    text = [
        f"engine and reference disagree: seed={seed}, command index={mismatch.index} "
        f"(seq {mismatch.index + 1}), line: {_show(lines[mismatch.index])}",
        mismatch.detail,
        f"shrunk to {len(small)} lines (seq = line number):",
        *("  " + _show(line) for line in small),
        final.detail,
    ]
    return "\n".join(text)


def probe_used_ids(eng: Engine, ref: ReferenceEngine, names: set[tuple[str, str]]) -> None:
    """Every named id is ``duplicate_id`` on a copy of the engine exactly when it is used."""
    copy = type(eng).restore(eng.snapshot())
    used = set(ref.used_ids())
    wrong = []
    for n, (client, oid) in enumerate(sorted(names)):
        cmd = {"type": "place", "client": client, "id": oid, "market": "probe-none"}
        reasons = [msgspec.to_builtins(e)["reason"] for e in copy.apply(cmd, n + 1)]
        expected = "duplicate_id" if (client, oid) in used else "unknown_market"
        if reasons != [expected]:
            wrong.append(((client, oid), reasons, expected))
    assert not wrong, f"used ids disagree (id, engine, reference): {wrong[:10]}"


@pytest.mark.parametrize("seed", range(FIRST_SEED, FIRST_SEED + N_SEEDS))
def test_engine_matches_reference_on_random_streams(seed: int) -> None:
    gen = CommandGen(seed)
    engines, ref = new_engines(), ReferenceEngine()
    lines: list[Line] = list(gen.setup())
    for i, line in enumerate(lines):
        assert step(engines, ref, line, i + 1)[0] is None, line
    for _ in range(PER_SEED):
        line = gen.next()
        lines.append(line)
        detail, events = step(engines, ref, line, len(lines))
        if detail is not None:
            pytest.fail(report(seed, lines, Mismatch(len(lines) - 1, detail)), pytrace=False)
        gen.observe(events)
    names = {(c, i) for c, i, _ in gen.history if is_name(c) and is_name(i)}
    for eng in engines.values():
        probe_used_ids(eng, ref, names)
    # the stream really exercised the engine
    assert len(ref.used_ids()) > PER_SEED // 4


def test_the_generator_covers_the_interesting_outcomes() -> None:
    """Guard against a generator that silently stops producing what the test relies on."""
    seen: set[str] = set()
    for seed in range(2):
        lines = CommandGen(seed).lines(2500)
        ref = ReferenceEngine()
        for i, line in enumerate(lines):
            for ev in ref.apply(decode_command(line), i + 1):
                if ev["type"] == "rejected":
                    seen.add(f"rejected:{ev['cmd']}:{ev['reason']}")
                elif ev["type"] == "cancelled":
                    seen.add(f"cancelled:{ev['reason']}")
                elif ev["type"] == "accepted":
                    seen.add(f"accepted:{ev['tif']}:{'market' if ev['price'] is None else 'limit'}")
                else:
                    seen.add(ev["type"])
    expected = {
        "market_added",
        "accepted:GTC:limit",
        "accepted:IOC:limit",
        "accepted:FOK:limit",
        "accepted:IOC:market",
        "accepted:FOK:market",
        "amended",
        "trade",
        "filled",
        "resting",
        "cancelled:user",
        "cancelled:self_trade",
        "cancelled:unfilled",
        "rejected:None:invalid_command",
        "rejected:add_market:market_exists",
        "rejected:add_market:invalid_market",
        *(
            f"rejected:place:{reason}"
            for reason in [
                "invalid_command",
                "duplicate_id",
                "unknown_market",
                "invalid_side",
                "invalid_qty",
                "invalid_price",
                "invalid_tif",
                "invalid_stp",
                "post_only_would_cross",
                "fok_unfillable",
            ]
        ),
        "rejected:cancel:invalid_command",
        "rejected:cancel:unknown_order",
        *(
            f"rejected:amend:{reason}"
            for reason in [
                "invalid_command",
                "unknown_order",
                "invalid_amend",
                "invalid_qty",
                "invalid_price",
                "post_only_would_cross",
            ]
        ),
    }
    assert expected - seen == set()
