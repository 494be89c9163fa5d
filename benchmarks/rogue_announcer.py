"""What a rogue announcer costs an honest client (SPEC §8 "Endpoints", grenex.grenache.tls).

Anyone may announce any Grenache name. Here an **impostor** (a TLS 1.3 server on another
self-signed Ed25519 certificate, with the same common name) announces the same service name as
the **honest** server on a real Grape; the honest client pins the honest certificate for that
name (``PeerRPCClient(ssl_for=...)`` with a
:func:`~grenex.grenache.tls.pinned_client_context`). The impostor fails the client's handshake
and is skipped *for that name* for ``untrusted_peer_ms`` (30 s by default); the request goes
on to the honest server (nothing was sent to the impostor, so the retry is safe).

Set-up: one real Grape (``grenex.grenache.testing.start_grapes``, grenache-grape from
node_modules). The honest and the impostor server each run in their own process (so each has
a core, as on a real network), each announcing itself through its own Link (re-announced in
the background): the honest one under ``ALONE`` and ``CONTESTED``, the impostor under
``CONTESTED`` only. Each also serves a plain-HTTP stats port (not announced) that reports its
TLS ClientHellos seen (:attr:`ServerTLS.hellos`) and requests answered.

Per round, interleaved (order alternating), each with a **new** client (empty connection pool,
nothing remembered), peers chosen by the client's own random choice (``random.Random(round)``):

* ``alone``: ``--requests`` sequential requests to ``ALONE`` (no impostor);
* ``contested``: the same to ``CONTESTED`` (impostor announced);
* ``alone_inflight`` and ``contested_inflight``: the same with ``--inflight`` requests in
  flight at once (a new client each): a burst can meet the impostor several times before the
  first failure is remembered.

Per phase: requests answered (by the client, and counted by the honest server), failed
handshakes (``PeerAuthError`` as the client records them, and ClientHellos the impostor saw),
total time, latency p50/p99/max, the first request's latency, and for ``contested`` the
latency of the request that met the impostor. The impostor's cost is (a) that request's
latency minus what it would have cost without an impostor (the baseline's first request when
it was the client's first, else the phase's median), and (b) the difference in total time
(noisier: two sums of ``--requests`` latencies).

Finally, once, the window: ``--window-s`` seconds of sequential requests to ``CONTESTED`` with
``untrusted_peer_ms = --window-ms``: about one failed handshake per window, never one per
request.

    .venv/bin/python benchmarks/rogue_announcer.py [--requests 2000] [--rounds 5]
        [--inflight 64] [--window-ms 250] [--window-s 2] [--no-uvloop] [--json PATH]
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
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from grenex.grenache import Link, PeerRPCClient, PeerRPCServer, make_self_signed
from grenex.grenache.protocol import Json
from grenex.grenache.testing import async_wait_for, start_grapes
from grenex.grenache.tls import pinned_client_context, server_context

ROOT: Final = Path(__file__).resolve().parents[1]
ALONE: Final = "grenex:bench:rogue:alone"
CONTESTED: Final = "grenex:bench:rogue:contested"
PAYLOAD: Final = {"action": "status", "args": [{"market": "BTC-USD"}]}
ROLES: Final = ("honest", "impostor")
START_TIMEOUT_S: Final = 30.0


def identity(role: str) -> tuple[bytes, bytes]:
    """(seed, certificate): both roles use the common name ``n1``; only the key differs."""
    seed = hashlib.sha256(f"grenex-rogue-bench-{role}".encode()).digest()
    return seed, make_self_signed(seed, "n1")


# ----------------------------------------------------------------------------- server process


async def serve(role: str, grape: str) -> None:
    """Run one server (TLS service + plain stats port), announce it, print READY, wait."""
    seed, cert = identity(role)
    tls = server_context(cert, seed)
    answered = 0

    def handler(key: str, payload: Json) -> Json:
        nonlocal answered
        answered += 1
        return {"ok": True, "by": role}

    def stats(key: str, payload: Json) -> Json:
        return {"hellos": tls.hellos, "answered": answered}

    names = (ALONE, CONTESTED) if role == "honest" else (CONTESTED,)
    async with (
        PeerRPCServer(handler, ssl_context=tls) as server,
        PeerRPCServer(stats) as stats_server,
        Link(grape) as link,
    ):
        for name in names:
            await link.start_announcing(name, server.port)
        print(f"READY {server.port} {stats_server.port}", flush=True)
        await asyncio.Event().wait()


@dataclass
class Server:
    role: str
    proc: subprocess.Popen[str]
    port: int
    stats_port: int

    @property
    def dest(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop the process by its PID (SIGTERM, then SIGKILL after 5 s)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_server(role: str, grape: str, uv: bool) -> Server:
    args = [sys.executable, __file__, "--serve", role, "--grape", grape]
    if not uv:
        args.append("--no-uvloop")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()  # blocks until READY or the process ends
    if len(line) != 3 or line[0] != "READY":
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{role} server did not start: {line!r}")
    return Server(role, proc, int(line[1]), int(line[2]))


# ------------------------------------------------------------------------------------ client


class CountingClient(PeerRPCClient):
    """A PeerRPCClient that counts the peers it marks untrusted (one per failed
    authentication: ``PeerAuthError``) and records which ones."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.auth_failures = 0
        self.untrusted_dests: list[str] = []

    def mark_untrusted(self, name: str, dest: str) -> None:
        self.auth_failures += 1
        self.untrusted_dests.append(dest)
        super().mark_untrusted(name, dest)


