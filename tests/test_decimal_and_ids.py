"""Exact decimals (SPEC §1) and the compact archive of used order ids.

Decimals: the accepted grammar is exactly ``[0-9]+(\\.[0-9]+)?`` from a str, a JsonNumber or a
non-negative int; parsing to units and formatting back is canonical and lossless (checked
against ``decimal.Decimal`` on random values); hostile lengths are refused, not raised.
Used ids: the archive is a set (membership equals a plain Python set's, for counters, odd ids,
leading zeros and huge numbers) whichever order ids are added in.
"""

from __future__ import annotations

import random
import re
from decimal import Decimal

import pytest

from grenex.engine.decimal import DIGITS_MAX, JsonNumber, format_units, parse_decimal
from grenex.engine.usedids import UsedIdArchive, split_id


@pytest.mark.parametrize(
    "text",
    ["1e3", "1E2", "-5", ".5", "+1", " 1", "1 ", "1.", "", "1.2.3", "0x10", "١", "1_000", "inf"],
)
def test_not_decimals(text: str) -> None:
    assert parse_decimal(text) is None
    assert parse_decimal(JsonNumber(text)) is None


@pytest.mark.parametrize("value", [True, False, None, 1.5, [1], {"a": 1}, -1])
def test_wrong_types_are_not_decimals(value: object) -> None:
    assert parse_decimal(value) is None


def test_canonical_round_trip_against_decimal() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        whole = str(rng.randrange(0, 10 ** rng.randrange(1, 25)))
        frac = "".join(rng.choice("0123456789") for _ in range(rng.randrange(0, 12)))
        text = f"{whole}.{frac}" if frac else whole
        parsed = parse_decimal(text)
        assert parsed is not None
        units, scale = parsed
        assert Decimal(f"{units}e-{scale}") == Decimal(text)  # exact: no context rounding
        out = format_units(units, scale)
        assert Decimal(out) == Decimal(text)
        assert "e" not in out.lower() and not out.endswith(".")
        assert "." not in out or not out.endswith("0")


def test_leading_zeros_and_integers() -> None:
    assert parse_decimal("007.50") == (75, 1)
    assert parse_decimal(100) == (100, 0)
    assert format_units(75, 1) == "7.5"
    assert format_units(100, 2) == "1"
    assert format_units(1, 3) == "0.001"


def test_hostile_lengths_are_refused_not_raised() -> None:
    assert parse_decimal("1" * 100_000) is None
    assert parse_decimal(10**5000) is None
    # zeros that do not count are fine at any length
    assert parse_decimal("0" * 100_000 + "7." + "5" + "0" * 100_000) == (75, 1)
    assert parse_decimal("9" * DIGITS_MAX) == (int("9" * DIGITS_MAX), 0)


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_archive_is_a_set(order: str) -> None:
    rng = random.Random(3)
    ids = [f"o{n}" for n in range(1, 20000, 3)]
    ids += ["x", "a-b", "o0", "o00", "o007", "12345678901234567890", "cli:2026:0001", "9" * 40]
    if order == "shuffled":
        rng.shuffle(ids)
    archive = UsedIdArchive()
    reference: set[str] = set()
    for start in range(0, len(ids), 997):
        batch = ids[start : start + 997]
        archive.add_many(batch)
        reference.update(batch)
        probes = [f"o{rng.randrange(0, 21000)}" for _ in range(300)] + ids[:50] + ["o7", "o07"]
        for p in probes:
            assert (p in archive) == (p in reference), p
    assert len(archive) == len(reference)
    assert sorted(archive) == sorted(reference)
    assert 5 not in archive  # not a str


def test_archive_refuses_an_id_twice() -> None:
    archive = UsedIdArchive()
    archive.add_many(["o1"])
    with pytest.raises(AssertionError):
        archive.add_many(["o1"])


# The split's definition as a regular expression (what the archive used before): the longest
# tail of at most 18 ASCII digits without leading zeros, or a lone "0".
_TAIL = re.compile(r"(?:[1-9][0-9]{0,17}|0)\Z")


def _split_by_regex(item: str) -> tuple[str, int] | None:
    m = _TAIL.search(item)
    return None if m is None else (item[: m.start()], int(item[m.start() :]))


def test_split_id_matches_its_regular_expression_definition() -> None:
    rng = random.Random(11)
    alphabet = "0123456789-a:٣"  # "٣" is a non-ASCII digit: never part of a counter
    cases = ["", "0", "00", "o0", "o00", "o007", "x", "a-b", "9" * 40, "1" + "0" * 30, "٣", "a٣7"]
    for _ in range(20_000):
        cases.append("".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 30))))
    for k in range(1, 22):  # counters around the 18-digit limit, with and without leading zeros
        for _ in range(200):
            cases.append(f"c{'0' * rng.randrange(3)}{rng.randrange(10**k)}")
    for item in cases:
        assert split_id(item) == _split_by_regex(item), item
