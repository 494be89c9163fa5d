"""EXB-1 engine benchmark (``shared/BENCHMARKS.md``): grenex's matching engine, ``grenex
replay``, and peers measured in the same process on the same commands.

Run from the repository root::

    .venv/bin/python benchmarks/engine_bench.py [--quick] [--runs 5] [--json out.json]
    .venv/bin/python benchmarks/engine_bench.py --flat [--flat-lines 10000000]   # minutes

What is measured, and how (every rate is a median of ``--runs`` runs, with the best):

0. **Correctness first.**  The canonical file (``shared/bench/exb1.jsonl.gz``) is checked
   against ``exb1.expected.json``: its own SHA-256, then the trade tape and final book hashes
   and the trade count that grenex produces.  A mismatch stops the benchmark (exit 2).
1. **Engine alone.**  Every line is decoded first (not timed); each run applies the 1,001
   setup commands to a fresh :class:`~grenex.engine.Engine` (not timed), then times the
   200,000 measured commands (``time.perf_counter_ns`` around the whole loop, GC enabled as
   in production): commands/s.
2. **Service time.**  A separate pass times each ``apply`` alone with ``perf_counter_ns``
   and reports p50/p99/p99.9/max, with the timer's own cost (an empty pair of calls) beside
   them, not subtracted.  The same for one line of ``grenex replay`` (decode, apply, encode
   the events: the body of :func:`grenex.replay.replay_stream`'s loop).
3. **Replay end to end.**  :func:`grenex.replay.replay_stream` on the gzip file, events to
   ``/dev/null``, in this process; and the ``grenex replay`` console script as a subprocess
   (wall time, with the start-up time of a ``grenex replay /dev/null`` measured apart and the
   child's peak RSS from ``wait4``).  Lines/s count all 201,001 lines.
4. **Peers, same process, same commands**, runs interleaved with grenex's so that noise hits
   all alike; ratios are grenex's rate over the peer's, taken per run, median.  See
   ``peers.py`` for the subset each supports: pyorderbook, a bare dict-and-deque book (the
   ceiling), and orderly-chaos / liquibook when importable.  The naive reference engine
   (``tests/engine/reference.py``) is far slower, so it runs once on the first
   ``--reference-commands`` measured commands, against grenex on the same prefix, and its
   final books are compared with grenex's.
5. **Memory per resting order.**  A child process places 1,000,000 non-crossing GTC orders
   (10,000 clients, 5,000 price levels a side) through the engine and reports, per order,
   the growth of VmRSS (``/proc/self/status``) and, in a second child, of memory traced by
   ``tracemalloc`` (with the biggest allocation sites).
6. **Replay memory flatness** (``--flat``, opt-in): a fresh EXB-1 stream of ``--flat-lines``
   lines is written to a temporary file, ``grenex replay`` runs on it as a subprocess, and
   its VmRSS is sampled every 0.5 s with its progress (the file offset of its input, from
   ``/proc/<pid>/fdinfo``); RSS at 10%, 50%, 100% and the peak are reported.

The report names the machine (CPU, cores, load average), the Python build (PGO/LTO flags),
the engine build measured (``grenex.engine.core.__file__``: a ``.so`` is mypyc-compiled;
``--pure`` sets ``GRENEX_PURE=1`` before grenex is imported), the git commit, the command
line and the date; it prints a table and writes JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import gzip
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import linecache
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import IO, Any

HERE: Path = Path(__file__).resolve().parent
REPO: Path = HERE.parent
DEFAULT_FILE: Path = REPO.parent / "shared" / "bench" / "exb1.jsonl.gz"
REFERENCE_PATH: Path = REPO / "tests" / "engine" / "reference.py"
PERCENTILES: tuple[float, ...] = (0.5, 0.99, 0.999)

Pairs = list[tuple[int, Any]]  # (seq, decoded command)

if str(HERE) not in sys.path:  # sibling modules, also when imported from elsewhere
    sys.path.insert(0, str(HERE))


# ---------------------------------------------------------------------------------- helpers


def _ns() -> int:
    return time.perf_counter_ns()


def summary(values: Sequence[float], higher_is_better: bool = True) -> dict[str, Any]:
    """Median, best, worst and the spread ((max-min)/median) of repeated measurements."""
    vals = list(values)
    med = statistics.median(vals)
    return {
        "median": med,
        "best": max(vals) if higher_is_better else min(vals),
        "worst": min(vals) if higher_is_better else max(vals),
        "spread": (max(vals) - min(vals)) / med if med else 0.0,
        "runs": vals,
    }


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    """p50/p99/p99.9/max of nanosecond samples, in microseconds."""
    s = sorted(samples_ns)
    n = len(s)
    out = {f"p{q * 100:g}": s[min(n - 1, int(q * n))] / 1000 for q in PERCENTILES}
    out["max"] = s[-1] / 1000
    out["mean"] = sum(s) / n / 1000
    return out


def rss_kb(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM of a process, in kB (empty when it is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def load_reference() -> ModuleType | None:
    """The naive reference engine of the tests, imported by file path (None if absent)."""
    if not REFERENCE_PATH.exists():
        return None
    name = "grenex_tests_reference"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REFERENCE_PATH)
    if spec is None or spec.loader is None:
        return None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def grenex_script() -> list[str]:
    """How to run the ``grenex`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "grenex"
    if script.exists():
        return [str(script)]
    found = shutil.which("grenex")
    return [found] if found else [sys.executable, "-c", "from grenex.cli import main; main()"]


# ---------------------------------------------------------------------------------- workload


@dataclass
class Workload:
    """The lines of a command file, decoded, split into setup and measured commands."""

    path: Path
    lines: list[bytes]
    commands: list[Any]
    setup_lines: int
    expected: dict[str, Any] = field(default_factory=dict)

    @property
    def setup(self) -> Pairs:
        return [(i + 1, c) for i, c in enumerate(self.commands[: self.setup_lines])]

    @property
    def measured(self) -> Pairs:
        n = self.setup_lines
        return [(n + i + 1, c) for i, c in enumerate(self.commands[n:])]


def load_workload(path: Path, expected_path: Path | None = None) -> Workload:
    """Read (and gunzip) ``path`` and decode every line; ``expected`` from beside it."""
    from grenex.codec import decode_command

    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if expected_path is None:
        expected_path = path.with_name(path.name.split(".")[0] + ".expected.json")
    expected: dict[str, Any] = {}
    if expected_path.exists():
        expected = json.loads(expected_path.read_text())
    setup = int(expected.get("setup_lines", 1001))
    commands = [decode_command(line) for line in lines]
    return Workload(path, lines, commands, setup, expected)


def _field(ev: Any, name: str) -> Any:
    return ev[name] if isinstance(ev, dict) else getattr(ev, name)


def _is_trade(ev: Any) -> bool:
    return (ev.get("type") if isinstance(ev, dict) else type(ev).__name__.lower()) == "trade"


def digests(engine: Any, commands: Iterable[Any]) -> dict[str, Any]:
    """Apply ``commands`` (seq from 1) to ``engine`` and hash as ``exb1.expected.json`` does:
    the trade tape (``maker_client,maker,taker_client,taker,price,qty``) and the final SPEC §4
    snapshot lines (sorted keys, no spaces).  Works for grenex and the reference engine."""
    tape = hashlib.sha256()
    trades = 0
    for seq, cmd in enumerate(commands, 1):
        for ev in engine.apply(cmd, seq):
            if _is_trade(ev):
                trades += 1
                row = ",".join(
                    str(_field(ev, k))
                    for k in ("maker_client", "maker", "taker_client", "taker", "price", "qty")
                )
                tape.update(row.encode() + b"\n")
    book = hashlib.sha256()
    live = 0
    for snap in engine.books():
        book.update(json.dumps(snap, sort_keys=True, separators=(",", ":")).encode() + b"\n")
        live += len(snap["bids"]) + len(snap["asks"])
    return {
        "trades": trades,
        "trade_tape_sha256": tape.hexdigest(),
        "final_book_sha256": book.hexdigest(),
        "live_orders_at_end": live,
    }


def verify(w: Workload) -> dict[str, Any]:
    """Check the file and grenex's results against ``w.expected``."""
    from grenex.engine import Engine

    got = digests(Engine(), w.commands)
    got["commands_sha256"] = hashlib.sha256(b"".join(x + b"\n" for x in w.lines)).hexdigest()
    checks = {}
    for key in ("commands_sha256", "trade_tape_sha256", "final_book_sha256", "trades"):
        if key in w.expected:
            checks[key] = got[key] == w.expected[key]
    return {"got": got, "checks": checks, "ok": bool(checks) and all(checks.values())}


# ---------------------------------------------------------------------------------- engine


def time_engine(setup: Pairs, measured: Pairs) -> float:
    """Seconds for ``measured`` on a fresh engine that has applied ``setup``."""
    from grenex.engine import Engine

    eng = Engine()
    apply = eng.apply
    for seq, cmd in setup:
        apply(cmd, seq)
    gc.collect()
    t0 = _ns()
    for seq, cmd in measured:
        apply(cmd, seq)
    return (_ns() - t0) / 1e9


def timer_overhead(n: int = 100_000) -> dict[str, float]:
    """The cost of an empty ``perf_counter_ns`` pair as the latency passes use it, in µs."""
    pc = time.perf_counter_ns
    samples = [0] * n
    for i in range(n):
        t0 = pc()
        t1 = pc()
        samples[i] = t1 - t0
    s = sorted(samples)
    return {"p50": s[n // 2] / 1000, "p99": s[int(n * 0.99)] / 1000, "min": s[0] / 1000}


def command_kind(cmd: Any, events: list[Any]) -> str:
    """A label for the latency breakdown: what the command was and what it did."""
    kind = cmd.get("type") if isinstance(cmd, dict) else None
    if kind == "place":
        if cmd.get("tif") == "IOC":
            return "place IOC"
        traded = any(type(ev).__name__ == "Trade" for ev in events)
        return "place GTC, trades" if traded else "place GTC, rests"
    if kind == "amend":
        return "amend price" if cmd.get("price") is not None else "amend qty"
    return str(kind)


def engine_latency(setup: Pairs, measured: Pairs) -> dict[str, Any]:
    """Per-command service time of ``apply`` (µs), overall and by :func:`command_kind`."""
    from grenex.engine import Engine

    eng = Engine()
    apply = eng.apply
    for seq, cmd in setup:
        apply(cmd, seq)
    pc = time.perf_counter_ns
    samples = [0] * len(measured)
    kinds = [""] * len(measured)
    gc.collect()
    for i, (seq, cmd) in enumerate(measured):
        t0 = pc()
        events = apply(cmd, seq)
        t1 = pc()
        samples[i] = t1 - t0
        kinds[i] = command_kind(cmd, events)
    out: dict[str, Any] = dict(percentiles(samples))
    by_kind: dict[str, list[int]] = {}
    for kind, ns in zip(kinds, samples, strict=True):
        by_kind.setdefault(kind, []).append(ns)
    out["by_kind"] = {k: {"count": len(v), **percentiles(v)} for k, v in sorted(by_kind.items())}
    return out


def replay_latency(lines: list[bytes], setup_lines: int) -> dict[str, float]:
    """Per-line service time of ``grenex replay``'s loop body: decode, apply, encode (µs)."""
    from msgspec.json import Encoder

    from grenex.codec import decode_command
    from grenex.engine import Engine

    eng = Engine()
    apply = eng.apply
    encode_into = Encoder().encode_into
    buf = bytearray()
    for seq, line in enumerate(lines[:setup_lines], 1):
        for ev in apply(decode_command(line), seq):
            encode_into(ev, buf, -1)
    buf.clear()
    pc = time.perf_counter_ns
    measured = lines[setup_lines:]
    samples = [0] * len(measured)
    gc.collect()
    seq = setup_lines
    for i, line in enumerate(measured):
        seq += 1
        t0 = pc()
        for ev in apply(decode_command(line), seq):
            encode_into(ev, buf, -1)
            buf += b"\n"
        t1 = pc()
        samples[i] = t1 - t0
        if len(buf) >= 1 << 16:
            buf.clear()
    return percentiles(samples)


def time_replay_inprocess(path: Path) -> tuple[float, int]:
    """(seconds, lines) of :func:`grenex.replay.replay_stream` on ``path`` to /dev/null."""
    from grenex.engine import Engine
    from grenex.replay import open_input, replay_stream

    gc.collect()
    with open(os.devnull, "wb") as out:
        src = open_input(str(path))
        try:
            t0 = _ns()
            n = replay_stream(Engine(), src, out)
            dt = (_ns() - t0) / 1e9
        finally:
            src.close()
    return dt, n


@dataclass
class Watched:
    """A child process run to its end while a thread sampled its memory."""

    seconds: float
    peak_rss_kb: int  # VmHWM of the child's own address space, last seen
    samples: list[tuple[float, float, int]]  # (seconds, input progress 0..1 or -1, VmRSS kB)


def run_watched(cmd: list[str], interval: float, progress_of: str | None = None) -> Watched:
    """Run ``cmd`` (stdout to /dev/null), sampling VmRSS/VmHWM every ``interval`` s and, with
    ``progress_of``, how far the child has read that file.

    The peak comes from the child's VmHWM, not from ``wait4``'s ``ru_maxrss``: Linux carries
    the parent's high-water mark into a child across fork and exec.
    """
    size = os.path.getsize(progress_of) if progress_of else 0
    samples: list[tuple[float, float, int]] = []
    hwm = [0]
    fd: list[int] = []
    stop = threading.Event()
    with open(os.devnull, "wb") as out:
        t0 = _ns()
        proc = subprocess.Popen(cmd, stdout=out)

        def sample() -> None:
            while not stop.is_set():
                mem = rss_kb(proc.pid)
                if "VmRSS" in mem:
                    progress = -1.0
                    if progress_of:
                        got = _input_progress(proc.pid, progress_of, size, fd)
                        progress = -1.0 if got is None else got
                    samples.append(((_ns() - t0) / 1e9, progress, mem["VmRSS"]))
                    hwm[0] = max(hwm[0], mem.get("VmHWM", 0))
                stop.wait(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, _ = os.wait4(proc.pid, 0)
        seconds = (_ns() - t0) / 1e9
        stop.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{shlex.join(cmd)} exited with {proc.returncode}")
    return Watched(seconds, hwm[0], samples)


def run_replay_subprocess(path: str) -> tuple[float, int]:
    """(wall seconds, peak RSS kB) of the ``grenex replay`` console script on ``path``."""
    w = run_watched([*grenex_script(), "replay", path], 0.02)
    return w.seconds, w.peak_rss_kb


# ---------------------------------------------------------------------------------- peers


def peer_rounds(
    w: Workload, runs: int, optional: bool = True, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """grenex (engine alone) and every available peer, runs interleaved; rates and ratios."""
    import peers

    setup, measured = w.setup, w.measured
    n = len(measured)
    keys: dict[tuple[str, str], int] = {}
    ops_setup, _ = peers.translate(w.commands[: w.setup_lines], keys)
    ops_measured, skipped = peers.translate(w.commands[w.setup_lines :], keys)
    factories = peers.available_peers(optional)
    rates: dict[str, list[float]] = {"grenex": []}
    ratios: dict[str, list[float]] = {}
    info: dict[str, dict[str, Any]] = {}
    for r in range(runs):
        g = n / time_engine(setup, measured)
        rates["grenex"].append(g)
        line = [f"run {r + 1}/{runs}: grenex {g:,.0f}/s"]
        for factory in factories:
            book = factory()
            book.play(ops_setup)
            gc.collect()
            t0 = _ns()
            book.play(ops_measured)
            rate = len(ops_measured) / ((_ns() - t0) / 1e9)
            rates.setdefault(book.name, []).append(rate)
            ratios.setdefault(book.name, []).append(g / rate)
            info[book.name] = {
                "trades": book.trades,
                "misses": book.misses,
                "resting_at_end": book.resting(),
                "module": type(book).__module__ + "." + type(book).__qualname__,
            }
            reasons = getattr(book, "reasons", None)
            if reasons:
                info[book.name]["miss_reasons"] = dict(reasons)
            line.append(f"{book.name} {rate:,.0f}/s")
        if log:
            log(", ".join(line))
    out: dict[str, Any] = {
        "commands": n,
        "untranslated": skipped,
        "grenex": summary(rates["grenex"]),
        "peers": {},
    }
    for name, rs in rates.items():
        if name == "grenex":
            continue
        out["peers"][name] = {
            **info[name],
            "rate": summary(rs),
            "grenex_over_peer": summary(ratios[name]),
        }
    return out


def reference_round(w: Workload, prefix: int) -> dict[str, Any] | None:
    """The naive reference engine on the first ``prefix`` measured commands, beside grenex
    on the same prefix (grenex: median of 3); books compared at the end."""
    from grenex.engine import Engine

    mod = load_reference()
    if mod is None:
        return None
    setup = w.setup
    measured = w.measured[:prefix]
    ref = mod.ReferenceEngine()
    for seq, cmd in setup:
        ref.apply(cmd, seq)
    gc.collect()
    t0 = _ns()
    for seq, cmd in measured:
        ref.apply(cmd, seq)
    ref_rate = len(measured) / ((_ns() - t0) / 1e9)
    g_rates = [len(measured) / time_engine(setup, measured) for _ in range(3)]
    eng = Engine()
    for seq, cmd in setup + measured:
        eng.apply(cmd, seq)
    g = statistics.median(g_rates)
    return {
        "commands": len(measured),
        "rate": ref_rate,
        "grenex_rate_same_prefix": g,
        "grenex_over_reference": g / ref_rate,
        "books_agree": ref.books() == eng.books(),
    }


# ---------------------------------------------------------------------------------- memory


def place_resting(n: int, engine: Any) -> None:
    """``n`` non-crossing GTC orders: 10,000 clients, bids 5,001..9,999, asks 10,001..14,999."""
    engine.apply({"type": "add_market", "market": "M", "tick": "1", "lot": "1"}, 1)
    apply = engine.apply
    for i in range(n):
        level = (i >> 1) % 4999
        buy = not i & 1
        cmd = {
            "type": "place",
            "client": f"c{i % 10_000}",
            "id": f"m{i}",
            "market": "M",
            "side": "buy" if buy else "sell",
            "price": str(9_999 - level if buy else 10_001 + level),
            "qty": str(1 + i % 100),
        }
        apply(cmd, i + 2)


def child_memory(mode: str, n: int) -> dict[str, Any]:
    """Run in a child process: memory growth of an engine holding ``n`` resting orders."""
    from grenex.engine import Engine

    gc.collect()
    if mode == "tracemalloc":
        tracemalloc.start(1)
    base_rss = rss_kb()["VmRSS"]
    base_traced = tracemalloc.get_traced_memory()[0] if mode == "tracemalloc" else 0
    eng = Engine()
    t0 = time.perf_counter()
    place_resting(n, eng)
    seconds = time.perf_counter() - t0
    gc.collect()
    if eng.resting_orders != n:
        raise RuntimeError(f"{eng.resting_orders} orders rest, not {n}")
    out: dict[str, Any] = {"mode": mode, "orders": n, "place_seconds": seconds}
    rss = rss_kb()
    out["rss_delta_bytes"] = (rss["VmRSS"] - base_rss) * 1024
    out["rss_bytes_per_order"] = out["rss_delta_bytes"] / n
    if mode == "tracemalloc":
        traced = tracemalloc.get_traced_memory()[0] - base_traced
        out["traced_bytes"] = traced
        out["traced_bytes_per_order"] = traced / n
        stats = tracemalloc.take_snapshot().statistics("lineno")[:8]
        # a compiled engine has no Python frames: its allocations show at the calling line
        out["top_sites"] = [
            {
                "site": str(s.traceback),
                "code": linecache.getline(s.traceback[0].filename, s.traceback[0].lineno).strip(),
                "bytes_per_order": s.size / n,
                "blocks": s.count,
            }
            for s in stats
        ]
        tracemalloc.stop()
    del eng
    return out


def memory_per_order(n: int) -> dict[str, Any]:
    """:func:`child_memory` in two fresh interpreters (RSS, then tracemalloc)."""
    out: dict[str, Any] = {"orders": n}
    for mode in ("rss", "tracemalloc"):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child-memory", mode]
        cmd += ["--child-orders", str(n)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[mode] = json.loads(res.stdout)
    return out


# ---------------------------------------------------------------------------------- flat


def _input_progress(pid: int, path: str, size: int, fd: list[int]) -> float | None:
    """How far ``pid`` has read ``path`` (0..1), from /proc/<pid>/fdinfo."""
    try:
        if not fd:
            for name in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{name}") == path:
                        fd.append(int(name))
                        break
                except OSError:
                    continue
        if not fd:
            return None
        with open(f"/proc/{pid}/fdinfo/{fd[0]}") as f:
            for line in f:
                if line.startswith("pos:"):
                    return min(int(line.split()[1]) / size, 1.0)
    except OSError:
        return None
    return None


def watch_replay(path: str, interval: float = 0.5) -> dict[str, Any]:
    """Run ``grenex replay path``, sampling its RSS and progress every ``interval`` s."""
    w = run_watched([*grenex_script(), "replay", path], interval, progress_of=path)
    samples = [x for x in w.samples if x[1] >= 0]

    def point(t: float, prog: float, rss: int) -> dict[str, float]:
        return {"seconds": t, "progress": prog, "rss_mb": rss / 1024}

    def at(p: float) -> dict[str, float] | None:
        for t, prog, rss in samples:
            if prog >= p:
                return point(t, prog, rss)
        return None

    return {
        "seconds": w.seconds,
        "samples": len(samples),
        "rss_at_10pct": at(0.10),
        "rss_at_50pct": at(0.50),
        "rss_at_100pct": point(*samples[-1]) if samples else None,
        "peak_rss_mb": w.peak_rss_kb / 1024,
        "series": [[round(t, 2), round(p, 4), rss] for t, p, rss in samples],
    }


def flat_run(lines: int, seed: int, keep: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Generate an EXB-1 stream of ``lines`` lines into a temporary file and watch a replay."""
    import exb1

    measured = max(lines - exb1.SETUP_RESTING - 1, 0)
    tmp = Path(tempfile.mkdtemp(prefix="grenex-exb1-flat-"))
    path = tmp / f"exb1-seed{seed}-{lines}.jsonl"
    try:
        t0 = time.monotonic()
        log(f"flat: generating {lines:,} lines into {path} ...")
        # in a child, so that this process stays small while the replay is watched
        gen = [sys.executable, str(HERE / "exb1.py"), "--seed", str(seed)]
        gen += ["--commands", str(measured), "--out", str(path)]
        subprocess.run(gen, check=True, stderr=subprocess.DEVNULL)
        gen_s = time.monotonic() - t0
        size = path.stat().st_size
        log(f"flat: {size / 1e6:,.0f} MB in {gen_s:,.0f} s; running grenex replay ...")
        res = watch_replay(str(path))
        res.update({"lines": lines, "seed": seed, "file_bytes": size, "generate_seconds": gen_s})
        res["lines_per_second"] = lines / res["seconds"]
        r10, r100 = res["rss_at_10pct"], res["rss_at_100pct"]
        if r10 and r100:
            res["growth_10_to_100pct"] = r100["rss_mb"] / r10["rss_mb"] - 1
        if keep:
            res["file"] = str(path)
        return res
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------- machine


def _git(*args: str) -> str:
    try:
        res = subprocess.run(
            ["git", *args], check=False, cwd=REPO, capture_output=True, text=True, timeout=10
        )
        return res.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict[str, Any]:
    """The machine, the Python build and the engine build being measured."""
    from grenex.engine import core

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    config_args = str(sysconfig.get_config_var("CONFIG_ARGS") or "")
    versions = {}
    for dist in ("msgspec", "pyorderbook", "orderly-chaos", "liquibook"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    core_file = str(core.__file__)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "loadavg_at_start": os.getloadavg(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "python_pgo": "--enable-optimizations" in config_args,
        "python_lto": "--with-lto" in config_args,
        "python_shared": "--enable-shared" in config_args,
        "python_cflags": str(sysconfig.get_config_var("PY_CFLAGS") or ""),
        "python_config_args": config_args,
        "packages": versions,
        "engine_core_file": core_file,
        "engine_compiled": core_file.endswith((".so", ".pyd")),
        "grenex_pure_env": os.environ.get("GRENEX_PURE", ""),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty_src": _git("status", "--porcelain", "--", "src").splitlines(),
    }


# ---------------------------------------------------------------------------------- report


def _r(x: float) -> str:
    return f"{x:,.0f}"


def render(rep: dict[str, Any]) -> str:
    """The report as a readable text table."""
    m = rep["machine"]
    out = [
        f"EXB-1 engine benchmark — {rep['date']}",
        f"command : {rep['command']}",
        f"machine : {m['cpu']}, {m['usable_cores']}/{m['cores']} cores, "
        f"load {m['loadavg_at_start'][0]:.2f} at start, {rep.get('loadavg_at_end', [0])[0]:.2f}"
        " at end",
        f"python  : {m['python']} (PGO {m['python_pgo']}, LTO {m['python_lto']}, "
        f"shared {m['python_shared']}); msgspec {m['packages'].get('msgspec', '?')}",
        f"engine  : {m['engine_core_file']} "
        f"({'compiled' if m['engine_compiled'] else 'pure Python'}); "
        f"git {m['git_commit'][:12]}{' + local changes in src' if m['git_dirty_src'] else ''}",
    ]
    v = rep.get("verify")
    if v:
        ok = "OK" if v["ok"] else "MISMATCH"
        out.append(
            f"verify  : {ok} — {v['got']['trades']:,} trades, tape "
            f"{v['got']['trade_tape_sha256'][:12]}…, book {v['got']['final_book_sha256'][:12]}… "
            f"({', '.join(k for k, c in v['checks'].items() if c)})"
        )
    out.append("")
    out.append(f"{'measurement':<46}{'median':>14}{'best':>14}{'spread':>9}")
    out.append("-" * 83)

    def row(label: str, s: dict[str, Any], unit: str = "/s") -> None:
        out.append(
            f"{label:<46}{_r(s['median']) + unit:>14}{_r(s['best']) + unit:>14}"
            f"{s['spread'] * 100:>8.0f}%"
        )

    p = rep.get("peers")
    if p:
        row(f"engine alone, {p['commands']:,} cmds (cmd/s)", p["grenex"])
    e = rep.get("replay_inprocess")
    if e:
        row("replay_stream in process (lines/s)", e["lines_per_second"])
    s = rep.get("replay_subprocess")
    if s:
        row("grenex replay subprocess (lines/s)", s["lines_per_second"])
        row("  … net of start-up (lines/s)", s["lines_per_second_net"])
        st = s["startup_seconds"]
        out.append(
            f"{'  (start-up, grenex replay /dev/null)':<46}"
            f"{st['median']:>13.2f}s{st['best']:>13.2f}s"
        )
    if p:
        out.append("")
        out.append(
            f"{'peer (same process, same commands)':<38}{'median':>12}{'best':>12}"
            f"{'grenex ×':>10}{'trades':>9}{'misses':>8}"
        )
        out.append("-" * 89)
        for name, q in p["peers"].items():
            out.append(
                f"{name:<38}{_r(q['rate']['median']) + '/s':>12}{_r(q['rate']['best']) + '/s':>12}"
                f"{q['grenex_over_peer']['median']:>9.2f}×{q['trades']:>9,}{q['misses']:>8,}"
            )
        ref = rep.get("reference")
        if ref:
            out.append(
                f"{'reference (first ' + format(ref['commands'], ',') + ' cmds)':<38}"
                f"{_r(ref['rate']) + '/s':>12}{'':>12}{ref['grenex_over_reference']:>9.0f}×"
                f"{'books ' + ('agree' if ref['books_agree'] else 'DIFFER'):>17}"
            )
    lat = rep.get("latency")
    if lat:
        out.append("")
        out.append(f"{'service time (µs)':<38}{'p50':>9}{'p99':>9}{'p99.9':>9}{'max':>10}")
        out.append("-" * 75)
        for label, key in (
            ("engine apply", "engine"),
            ("replay line (decode+apply+encode)", "replay_line"),
        ):
            q = lat.get(key)
            if not q:
                continue
            rows = [(label, q)]
            rows += [(f"  {k} ({v['count']:,})", v) for k, v in q.get("by_kind", {}).items()]
            for name, v in rows:
                out.append(
                    f"{name:<38}{v['p50']:>9.2f}{v['p99']:>9.2f}{v['p99.9']:>9.2f}{v['max']:>10.1f}"
                )
        t = lat["timer_overhead"]
        out.append(
            f"{'  (timer pair overhead, not subtracted)':<38}{t['p50']:>9.2f}{t['p99']:>9.2f}"
        )
    mem = rep.get("memory")
    out.append("")
    if "rss" in rep:
        out.append(
            f"peak RSS of this process: {rep['rss']['peak_mb']:,.0f} MB (holds the "
            f"decoded file: {rep['rss']['decoded_mb']:,.0f} MB)"
        )
    if s:
        out.append(
            f"peak RSS of `grenex replay` (canonical file): {s['peak_rss_mb']['median']:,.1f} MB"
        )
    if mem:
        out.append(
            f"memory per resting order ({mem['orders']:,} resting): "
            f"{mem['rss']['rss_bytes_per_order']:,.0f} B by RSS growth, "
            f"{mem['tracemalloc']['traced_bytes_per_order']:,.0f} B traced by tracemalloc "
            "(target < 300)"
        )
        for site in mem["tracemalloc"]["top_sites"][:5]:
            where = site["site"].rsplit("/", 1)[-1]
            out.append(f"    {site['bytes_per_order']:7.1f} B/order  {where}  {site['code'][:50]}")
    f = rep.get("flat")
    if f:

        def mb(x: dict[str, Any] | None) -> str:
            return f"{x['rss_mb']:,.1f} MB" if x else "n/a"

        out.append(
            f"replay flatness, {f['lines']:,} lines ({f['lines_per_second']:,.0f} lines/s): "
            f"RSS {mb(f['rss_at_10pct'])} at 10%, {mb(f['rss_at_50pct'])} at 50%, "
            f"{mb(f['rss_at_100pct'])} at 100%, peak {f['peak_rss_mb']:,.1f} MB"
        )
    return "\n".join(out)


# ---------------------------------------------------------------------------------- main


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    skip = set(args.skip or ())
    rep: dict[str, Any] = {
        "benchmark": "EXB-1",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": machine(),
        "runs": args.runs,
    }
    log(f"engine: {rep['machine']['engine_core_file']}")
    path = Path(args.file)
    rss0 = rss_kb()["VmRSS"]
    w = load_workload(path, Path(args.expected) if args.expected else None)
    rep["file"] = {"path": str(path), "lines": len(w.lines), "setup_lines": w.setup_lines}
    rss1 = rss_kb()["VmRSS"]
    log(f"loaded {len(w.lines):,} lines; verifying hashes ...")
    v = verify(w)
    rep["verify"] = v
    if not v["ok"]:
        log(f"VERIFY FAILED: {json.dumps(v, indent=1)}")
        return rep
    runs = args.runs
    if "peers" not in skip:
        log("engine alone and peers, interleaved ...")
        rep["peers"] = peer_rounds(w, runs, optional=not args.no_optional_peers, log=log)
    if "reference" not in skip:
        log(f"reference engine on {args.reference_commands:,} commands ...")
        rep["reference"] = reference_round(w, args.reference_commands)
    if "latency" not in skip:
        log("service times ...")
        rep["latency"] = {
            "timer_overhead": timer_overhead(),
            "engine": engine_latency(w.setup, w.measured),
            "replay_line": replay_latency(w.lines, w.setup_lines),
        }
    rep["rss"] = {
        "peak_mb": rss_kb()["VmHWM"] / 1024,
        "decoded_mb": (rss1 - rss0) / 1024,
    }
    if "replay" not in skip:
        log("replay_stream in process ...")
        rates = []
        for _ in range(runs):
            dt, n = time_replay_inprocess(path)
            rates.append(n / dt)
        rep["replay_inprocess"] = {"lines": len(w.lines), "lines_per_second": summary(rates)}
    if "subprocess" not in skip:
        log("grenex replay as a subprocess ...")
        # start-up (``grenex replay /dev/null``) measured right before each run, so that
        # the net rate subtracts a start-up taken under the same load
        walls, startups, nets, peaks = [], [], [], []
        n = len(w.lines)
        for _ in range(runs):
            startup = run_replay_subprocess(os.devnull)[0]
            dt, peak = run_replay_subprocess(str(path))
            walls.append(dt)
            startups.append(startup)
            if dt > startup:
                nets.append(n / (dt - startup))
            peaks.append(peak / 1024)
        rep["replay_subprocess"] = {
            "command": shlex.join([*grenex_script(), "replay", str(path)]) + " > /dev/null",
            "startup_seconds": summary(startups, higher_is_better=False),
            "lines_per_second": summary([n / t for t in walls]),
            "lines_per_second_net": summary(nets or [0.0]),
            "peak_rss_mb": summary(peaks, higher_is_better=False),
        }
    del w
    gc.collect()
    if "memory" not in skip:
        log(f"memory with {args.memory_orders:,} resting orders (two child processes) ...")
        rep["memory"] = memory_per_order(args.memory_orders)
    if args.flat:
        rep["flat"] = flat_run(args.flat_lines, args.flat_seed, args.flat_keep, log)
    rep["loadavg_at_end"] = os.getloadavg()
    return rep


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="EXB-1 engine benchmark (see the module docstring for what is measured)."
    )
    p.add_argument("--file", default=str(DEFAULT_FILE), help="command file (plain or gzip)")
    p.add_argument("--expected", help="expected hashes (default: <file stem>.expected.json)")
    p.add_argument("--runs", type=int, help="runs per rate (default 5, --quick 2)")
    p.add_argument("--quick", action="store_true", help="fewer runs and smaller side runs")
    p.add_argument("--json", help="write the report as JSON to this file")
    p.add_argument("--pure", action="store_true", help="set GRENEX_PURE=1 (no compiled engine)")
    p.add_argument(
        "--skip",
        action="append",
        choices=["peers", "reference", "latency", "replay", "subprocess", "memory"],
        help="leave a section out (repeatable)",
    )
    p.add_argument(
        "--no-optional-peers",
        action="store_true",
        help="only pyorderbook and the bare book, even if others are importable",
    )
    p.add_argument(
        "--reference-commands",
        type=int,
        help="measured commands for the naive reference (default 20000, quick 2000)",
    )
    p.add_argument(
        "--memory-orders",
        type=int,
        help="resting orders for the memory test (default 1000000, quick 100000)",
    )
    p.add_argument("--flat", action="store_true", help="run the replay memory-flatness test")
    p.add_argument("--flat-lines", type=int, default=10_000_000)
    p.add_argument("--flat-seed", type=int, default=1)
    p.add_argument("--flat-keep", action="store_true", help="keep the generated file")
    p.add_argument("--child-memory", choices=["rss", "tracemalloc"], help=argparse.SUPPRESS)
    p.add_argument("--child-orders", type=int, default=1_000_000, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.runs is None:
        args.runs = 2 if args.quick else 5
    if args.reference_commands is None:
        args.reference_commands = 2_000 if args.quick else 20_000
    if args.memory_orders is None:
        args.memory_orders = 100_000 if args.quick else 1_000_000
    return args


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None, stdout: IO[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pure:
        os.environ["GRENEX_PURE"] = "1"  # before anything imports grenex
    out = stdout or sys.stdout
    if args.child_memory:
        print(json.dumps(child_memory(args.child_memory, args.child_orders)), file=out)
        return 0
    rep = run(args, _log)
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=1) + "\n")
    print(render(rep), file=out)
    return 0 if rep["verify"]["ok"] else 2


if __name__ == "__main__":
    sys.exit(main())
