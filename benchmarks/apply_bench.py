"""The replicated state machine alone: CPU per command to apply signed batches.

What a replica does for every committed entry once its signature verdict is known (the node
verifies before apply and keeps the verdict, so it is taken as known here, and the envelope is
decoded beforehand, as the node's verdict cache does): SPEC §8 checks 2–6 (nonce window,
limits), the engine (SPEC §2), the outcome kept in the account's window and the events encoded
for the reply and the stream.  ``--batch`` commands per envelope, ``--clients`` accounts
taking turns, random buy and sell limit orders around one price (so orders rest and trade).

    .venv/bin/python benchmarks/apply_bench.py [--batch 32] [--envelopes 400] [--runs 5]

``GRENEX_PURE=1`` runs the pure-Python engine (no mypyc build) for comparison.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from grenex.codec.envelope import decode_envelope_json
from grenex.codec.genesis import parse_genesis
from grenex.codec.signer import Keyring, Signer
from grenex.engine import native
from grenex.replica import ReplicaState

T0 = 1_700_000_000_000


def one_run(args: argparse.Namespace, seed: int) -> float:
    keyring = Keyring("grenex-apply-bench")
    genesis = parse_genesis(keyring.genesis("main", ["a", "b", "c"]))
    signer = Signer(genesis.cluster_id, keyring.key)
    clients = [f"c{i}" for i in range(args.clients)]
    state = ReplicaState(genesis)
    index = 0
    for c in clients:
        index += 1
        state.apply_command(index, 1, signer.register(c, keyring.key(c)), T0)
    index += 1
    market = {"type": "add_market", "market": "M", "tick": "1", "lot": "1"}
    state.apply_command(index, 1, signer.command(dict(market, client=keyring.operator)), T0)
    rng = random.Random(seed)
    envs: list[bytes] = []
    n = 0
    for b in range(args.envelopes):
        cmds = []
        for _ in range(args.batch):
            n += 1
            cmds.append(
                {
                    "type": "place",
                    "id": f"o{n}",
                    "market": "M",
                    "side": rng.choice(["buy", "sell"]),
                    "qty": str(rng.randint(1, 9)),
                    "price": str(100 + rng.randint(-5, 5)),
                }
            )
        c = clients[b % len(clients)]
        envs.append(
            signer.batch(c, cmds) if args.batch > 1 else signer.command(dict(cmds[0], client=c))
        )
    decoded = {e: decode_envelope_json(e) for e in envs}

    def known(_env: object, _key: bytes) -> bool:
        return True

    outcomes = []
    t0 = time.perf_counter()
    for e in envs:
        index += 1
        outcomes.append(
            state.apply_command(
                index, 1, e, T0 + index, verifier=known, decoder=decoded.__getitem__
            )
        )
    spent = time.perf_counter() - t0
    # a benchmark that measured refusals would measure nothing: every command must have run
    refused = [ev for o in outcomes for ev in o.events if type(ev).__name__ == "Rejected"]
    if refused or any(o.duplicate for o in outcomes):
        raise SystemExit(f"apply_bench: {len(refused)} commands refused: {refused[:1]}")
    return spent / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--envelopes", type=int, default=400)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    runs = [one_run(args, seed) for seed in range(args.runs)]
    build = "compiled" if native.built_path().is_file() and not _pure() else "pure Python"
    print(
        f"apply, {args.batch} per envelope ({build} engine): median {statistics.median(runs):.2f} "
        f"us/command, best {min(runs):.2f} ({args.runs} runs of {args.envelopes} envelopes)"
    )


def _pure() -> bool:
    import os

    return bool(os.environ.get("GRENEX_PURE"))


if __name__ == "__main__":
    main()
