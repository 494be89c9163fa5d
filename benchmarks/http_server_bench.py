"""The server's cost per RPC request and per stream frame: the front against aiohttp alone.

A :class:`~grenex.grenache.PeerRPCServer` with an echo handler runs in a process of its own
(uvloop), once with its front (``grenex.grenache._fastserve``, the default) and once with
``front=False`` (aiohttp serves everything, as before the front); a client process sends
``--n`` requests of ~400 bytes (an order's size) with ``--inflight`` in flight over keep-alive
connections (grenex's own client), plain and over TLS 1.3 (the server's pinned Ed25519
certificate, as the client API serves). Then streams: a :class:`~grenex.grenache.StreamSender`
writes ``--frames`` binary frames of 200 bytes (a consensus message's size) to a stream path
of the same server, and the handler counts them: in bursts (64 per loop turn, as a busy
driver writes them), and paced (a twentieth as many, 1 ms apart: one frame per read on the
server, as at a light load). The server reports its own CPU time
(``time.process_time_ns``) before and after. For each, the server process's CPU
per request or per frame, and requests (frames) per second; the
rounds alternate front and aiohttp, and the table gives medians and the ratio.

    .venv/bin/python benchmarks/http_server_bench.py [--quick] [--rounds 3] [--json PATH]
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
from typing import Any, cast

from grenex.grenache import Link, PeerRPCServer, make_self_signed, server_context
from grenex.grenache._fasthttp import FastHttpTransport
from grenex.grenache.stream import StreamSender
from grenex.grenache.tls import pinned_client_context

ROOT = Path(__file__).resolve().parents[1]
SEED = bytes(range(32))
NAME = "bench:server"
PATH = "/bench/stream"
BODY = (
    b'["2b6f2f6c-8a3c-4c8e-9a4f-1d2e3f4a5b6c","grenex:bench:node:n1",'
    b'{"op":"order","env":"' + b"x" * 330 + b'"}]'
)
FRAME = os.urandom(200)


async def cpu_s(transport: FastHttpTransport, url: str) -> float:
    """The server process's CPU time so far (one request's worth more: the same for both)."""
    _status, reply = await transport.post(url, b'["c","cpu",null]', timeout_s=10)
    return int(json.loads(reply)[2]) / 1e9


# ------------------------------------------------------------------------------ the server


async def serve(front: bool, tls: bool) -> None:
    frames = 0

    def open_stream(_peer: object) -> Any:
        def on_frame(_data: bytes) -> None:
            nonlocal frames
            frames += 1

        return on_frame

    def handler(key: str, payload: object) -> object:
        if key == "frames":
            return frames
        if key == "cpu":  # this process's CPU time, ns resolution (/proc counts 10 ms ticks)
            return time.process_time_ns()
        return payload

    ctx = server_context(make_self_signed(SEED, "bench"), SEED) if tls else None
    srv = PeerRPCServer(handler, ssl_context=ctx, front=front, upgrades={PATH: open_stream}, port=0)
    await srv.start()
    print(srv.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
    await srv.stop()


# ------------------------------------------------------------------------------ the client


class _Server:
    def __init__(self, front: bool, tls: bool) -> None:
        cmd = [sys.executable, __file__, "--serve", "front" if front else "aiohttp"]
        if tls:
            cmd.append("--tls")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _client_ssl(tls: bool) -> Any:
    if not tls:
        return None
    return pinned_client_context([make_self_signed(SEED, "bench")])


async def requests(front: bool, tls: bool, n: int, inflight: int) -> dict[str, float]:
    srv = _Server(front, tls)
    try:
        transport = FastHttpTransport(connections_max=inflight, ssl_context=_client_ssl(tls))
        url = f"{'https' if tls else 'http'}://127.0.0.1:{srv.port}/"

        async def worker(k: int) -> None:
            for _ in range(k):
                status, _body = await transport.post(url, BODY, timeout_s=10)
                if status != 200:
                    raise RuntimeError(f"status {status}")

        await asyncio.gather(*(worker(50) for _ in range(inflight)))  # connections, warm
        c0, t0 = await cpu_s(transport, url), time.perf_counter()
        await asyncio.gather(*(worker(n // inflight) for _ in range(inflight)))
        c1, t1 = await cpu_s(transport, url), time.perf_counter()
        await transport.close()
        done = n // inflight * inflight
        return {"per_s": done / (t1 - t0), "server_cpu_us": (c1 - c0) / done * 1e6}
    finally:
        srv.stop()


async def frames(front: bool, tls: bool, n: int, paced: bool) -> dict[str, float]:
    srv = _Server(front, tls)
    try:
        ctx = _client_ssl(tls)
        sender = StreamSender(cast(Link, _Known(srv.port)), NAME, PATH, lambda _name: ctx)
        async with asyncio.timeout(10):
            while not sender.ready():
                await asyncio.sleep(0.01)
        transport = FastHttpTransport(ssl_context=ctx)
        url = f"{'https' if tls else 'http'}://127.0.0.1:{srv.port}/"

        async def counted() -> int:
            body = json.dumps(["r", "frames", None]).encode()
            _s, reply = await transport.post(url, body, timeout_s=10)
            return int(json.loads(reply)[2])

        base = await counted()
        c0, t0 = await cpu_s(transport, url), time.perf_counter()
        for i in range(n):
            sender.write(FRAME)
            if paced:  # one frame per read on the server, as at a light load
                await asyncio.sleep(0.001)
            elif i % 64 == 63:
                await asyncio.sleep(0)  # let the socket drain, as a driver turn does
        async with asyncio.timeout(120):  # every frame counted, or the run fails
            while await counted() < base + n:
                await asyncio.sleep(0.005)
        c1, t1 = await cpu_s(transport, url), time.perf_counter()
        await transport.close()
        await sender.close()
        return {"per_s": n / (t1 - t0), "server_cpu_us": (c1 - c0) / n * 1e6}
    finally:
        srv.stop()


class _Known:
    """A link that knows one address and no Grape (the stream sender only looks up)."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def lookup(self, _name: str) -> list[str]:
        return [f"127.0.0.1:{self.port}"]


