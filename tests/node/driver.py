"""A client process for the real-process tests: random orders through its own node.

Run as ``python -m node.driver`` with ``tests/`` on ``PYTHONPATH``.  It finds its node through
the Grapes, prints ``READY`` once it has reached it, waits for a line on stdin (the start
signal, so that every client process starts at the same moment), runs :func:`run_load` and
writes every :class:`~node.history.Op` as JSON to ``--out``, then prints ``DONE <count>``.
Its commands are signed with the test keyring's key of ``--client`` (``--salt``: the
cluster's keyring; the account is registered by the harness before the client starts) for the
cluster of ``--genesis``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from pathlib import Path

from grenex.client.pins import MemberPins
from grenex.codec.genesis import read_genesis
from grenex.codec.signer import Keyring
from grenex.grenache import GrenacheError, Link, PeerRPCClient
from grenex.grenache.tls import make_self_signed

from .history import Client, OpGen, Signing, api_name, run_load


async def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="node.driver")
    p.add_argument("--grape", required=True, help="comma-separated Grape API URLs")
    p.add_argument("--cluster", required=True)
    p.add_argument("--genesis", type=Path, required=True, help="the cluster's genesis file")
    p.add_argument("--salt", required=True, help="the cluster's test keyring salt")
    p.add_argument("--node", required=True, help="the node this client talks to")
    p.add_argument("--client", required=True, help="the client id (a SPEC name)")
    p.add_argument("--ops", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--rate", type=float, default=0.0, help="commands started per second (0: max)")
    p.add_argument("--deadline", type=float, default=60.0, help="seconds of retries per command")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    link = Link(a.grape.split(","), request_timeout_ms=3_000, lookup_cache_ttl_ms=5_000)
    await link.start()
    genesis = read_genesis(a.genesis)
    keyring = Keyring(a.salt)
    pins = MemberPins(genesis)  # the node's certificate, made from its keyring key
    pins.add(a.node, make_self_signed(keyring.node_key(a.node).seed, a.node))
    rpc = PeerRPCClient(link, request_timeout_ms=12_000, ssl_for=pins.ssl_for)
    client = Client(rpc)
    try:
        for _ in range(100):
            try:
                await client.request(api_name(a.cluster, a.node), {"action": "status"}, 3_000)
                break
            except GrenacheError:
                await asyncio.sleep(0.2)
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        gen = OpGen(a.client, random.Random(a.seed))
        signing = Signing(genesis, keyring)
        ops = await run_load(
            client,
            a.cluster,
            a.node,
            gen,
            signing,
            a.ops,
            concurrency=a.concurrency,
            rate_per_s=a.rate,
            deadline_s=a.deadline,
        )
        tmp = a.out.with_suffix(".tmp")
        tmp.write_text(json.dumps([op.to_json() for op in ops]))
        tmp.replace(a.out)
        print(f"DONE {len(ops)}", flush=True)
    finally:
        await rpc.close()
        await link.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
