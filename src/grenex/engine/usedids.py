"""A compact set of used order ids.

Order ids are used up forever (SPEC §2), so a long stream leaves millions of ids that no longer
rest but must still be recognised as duplicates.  As Python strings in a dict they would cost
about 100 bytes each.  Almost all real ids are a fixed prefix and a counter (``o123``,
``cli-2026-000017``), so the archive stores an id ``prefix + digits`` as an integer in a sorted
run of 8-byte machine integers per prefix, and only the odd remainder as strings.

Runs are merged like a binary counter (a new run absorbs every older run not more than twice
its size), so adding ``n`` ids costs ``O(n log n)`` in total and a membership test looks at
``O(log n)`` runs; the usual case, a new id above every archived number of its prefix, is
answered by one comparison.
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Final

__all__ = ["UsedIdArchive"]

# A trailing counter without leading zeros (zeros before it belong to the prefix), at most 18
# digits so that it fits a signed 64-bit machine integer.
_TAIL: Final = re.compile(r"(?:[1-9][0-9]{0,17}|0)\Z")


class _Prefix:
    __slots__ = ("high", "runs")

    def __init__(self) -> None:
        self.runs: list[array[int]] = []  # each sorted ascending, disjoint from the others
        self.high = -1  # the largest number in any run

    def __contains__(self, n: int) -> bool:
        if n > self.high:
            return False
        for run in self.runs:
            if run[0] <= n <= run[-1]:
                i = bisect_left(run, n)
                if run[i] == n:
                    return True
        return False

    def add_sorted(self, numbers: list[int]) -> None:
        run = array("q", numbers)
        runs = self.runs
        while runs and len(runs[-1]) <= 2 * len(run):
            merged = sorted(runs.pop() + run)
            run = array("q", merged)
        runs.append(run)
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
        m = _TAIL.search(item)
        if m is None:
            return item in self._other
        start = m.start()
        p = self._prefixes.get(item[:start])
        return p is not None and int(item[start:]) in p

    def add_many(self, ids: Iterable[str]) -> None:
        """Add ids that are not in the archive yet."""
        groups: dict[str, list[int]] = {}
        for item in ids:
            assert item not in self, "id archived twice"
            self._size += 1
            m = _TAIL.search(item)
            if m is None:
                self._other.add(item)
                continue
            start = m.start()
            groups.setdefault(item[:start], []).append(int(item[start:]))
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
            for run in p.runs:
                for n in run:
                    yield f"{prefix}{n}"
