"""EXB-1R: orders through a real grenex cluster on loopback (BENCHMARKS.md).

What it does: starts Grapes and a cluster (3 voters + 2 learners by default) with
:class:`grenex.devnet.LocalCluster`, then for each load point runs ``--clients``
client processes (``benchmarks/cluster_client.py``), each sending to its own node, closed loop
(``flat``: ``--concurrency`` in flight per client) or open loop at a fixed total rate (orders/s
split evenly over the clients; latency from the scheduled send time).

It reports, per load point: orders/s acknowledged; the time until every replica had applied
everything (so "applied on all replicas" throughput); acknowledgement latency p50/p99/p99.9;
errors; and afterwards that all replicas report the same applied index and state hash.  Each
node's peak RSS (VmHWM) is reported at the end.  Figures depend on the machine (2 cores here
run 5 nodes, 2 Grapes and the clients together): compare ratios, not absolutes.

    .venv/bin/python benchmarks/cluster_bench.py --quick
    .venv/bin/python benchmarks/cluster_bench.py --rates 1000,2000,5000,10000,flat --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from grenex.codec.api import statuses_agree
from grenex.codec.keys import write_key_file
from grenex.devnet import LocalCluster

sys.path.insert(0, str(Path(__file__).resolve().parent))
import phases

HERE = Path(__file__).resolve().parent


def pct(values: list[int], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] / 1000.0  # ms


def cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process so far (``/proc/<pid>/stat``)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm_hwm_kib(pid: int | None) -> int:
    if pid is None:
        return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


async def kill_leader(cluster: LocalCluster, at: float) -> dict[str, Any]:
    """SIGKILL the leader at ``at`` (perf_counter) and time the first commit under a new one:
    until a survivor leads and its commit index passes what any replica had committed."""
    await asyncio.sleep(max(0.0, at - time.perf_counter()))
    old: str | None = None
    waited = time.perf_counter()
    while old is None:  # a leader to kill (an election may be under way at ``at``)
        before = await cluster.statuses()
        old = next(
            (n for n, s in before.items() if isinstance(s, dict) and s["role"] == "leader"), None
        )
        if old is None:
            if time.perf_counter() - waited > 30:
                return {"killed": None, "new_leader": None, "first_commit_ms": float("nan")}
            await asyncio.sleep(0.05)
    committed = max(s["commit"] for s in before.values() if isinstance(s, dict))
    t_kill = time.perf_counter()
    cluster.kill(old)
    survivors = [n for n in cluster.node_ids if n != old]
    while time.perf_counter() - t_kill < 60:
        st = await cluster.statuses(survivors)
        lead = [s for s in st.values() if isinstance(s, dict) and s["role"] == "leader"]
        if lead and lead[0]["node"] != old and lead[0]["commit"] > committed:
            return {
                "killed": old,
                "new_leader": lead[0]["node"],
                "first_commit_ms": (time.perf_counter() - t_kill) * 1000,
            }
        await asyncio.sleep(0.01)
    return {"killed": old, "new_leader": None, "first_commit_ms": float("nan")}


async def run_point(
    cluster: LocalCluster, args: argparse.Namespace, rate: str, tmp: Path, round_no: int
) -> dict[str, Any]:
    nodes = cluster.node_ids
    procs = []
    outs = []
    before = await cluster.statuses()
    applied_before = max(s["applied"] for s in before.values() if isinstance(s, dict))
    for i in range(args.clients):
        node = nodes[i % len(nodes)]
        out = tmp / f"r{round_no}-c{i}.json"
        outs.append(out)
        account = f"b{round_no}c{i}"
        key_file = tmp / f"{account}.key"
        if not key_file.exists():
            write_key_file(key_file, cluster.keyring.key(account))
        cmd = [
            sys.executable,
            str(HERE / "cluster_client.py"),
            "--grape",
            ",".join(cluster.grape_urls),
            "--genesis",
            str(cluster.genesis_path),
            "--key",
            str(key_file),
            "--node",
            node,
            "--client",
            account,
            "--seed",
            str(round_no * 100 + i),
            "--duration",
            str(args.duration),
            "--transport",
            args.transport,
            "--batch",
            str(args.batch),
            "--out",
            str(out),
            "--loop",
            args.client_loop,
        ]
        if rate == "flat":
            cmd += ["--concurrency", str(args.concurrency)]
        else:
            cmd += ["--rate", str(float(rate) / args.clients)]
        procs.append(subprocess.Popen(cmd))
    t0 = time.perf_counter()
    pids = {n: p.pid for n, p in cluster.procs.items()}
    cpu0_each = {n: cpu_s(p.pid) for n, p in cluster.procs.items()}
    roles = {n: s["role"] for n, s in before.items() if isinstance(s, dict)}
    spies: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        for n, nproc in cluster.procs.items():
            if nproc.pid is not None:
                out = args.profile / f"r{round_no}-{n}.txt"
                spy = phases.start(nproc.pid, out, args.duration * 0.8)
                if spy is not None:
                    spies[n] = (spy, out)
    failover: dict[str, Any] | None = None
    if args.kill_leader and round_no == len(args.rates.split(",")) - 1:
        failover = await kill_leader(cluster, t0 + args.duration / 2)
    for p in procs:
        p.wait(timeout=args.duration + 120)
    if failover is not None and failover["killed"] is not None:
        await cluster.restart(failover["killed"])  # it comes back empty and catches up
    results = [json.loads(o.read_text()) for o in outs if o.exists()]
    lat = [x for r in results for x in r["latency_us"]]
    acked = sum(r["acked"] for r in results)
    elapsed = max((r["elapsed_s"] for r in results), default=args.duration)
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    # every replica applied everything acknowledged (the highest seq any client saw)
    target = max((r["last_seq"] for r in results), default=0)
    while True:
        st = await cluster.statuses()
        if all(isinstance(s, dict) and s["applied"] >= target for s in st.values()):
            break
        if time.perf_counter() - t0 > args.duration + 60:
            break
        await asyncio.sleep(0.05)
    all_applied_s = time.perf_counter() - t0
    # a node killed during the point (--kill-leader) is left out: its CPU went with it
    cpu_each = {
        n: cpu_s(p.pid) - cpu0_each[n] for n, p in cluster.procs.items() if p.pid == pids.get(n)
    }
    cpu = sum(cpu_each.values())
    profile = {}
    for n, (spy, out) in spies.items():
        spy.wait(timeout=args.duration + 60)
        profile[n] = phases.fold(out)
    st = await cluster.wait_converged(60)
    applied_after = max(s["applied"] for s in st.values())
    return {
        "rate": rate,
        "clients": args.clients,
        "acked": acked,
        "acked_per_s": acked / elapsed if elapsed else 0.0,
        "log_entries": applied_after - applied_before,
        # orders acknowledged per second until every replica had applied them all (an entry
        # holds one envelope: with --batch N, N orders)
        "applied_all_per_s": acked / max(all_applied_s, elapsed),
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "p999_ms": pct(lat, 99.9),
        "errors": errors,
        # CPU of the node processes over the point, per acknowledged order and per node
        # (BENCHMARKS.md: the figure that does not depend on how many processes share the
        # machine)
        "cpu_us_per_order_per_node": (
            cpu * 1e6 / acked / len(cpu_each) if acked and cpu_each else float("nan")
        ),
        "converged": statuses_agree(list(st.values())),
        # the same per node, and its role when the point started (leader, voter, learner)
        "cpu_us_per_order_by_node": {
            n: {"role": roles.get(n, "?"), "us": c * 1e6 / acked if acked else float("nan")}
            for n, c in cpu_each.items()
        },
        "phases": profile,
        "failover": failover,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    rates = [r.strip() for r in args.rates.split(",") if r.strip()]
    with tempfile.TemporaryDirectory(prefix="grenex-bench-") as tmpname:
        tmp = Path(tmpname)
        cluster = LocalCluster(
            nodes=args.nodes,
            voters=args.voters,
            memory=not args.disk,
            base_dir=tmp / "cluster",
            node_args=tuple(shlex.split(args.node_args)),
        )
        await cluster.start()
        points = []
        try:
            for i, rate in enumerate(rates):
                point = await run_point(cluster, args, rate, tmp, i)
                points.append(point)
                print(
                    f"{rate:>6}: {point['acked_per_s']:8.0f} acked/s  "
                    f"{point['applied_all_per_s']:8.0f} applied-on-all/s  "
                    f"p50 {point['p50_ms']:7.2f} ms  p99 {point['p99_ms']:7.2f} ms  "
                    f"p99.9 {point['p999_ms']:7.2f} ms  "
                    f"cpu/order/node {point['cpu_us_per_order_per_node']:6.1f} us  "
                    f"errors {point['errors']}  "
                    f"converged {point['converged']}",
                    flush=True,
                )
                print(
                    "        per node:",
                    "  ".join(
                        f"{n}({v['role']}) {v['us']:.1f} us"
                        for n, v in point["cpu_us_per_order_by_node"].items()
                    ),
                )
                fo = point["failover"]
                if fo is not None and fo["killed"] is None:
                    print("        no leader to kill within 30 s of the kill time")
                elif fo is not None:
                    print(
                        f"        leader {fo['killed']} killed (SIGKILL) mid-point: first commit "
                        f"under {fo['new_leader']} after {fo['first_commit_ms']:.0f} ms"
                    )
                for n, ph in point["phases"].items():
                    print(
                        f"        {n} phases:",
                        ", ".join(f"{k} {v * 100:.0f}%" for k, v in ph.items() if v >= 0.01),
                    )
            mem = {n: vm_hwm_kib(p.pid) for n, p in cluster.procs.items()}
        finally:
            await cluster.stop()
    print("peak RSS per node (MiB):", {n: round(k / 1024, 1) for n, k in mem.items()})
    return {
        "benchmark": "EXB-1R",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "points": points,
        "peak_rss_kib": mem,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--voters", type=int, default=3)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=64, help="per client, closed loop")
    p.add_argument("--rates", default="1000,2000,5000,flat")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--transport", choices=["http", "ws"], default="http")
    p.add_argument("--batch", type=int, default=1, help="commands per signed envelope")
    p.add_argument("--disk", action="store_true", help="durable storage (fsync) instead of memory")
    p.add_argument("--quick", action="store_true", help="short smoke run")
    p.add_argument(
        "--node-args", default="", help="extra `grenex node` options, e.g. '--verify-threads 0'"
    )
    p.add_argument("--json", type=Path, default=None)
    p.add_argument(
        "--client-loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="the client processes' event loop (uvloop where installed, as the nodes run)",
    )
    p.add_argument(
        "--kill-leader",
        action="store_true",
        help="SIGKILL the leader halfway through the last point; report the time to the first "
        "commit under the new leader (the killed node restarts empty and catches up)",
    )
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="sample every node with py-spy into DIR and report CPU by phase (phases.py)",
    )
    args = p.parse_args()
    if args.quick:
        args.rates, args.duration = "500,flat", 4.0
    result = asyncio.run(main_async(args))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
