"""One load-generating client process for ``benchmarks/cluster_bench.py`` (EXB-1R).

It sends an EXB-1-like mix (GTC places around a mid, some marketable; IOC; cancels of its own
live orders; amends) to ITS OWN node over Grenache (HTTP or WebSocket RPC), either closed loop
(``--concurrency`` requests always in flight) or open loop (arrivals at ``--rate`` per second,
so slow answers cannot hide queueing: latency is measured from the *scheduled* send time).
It writes a JSON result: acknowledged count, errors, latencies (µs) and the last seq seen.

Every command is signed (SPEC §8) with the client's own key (``--key``, an account it registers
first): one envelope per request, or with ``--batch N`` one signed batch envelope of N commands
(one log entry).  Connections are TLS, pinned to the members' certificates from ``--genesis``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from grenex.client.pins import MemberPins
from grenex.codec.api import service_names
from grenex.codec.genesis import read_genesis
from grenex.codec.keys import SecretKey, read_key_file
from grenex.codec.signer import Signer
from grenex.grenache import GrenacheError, Link, PeerRPCClient, WsPeerRPCClient
from grenex.grenache.tls import check_cert
from grenex.node.main import run_event_loop


class Load:
    def __init__(self, client_id: str, market: str, seed: int) -> None:
        self.client = client_id
        self.market = market
        self.rng = random.Random(seed)
        self.n = 0
        self.live: list[str] = []
        self.mid = 10_000

    def next(self) -> dict[str, Any]:
        rng = self.rng
        r = rng.random()
        if r < 0.55 or len(self.live) < 20:
            self.n += 1
            oid = f"{self.client}-{self.n}"
            side = "buy" if rng.random() < 0.5 else "sell"
            away = 1 + min(int(rng.expovariate(1 / 8)), 200)
            if rng.random() < 0.25:
                away = -rng.randrange(0, 4)  # marketable
            price = self.mid - away if side == "buy" else self.mid + away
            qty = 1 + rng.randrange(6) * rng.randrange(6) * rng.randrange(6)
            cmd: dict[str, Any] = {
                "client": self.client,
                "id": oid,
                "market": self.market,
                "side": side,
                "price": str(price),
                "qty": str(qty),
            }
            if rng.random() < 0.08:
                cmd["tif"] = "IOC"
            else:
                self.live.append(oid)
                if len(self.live) > 1000:
                    self.live.pop(0)
            return {"action": "place", "args": [cmd]}
        oid = self.live.pop(rng.randrange(len(self.live)))
        if r < 0.85:
            return {"action": "cancel", "args": [{"client": self.client, "id": oid}]}
        self.live.append(oid)
        return {"action": "amend", "args": [{"client": self.client, "id": oid, "qty": "1"}]}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    link = Link(args.grape.split(","))
    await link.start()
    genesis = read_genesis(args.genesis, check_cert)
    pins = MemberPins(genesis)
    key = read_key_file(args.key)
    # --accounts: the client's orders spread over that many accounts (keys derived from its
    # key file), so that no account has more envelopes in flight than its nonce window holds
    # (64: beyond it, envelopes overtaken by 64 later ones are refused stale_nonce)
    accounts = [args.client] + [f"{args.client}-{i}" for i in range(1, args.accounts)]
    keys = {args.client: key}
    for name in accounts[1:]:
        keys[name] = SecretKey(hashlib.sha256(key.seed + name.encode()).digest())
    signer = Signer(genesis.cluster_id, keys, lambda: time.time_ns() // 1000)
    client: PeerRPCClient | WsPeerRPCClient
    if args.transport == "ws":
        client = WsPeerRPCClient(link, request_timeout_ms=30_000, ssl_for=pins.ssl_for)
    else:
        client = PeerRPCClient(link, request_timeout_ms=30_000, ssl_for=pins.ssl_for)
    voter = genesis.voters[0].id
    pins.learn(
        await client.request(
            service_names(genesis.cluster, voter)["node"],
            {"action": "members", "args": [{}]},
            timeout_ms=10_000,
        )
    )
    name = service_names(genesis.cluster, args.node)["node"]
    for account in accounts:
        reg = await client.request(
            name,
            {"action": "register", "args": [msgspec.json.decode(signer.register(account))]},
            timeout_ms=30_000,
        )
        if not isinstance(reg, dict) or "seq" not in reg:
            raise SystemExit(f"register {account}: {reg}")
    loads = [Load(a, args.market, args.seed * 1000 + i) for i, a in enumerate(accounts)]
    turn = 0
    lat_us: list[int] = []
    errors: dict[str, int] = {}
    last_seq = 0
    # warm up: resolve the node, open connections
    await client.request(name, {"action": "status", "args": [{}]}, timeout_ms=10_000)
    start = time.perf_counter()
    end = start + args.duration

    def request() -> dict[str, Any]:
        nonlocal turn
        load = loads[turn % len(loads)]
        turn += 1
        if args.batch <= 1:
            r = load.next()
            env = signer.command({"type": r["action"], **r["args"][0]})
            # the envelope's bytes as signed, inside the request as they are (not decoded
            # and encoded again: a client has them ready)
            return {"action": r["action"], "args": [msgspec.Raw(env)]}
        cmds = []
        for _ in range(args.batch):
            r = load.next()
            c = {"type": r["action"], **r["args"][0]}
            del c["client"]
            cmds.append(c)
        env = signer.batch(load.client, cmds)
        return {"action": "submit", "args": [msgspec.Raw(env)]}

    async def one(scheduled: float) -> None:
        nonlocal last_seq
        try:
            reply = await client.request(name, request(), timeout_ms=30_000)
        except GrenacheError as e:
            key = str(e).split(":")[0][:60]
            errors[key] = errors.get(key, 0) + args.batch
            return
        done_us = int((time.perf_counter() - scheduled) * 1e6)
        results = reply.get("results", [reply]) if isinstance(reply, dict) else []
        seq = reply.get("seq") if isinstance(reply, dict) else None
        for res in results:
            if isinstance(res, dict) and isinstance(seq, int) and "events" in res:
                lat_us.append(done_us)
                last_seq = max(last_seq, seq)
            else:
                key = str(res.get("error", "bad reply") if isinstance(res, dict) else res)
                key = key.split(":")[0][:60]
                errors[key] = errors.get(key, 0) + 1

    if args.rate > 0:
        tasks: set[asyncio.Task[None]] = set()
        interval = args.batch / args.rate
        i = 0
        while True:
            at = start + i * interval
            if at >= end:
                break
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            t = asyncio.create_task(one(at))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.wait(tasks, timeout=60)
    else:

        async def worker() -> None:
            while time.perf_counter() < end:
                await one(time.perf_counter())

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - start
    await client.close()
    await link.stop()
    return {
        "client": args.client,
        "node": args.node,
        "acked": len(lat_us),
        "errors": errors,
        "elapsed_s": elapsed,
        "latency_us": lat_us,
        "last_seq": last_seq,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--grape", required=True)
    p.add_argument("--genesis", type=Path, required=True)
    p.add_argument("--key", type=Path, required=True, help="this client's account key file")
    p.add_argument("--node", required=True)
    p.add_argument("--client", required=True)
    p.add_argument("--market", default="BTC-USD")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rate", type=float, default=0.0, help="open loop: orders/s (0: closed)")
    p.add_argument("--transport", choices=["http", "ws"], default="http")
    p.add_argument("--batch", type=int, default=1, help="commands per signed envelope (a batch)")
    p.add_argument("--accounts", type=int, default=8, help="accounts this client trades for")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="the client's event loop (uvloop where installed, as the node runs)",
    )
    args = p.parse_args()
    result = run_event_loop(run(args), args.loop == "uvloop")
    args.out.write_text(json.dumps(result))
    sys.exit(0)


if __name__ == "__main__":
    main()
