"""A compact set of used order ids.

Order ids are used up forever (SPEC §2), so a long stream leaves millions of ids that no longer
rest but must still be recognised as duplicates.  As Python strings in a dict they would cost
about 100 bytes each.  Almost all real ids are a fixed prefix and a counter (``o123``,
``cli-2026-000017``), so the archive stores an id ``prefix + digits`` as an integer in a sorted
run per prefix, stored as offsets from the run's first number in 2-, 4- or (rarely) 8-byte
machine integers, and only the odd remainder as strings.

Runs are merged like a binary counter (a new run absorbs every older run not more than twice
its size), so adding ``n`` ids costs ``O(n log n)`` in total and a membership test looks at
``O(log n)`` runs; the usual case, a new id above every archived number of its prefix, is
answered by one comparison.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Final

__all__ = ["UsedIdArchive", "split_id"]

_DIGITS: Final = "0123456789"
_COUNTER_DIGITS_MAX: Final = 18  # so that a counter fits a signed 64-bit machine integer


def split_id(item: str) -> tuple[str, int] | None:
    """``(prefix, counter)`` for an id that ends in an ASCII-digit counter, else None.

    The counter is the longest tail of at most 18 digits without leading zeros (zeros before
    it belong to the prefix; a tail of zeros only is the counter 0).  With string methods
    rather than a regular expression: this runs for every order id the engine sees.
    """
    head = item.rstrip(_DIGITS)
    n = len(item) - len(head)
    if n == 0:
        return None
    start = len(item) - min(n, _COUNTER_DIGITS_MAX)
    tail = item[start:]
    digits = tail.lstrip("0")
    if not digits:
        return item[:-1], 0
    start += len(tail) - len(digits)
    return item[:start], int(digits)


def _run(numbers: list[int]) -> tuple[int, array[int]]:
    """A sorted run as (base, offsets from base) in the narrowest machine integers that hold
    its span: 2 bytes per id for a dense counter, 4 for ids up to 4 billion apart."""
    base = numbers[0]
    span = numbers[-1] - base
    code = "H" if span < 1 << 16 else "I" if span < 1 << 32 else "q"
    if code == "q":
        return 0, array("q", numbers)
    return base, array(code, [n - base for n in numbers])


class _Prefix:
    __slots__ = ("high", "runs")

    def __init__(self) -> None:
        # each (base, offsets) sorted ascending, disjoint from the others
        self.runs: list[tuple[int, array[int]]] = []
        self.high = -1  # the largest number in any run

    def __contains__(self, n: int) -> bool:
        if n > self.high:
            return False
        for base, offs in self.runs:
            rel = n - base
            if offs[0] <= rel <= offs[-1]:
                i = bisect_left(offs, rel)
                if offs[i] == rel:
                    return True
        return False

    def numbers(self) -> list[int]:
        return [base + x for base, offs in self.runs for x in offs]

    def add_sorted(self, numbers: list[int]) -> None:
        runs = self.runs
        while runs and len(runs[-1][1]) <= 2 * len(numbers):
            base, offs = runs.pop()
            numbers = sorted([base + x for x in offs] + numbers)
        runs.append(_run(numbers))
        self.high = max(self.high, numbers[-1])


class UsedIdArchive:
    """A set of strings, optimised for ``prefix + counter`` ids.  Add-only."""

    __slots__ = ("_other", "_prefixes", "_size")

    def __init__(self) -> None:
        self._prefixes: dict[str, _Prefix] = {}
        self._other: set[str] = set()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __contains__(self, item: object) -> bool:
        if type(item) is not str:
            return False
        split = split_id(item)
        if split is None:
            return item in self._other
        p = self._prefixes.get(split[0])
        return p is not None and split[1] in p

    def add_many(self, ids: Iterable[str]) -> None:
        """Add ids that are not in the archive yet."""
        groups: dict[str, list[int]] = {}
        for item in ids:
            assert item not in self, "id archived twice"
            self._size += 1
            split = split_id(item)
            if split is None:
                self._other.add(item)
                continue
            groups.setdefault(split[0], []).append(split[1])
        for prefix, numbers in groups.items():
            p = self._prefixes.get(prefix)
            if p is None:
                p = self._prefixes[prefix] = _Prefix()
            numbers.sort()
            p.add_sorted(numbers)

    def __iter__(self) -> Iterator[str]:
        """Every id, in no particular order."""
        yield from self._other
        for prefix, p in self._prefixes.items():
            for n in p.numbers():
                yield f"{prefix}{n}"
