"""The CI seed set: the deterministic simulator over a fixed range of seeds.

Each seed runs the real consensus, replica, gateway and engine code, driven by the node's own
driver turn, for 3 or 5 voters plus learners through a safety phase of faults (loss,
duplication, reordering, partitions, clogged links, crashes losing unsynced writes, joins,
promotions, removals, transfers) while clients submit to any node — followers forward over the
same faulty network — and a liveness phase; the checkers outside the replicas must find nothing
(see grenex.sim.cluster and .checker).  The last test asserts that the set as a whole exercised
every fault and every path of the gateway (forwards, answers, refused forwards, each outcome),
deferred snapshots, and the §8 paths (key rotations, envelopes signed by rotated-away keys
refused, duplicates and refusals answered before the log and held to the model).

Run alone with ``pytest tests/sim/test_sim_seeds.py``; ``GRENEX_SIM_SEEDS=A..B`` picks
another range (the default is 0..299), ``GRENEX_SIM_WORKERS`` the number of processes.
A failure names the seed and the command that replays it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor

import pytest

from grenex.sim.cluster import Result, run_seed

CHUNK = 25


def _seed_range() -> range:
    text = os.environ.get("GRENEX_SIM_SEEDS", "0..299")
    a, _, b = text.partition("..")
    return range(int(a), int(b) + 1)


def _run_chunk(seeds: list[int]) -> list[Result]:
    return [run_seed(s) for s in seeds]


SEEDS = list(_seed_range())
CHUNKS = [SEEDS[i : i + CHUNK] for i in range(0, len(SEEDS), CHUNK)]


class _Inline:
    """A stand-in for a finished future when running in-process."""

    def __init__(self, value: list[Result]) -> None:
        self._value = value

    def result(self) -> list[Result]:
        return self._value


@pytest.fixture(scope="module")
def futures() -> Iterator[dict[int, Future[list[Result]] | _Inline]]:
    """Every chunk is submitted at once; each test waits only for its own chunk, so the
    per-test timeout applies to one chunk, not to the whole set."""
    workers = int(os.environ.get("GRENEX_SIM_WORKERS", min(2, os.cpu_count() or 1)))
    if workers <= 1:
        yield {c[0]: _Inline(_run_chunk(c)) for c in CHUNKS}
        return
    with ProcessPoolExecutor(workers) as pool:
        yield {c[0]: pool.submit(_run_chunk, c) for c in CHUNKS}


@pytest.mark.parametrize("chunk", CHUNKS, ids=lambda c: f"seeds{c[0]}-{c[-1]}")
def test_seeds(chunk: list[int], futures: dict[int, Future[list[Result]] | _Inline]) -> None:
    bad = [r for r in futures[chunk[0]].result() if not r.ok]
    msg = "\n".join(
        f"seed {r.seed}: {r.failure}\n  replay: python -m grenex.sim --seed {r.seed} --verbose\n  "
        + "\n  ".join(r.status_lines)
        for r in bad
    )
    assert not bad, msg


def test_the_seed_set_exercises_every_fault(
    futures: dict[int, Future[list[Result]] | _Inline],
) -> None:
    results = [r for f in futures.values() for r in f.result()]
    totals: dict[str, int] = {}
    for r in results:
        for k, v in r.stats.items():
            totals[k] = totals.get(k, 0) + v
    if len(results) < 100:
        pytest.skip("coverage is asserted on the full CI set")
    for what in (
        "crashes",
        "mid_persist_crashes",
        "lost_writes",
        "partitions",
        "clogs",
        "joins",
        "promotions",
        "removals",
        "transfers",
        "snapshots_installed",
        "duplicates",
        "commands_unknown",
        "forwards",
        "fwd_answers",
        "fwd_refused",
        "outcome_applied",
        "outcome_refused",
        "outcome_busy",
        "outcome_unknown",
        "snapshot_hashes",
        "rotations",
        "old_key_refused",
        "prelog_duplicates",
        "prelog_invalid",
        "prechecks_checked",
    ):
        assert totals[what] > 0, what
