"""``status`` latency on a node holding many resting orders, against an empty node's.

Why: ``status`` used to hash the whole state on the event loop (0.46–1.6 s after 300,000
orders), so anyone calling it stalled honest orders.  Now it reports the hash of the newest
snapshot with the index it belongs to, at once; ``{"hash": true}`` asks for a fresh one, made
where snapshots are made (a forked child).

Run: ``.venv/bin/python benchmarks/status_latency.py --orders 300000`` (a one-node cluster on
loopback, real processes; prints JSON with the medians of 20 calls).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from grenex.devnet import LocalCluster


async def _status_ms(c: LocalCluster, node: str, args: dict[str, Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await c.request(node, "status", args, timeout_ms=30_000)
        out.append((time.perf_counter() - t) * 1000)
    return out


async def _fill(c: LocalCluster, node: str, orders: int, batch: int, inflight: int) -> float:
    sem = asyncio.Semaphore(inflight)
    started = time.perf_counter()

    async def one(first: int) -> None:
        cmds = [
            {
                "type": "place",
                "client": f"c{(first + i) % 1000}",
                "id": f"o{first + i}",
                "market": "BTC-USD",
                "side": "buy" if (first + i) % 2 else "sell",
                "qty": "0.001",
                # bids below asks: everything rests, the book only grows
                "price": str(1000 + (first + i) % 500) if (first + i) % 2 else str(2000 + i),
            }
            for i in range(min(batch, orders - first))
        ]
        async with sem:
            await c.request(node, "batch", {"commands": cmds}, timeout_ms=60_000)

    await asyncio.gather(*(one(f) for f in range(0, orders, batch)))
    return time.perf_counter() - started


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    async with LocalCluster(nodes=1, voters=1, grapes=1) as c:
        node = c.node_ids[0]
        await c.wait_leader()
        empty = await _status_ms(c, node, {}, args.calls)
        fill_s = await _fill(c, node, args.orders, args.batch, args.inflight)
        full = await _status_ms(c, node, {}, args.calls)
        fresh = await _status_ms(c, node, {"hash": True}, args.calls)
        st = await c.request(node, "status", {})
        return {
            "orders": args.orders,
            "fill_s": round(fill_s, 1),
            "applied": st["applied"],
            "status_ms_median_empty": round(statistics.median(empty), 2),
            "status_ms_median_full": round(statistics.median(full), 2),
            "status_hash_request_ms_median_full": round(statistics.median(fresh), 2),
            "status_ms_max_full": round(max(full), 2),
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--orders", type=int, default=300_000)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--inflight", type=int, default=8)
    print(json.dumps(asyncio.run(main_async(p.parse_args())), indent=2))


if __name__ == "__main__":
    main()
