"""Signature costs (SPEC §8), measured with grenex's own pure code: sign, verify, decode, check.

Two envelope shapes, both made of SPEC §2 ``place`` commands with decimal strings
(``"price":"100.5","qty":"1"``), ``client`` and ``nonce`` (a counter) set:

* ``single``: one place per envelope (TEXT is the command itself);
* ``batch32``: a batch of 32 places per envelope (one signature; ``client`` and ``nonce`` on
  the batch).

For each shape, per envelope and per command, wall time (``time.perf_counter_ns``) and process
CPU time (``time.process_time_ns``), the median of ``--repeats`` runs of ``--n`` envelopes:

* **sign**: :func:`grenex.codec.envelope.sign_envelope` (what a client does: SHA-512 of the
  signed message by libsodium, plus the envelope's JSON);
* **verify**: :func:`grenex.replica.auth.verify_envelope` (decode SIG from base64url, build the
  signed message, one libsodium ``crypto_sign_open``), and ``verify_raw`` alone
  (:func:`grenex.codec.keys.verify_raw` on prepared bytes: libsodium and nothing else);
* **decode**: :func:`grenex.codec.envelope.decode_envelope_json` (§8 checks 1–2: the outer
  JSON, strict JSON of TEXT, the batch's form, client and nonce, TEXT's SHA-256);
* **check**: :meth:`grenex.replica.auth.Auth.check` (checks 2–5 against an account of a real
  genesis from ``make_genesis``/``parse_genesis``) with a verdict computed earlier
  (``verified=True`` with the key it was computed for: the reuse SPEC §8 allows) against
  ``verified=None`` (it verifies now).  Every verdict must be ``Fresh``.

Then **threads**: verifying ``4 × --n`` single envelopes with ``verify_envelope`` in one worker
thread against two (``ThreadPoolExecutor``, the list split in two halves), wall time, median of
the repeats; the speed-up (one thread's time / two threads') shows whether PyNaCl releases the
GIL (cffi drops it around the C call): about 2 on two idle cores, 1 if it did not.

Before anything is timed, the script checks its inputs: every envelope decodes, verifies and is
``Fresh``; a tampered TEXT (a different price) and a tampered signature do not verify.

The signing account is the genesis operator (the account checks 3–5 treat it like any other
for a ``place``).  Nothing here touches the network or the disk except ``--json``.

    .venv/bin/python benchmarks/sign_verify.py [--n 2000] [--repeats 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import nacl

from grenex.codec.envelope import Envelope, decode_envelope_json, sign_envelope
from grenex.codec.genesis import make_genesis, parse_genesis
from grenex.codec.keys import SecretKey, parse_signature, signing_message, verify_raw
from grenex.replica.auth import Auth, Fresh, verify_envelope

ROOT: Final = Path(__file__).resolve().parents[1]
CLIENT: Final = "alice"
BATCH: Final = 32
SHAPES: Final = ("single", "batch32")
TIME_MS: Final = 1_700_000_000_000  # the entry's time given to Auth.check (nonces are counters)


def _seed(label: str) -> bytes:
    return hashlib.sha256(f"grenex-sign-bench-{label}".encode()).digest()


def _place(i: int) -> dict[str, Any]:
    """A SPEC §2 limit order, decimal strings, without client and nonce."""
    return {
        "type": "place",
        "id": f"o{i}",
        "market": "BTC-USD",
        "side": "buy" if i % 2 == 0 else "sell",
        "qty": "1",
        "price": "100.5",
    }


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def make_texts(shape: str, n: int, first_nonce: int = 1) -> list[bytes]:
    """``n`` TEXTs of ``shape``, nonces counting from ``first_nonce``."""
    out: list[bytes] = []
    for k in range(n):
        nonce = first_nonce + k
        if shape == "single":
            cmd = _place(nonce)
            cmd["client"] = CLIENT
            cmd["nonce"] = nonce
            out.append(_dumps(cmd))
        elif shape == "batch32":
            items = [_place(nonce * BATCH + j) for j in range(BATCH)]
            out.append(_dumps({"client": CLIENT, "nonce": nonce, "batch": items}))
        else:
            raise ValueError(f"unknown shape {shape!r}")
    return out


def commands_per_envelope(shape: str) -> int:
    return 1 if shape == "single" else BATCH


@dataclass(frozen=True)
class Setup:
    """A key, a real genesis naming it as the operator, and the Auth built from it."""

    key: SecretKey
    cluster_id: str
    auth: Auth

    @classmethod
    def make(cls) -> Setup:
        key = SecretKey(_seed("client"))
        node = SecretKey(_seed("node"))
        data = make_genesis("bench", (CLIENT, key.public_key), [("n1", node.public_key)])
        genesis = parse_genesis(data)
        return cls(key, genesis.cluster_id, Auth(genesis))


@dataclass(frozen=True)
class Workload:
    """One shape's inputs for every operation, prepared outside the timed loops."""

    shape: str
    texts: list[bytes]
    wires: list[bytes]  # signed envelope JSON
    envelopes: list[Envelope]  # decoded
    messages: list[tuple[bytes, bytes]]  # (signed message, raw signature) for verify_raw


