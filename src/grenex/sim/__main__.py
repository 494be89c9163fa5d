"""``python -m grenex.sim --seed N`` / ``--seeds A..B`` (or ``A-B``) / ``--seeds N``: run
simulations (each runs the real consensus, replica, gateway and engine code; see
:mod:`grenex.sim.cluster`).

A failing seed prints the one command that replays it and a status line per replica, and the
process exits with status 1.  ``--workers K`` runs seeds in K processes (results are printed
in seed order; every seed is deterministic whatever the worker).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

from grenex.sim.cluster import Result, Simulation


def _seeds(text: str) -> range:
    for sep in ("..", "-"):
        if sep in text:
            a, b = text.split(sep, 1)
            return range(int(a), int(b) + 1)
    return range(int(text))


def _run(job: tuple[int, int, bool]) -> tuple[Result, list[str]]:
    seed, ticks, verbose = job
    lines: list[str] = []
    res = Simulation(seed, ticks=ticks, verbose=verbose, log=lines.append).run()
    return res, lines


def _results(
    seeds: list[int], ticks: int, verbose: bool, workers: int
) -> Iterator[tuple[Result, list[str]]]:
    jobs = [(s, ticks, verbose) for s in seeds]
    if workers <= 1 or len(seeds) <= 1:
        yield from map(_run, jobs)
        return
    with ProcessPoolExecutor(workers) as pool:
        yield from pool.map(_run, jobs, chunksize=8)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m grenex.sim", description=__doc__)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--seed", type=int, help="run one seed")
    g.add_argument("--seeds", type=_seeds, help="A..B or A-B (inclusive), or N (0..N-1)")
    p.add_argument("--ticks", type=int, default=1500, help="ticks of the safety phase")
    p.add_argument("--verbose", action="store_true", help="log every fault and election")
    p.add_argument("--workers", type=int, default=1, help="processes running seeds")
    args = p.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else list(args.seeds or range(1))
    failed: list[int] = []
    totals: dict[str, int] = {}
    for n, (res, lines) in enumerate(_results(seeds, args.ticks, args.verbose, args.workers), 1):
        seed = res.seed
        for line in lines:
            print(line)
        if len(seeds) > 1 and n % 100 == 0:
            print(f"... {n}/{len(seeds)} seeds, {len(failed)} failed", flush=True)
        for k, v in res.stats.items():
            totals[k] = totals.get(k, 0) + v
        if res.ok:
            if len(seeds) == 1 or args.verbose:
                st = " ".join(f"{k}={v}" for k, v in res.stats.items())
                conv = res.converged_after
                print(f"seed {seed}: ok after {res.ticks} ticks ({conv} to converge) {st}")
            continue
        failed.append(seed)
        print(f"seed {seed}: FAILED at tick {res.ticks}: {res.failure}")
        print(f"  replay: python -m grenex.sim --seed {seed} --ticks {args.ticks} --verbose")
        for line in res.status_lines:
            print(f"  {line}", flush=True)
    if len(seeds) > 1:
        print(f"{len(seeds) - len(failed)}/{len(seeds)} seeds passed")
        if failed:
            print("failed seeds: " + " ".join(map(str, failed)))
        print("totals: " + " ".join(f"{k}={v}" for k, v in totals.items()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
