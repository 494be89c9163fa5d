"""TLS cost for Grenache RPC on loopback: plain HTTP vs pinned TLS 1.3 vs mutual TLS.

Python client (grenex.grenache.PeerRPCClient, keep-alive) → Python server (PeerRPCServer)
in its own process, so client and server each have a core. Requests go straight to the
server's ``ip:port`` (``request_peer``): this measures the transport, not the Grape. For each
mode: requests/s and latency p50/p99, sequential and with 64 in flight. Then the one-off
costs: a new TLS connection (handshake + one request), one failed handshake (the server is
not the pinned one), and what an impostor announcing the same name on a real Grape costs an
honest client (its first request, which meets the impostor, against the ones after).

    .venv/bin/python benchmarks/tls_rpc.py [--quick] [--no-uvloop] [--json PATH]

Prints a table and writes JSON (default ``benchmarks/results/tls_rpc.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from grenex.grenache import (
    Link,
    PeerAuthError,
    PeerRPCClient,
    PeerRPCServer,
    make_self_signed,
    pinned_client_context,
    server_context,
)
from grenex.grenache.testing import free_port, start_grapes

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = {
    "action": "ping",
    "args": [{"market": "BTC-USD", "price": "27000.5", "qty": "0.25", "i": 0}],
}
INFLIGHT = 64
MODES = ("plain", "tls", "mtls")


def ident(n: int) -> tuple[bytes, bytes]:
    seed = hashlib.sha256(f"tls-bench-{n}".encode()).digest()
    return seed, make_self_signed(seed, f"n{n}")


def echo(key: str, payload: Any) -> Any:
    return {"ok": True, "echo": payload}


def server_ssl(mode: str, n: int = 1) -> Any:
    seed, cert = ident(n)
    if mode == "plain":
        return None
    clients = [ident(2)[1]] if mode == "mtls" else None
    return server_context(cert, seed, client_certs=clients)


def client_ssl(mode: str, pin: int = 1) -> ssl.SSLContext | None:
    if mode == "plain":
        return None
    pinned = [ident(pin)[1]]
    if mode == "mtls":
        seed2, cert2 = ident(2)
        return pinned_client_context(pinned, client_cert=cert2, client_seed=seed2)
    return pinned_client_context(pinned)


# ------------------------------------------------------------------------------ server side


async def serve(mode: str, port: int, n: int) -> None:
    async with PeerRPCServer(echo, port=port, ssl_context=server_ssl(mode, n)):
        print("READY", flush=True)
        await asyncio.Event().wait()


def start_server(mode: str, n: int, uv: bool) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    args = [sys.executable, __file__, "--serve", mode, "--port", str(port), "--ident", str(n)]
    if not uv:
        args.append("--no-uvloop")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "READY":
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, port


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------------------ client side


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def server_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    call: Callable[[], Awaitable[Any]], n: int, inflight: int, server_pid: int = 0
) -> dict[str, float]:
    lat: list[float] = []
    remaining = n
    cpu0 = time.process_time()
    srv0 = server_cpu_s(server_pid) if server_pid else 0.0

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            await call()
            lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    wall = time.perf_counter() - t0
    out = {
        "rps": round(n / wall),
        "p50_us": round(pct(lat, 0.5) * 1e6, 1),
        "p99_us": round(pct(lat, 0.99) * 1e6, 1),
        "client_cpu_us": round((time.process_time() - cpu0) / n * 1e6, 1),
    }
    if server_pid:
        out["server_cpu_us"] = round((server_cpu_s(server_pid) - srv0) / n * 1e6, 1)
    return out


async def bench_mode(mode: str, port: int, n: int, pid: int) -> dict[str, Any]:
    dest = f"127.0.0.1:{port}"
    link = Link("http://127.0.0.1:9")  # unused: request_peer dials directly
    out: dict[str, Any] = {}
    async with PeerRPCClient(link, ssl_context=client_ssl(mode)) as client:

        async def call() -> Any:
            return await client.request_peer(dest, "bench", PAYLOAD)

        await measure(call, min(2000, n), INFLIGHT)  # warm-up: connections open
        out["sequential"] = await measure(call, n, 1, pid)
        out["inflight64"] = await measure(call, n, INFLIGHT, pid)
    await link.stop()
    return out


async def one_offs(port_real: int, port_other: int, k: int) -> dict[str, float]:
    """New-connection cost (TLS vs mutual TLS vs plain) and one failed handshake."""
    link = Link("http://127.0.0.1:9")
    res: dict[str, float] = {}

    async def fresh(mode: str, port: int) -> float:
        times = []
        for _ in range(k):
            async with PeerRPCClient(link, ssl_context=client_ssl(mode)) as client:
                t0 = time.perf_counter()
                await client.request_peer(f"127.0.0.1:{port}", "bench", PAYLOAD)
                times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e6

    res["new_connection_tls_us"] = round(await fresh("tls", port_real), 1)
    # A failed handshake: the server at port_other presents n3's certificate, we pin n1.
    times = []
    cpu0 = time.process_time()
    async with PeerRPCClient(link, ssl_context=client_ssl("tls", pin=1)) as client:
        for _ in range(k):
            t0 = time.perf_counter()
            try:
                await client.request_peer(f"127.0.0.1:{port_other}", "bench", PAYLOAD)
            except PeerAuthError:
                pass
            else:
                raise AssertionError("the impostor was accepted")
            times.append(time.perf_counter() - t0)
    res["failed_handshake_us"] = round(statistics.median(times) * 1e6, 1)
    res["failed_handshake_client_cpu_us"] = round((time.process_time() - cpu0) / k * 1e6, 1)
    await link.stop()
    return res


async def rogue_announcer(port_real: int, port_fake: int, rounds: int) -> dict[str, float]:
    """An impostor announces the same name as the real server on a real Grape: the first
    request that meets it pays one failed handshake; later ones never dial it again.

    Compared with a fresh client's first request when only the real server announces (both
    open one TLS connection to the real server), so the difference is the impostor's cost."""
    firsts: list[float] = []
    baseline: list[float] = []
    laters: list[float] = []
    with start_grapes(1) as grapes:
        async with Link(grapes.api_urls, lookup_cache_ttl_ms=60_000) as link:
            for r in range(rounds):
                name = f"bench:rogue:{r}:{time.monotonic_ns()}"
                await link.announce(name, port_real)
                await link.announce(name, port_fake)
                for _ in range(200):
                    if len(await link.lookup(name, use_cache=False)) == 2:
                        break
                    await asyncio.sleep(0.01)
                ctx = client_ssl("tls", pin=1)
                assert ctx is not None
                # rng chosen so the first pick is the impostor (lookup order is random).
                peers = await link.lookup(name)
                fake_index = peers.index(f"127.0.0.1:{port_fake}")
                rng = _FirstPick(fake_index)
                pinned: dict[str, ssl.SSLContext | None] = {name: ctx}
                async with PeerRPCClient(link, ssl_for=pinned.get, rng=rng) as client:
                    t0 = time.perf_counter()
                    await client.request(name, PAYLOAD)
                    firsts.append(time.perf_counter() - t0)
                    for _ in range(50):
                        t0 = time.perf_counter()
                        await client.request(name, PAYLOAD)
                        laters.append(time.perf_counter() - t0)
                alone = f"bench:alone:{r}:{time.monotonic_ns()}"
                await link.announce(alone, port_real)
                for _ in range(200):
                    if await link.lookup(alone, use_cache=False):
                        break
                    await asyncio.sleep(0.01)
                async with PeerRPCClient(link, ssl_context=ctx) as client:
                    t0 = time.perf_counter()
                    await client.request(alone, PAYLOAD)
                    baseline.append(time.perf_counter() - t0)
    first, base = statistics.median(firsts), statistics.median(baseline)
    return {
        "first_request_with_impostor_us": round(first * 1e6, 1),
        "first_request_without_us": round(base * 1e6, 1),
        "impostor_cost_us": round((first - base) * 1e6, 1),
        "later_requests_p50_us": round(statistics.median(laters) * 1e6, 1),
    }