def prepare(setup: Setup, shape: str, n: int) -> Workload:
    texts = make_texts(shape, n)
    wires = [sign_envelope(setup.key, setup.cluster_id, t) for t in texts]
    envs: list[Envelope] = []
    msgs: list[tuple[bytes, bytes]] = []
    for w in wires:
        env = decode_envelope_json(w)
        if not isinstance(env, Envelope):
            raise AssertionError(f"a signed envelope did not decode: {env}")
        sig = parse_signature(env.sig)
        assert sig is not None
        envs.append(env)
        msgs.append((signing_message(setup.cluster_id, env.text), sig))
    return Workload(shape, texts, wires, envs, msgs)


def self_check(setup: Setup, w: Workload) -> dict[str, bool]:
    """What the timed loops rely on; raises AssertionError when it does not hold."""
    pk = setup.key.public_bytes
    cid = setup.cluster_id
    env = w.envelopes[0]
    valid = verify_envelope(cid, env, pk)
    tampered_text = env.text.replace(b'"100.5"', b'"100.6"', 1)
    assert tampered_text != env.text
    forged = decode_envelope_json(_dumps({"cmd": tampered_text.decode("utf-8"), "sig": env.sig}))
    assert isinstance(forged, Envelope)
    tampered = verify_envelope(cid, forged, pk)
    msg, sig = w.messages[0]
    bad_sig = verify_raw(pk, msg, bytes([sig[0] ^ 1]) + sig[1:])
    other_cluster = verify_envelope("0" * 64, env, pk)
    fresh = all(type(setup.auth.check(e, TIME_MS)) is Fresh for e in w.envelopes)
    reused = all(type(setup.auth.check(e, TIME_MS, True, pk)) is Fresh for e in w.envelopes)
    forged_check = type(setup.auth.check(forged, TIME_MS)) is not Fresh
    out = {
        "valid_verifies": valid,
        "all_verify": all(verify_raw(pk, m, s) for m, s in w.messages),
        "tampered_text_verifies": tampered,
        "tampered_sig_verifies": bad_sig,
        "other_cluster_verifies": other_cluster,
        "all_check_fresh": fresh and reused,
        "tampered_check_rejected": forged_check,
        "commands_decoded": all(
            len(e.commands) == commands_per_envelope(w.shape) for e in w.envelopes
        ),
    }
    want_false = ("tampered_text_verifies", "tampered_sig_verifies", "other_cluster_verifies")
    for name, ok in out.items():
        if ok == (name in want_false):
            raise AssertionError(f"self-check failed: {name} is {ok}")
    return out


# ------------------------------------------------------------------------------------- timing


def _time(fn: Callable[[], object]) -> tuple[int, int]:
    """(wall ns, process CPU ns) of one call."""
    c0 = time.process_time_ns()
    t0 = time.perf_counter_ns()
    fn()
    t1 = time.perf_counter_ns()
    return t1 - t0, time.process_time_ns() - c0


def measure(
    fn: Callable[[], object], envelopes: int, commands: int, repeats: int
) -> dict[str, float]:
    """Median over ``repeats`` of ``fn`` (which handles ``envelopes`` envelopes)."""
    fn()  # warm-up
    walls: list[int] = []
    cpus: list[int] = []
    for _ in range(repeats):
        wall, cpu = _time(fn)
        walls.append(wall)
        cpus.append(cpu)
    wall_env = statistics.median(walls) / envelopes / 1000
    cpu_env = statistics.median(cpus) / envelopes / 1000
    return {
        "envelope_us": round(wall_env, 2),
        "command_us": round(wall_env / commands, 3),
        "envelope_cpu_us": round(cpu_env, 2),
        "command_cpu_us": round(cpu_env / commands, 3),
        "envelopes_per_s": round(1e6 / wall_env) if wall_env else 0,
        "best_envelope_us": round(min(walls) / envelopes / 1000, 2),
    }


