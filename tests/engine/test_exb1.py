"""EXB-1: the shared benchmark stream reproduces its published hashes.

``../shared/bench/exb1.jsonl.gz`` (201,001 command lines) and ``exb1.expected.json`` (trade
count, trade-tape sha256, final-book sha256) come from outside this repository. The trade tape
is ``maker_client,maker,taker_client,taker,price,qty\\n`` per trade, in event order; the final
book hash is over the SPEC §4 snapshot lines as JSON with sorted keys and separators
``(",", ":")``, each followed by ``\\n``.

This proves the engine reproduces them through the API (each line decoded with
``decode_command``, ``seq`` = line number, whitespace-only lines skipped but counted), and that
``grenex replay FILE --book`` does the same end to end from its printed output. The naive
reference can be run over it too (``GRENEX_EXB1_REFERENCE=1``; about a minute). Everything
skips when the shared files are absent.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from grenex.codec import decode_command

from .builds import BUILDS, engine_class
from .reference import ReferenceEngine

BENCH = Path(__file__).parents[2].parent / "shared" / "bench"
STREAM = BENCH / "exb1.jsonl.gz"
EXPECTED = BENCH / "exb1.expected.json"

pytestmark = pytest.mark.skipif(
    not (STREAM.is_file() and EXPECTED.is_file()), reason=f"EXB-1 files absent from {BENCH}"
)


def _expected() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(EXPECTED.read_text())
    return data


class Tally:
    """The trade tape hash, trade count and final-book hash of a run."""

    def __init__(self) -> None:
        self.tape = hashlib.sha256()
        self.trades = 0

    def event(self, ev: dict[str, Any]) -> None:
        if ev["type"] == "trade":
            self.trades += 1
            self.tape.update(
                f"{ev['maker_client']},{ev['maker']},{ev['taker_client']},{ev['taker']},"
                f"{ev['price']},{ev['qty']}\n".encode()
            )

    @staticmethod
    def book_hash(books: list[dict[str, Any]]) -> str:
        h = hashlib.sha256()
        for book in books:
            h.update(json.dumps(book, sort_keys=True, separators=(",", ":")).encode() + b"\n")
        return h.hexdigest()


def _lines() -> Iterator[tuple[int, bytes]]:
    """``(seq, line)`` for every line that is not blank; seq counts every line from 1."""
    with gzip.open(STREAM, "rb") as f:
        for seq, line in enumerate(f, 1):
            if line.strip(b" \t\r\n"):
                yield seq, line


def _check(tally: Tally, books: list[dict[str, Any]]) -> None:
    expected = _expected()
    assert tally.trades == expected["trades"]
    assert tally.tape.hexdigest() == expected["trade_tape_sha256"]
    assert Tally.book_hash(books) == expected["final_book_sha256"]
    live = sum(len(b["bids"]) + len(b["asks"]) for b in books)
    assert live == expected["live_orders_at_end"]


@pytest.mark.parametrize("build", BUILDS)
def test_engine_api_reproduces_the_exb1_hashes(build: str) -> None:
    eng = engine_class(build)()
    tally = Tally()
    to_builtins: Callable[[Any], Any] = msgspec.to_builtins
    lines = 0
    for seq, line in _lines():
        lines = seq
        for ev in eng.apply(decode_command(line), seq):
            tally.event(to_builtins(ev))
    eng.check_invariants()
    assert lines == _expected()["lines"]
    _check(tally, eng.books())


@pytest.mark.skipif(
    not os.environ.get("GRENEX_EXB1_REFERENCE"), reason="slow; set GRENEX_EXB1_REFERENCE=1"
)
def test_reference_reproduces_the_exb1_hashes() -> None:
    """The naive reference, written from the SPEC alone, lands on the same published hashes."""
    ref = ReferenceEngine()
    tally = Tally()
    for seq, line in _lines():
        for ev in ref.apply(decode_command(line), seq):
            tally.event(ev)
    _check(tally, ref.books())


def _grenex_script() -> Path | None:
    script = Path(sys.executable).parent / "grenex"
    return script if script.is_file() else None


@pytest.mark.skipif(_grenex_script() is None, reason="no grenex console script in this venv")
def test_grenex_replay_with_book_reproduces_the_exb1_hashes(tmp_path: Path) -> None:
    plain = tmp_path / "exb1.jsonl"
    with gzip.open(STREAM, "rb") as src, plain.open("wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    script = _grenex_script()
    assert script is not None
    out = subprocess.run(
        [str(script), "replay", str(plain), "--book"],
        check=True,
        capture_output=True,
        timeout=240,
    ).stdout
    tally = Tally()
    books: list[dict[str, Any]] = []
    last_seq = 0
    for raw in out.splitlines():
        ev = json.loads(raw)
        if ev["type"] == "book":
            books.append(ev)
            continue
        assert not books, "an event after the book snapshot"
        assert ev["seq"] >= last_seq
        last_seq = ev["seq"]
        tally.event(ev)
    assert last_seq <= _expected()["lines"]
    assert [b["market"] for b in books] == ["EXB"]
    _check(tally, books)