def _median(runs: list[dict[str, float]], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 1)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for tls in (False, True):
        for what in ("requests", "frames", "frames_paced"):
            runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
            for _ in range(args.rounds):
                for front in (True, False):
                    if what == "requests":
                        r = await requests(front, tls, args.n, args.inflight)
                    elif what == "frames":
                        r = await frames(front, tls, args.frames, paced=False)
                    else:
                        r = await frames(front, tls, args.frames // 20, paced=True)
                    runs[front].append(r)
            key = f"{what}_{'tls' if tls else 'plain'}"
            results[key] = {
                "front": {
                    "per_s": _median(runs[True], "per_s"),
                    "server_cpu_us": _median(runs[True], "server_cpu_us"),
                },
                "aiohttp": {
                    "per_s": _median(runs[False], "per_s"),
                    "server_cpu_us": _median(runs[False], "server_cpu_us"),
                },
            }
            f, a = results[key]["front"], results[key]["aiohttp"]
            results[key]["cpu_ratio_aiohttp_over_front"] = round(
                a["server_cpu_us"] / f["server_cpu_us"], 2
            )
            print(
                f"{key:20} front {f['server_cpu_us']:6.1f} µs {f['per_s']:9.0f}/s   "
                f"aiohttp {a['server_cpu_us']:6.1f} µs {a['per_s']:9.0f}/s   "
                f"aiohttp/front CPU {results[key]['cpu_ratio_aiohttp_over_front']:.2f}",
                flush=True,
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, help="requests per run (20,000)")
    parser.add_argument("--frames", type=int, help="stream frames per run (50,000)")
    parser.add_argument("--inflight", type=int, default=16)
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/http_server_bench.json"))
    parser.add_argument("--serve", choices=("front", "aiohttp"), help=argparse.SUPPRESS)
    parser.add_argument("--tls", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.run
    if args.serve:
        runner(serve(args.serve == "front", args.tls))
        return
    if args.quick:  # one round, fewer requests and frames unless told
        args.rounds = 1
        args.n = args.n or 2_000
        args.frames = args.frames or 5_000
    args.n = args.n or 20_000
    args.frames = args.frames or 50_000
    results = runner(bench(args))
    out = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "args": {k: v for k, v in vars(args).items() if k not in ("serve", "tls")},
        "results": results,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
