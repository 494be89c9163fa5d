"""SPEC §5 ``grenex replay [FILE|-] [--book]``, end to end through the console script.

Proves: input is split on ``\\n`` only and ``seq`` is the line number, counting from 1 with
blank lines included; a line of only spaces, tabs or ``\\r`` is skipped (no event); a line that
is not JSON, not UTF-8 or not an object is answered with ``rejected``/``invalid_command`` and the
replay goes on; FILE ``-`` (and no FILE) reads standard input; ``--book`` appends the SPEC §4
snapshot after the last event and only then. A seeded random stream, blank lines sprinkled in,
must print exactly the naive reference's events and books.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from grenex.codec import decode_command

from .gen import CommandGen
from .reference import ReferenceEngine

SCRIPT = Path(sys.executable).parent / "grenex"

pytestmark = pytest.mark.skipif(not SCRIPT.is_file(), reason="no grenex console script")


def replay(args: list[str], data: bytes) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(SCRIPT), "replay", *args], input=data, check=True, capture_output=True, timeout=120
    ).stdout
    return [json.loads(line) for line in out.splitlines()]


def expected(data: bytes, book: bool) -> list[dict[str, Any]]:
    """What SPEC §5 says replay prints, computed with the reference engine."""
    ref = ReferenceEngine()
    out: list[dict[str, Any]] = []
    for seq, line in enumerate(data.split(b"\n"), 1):
        if line.strip(b" \t\r"):
            out += ref.apply(decode_command(line), seq)
    return out + (ref.books() if book else [])


SMALL = b"\n".join(
    [
        b'{"type":"add_market","market":"M","tick":"0.5","lot":"1"}',  # 1
        b"",  # 2: empty, skipped but counted
        b" \t\r ",  # 3: only blanks
        b'{"type":"place","client":"a","id":"1","market":"M","side":"sell","qty":"2","price":"10.0"}',
        b"not json",  # 5
        b'{"type":"place","client":"b","id":"1","market":"M","side":"buy","qty":"1","price":10}\r',
        b'{"type":"place","client":"b","id":"\xff"}',  # 7: not UTF-8
        b"[1]",  # 8
        b"\x0c",  # 9: a form feed is not one of the blanks SPEC §5 skips
        b"\xc2\xa0",  # 10: nor is a no-break space
        b'{"type":"cancel","client":"a","id":"1"}',  # 11, no newline at the end
    ]
)


def test_replay_numbers_events_by_line_and_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(SMALL)
    events = replay([str(path)], b"")
    assert [(e["seq"], e["type"]) for e in events] == [
        (1, "market_added"),
        (4, "accepted"),
        (4, "resting"),
        (5, "rejected"),
        (6, "accepted"),
        (6, "trade"),
        (6, "filled"),
        (7, "rejected"),
        (8, "rejected"),
        (9, "rejected"),
        (10, "rejected"),
        (11, "cancelled"),
    ]
    assert events[3] == {"type": "rejected", "seq": 5, "cmd": None, "reason": "invalid_command"}
    assert events[7] == {"type": "rejected", "seq": 7, "cmd": None, "reason": "invalid_command"}
    assert events[10] == {"type": "rejected", "seq": 10, "cmd": None, "reason": "invalid_command"}
    assert events[11]["remaining"] == "1"
    assert events == expected(SMALL, book=False)


def test_replay_reads_standard_input_and_prints_the_book_last_with_book_flag() -> None:
    with_book = replay(["-", "--book"], SMALL)
    assert with_book[-1] == {"type": "book", "market": "M", "bids": [], "asks": []}
    assert with_book == expected(SMALL, book=True)
    assert replay([], SMALL) == expected(SMALL, book=False)


def test_replay_prints_exactly_the_reference_events_for_a_random_stream(tmp_path: Path) -> None:
    r = random.Random(11)
    lines: list[bytes] = []
    for line in CommandGen(11).lines(4000):
        raw = line.encode() if isinstance(line, str) else line
        lines.append(raw.replace(b"\n", b" "))  # one command per line
        if r.random() < 0.03:
            lines.append(r.choice([b"", b" ", b"\t", b"\r", b" \r\t "]))
    data = b"\n".join(lines) + b"\n"
    path = tmp_path / "random.jsonl"
    path.write_bytes(data)
    assert replay([str(path), "--book"], b"") == expected(data, book=True)
