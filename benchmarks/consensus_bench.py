"""Consensus benchmark: the CPU cost of the Raft core, and the fsync-bound durable log.

Run from the repository root::

    .venv/bin/python benchmarks/consensus_bench.py [--quick] [--runs 5] [--json PATH]

What is measured (every rate is the median of ``--runs`` runs, with the best beside it):

1. **Core, CPU only.**  Three :class:`~grenex.consensus.Raft` voters in one process over
   :class:`~grenex.consensus.MemoryStorage`; messages are handed from one core to the other
   directly (no encoding, no network).  A round proposes ``batch`` entries of
   ``--entry-bytes`` bytes at the leader, then drives every node through the Ready contract
   (persist to memory, send, apply, advance) until the leader has committed them all and
   every follower has applied them.  Entries committed per second (and rounds per second) for
   several batch sizes: a batch is what accumulates between two Readies, so this is the
   throughput curve of batching.  The same with each message encoded and decoded by
   ``grenex.codec.raft`` (what a node pays on the wire, minus the transport).
2. **Durable log, fsync-bound.**  :class:`~grenex.storage.DiskStorage` in a temporary
   directory on the disk under ``--dir`` (default: the system temporary directory): each
   batch is one ``append`` of ``batch`` entries, a hard state, and one ``sync`` (one
   ``fdatasync``).  Entries/s and fsyncs/s per batch size, for ``--seconds`` each.

The report names the machine (CPU, cores, load average), Python, the git commit and the
command line; it prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grenex.codec.raft import decode_message, encode_message
from grenex.consensus import (
    Config,
    Entry,
    HardState,
    MemoryStorage,
    Message,
    Raft,
    Role,
    bootstrap,
)
from grenex.storage import DiskStorage

REPO = Path(__file__).resolve().parents[1]
IDS = ("n1", "n2", "n3")


class Trio:
    """Three cores driven exactly by the Ready contract, messages delivered in-process."""

    def __init__(self, wire: bool, entries_per_message_max: int) -> None:
        self.wire = wire
        self.nodes: dict[str, Raft] = {}
        self.stores: dict[str, MemoryStorage] = {}
        for i, nid in enumerate(IDS):
            st = MemoryStorage()
            bootstrap(st, IDS)
            cfg = Config(
                id=nid,
                entries_per_message_max=entries_per_message_max,
                uncommitted_entries_max=1 << 30,
                apply_entries_per_ready_max=1 << 30,
            )
            self.nodes[nid] = Raft(cfg, st, random.Random(i))
            self.stores[nid] = st
        self.applied = dict.fromkeys(IDS, 0)
        self.drive()
        self.nodes["n1"].campaign()
        self.drive()
        assert self.nodes["n1"].role == Role.LEADER

    def drive(self) -> None:
        nodes = self.nodes
        wire = self.wire
        while True:
            msgs: list[Message] = []
            for nid, r in nodes.items():
                while r.has_ready():
                    rd = r.ready()
                    st = self.stores[nid]
                    if rd.entries:
                        st.append(rd.entries)
                    if rd.hard_state is not None:
                        st.set_hard_state(rd.hard_state)
                    msgs.extend(rd.messages)
                    if rd.committed_entries:
                        self.applied[nid] = rd.committed_entries[-1].index
                    r.advance(rd)
            if not msgs:
                return
            for m in msgs:
                nodes[m.dst].step(decode_message(encode_message(m)) if wire else m)


def bench_core(batch: int, entries: int, entry_bytes: int, wire: bool) -> dict[str, float]:
    t = Trio(wire, entries_per_message_max=max(512, batch))
    leader = t.nodes["n1"]
    data = [os.urandom(entry_bytes) for _ in range(batch)]
    rounds = max(1, entries // batch)
    start = time.perf_counter()
    for _ in range(rounds):
        leader.propose_many(data)
        t.drive()
    elapsed = time.perf_counter() - start
    last = leader.log.last_index()
    assert leader.log.committed == last and all(a == last for a in t.applied.values())
    n = rounds * batch
    return {"entries_per_s": n / elapsed, "rounds_per_s": rounds / elapsed}


def bench_disk(root: Path, batch: int, entry_bytes: int, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir=root) as d:
        st = DiskStorage(d)
        payload = os.urandom(entry_bytes)
        index = 0
        fsyncs = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            ents = [Entry(index + i + 1, 1, 0, payload) for i in range(batch)]
            index += batch
            st.append(ents)
            st.set_hard_state(HardState(1, "n1", index))
            st.sync()
            fsyncs += 1
            now = time.perf_counter()
            if now >= deadline:
                break
        elapsed = now - start
        st.close()
    return {"entries_per_s": index / elapsed, "fsyncs_per_s": fsyncs / elapsed}


def median_best(runs: list[dict[str, float]], key: str) -> tuple[float, float]:
    vals = [r[key] for r in runs]
    return statistics.median(vals), max(vals)


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": sys.version.split()[0],
        "commit": commit,
        "argv": sys.argv,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    out: dict[str, Any] = {"machine": machine(), "core": [], "disk": []}
    log(
        f"machine: {out['machine']['cpu']}, {out['machine']['cores']} cores, load "
        f"{' '.join(f'{x:.2f}' for x in out['machine']['load_average'])}, "
        f"Python {out['machine']['python']}, commit {out['machine']['commit']}"
    )
    log("")
    log("1. consensus core, 3 voters in-process, memory storage, no network")
    log(f"   {args.entry_bytes}-byte entries; median (best) of {args.runs} runs")
    log(f"   {'batch':>6} {'wire':>5} {'entries/s':>22} {'rounds/s':>20}")
    for batch in args.batches:
        for wire in (False, True):
            n = min(args.entries, batch * 5000)  # small batches: fewer entries, same time
            runs = [bench_core(batch, n, args.entry_bytes, wire) for _ in range(args.runs)]
            eps = median_best(runs, "entries_per_s")
            rps = median_best(runs, "rounds_per_s")
            out["core"].append(
                {
                    "batch": batch,
                    "wire_codec": wire,
                    "entries_per_s_median": eps[0],
                    "entries_per_s_best": eps[1],
                    "rounds_per_s_median": rps[0],
                }
            )
            log(
                f"   {batch:>6} {'yes' if wire else 'no':>5} {eps[0]:>12,.0f} ({eps[1]:>8,.0f})"
                f" {rps[0]:>12,.0f}"
            )
    log("")
    root = Path(args.dir)
    log(f"2. durable log (DiskStorage) under {root}: append + hard state + one fdatasync")
    log(f"   {args.entry_bytes}-byte entries, {args.seconds:.1f} s per run; median (best)")
    log(f"   {'batch':>6} {'entries/s':>22} {'fsyncs/s':>20}")
    for batch in args.disk_batches:
        runs = [
            bench_disk(root, batch, args.entry_bytes, args.seconds) for _ in range(args.disk_runs)
        ]
        eps = median_best(runs, "entries_per_s")
        fps = median_best(runs, "fsyncs_per_s")
        out["disk"].append(
            {
                "batch": batch,
                "entries_per_s_median": eps[0],
                "entries_per_s_best": eps[1],
                "fsyncs_per_s_median": fps[0],
                "fsyncs_per_s_best": fps[1],
            }
        )
        log(f"   {batch:>6} {eps[0]:>12,.0f} ({eps[1]:>8,.0f}) {fps[0]:>10,.0f} ({fps[1]:>6,.0f})")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer entries and runs (a smoke run)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--entries", type=int, default=100_000, help="entries per core run")
    p.add_argument("--entry-bytes", type=int, default=128)
    p.add_argument("--seconds", type=float, default=2.0, help="per durable-log run")
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where the durable log lives")
    p.add_argument(
        "--json", default=str(REPO / "benchmarks" / "results" / "consensus.json"), help="output"
    )
    args = p.parse_args(argv)
    args.batches = [1, 10, 100, 1000]
    args.disk_batches = [1, 10, 100, 1000]
    args.disk_runs = 3
    if args.quick:
        args.runs = 1
        args.entries = 5_000
        args.seconds = 0.3
        args.disk_runs = 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    res = run(args, print)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1) + "\n")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
