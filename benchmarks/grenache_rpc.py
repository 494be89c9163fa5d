"""Grenache RPC benchmark (BENCHMARKS.md, "Grenache RPC"): Python vs Node.js on loopback.

Request/reply of a small JSON payload through a real Grape: requests/s and latency p50/p99,
sequential and with 64 in flight, for

* Python client (grenex.grenache.PeerRPCClient) → Python server (PeerRPCServer), and
* Node.js client → Node.js server (grenache-nodejs-http 1.0.2), in the same run,

each server in its own process so that client and server use one core each. The lookup is
cached after warm-up on both sides, so this measures the RPC path, not the Grape. Each
configuration runs ``--runs`` times (fresh processes) and the median run is reported.

    .venv/bin/python benchmarks/grenache_rpc.py [--quick] [--runs N] [--json PATH]

Prints a table and writes JSON (default ``benchmarks/results/grenache_rpc.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from grenex.grenache import Link, PeerRPCClient, PeerRPCServer
from grenex.grenache.testing import free_port, start_grapes

ROOT = Path(__file__).resolve().parents[1]
NODE_JS = ROOT / "benchmarks" / "js" / "grenache_rpc_node.js"
PAYLOAD = {
    "action": "ping",
    "args": [{"market": "BTC-USD", "price": "27000.5", "qty": "0.25", "i": 0}],
}
INFLIGHT = 64


# ------------------------------------------------------------------------------ python side


def echo(key: str, payload: Any) -> Any:
    return {"ok": True, "echo": payload}


async def serve(grape: str, name: str) -> None:
    async with Link(grape) as link, PeerRPCServer(echo, backlog_max=10_000) as srv:
        await link.start_announcing(name, srv.port)
        print(f"READY {srv.port}", flush=True)
        await asyncio.Event().wait()


async def py_client(grape: str, name: str, seq_n: int, conc_n: int) -> dict[str, Any]:
    now = time.perf_counter_ns
    async with Link(grape, lookup_cache_ttl_ms=600_000) as link, PeerRPCClient(link) as client:
        for _ in range(200):  # warm-up: lookup cache, keep-alive connections
            await client.request(name, PAYLOAD)
        seq: list[int] = []
        t0 = now()
        for _ in range(seq_n):
            s = now()
            await client.request(name, PAYLOAD)
            seq.append((now() - s) // 1000)
        seq_wall_us = (now() - t0) // 1000
        conc: list[int] = []
        left = conc_n

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                s = now()
                await client.request(name, PAYLOAD)
                conc.append((now() - s) // 1000)

        t0 = now()
        await asyncio.gather(*(worker() for _ in range(INFLIGHT)))
        conc_wall_us = (now() - t0) // 1000
    return {"seq": seq, "seqWallUs": seq_wall_us, "conc": conc, "concWallUs": conc_wall_us}


# -------------------------------------------------------------------------------- harness


def start_server(cmd: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        proc.kill()
        raise RuntimeError(
            f"server {cmd} did not start: {line!r} {proc.stderr.read()[:2000]}"
            if proc.stderr
            else f"server {cmd} did not start"
        )
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def summarize(raw: dict[str, Any]) -> dict[str, float]:
    def pct(values: list[int], q: float) -> float:
        ordered = sorted(values)
        return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])

    return {
        "seq_rps": len(raw["seq"]) / (raw["seqWallUs"] / 1e6),
        "seq_p50_us": pct(raw["seq"], 0.50),
        "seq_p99_us": pct(raw["seq"], 0.99),
        "conc_rps": len(raw["conc"]) / (raw["concWallUs"] / 1e6),
        "conc_p50_us": pct(raw["conc"], 0.50),
        "conc_p99_us": pct(raw["conc"], 0.99),
    }


def run_python(grape: str, seq_n: int, conc_n: int) -> dict[str, float]:
    name = f"bench:py:{time.monotonic_ns()}"
    server = start_server(
        [sys.executable, str(Path(__file__).resolve()), "--serve", "--grape", grape, "--name", name]
    )
    try:
        return summarize(asyncio.run(py_client(grape, name, seq_n, conc_n)))
    finally:
        stop(server)


def run_node(grape: str, seq_n: int, conc_n: int) -> dict[str, float]:
    name = f"bench:node:{time.monotonic_ns()}"
    server = start_server(["node", str(NODE_JS), "server", grape, name, str(free_port())])
    try:
        out = subprocess.run(
            ["node", str(NODE_JS), "client", grape, name, str(seq_n), str(conc_n), str(INFLIGHT)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        return summarize(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        stop(server)


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per metric, the median over runs."""
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, one run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "grenache_rpc.json"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--grape", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.grape, args.name))
        return

    seq_n, conc_n, runs = (2_000, 5_000, 1) if args.quick else (5_000, 20_000, args.runs)
    results: dict[str, list[dict[str, float]]] = {"python": [], "node": []}
    with start_grapes(1, dpa_ms=None) as grapes:
        grape = grapes.api_urls[0]
        for i in range(runs):
            # Alternate the order so neither side always runs on a warmer machine.
            order = ["python", "node"] if i % 2 == 0 else ["node", "python"]
            for side in order:
                run = run_python if side == "python" else run_node
                results[side].append(run(grape, seq_n, conc_n))
                print(
                    f"run {i + 1}/{runs} {side}: "
                    f"{results[side][-1]['seq_rps']:.0f} req/s sequential, "
                    f"{results[side][-1]['conc_rps']:.0f} req/s with {INFLIGHT} in flight",
                    file=sys.stderr,
                )
    py, node = median_run(results["python"]), median_run(results["node"])

    rows = [
        ("sequential req/s", "seq_rps", True),
        ("sequential p50 µs", "seq_p50_us", False),
        ("sequential p99 µs", "seq_p99_us", False),
        (f"{INFLIGHT} in flight req/s", "conc_rps", True),
        (f"{INFLIGHT} in flight p50 µs", "conc_p50_us", False),
        (f"{INFLIGHT} in flight p99 µs", "conc_p99_us", False),
    ]
    print(
        f"\nGrenache RPC over loopback, median of {runs} run(s); "
        f"{seq_n} sequential + {conc_n} concurrent requests per run"
    )
    print(f"{'metric':<24}{'Python':>12}{'Node.js':>12}{'Python/Node':>14}")
    for label, key, higher_better in rows:
        ratio = py[key] / node[key] if node[key] else float("nan")
        note = "" if higher_better else " (lower is better)"
        print(f"{label:<24}{py[key]:>12.0f}{node[key]:>12.0f}{ratio:>13.2f}x{note}")

    report = {
        "benchmark": "grenache_rpc",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "node": subprocess.run(
                ["node", "--version"], capture_output=True, text=True, check=False
            ).stdout.strip(),
            "platform": platform.platform(),
        },
        "params": {
            "sequential": seq_n,
            "concurrent": conc_n,
            "inflight": INFLIGHT,
            "runs": runs,
            "payload": PAYLOAD,
        },
        "python": py,
        "node": node,
        "runs": results,
        "ratio_python_over_node": {k: py[k] / node[k] for k in py if node[k]},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