def pct(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def server_stats(stats: PeerRPCClient, server: Server) -> dict[str, int]:
    reply = await stats.request_peer(f"127.0.0.1:{server.stats_port}", "stats", {})
    assert isinstance(reply, dict)
    return {"hellos": int(reply["hellos"]), "answered": int(reply["answered"])}


@dataclass
class Env:
    link: Link
    stats: PeerRPCClient  # plain HTTP, to the stats ports
    honest: Server
    impostor: Server
    pin: ssl.SSLContext  # pins the honest certificate


async def phase(
    env: Env, name: str, requests: int, inflight: int, seed: int, untrusted_peer_ms: int = 30_000
) -> dict[str, Any]:
    """``requests`` requests to ``name`` from a new pinned client, ``inflight`` at once."""
    h0 = await server_stats(env.stats, env.honest)
    i0 = await server_stats(env.stats, env.impostor)
    lat: list[float] = []
    hit: list[tuple[int, float]] = []  # (request index, latency) of requests that met a failure
    answered = 0
    pins = {name: env.pin}
    async with CountingClient(
        env.link, ssl_for=pins.get, rng=random.Random(seed), untrusted_peer_ms=untrusted_peer_ms
    ) as client:
        remaining = requests
        index = 0

        async def worker() -> None:
            nonlocal remaining, index, answered
            while remaining > 0:
                remaining -= 1
                i = index
                index += 1
                before = client.auth_failures
                t0 = time.perf_counter()
                reply = await client.request(name, PAYLOAD)
                dt = time.perf_counter() - t0
                lat.append(dt)
                if client.auth_failures != before and inflight == 1:
                    hit.append((i, dt))
                if isinstance(reply, dict) and reply.get("by") == "honest":
                    answered += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        total = time.perf_counter() - t0
        failures = client.auth_failures
        untrusted = sorted(set(client.untrusted_dests))
    h1 = await server_stats(env.stats, env.honest)
    i1 = await server_stats(env.stats, env.impostor)
    return {
        "requests": requests,
        "inflight": inflight,
        "answered": answered,
        "honest_answered": h1["answered"] - h0["answered"],
        "honest_handshakes": h1["hellos"] - h0["hellos"],
        "failed_handshakes": failures,
        "impostor_hellos": i1["hellos"] - i0["hellos"],
        "untrusted": untrusted,
        "total_ms": round(total * 1e3, 2),
        "first_us": round(lat[0] * 1e6, 1) if inflight == 1 else None,
        "p50_us": round(pct(lat, 0.5) * 1e6, 1),
        "p99_us": round(pct(lat, 0.99) * 1e6, 1),
        "max_us": round(max(lat) * 1e6, 1),
        "hits": [{"index": i, "us": round(dt * 1e6, 1)} for i, dt in hit],
    }


async def window_phase(env: Env, window_ms: int, duration_s: float, seed: int) -> dict[str, Any]:
    """Sequential requests to CONTESTED for ``duration_s`` with ``untrusted_peer_ms=window_ms``."""
    i0 = await server_stats(env.stats, env.impostor)
    pins = {CONTESTED: env.pin}
    n = 0
    async with CountingClient(
        env.link, ssl_for=pins.get, rng=random.Random(seed), untrusted_peer_ms=window_ms
    ) as client:
        t0 = time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < duration_s:
            reply = await client.request(CONTESTED, PAYLOAD)
            assert isinstance(reply, dict) and reply.get("by") == "honest", reply
            n += 1
        failures = client.auth_failures
    i1 = await server_stats(env.stats, env.impostor)
    return {
        "window_ms": window_ms,
        "duration_s": round(elapsed, 3),
        "requests": n,
        "failed_handshakes": failures,
        "impostor_hellos": i1["hellos"] - i0["hellos"],
        "windows_elapsed": round(elapsed * 1000 / window_ms, 1),
    }


async def measure(
    grape: str,
    honest: Server,
    impostor: Server,
    *,
    requests: int,
    rounds: int,
    inflight: int,
    window_ms: int,
    window_s: float,
) -> dict[str, Any]:
    honest_cert = identity("honest")[1]
    async with Link(grape, lookup_cache_ttl_ms=600_000) as link, PeerRPCClient(link) as stats:
        env = Env(link, stats, honest, impostor, pinned_client_context([honest_cert]))

        async def announced() -> bool:
            alone = await link.lookup(ALONE, use_cache=False)
            contested = await link.lookup(CONTESTED, use_cache=False)
            return alone == [honest.dest] and sorted(contested) == sorted(
                [honest.dest, impostor.dest]
            )

        await async_wait_for(announced, START_TIMEOUT_S, interval=0.05, message="announcements")
        # warm the lookup cache: every request below is a cache hit, in every phase alike
        await link.lookup(ALONE)
        await link.lookup(CONTESTED)
        await phase(env, ALONE, min(requests, 200), 1, seed=-1)  # warm-up, not recorded
        per: dict[str, list[dict[str, Any]]] = {
            "alone": [],
            "contested": [],
            "alone_inflight": [],
            "contested_inflight": [],
        }
        for r in range(rounds):
            first, second = ("alone", "contested") if r % 2 == 0 else ("contested", "alone")
            for ph in (first, second, f"{first}_inflight", f"{second}_inflight"):
                name = ALONE if ph.startswith("alone") else CONTESTED
                at_once = inflight if ph.endswith("_inflight") else 1
                per[ph].append(await phase(env, name, requests, at_once, seed=r))
        window = await window_phase(env, window_ms, window_s, seed=rounds)
    return summarise(per, window)


def summarise(per: dict[str, list[dict[str, Any]]], window: dict[str, Any]) -> dict[str, Any]:
    def med(ph: str, key: str) -> float:
        return round(statistics.median(float(x[key]) for x in per[ph]), 1)

    out: dict[str, Any] = {"rounds": per, "window": window, "summary": {}}
    s = out["summary"]
    for ph, clients in per.items():
        s[ph] = {
            "total_ms": med(ph, "total_ms"),
            "p50_us": med(ph, "p50_us"),
            "p99_us": med(ph, "p99_us"),
            "failed_handshakes_per_client": [x["failed_handshakes"] for x in clients],
            "impostor_hellos_per_client": [x["impostor_hellos"] for x in clients],
            "all_answered_by_honest": all(
                x["answered"] == x["requests"] == x["honest_answered"] for x in clients
            ),
        }
    # cost (a): the request that met the impostor against the same request without one
    costs: list[float] = []
    for base, cont in zip(per["alone"], per["contested"], strict=True):
        for h in cont["hits"]:
            ref = base["first_us"] if h["index"] == 0 else cont["p50_us"]
            costs.append(h["us"] - ref)
    s["hit_cost_us_each"] = [round(c, 1) for c in costs]
    s["hit_cost_us_median"] = round(statistics.median(costs), 1) if costs else None
    s["hit_indices"] = [[h["index"] for h in x["hits"]] for x in per["contested"]]
    s["first_request_alone_us"] = med("alone", "first_us")
    # cost (b): total time, contested − alone, per round (noisy)
    diffs = [
        c["total_ms"] - a["total_ms"] for a, c in zip(per["alone"], per["contested"], strict=True)
    ]
    s["total_extra_ms_each"] = [round(d, 2) for d in diffs]
    s["total_extra_ms_median"] = round(statistics.median(diffs), 2)
    return out


# ------------------------------------------------------------------------------------ driver


def run(coro: Coroutine[Any, Any, Any], uv: bool) -> Any:
    if uv:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def run_bench(
    *,
    requests: int,
    rounds: int,
    inflight: int,
    window_ms: int,
    window_s: float,
    uv: bool,
) -> dict[str, Any]:
    """Start a Grape and both servers, measure, stop them all (by PID); the JSON report."""
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "uvloop": uv},
        "requests": requests,
        "inflight": inflight,
        "load_average_at_start": os.getloadavg()[0],
    }
    servers: list[Server] = []
    with start_grapes(1) as grapes:
        grape = grapes.api_urls[0]
        try:
            for role in ROLES:
                servers.append(start_server(role, grape, uv))
            honest, impostor = servers
            results["servers"] = {"honest": honest.dest, "impostor": impostor.dest}
            results.update(
                run(
                    measure(
                        grape,
                        honest,
                        impostor,
                        requests=requests,
                        rounds=rounds,
                        inflight=inflight,
                        window_ms=window_ms,
                        window_s=window_s,
                    ),
                    uv,
                )
            )
        finally:
            for s in servers:
                s.stop()
    results["load_average_at_end"] = os.getloadavg()[0]
    return results


