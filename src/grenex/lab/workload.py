"""A lab client: ``python -m grenex.lab.workload``, run inside its host's namespace, placing,
amending and cancelling through **its own node** with :class:`grenex.client.GrenexClient`
(discovering the node through its own host's Grape, as a user on that host would).

Every command is a SPEC §8 envelope signed once with the client's key (``--key``) for the
cluster of ``--genesis``; the client registers its account first (recorded like any command).
Every operation is written to the history file (JSON lines, flushed each time) twice: an
``invoke`` record before it is sent (kind, the command as signed — TEXT decoded, with its
nonce — and ``env``, the envelope itself: every retry sends those exact bytes, so a retry
never makes a second command) and a ``done`` record with its outcome:

* ``ok`` — the node answered ``{seq, events}`` (acknowledged; ``duplicate`` when answered
  from the account's nonce window);
* ``failed`` — ``ERR_GRENEX_BAD_REQUEST`` on the first attempt (it never reached the log);
* ``unknown`` — anything else (timeouts, unavailable, a refusal after earlier attempts): it
  may have executed, at most once.

An ``invoke`` without a ``done`` (the worker was killed) is ``unknown`` too.  SIGTERM stops
new operations; those in flight finish (each is bounded by ``--op-timeout``).
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Final

import click

from grenex.client import BadRequest, GrenexClient, GrenexClientError
from grenex.codec.keys import read_key_file

__all__ = ["MARKETS", "OpGen", "workload_main"]

MARKETS: Final = {"BTC-USD": ("0.01", "0.0001"), "ETH-USD": ("0.01", "0.001")}
_QTYS: Final = {
    "BTC-USD": ("0.0001", "0.0005", "0.001", "0.0025", "0.01"),
    "ETH-USD": ("0.001", "0.005", "0.01", "0.1", "0.25"),
}


def _fmt(d: Decimal) -> str:
    text = format(d, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


class OpGen:
    """Random commands for one client: about 60% place, 20% cancel, 20% amend; ids unique
    to the client (prefixed by the run's tag, so no run reuses one)."""

    def __init__(self, client: str, rng: random.Random, tag: str) -> None:
        self.client = client
        self.rng = rng
        self.tag = tag
        self.n = 0
        self.placed: list[tuple[str, str]] = []

    def _price(self) -> str:
        return _fmt(Decimal(100) + Decimal(self.rng.randint(-6, 6)) * Decimal("0.01"))

    def next(self) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        self.n += 1
        r = rng.random()
        if not self.placed or r < 0.6:
            market = rng.choice(sorted(MARKETS))
            oid = f"{self.tag}-{self.n}"
            args: dict[str, Any] = {
                "client": self.client,
                "id": oid,
                "market": market,
                "side": rng.choice(("buy", "sell")),
                "qty": rng.choice(_QTYS[market]),
            }
            t = rng.random()
            if t >= 0.05:  # else a market order
                args["price"] = self._price()
                if t < 0.2:
                    args["tif"] = "IOC"
                elif t < 0.3:
                    args["tif"] = "FOK"
                elif t < 0.4:
                    args["post_only"] = True
            if rng.random() < 0.3:
                args["stp"] = rng.choice(("cancel_maker", "cancel_taker", "cancel_both"))
            self.placed.append((oid, market))
            return "place", args
        oid, market = rng.choice(self.placed)
        args = {"client": self.client, "id": oid}
        if r < 0.8:
            return "cancel", args
        what = rng.random()
        if what < 0.5:
            args["qty"] = rng.choice(_QTYS[market])
        else:
            args["price"] = self._price()
        return "amend", args


async def _one(c: GrenexClient, kind: str, env: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send the envelope ``env`` (its retries carry the same bytes); the ``done`` fields."""
    out: dict[str, Any] = {}
    try:
        # the client's own retrying transport, with the envelope this history recorded
        r = await c._command(kind, env, timeout)
    except BadRequest as e:
        attempts = getattr(e, "attempts", 1)
        out["status"] = "failed" if attempts == 1 else "unknown"
        out["error"] = str(e)[:300]
        out["attempts"] = attempts
    except GrenexClientError as e:
        out["status"] = "unknown"
        out["error"] = str(e)[:300]
        out["attempts"] = getattr(e, "attempts", 0)
    except (TimeoutError, OSError) as e:
        out["status"] = "unknown"
        out["error"] = f"{type(e).__name__}: {e}"[:300]
    else:
        if type(r.get("seq")) is int and isinstance(r.get("events"), list):
            out.update(status="ok", seq=r["seq"], events=r["events"])
            if r.get("duplicate") is True:
                out["duplicate"] = True
        else:
            out.update(status="unknown", error=f"unexpected reply {str(r)[:200]}")
    return out


def _signed(env_json: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the command as signed, the envelope) of envelope JSON bytes."""
    env: dict[str, Any] = json.loads(env_json)
    cmd: dict[str, Any] = json.loads(env["cmd"])
    return cmd, env


async def run_workload(
    *,
    grape: str,
    cluster: str,
    genesis: Path,
    key: Path,
    node: str,
    client: str,
    seed: int,
    tag: str,
    rate: float,
    concurrency: int,
    duration: float,
    op_timeout: float,
    out: IO[str],
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    gen = OpGen(client, random.Random(seed), tag)
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    n = 0

    def write(rec: dict[str, Any]) -> None:
        out.write(json.dumps(rec, separators=(",", ":")) + "\n")
        out.flush()

    async with GrenexClient(
        grape,
        cluster,
        node,
        client_id=client,
        timeout=op_timeout,
        attempt_timeout=5.0,
        key=read_key_file(key),
        genesis=genesis,
    ) as c:

        async def op(i: int, kind: str, env: dict[str, Any]) -> None:
            try:
                t0 = time.time()
                res = await _one(c, kind, env, op_timeout)
                write({"rec": "done", "op": i, "t": time.time(), "t0": t0, **res})
            finally:
                slots.release()

        def invoke(kind: str, cmd: dict[str, Any], env: dict[str, Any]) -> None:
            rec = {"rec": "invoke", "op": n, "t": time.time(), "node": node, "kind": kind}
            write({**rec, "args": cmd, "env": env})

        # the account first, registered once: the same envelope until answered (a retry that
        # finds it registered is answered with its first outcome)
        n += 1
        cmd, env = _signed(c.signer.register(client))
        invoke("register", cmd, env)
        t0 = time.time()
        res: dict[str, Any] = {"status": "unknown"}
        give_up = loop.time() + duration
        while not stop.is_set() and loop.time() < give_up:
            res = await _one(c, "register", env, op_timeout)
            if res["status"] != "unknown":
                break
        write({"rec": "done", "op": n, "t": time.time(), "t0": t0, **res})

        t_start = loop.time()
        end = t_start + duration
        while not stop.is_set() and loop.time() < end:
            await slots.acquire()
            if stop.is_set():
                slots.release()
                break
            kind, args = gen.next()
            n += 1
            cmd, env = _signed(c.signer.command({"type": kind, **args}))
            invoke(kind, cmd, env)
            task = asyncio.create_task(op(n, kind, env))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if rate > 0:
                nxt = t_start + n / rate
                delay = nxt - loop.time()
                if delay > 0:
                    with contextlib_suppress_timeout():
                        await asyncio.wait_for(stop.wait(), delay)
        if tasks:
            await asyncio.wait(set(tasks), timeout=op_timeout + 10)
    return 0


class contextlib_suppress_timeout:  # noqa: N801 - used like contextlib.suppress
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool:
        return exc_type is TimeoutError


@click.command()
@click.option("--grape", required=True)
@click.option("--cluster", required=True)
@click.option("--genesis", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--node", required=True)
@click.option("--client", "client_id", required=True)
@click.option("--seed", type=int, required=True)
@click.option("--tag", required=True)
@click.option("--rate", type=float, default=10.0)
@click.option("--concurrency", type=int, default=4)
@click.option("--duration", type=float, default=30.0)
@click.option("--op-timeout", type=float, default=10.0)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def workload_main(
    grape: str,
    cluster: str,
    genesis: Path,
    key: Path,
    node: str,
    client_id: str,
    seed: int,
    tag: str,
    rate: float,
    concurrency: int,
    duration: float,
    op_timeout: float,
    out: Path,
) -> None:
    """One lab client (see the module docstring)."""
    with out.open("a") as f:
        code = asyncio.run(
            run_workload(
                grape=grape,
                cluster=cluster,
                genesis=genesis,
                key=key,
                node=node,
                client=client_id,
                seed=seed,
                tag=tag,
                rate=rate,
                concurrency=concurrency,
                duration=duration,
                op_timeout=op_timeout,
                out=f,
            )
        )
    sys.exit(code)


if __name__ == "__main__":
    workload_main()