def bench_shape(setup: Setup, w: Workload, repeats: int) -> dict[str, Any]:
    key, cid, auth = setup.key, setup.cluster_id, setup.auth
    pk = key.public_bytes
    n = len(w.texts)
    per = commands_per_envelope(w.shape)
    texts, envs, msgs = w.texts, w.envelopes, w.messages

    def sign() -> None:
        for t in texts:
            sign_envelope(key, cid, t)

    def verify() -> None:
        for e in envs:
            verify_envelope(cid, e, pk)

    def verify_raw_only() -> None:
        for m, s in msgs:
            verify_raw(pk, m, s)

    def decode() -> None:
        for data in w.wires:
            decode_envelope_json(data)

    def check_reuse() -> None:
        for e in envs:
            auth.check(e, TIME_MS, True, pk)

    def check_verify() -> None:
        for e in envs:
            auth.check(e, TIME_MS)

    out: dict[str, Any] = {
        "commands_per_envelope": per,
        "text_bytes": round(statistics.mean(len(t) for t in texts)),
        "envelope_bytes": round(statistics.mean(len(x) for x in w.wires)),
    }
    for name, fn in (
        ("sign", sign),
        ("verify", verify),
        ("verify_raw", verify_raw_only),
        ("decode", decode),
        ("check_reuse", check_reuse),
        ("check_verify", check_verify),
    ):
        out[name] = measure(fn, n, per, repeats)
    return out


def bench_threads(setup: Setup, envs: Sequence[Envelope], repeats: int) -> dict[str, Any]:
    """Verify ``envs`` in one worker thread, then split over two; wall and CPU time."""
    cid, pk = setup.cluster_id, setup.key.public_bytes

    def run(part: Sequence[Envelope]) -> int:
        return sum(verify_envelope(cid, e, pk) for e in part)

    half = len(envs) // 2
    parts = [envs[:half], envs[half:]]
    one = ThreadPoolExecutor(1, thread_name_prefix="verify1")
    two = ThreadPoolExecutor(2, thread_name_prefix="verify2")
    try:
        # warm both pools (threads started) before timing
        assert sum(two.map(run, parts)) == len(envs)
        assert one.submit(run, envs).result() == len(envs)
        t1: list[int] = []
        t2: list[int] = []
        c1: list[int] = []
        c2: list[int] = []
        for _ in range(repeats):  # interleaved: a drift in load hits both alike
            wall, cpu = _time(lambda: one.submit(run, envs).result())
            t1.append(wall)
            c1.append(cpu)
            wall, cpu = _time(lambda: list(two.map(run, parts)))
            t2.append(wall)
            c2.append(cpu)
    finally:
        one.shutdown()
        two.shutdown()
    m1, m2 = statistics.median(t1), statistics.median(t2)
    n = len(envs)
    return {
        "envelopes": n,
        "one_thread_per_s": round(n / m1 * 1e9),
        "two_threads_per_s": round(n / m2 * 1e9),
        "speedup": round(m1 / m2, 2),
        "best_speedup": round(min(t1) / min(t2), 2),
        "one_thread_cpu_us": round(statistics.median(c1) / n / 1000, 2),
        "two_threads_cpu_us": round(statistics.median(c2) / n / 1000, 2),
    }


def run_bench(n: int, repeats: int) -> dict[str, Any]:
    """Everything, as the JSON report (see the module docstring)."""
    setup = Setup.make()
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "pynacl": nacl.__version__,
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg()[0],
        },
        "n": n,
        "repeats": repeats,
        "shapes": {},
        "self_check": {},
    }
    for shape in SHAPES:
        w = prepare(setup, shape, n)
        results["self_check"][shape] = self_check(setup, w)
        results["shapes"][shape] = bench_shape(setup, w, repeats)
    singles = prepare(setup, "single", 4 * n).envelopes
    results["threads"] = bench_threads(setup, singles, repeats)
    results["load_average_at_end"] = os.getloadavg()[0]
    return results


def print_table(results: dict[str, Any], out: Any = None) -> None:
    out = sys.stdout if out is None else out
    ops = ("sign", "verify", "verify_raw", "decode", "check_reuse", "check_verify")
    head = ("operation", "shape", "µs/env", "µs/cmd", "cpu µs/env", "cpu µs/cmd", "env/s")
    print("{:13} {:8} {:>9} {:>9} {:>10} {:>10} {:>9}".format(*head), file=out)
    for op in ops:
        for shape in SHAPES:
            r = results["shapes"][shape][op]
            print(
                f"{op:13} {shape:8} {r['envelope_us']:>9} {r['command_us']:>9}"
                f" {r['envelope_cpu_us']:>10} {r['command_cpu_us']:>10} {r['envelopes_per_s']:>9}",
                file=out,
            )
    t = results["threads"]
    print(
        f"verify threads: 1 → {t['one_thread_per_s']}/s, 2 → {t['two_threads_per_s']}/s,"
        f" speed-up ×{t['speedup']} (best ×{t['best_speedup']}) over {t['envelopes']} envelopes",
        file=out,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="envelopes per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (median)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/sign_verify.json"))
    args = parser.parse_args(argv)
    if args.n < 2 or args.repeats < 1:
        parser.error("--n >= 2 and --repeats >= 1")
    results = run_bench(args.n, args.repeats)
    print_table(results)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