class _FirstPick(random.Random):
    """Picks index ``first`` on the first choice, then behaves like random.Random(1)."""

    def __init__(self, first: int) -> None:
        super().__init__(1)
        self._first: int | None = first

    def choice(self, seq: Any) -> Any:
        if self._first is not None and len(seq) > self._first:
            pick, self._first = seq[self._first], None
            return pick
        return super().choice(seq)


# ---------------------------------------------------------------------------------- driver


def run(coro: Coroutine[Any, Any, Any], uv: bool) -> Any:
    if uv:
        try:
            import uvloop

            return uvloop.run(coro)
        except ImportError:
            pass
    return asyncio.run(coro)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    parser.add_argument("--no-uvloop", action="store_true", help="stdlib event loop")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/tls_rpc.json"))
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ident", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    uv = not args.no_uvloop
    if args.serve:
        run(serve(args.serve, args.port, args.ident), uv)
        return
    n = 3_000 if args.quick else 20_000
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "uvloop": uv},
        "requests": n,
        "rounds": args.rounds,
        "load_average_at_start": os.getloadavg()[0],
        "modes": {},
    }
    # Modes interleaved, --rounds times, median per figure: a busy machine drifts.
    per_round: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            proc, port = start_server(mode, 1, uv)
            try:
                per_round[mode].append(run(bench_mode(mode, port, n, proc.pid), uv))
            finally:
                stop_server(proc)
    for mode, rounds in per_round.items():
        results["modes"][mode] = {
            key: {fig: statistics.median(r[key][fig] for r in rounds) for fig in rounds[0][key]}
            for key in ("sequential", "inflight64")
        }
    real, port_real = start_server("tls", 1, uv)
    fake, port_fake = start_server("tls", 3, uv)
    try:
        results["one_offs"] = run(one_offs(port_real, port_fake, 50 if args.quick else 200), uv)
        results["rogue_announcer"] = run(
            rogue_announcer(port_real, port_fake, 3 if args.quick else 10), uv
        )
    finally:
        stop_server(real)
        stop_server(fake)

    head = ("mode", "in flight", "req/s", "p50 µs", "p99 µs", "cli cpu µs", "srv cpu µs")
    print("{:6} {:>9} {:>8} {:>9} {:>9} {:>10} {:>10}".format(*head))
    for mode, res in results["modes"].items():
        for label, key in (("1", "sequential"), ("64", "inflight64")):
            r = res[key]
            print(
                f"{mode:6} {label:>9} {r['rps']:>8} {r['p50_us']:>9} {r['p99_us']:>9}"
                f" {r['client_cpu_us']:>10} {r['server_cpu_us']:>10}"
            )
    for key, value in {**results["one_offs"], **results["rogue_announcer"]}.items():
        print(f"{key:28} {value:>10} µs")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