def print_report(results: dict[str, Any], out: Any = None) -> None:
    out = sys.stdout if out is None else out
    s = results["summary"]
    print(f"{results['requests']} requests per client; medians over rounds", file=out)
    head = ("phase", "total ms", "p50 µs", "p99 µs", "failed hs/client", "impostor hellos")
    print("{:19} {:>9} {:>8} {:>8} {:>18} {:>16}".format(*head), file=out)
    for ph in ("alone", "contested", "alone_inflight", "contested_inflight"):
        r = s[ph]
        fails = ",".join(map(str, r["failed_handshakes_per_client"]))
        hellos = ",".join(map(str, r["impostor_hellos_per_client"]))
        print(
            f"{ph:19} {r['total_ms']:>9} {r['p50_us']:>8} {r['p99_us']:>8} {fails:>18}"
            f" {hellos:>16}",
            file=out,
        )
    print(
        f"first request alone: {s['first_request_alone_us']} µs; request meeting the impostor"
        f" costs +{s['hit_cost_us_median']} µs (median; each {s['hit_cost_us_each']}, at"
        f" request index {s['hit_indices']})",
        file=out,
    )
    print(
        f"total time contested − alone: {s['total_extra_ms_median']} ms median"
        f" (each {s['total_extra_ms_each']})",
        file=out,
    )
    w = results["window"]
    print(
        f"window {w['window_ms']} ms over {w['duration_s']} s ({w['windows_elapsed']} windows,"
        f" {w['requests']} requests): {w['failed_handshakes']} failed handshakes,"
        f" impostor saw {w['impostor_hellos']}",
        file=out,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per client")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--inflight", type=int, default=64, help="in flight, burst phase")
    parser.add_argument("--window-ms", type=int, default=250, help="untrusted_peer_ms, window")
    parser.add_argument("--window-s", type=float, default=2.0, help="window phase duration")
    parser.add_argument("--no-uvloop", action="store_true", help="stdlib event loop")
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/rogue_announcer.json"))
    parser.add_argument("--serve", choices=ROLES, help=argparse.SUPPRESS)
    parser.add_argument("--grape", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    uv = not args.no_uvloop
    if args.serve:
        run(serve(args.serve, args.grape), uv)
        return
    if args.requests < 1 or args.rounds < 1 or args.inflight < 1:
        parser.error("--requests, --rounds and --inflight are at least 1")
    results = run_bench(
        requests=args.requests,
        rounds=args.rounds,
        inflight=args.inflight,
        window_ms=args.window_ms,
        window_s=args.window_s,
        uv=uv,
    )
    print_report(results)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
