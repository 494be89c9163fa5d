"""``python -m grenex.sim --seed N`` / ``--seeds A..B`` / ``--seeds N``: run simulations.

A failing seed prints the one command that replays it and a status line per replica, and the
process exits with status 1.
"""

from __future__ import annotations

import argparse
import sys

from grenex.sim.cluster import Simulation


def _seeds(text: str) -> range:
    if ".." in text:
        a, b = text.split("..", 1)
        return range(int(a), int(b) + 1)
    return range(int(text))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m grenex.sim", description=__doc__)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--seed", type=int, help="run one seed")
    g.add_argument("--seeds", type=_seeds, help="A..B (inclusive) or N (seeds 0..N-1)")
    p.add_argument("--ticks", type=int, default=1500, help="ticks of the safety phase")
    p.add_argument("--verbose", action="store_true", help="log every fault and election")
    args = p.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else list(args.seeds or range(1))
    failed = 0
    totals: dict[str, int] = {}
    for n, seed in enumerate(seeds, 1):
        if len(seeds) > 1 and n % 100 == 0:
            print(f"... {n}/{len(seeds)} seeds, {failed} failed", flush=True)
        sim = Simulation(seed, ticks=args.ticks, verbose=args.verbose)
        res = sim.run()
        for k, v in res.stats.items():
            totals[k] = totals.get(k, 0) + v
        if res.ok:
            if len(seeds) == 1 or args.verbose:
                st = " ".join(f"{k}={v}" for k, v in res.stats.items())
                conv = res.converged_after
                print(f"seed {seed}: ok after {res.ticks} ticks ({conv} to converge) {st}")
            continue
        failed += 1
        print(f"seed {seed}: FAILED at tick {res.ticks}: {res.failure}")
        print(f"  replay: python -m grenex.sim --seed {seed} --ticks {args.ticks} --verbose")
        for line in res.status_lines:
            print(f"  {line}", flush=True)
    if len(seeds) > 1:
        print(f"{len(seeds) - failed}/{len(seeds)} seeds passed")
        print("totals: " + " ".join(f"{k}={v}" for k, v in totals.items()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
