"""EXB-1R's peer: a 3-member etcd beside a durable grenex cluster, same run, same load shape.

What it does, one system after the other (never both at once), every process on 127.0.0.1:

* **etcd**: Debian's ``etcd-server`` (the ``etcd`` binary on ``PATH``, or ``--etcd``), three
  members with their data directories under a temporary directory, durable as etcd is by
  default (it fsyncs its WAL before it acknowledges).  ``--clients`` client processes (this
  script in ``--worker`` mode, the v3 gRPC-gateway HTTP/JSON API over the same keep-alive
  HTTP/1.1 client grenex's Grenache client uses, or aiohttp with ``--http aiohttp``), each to its
  own member, ``--concurrency`` requests in flight each, closed loop: ``POST /v3/kv/put`` with
  one key per request (``put``), and ``POST /v3/kv/txn`` with ``--batch`` puts per request
  (``txn``).  Keys are order ids (``e0c1-17``), values an order's JSON (~110 bytes).
* **grenex**: :class:`grenex.devnet.LocalCluster` with ``memory=False`` (every node fsyncs its
  log: ``--data-dir``), 3 voters, and with ``--learners`` also 3 voters + 2 learners.  The same
  number of client processes (``benchmarks/cluster_client.py``), each to its own node, the
  same concurrency, closed loop: one order per request (``single``) and ``--batch`` orders per
  request (``batch``).

Per point: writes (orders) acknowledged per second; latency per write from send to
acknowledgement, p50/p99/p99.9 (a batch's latency counts once per write in it); CPU per write
per member/node, from ``/proc/<pid>/stat`` of the member/node processes over the point (summed,
divided by the writes and by the number of members); the client processes' CPU per write
(``getrusage`` of the children); the load average (a shared machine says so).  After each
point it waits until every member/node has applied everything (grenex: and checks that all
replicas agree).  Then the ratios grenex ÷ etcd: batched (grenex ``batch`` over etcd ``put``,
the issue's figure, and over etcd ``txn`` like for like) and single (``single`` over ``put``),
for writes/s and for CPU per write.  With ``--runs N`` the systems alternate order between runs
and the summary gives medians.

Without the ``etcd`` binary it prints one line saying so and how to install it, and exits 0.

    apt-get install etcd-server                        # optional, as root (Debian/Ubuntu)
    .venv/bin/python benchmarks/etcd_side_by_side.py --json etcd.json
    .venv/bin/python benchmarks/etcd_side_by_side.py --clients 4 --concurrency 64 \\
        --duration 15 --learners --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import random
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from grenex.codec.api import statuses_agree
from grenex.codec.keys import write_key_file
from grenex.devnet import LocalCluster
from grenex.node.main import run_event_loop

HERE = Path(__file__).resolve().parent
INSTALL_HINT = "apt-get install etcd-server (as root; optional, Debian/Ubuntu)"

# ---------------------------------------------------------------------------- measurement


def pct(values: list[int], p: float) -> float:
    """The p-th percentile of latencies in µs, in ms (nearest rank; nan when empty)."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] / 1000.0


def cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process so far (``/proc/<pid>/stat``); 0 if gone."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def find_etcd(explicit: str | None) -> tuple[str | None, str]:
    """The etcd binary to run, or None and why not."""
    if explicit:
        p = Path(explicit)
        if p.is_file() and os.access(p, os.X_OK):
            return str(p), ""
        return None, f"--etcd {explicit} is not an executable file"
    found = shutil.which("etcd")
    if found:
        return found, ""
    return None, "no etcd binary on PATH"


def etcd_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    for line in out.splitlines():
        if line.startswith("etcd Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------------------- processes


@dataclass
class Procs:
    """Every process this script starts, so that each is stopped by its PID, whatever happens."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, cmd: Sequence[str], **kw: Any) -> subprocess.Popen[bytes]:
        # a session of its own: Ctrl-C in a terminal reaches this script, which stops them
        p = subprocess.Popen(list(cmd), start_new_session=True, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def stop(
        self, procs: Sequence[subprocess.Popen[bytes]] | None = None, wait_s: float = 10
    ) -> None:
        targets = list(self.procs if procs is None else procs)
        for p in targets:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        for p in targets:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.0, deadline - time.monotonic()))
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(5)
        self.procs = [p for p in self.procs if p.poll() is None]


PROCS = Procs()


async def wait_all(procs: Sequence[subprocess.Popen[bytes]], timeout_s: float) -> None:
    """Until every process has exited (polled: the event loop keeps running); then kill."""
    deadline = time.monotonic() + timeout_s
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    PROCS.stop([p for p in procs if p.poll() is None], wait_s=2)


# ---------------------------------------------------------------------------- etcd


@dataclass
class EtcdCluster:
    binary: str
    base_dir: Path
    members: int = 3
    client_urls: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    async def start(self, timeout_s: float = 30.0) -> None:
        ports = free_ports(2 * self.members)
        names = [f"m{i + 1}" for i in range(self.members)]
        peer = [f"http://127.0.0.1:{ports[2 * i + 1]}" for i in range(self.members)]
        self.client_urls = [f"http://127.0.0.1:{ports[2 * i]}" for i in range(self.members)]
        initial = ",".join(f"{n}={u}" for n, u in zip(names, peer, strict=True))
        token = f"grenex-bench-{os.getpid()}-{time.time_ns()}"
        # ETCD_* variables are flags to etcd: none from our environment
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        for i, name in enumerate(names):
            log = self.base_dir / f"{name}.log"
            self.logs.append(log)
            with log.open("ab") as out:
                self.procs.append(
                    PROCS.start(
                        [
                            self.binary,
                            "--name",
                            name,
                            "--data-dir",
                            str(self.base_dir / name),
                            "--listen-client-urls",
                            self.client_urls[i],
                            "--advertise-client-urls",
                            self.client_urls[i],
                            "--listen-peer-urls",
                            peer[i],
                            "--initial-advertise-peer-urls",
                            peer[i],
                            "--initial-cluster",
                            initial,
                            "--initial-cluster-state",
                            "new",
                            "--initial-cluster-token",
                            token,
                            "--logger",
                            "zap",
                            "--log-outputs",
                            "stderr",
                        ],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=env,
                    )
                )
        await self.wait_healthy(timeout_s)

    def log_tail(self, i: int, lines: int = 4) -> str:
        try:
            text = self.logs[i].read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:])

    async def wait_healthy(self, timeout_s: float) -> None:
        import aiohttp

        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s:
            for i, url in enumerate(self.client_urls):
                while True:
                    if self.procs[i].poll() is not None:
                        raise RuntimeError(f"etcd member {i + 1} exited: {self.log_tail(i)}")
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                        async with s.get(url + "/health") as r:
                            health = json.loads(await r.read()) if r.status == 200 else {}
                            if health.get("health") == "true":
                                break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"etcd member {i + 1} not healthy: {self.log_tail(i)}")
                    await asyncio.sleep(0.1)

    async def wait_applied(self, timeout_s: float = 60.0) -> bool:
        """Until every member has applied the highest raft index any member had (bounded)."""
        import aiohttp

        deadline = time.monotonic() + timeout_s
        target: int | None = None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as s:
            while time.monotonic() < deadline:
                applied, index = [], []
                for url in self.client_urls:
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                        async with s.post(url + "/v3/maintenance/status", json={}) as r:
                            st = json.loads(await r.read())
                            applied.append(int(st.get("raftAppliedIndex", 0)))
                            index.append(int(st.get("raftIndex", 0)))
                if len(applied) == len(self.client_urls):
                    if target is None:
                        target = max(index)
                    if min(applied) >= target:
                        return True
                await asyncio.sleep(0.05)
        return False

    def stop(self) -> None:
        # one at a time: members stopped together each wait for the others (seconds)
        for p in self.procs:
            PROCS.stop([p], wait_s=5)


# ---------------------------------------------------------------------------- etcd client


class Orders:
    """Order-like values (~110 bytes of JSON) under order ids, for the etcd clients."""

    def __init__(self, client: str, seed: int) -> None:
        self.client = client
        self.rng = random.Random(seed)
        self.n = 0

    def next(self) -> tuple[str, str]:
        rng = self.rng
        self.n += 1
        oid = f"{self.client}-{self.n}"
        side = "buy" if rng.random() < 0.5 else "sell"
        away = 1 + min(int(rng.expovariate(1 / 8)), 200)
        order = {
            "client": self.client,
            "id": oid,
            "market": "BTC-USD",
            "side": side,
            "price": str(10_000 - away if side == "buy" else 10_000 + away),
            "qty": str(1 + rng.randrange(6) * rng.randrange(6) * rng.randrange(6)),
        }
        b64 = base64.b64encode
        key = b64(oid.encode()).decode()
        return key, b64(json.dumps(order, separators=(",", ":")).encode()).decode()


Post = Callable[[str, bytes], Awaitable[tuple[int, bytes]]]


@contextlib.asynccontextmanager
async def http_client(kind: str, concurrency: int, timeout_s: float) -> AsyncIterator[Post]:
    """``post(url, body) -> (status, body)`` over keep-alive connections: ``fast`` is the
    HTTP/1.1 client grenex's own Grenache client uses (so both systems' clients cost the
    same per request), ``aiohttp`` the general one.  Transport failures raise ``OSError``-
    or ``GrenacheError``-derived exceptions, or ``aiohttp.ClientError``."""
    headers = {"Content-Type": "application/json"}
    if kind == "fast":
        from grenex.grenache._fasthttp import FastHttpTransport

        fast = FastHttpTransport(connections_max=concurrency)

        async def post_fast(url: str, body: bytes) -> tuple[int, bytes]:
            return await fast.post(url, body, timeout_s=timeout_s, headers=headers)

        try:
            yield post_fast
        finally:
            await fast.close()
        return
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def post_aiohttp(url: str, body: bytes) -> tuple[int, bytes]:
            async with session.post(url, data=body, headers=headers) as r:
                return r.status, await r.read()

        yield post_aiohttp


async def etcd_worker(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    from grenex.grenache import GrenacheError

    orders = Orders(args.client, args.seed)
    url = args.url.rstrip("/")
    batch = max(1, args.batch)
    path = url + ("/v3/kv/put" if batch == 1 else "/v3/kv/txn")
    lat_us: list[int] = []
    errors: dict[str, int] = {}

    def body() -> bytes:
        if batch == 1:
            k, v = orders.next()
            return json.dumps({"key": k, "value": v}).encode()
        ops = []
        for _ in range(batch):
            k, v = orders.next()
            ops.append({"request_put": {"key": k, "value": v}})
        return json.dumps({"success": ops}).encode()

    def error(key: str) -> None:
        errors[key[:60]] = errors.get(key[:60], 0) + batch

    async with http_client(args.http, args.concurrency, args.timeout) as post:
        # warm up: the member answers (a read, nothing written)
        await post(url + "/v3/maintenance/status", b"{}")
        start = time.perf_counter()
        end = start + args.duration

        async def one() -> None:
            sent = time.perf_counter()
            try:
                status, raw = await post(path, body())
                if status != 200:
                    error(f"HTTP {status}: {raw[:40]!r}")
                    return
                reply = json.loads(raw)
            except (aiohttp.ClientError, GrenacheError, OSError, ValueError) as e:
                error(type(e).__name__)
                return
            if not isinstance(reply, dict) or "header" not in reply:
                error("bad reply")
                return
            if batch > 1 and not reply.get("succeeded"):
                error("txn not succeeded")
                return
            done = int((time.perf_counter() - sent) * 1e6)
            lat_us.extend([done] * batch)

        async def worker() -> None:
            while time.perf_counter() < end:
                await one()

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - start
    return {
        "client": args.client,
        "acked": len(lat_us),
        "errors": errors,
        "elapsed_s": elapsed,
        "latency_us": lat_us,
    }


# ---------------------------------------------------------------------------- points


def summarize(
    results: list[dict[str, Any]], duration: float
) -> tuple[int, float, list[int], dict[str, int]]:
    lat = [x for r in results for x in r["latency_us"]]
    acked = sum(r["acked"] for r in results)
    elapsed = max((r["elapsed_s"] for r in results), default=duration)
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    return acked, elapsed, lat, errors


def point_record(
    *,
    system: str,
    topology: str,
    mode: str,
    per_request: int,
    args: argparse.Namespace,
    results: list[dict[str, Any]],
    member_cpu: float,
    members: int,
    client_cpu: float,
    load0: list[float],
    extra: dict[str, Any],
) -> dict[str, Any]:
    acked, elapsed, lat, errors = summarize(results, args.duration)
    nan = float("nan")
    return {
        "system": system,
        "topology": topology,
        "mode": mode,
        "writes_per_request": per_request,
        "clients": args.clients,
        "concurrency_per_client": args.concurrency,
        "clients_answered": len(results),
        "duration_s": args.duration,
        "acked": acked,
        "acked_per_s": acked / elapsed if elapsed else 0.0,
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "p999_ms": pct(lat, 99.9),
        "errors": errors,
        "members": members,
        "cpu_us_per_write_per_member": member_cpu * 1e6 / acked / members if acked else nan,
        "members_cpu_cores": member_cpu / elapsed if elapsed else nan,
        "client_cpu_us_per_write": client_cpu * 1e6 / acked if acked else nan,
        "loadavg_before": load0,
        "loadavg_after": loadavg(),
        **extra,
    }


async def etcd_point(
    etcd: EtcdCluster, args: argparse.Namespace, mode: str, tmp: Path, tag: str
) -> dict[str, Any]:
    batch = 1 if mode == "put" else args.batch
    outs, procs = [], []
    load0 = loadavg()
    cpu0 = sum(cpu_s(p) for p in etcd.pids)
    ch0 = children_cpu_s()
    for i in range(args.clients):
        out = tmp / f"{tag}-c{i}.json"
        outs.append(out)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker"]
        cmd += ["--url", etcd.client_urls[i % len(etcd.client_urls)]]
        cmd += ["--client", f"{tag}c{i}", "--seed", str(i), "--duration", str(args.duration)]
        cmd += ["--concurrency", str(args.concurrency), "--batch", str(batch), "--out", str(out)]
        cmd += ["--http", args.http, "--client-loop", args.client_loop]
        procs.append(PROCS.start(cmd))
    await wait_all(procs, args.duration + 90)
    ch = children_cpu_s() - ch0
    applied = await etcd.wait_applied(60)
    cpu = sum(cpu_s(p) for p in etcd.pids) - cpu0
    results = [json.loads(o.read_text()) for o in outs if o.exists()]
    return point_record(
        system="etcd",
        topology=f"{len(etcd.pids)} members",
        mode=mode,
        per_request=batch,
        args=args,
        results=results,
        member_cpu=cpu,
        members=len(etcd.pids),
        client_cpu=ch,
        load0=load0,
        extra={"all_applied": applied},
    )


async def grenex_point(
    cluster: LocalCluster, args: argparse.Namespace, mode: str, tmp: Path, tag: str
) -> dict[str, Any]:
    batch = 1 if mode == "single" else args.batch
    nodes = cluster.node_ids
    pids = [p.pid for p in cluster.procs.values()]
    outs, procs = [], []
    before = await cluster.statuses()
    applied_before = max(s["applied"] for s in before.values() if isinstance(s, dict))
    load0 = loadavg()
    cpu0 = sum(cpu_s(p) for p in pids)
    ch0 = children_cpu_s()
    for i in range(args.clients):
        out = tmp / f"{tag}-c{i}.json"
        outs.append(out)
        account = f"{tag}c{i}"
        key_file = tmp / f"{account}.key"
        if not key_file.exists():
            write_key_file(key_file, cluster.keyring.key(account))
        cmd = [sys.executable, str(HERE / "cluster_client.py")]
        cmd += ["--grape", ",".join(cluster.grape_urls), "--genesis", str(cluster.genesis_path)]
        cmd += ["--key", str(key_file)]
        cmd += ["--node", nodes[i % len(nodes)], "--client", account, "--seed", str(i)]
        cmd += ["--duration", str(args.duration), "--concurrency", str(args.concurrency)]
        cmd += ["--batch", str(batch), "--out", str(out), "--loop", args.client_loop]
        cmd += shlex.split(args.grenex_client_args)
        procs.append(PROCS.start(cmd))
    await wait_all(procs, args.duration + 90)
    ch = children_cpu_s() - ch0
    results = [json.loads(o.read_text()) for o in outs if o.exists()]
    target = max((r.get("last_seq", 0) for r in results), default=0)
    deadline = time.monotonic() + 60
    all_applied = False
    while time.monotonic() < deadline:
        st = await cluster.statuses()
        if all(isinstance(s, dict) and s["applied"] >= target for s in st.values()):
            all_applied = True
            break
        await asyncio.sleep(0.05)
    cpu = sum(cpu_s(p) for p in pids) - cpu0
    st = await cluster.wait_converged(60)
    applied_after = max(s["applied"] for s in st.values())
    return point_record(
        system="grenex",
        topology=cluster_topology(cluster.voters, cluster.nodes),
        mode=mode,
        per_request=batch,
        args=args,
        results=results,
        member_cpu=cpu,
        members=len(pids),
        client_cpu=ch,
        load0=load0,
        extra={
            "all_applied": all_applied,
            "log_entries": applied_after - applied_before,
            "converged": statuses_agree(list(st.values())),
        },
    )


def cluster_topology(voters: int, nodes: int) -> str:
    learners = nodes - voters
    return f"{voters} voters durable" + (f" + {learners} learners" if learners else "")


# ---------------------------------------------------------------------------- the run


async def run_etcd(binary: str, args: argparse.Namespace, tmp: Path, run: int) -> list[Any]:
    base = tmp / f"etcd-{run}"
    base.mkdir()
    etcd = EtcdCluster(binary, base)
    points = []
    try:
        await etcd.start()
        for mode in ("put", "txn") if args.batch > 1 else ("put",):
            points.append(await etcd_point(etcd, args, mode, tmp, f"e{run}{mode}"))
            report_point(points[-1], sys.stdout)
    finally:
        etcd.stop()
    return points


async def run_grenex(
    args: argparse.Namespace, tmp: Path, run: int, nodes: int, voters: int
) -> list[Any]:
    cluster = LocalCluster(
        nodes=nodes, voters=voters, memory=False, base_dir=tmp / f"grenex-{run}-{nodes}"
    )
    points = []
    try:
        await cluster.start()
        for mode in ("single", "batch") if args.batch > 1 else ("single",):
            points.append(await grenex_point(cluster, args, mode, tmp, f"g{run}{nodes}{mode}"))
            report_point(points[-1], sys.stdout)
    finally:
        await cluster.stop()
    return points


def label(p: dict[str, Any]) -> str:
    mode = p["mode"] if p["writes_per_request"] == 1 else f"{p['mode']} x{p['writes_per_request']}"
    return f"{p['system']} {p['topology']}, {mode}"


def report_point(p: dict[str, Any], out: TextIO) -> None:
    print(
        f"{label(p):<46} {p['acked_per_s']:9.0f} writes/s  p50 {p['p50_ms']:8.2f}  "
        f"p99 {p['p99_ms']:8.2f}  p99.9 {p['p999_ms']:8.2f} ms  "
        f"cpu/write/member {p['cpu_us_per_write_per_member']:7.1f} us  "
        f"client cpu/write {p['client_cpu_us_per_write']:6.1f} us  "
        f"load {p['loadavg_before'][0]:.2f}  errors {p['errors'] or 0}",
        file=out,
        flush=True,
    )


FIGURES = (
    "acked_per_s",
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "cpu_us_per_write_per_member",
    "client_cpu_us_per_write",
)


def medians(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (system, topology, mode): the median of each figure over the runs."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault((p["system"], p["topology"], p["mode"]), []).append(p)
    rows = []
    for ps in groups.values():
        row = {k: ps[0][k] for k in ("system", "topology", "mode", "writes_per_request")}
        row["runs"] = len(ps)
        for f in FIGURES:
            row[f] = statistics.median(p[f] for p in ps)
        row["errors"] = sum(sum(p["errors"].values()) for p in ps)
        rows.append(row)
    return rows


def ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """grenex ÷ etcd per grenex topology: writes/s (higher is better for grenex) and
    etcd's CPU per write per member ÷ grenex's (higher is better for grenex)."""

    def find(system: str, mode: str, topology: str | None = None) -> dict[str, Any] | None:
        for r in rows:
            same = topology is None or r["topology"] == topology
            if r["system"] == system and r["mode"] == mode and same:
                return r
        return None

    put, txn = find("etcd", "put"), find("etcd", "txn")
    out: dict[str, dict[str, float]] = {}
    topologies = sorted({r["topology"] for r in rows if r["system"] == "grenex"})
    for topo in topologies:
        got: dict[str, float] = {}
        pairs: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]] = [
            ("batched_vs_put", find("grenex", "batch", topo), put),
            ("batched_vs_txn", find("grenex", "batch", topo), txn),
            ("single_vs_put", find("grenex", "single", topo), put),
        ]
        for name, g, e in pairs:
            if g is None or e is None:
                continue
            if e["acked_per_s"]:
                got[f"{name}_writes"] = g["acked_per_s"] / e["acked_per_s"]
            if g["cpu_us_per_write_per_member"]:
                got[f"{name}_cpu"] = (
                    e["cpu_us_per_write_per_member"] / g["cpu_us_per_write_per_member"]
                )
        out[topo] = got
    return out


def report_table(
    rows: list[dict[str, Any]],
    rat: dict[str, dict[str, float]],
    per_run: list[dict[str, dict[str, float]]],
    out: TextIO,
) -> None:
    print("", file=out)
    head = f"{'system, mode':<46} {'writes/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9}"
    print(head + f" {'cpu us/write/member':>20} {'refused':>8} {'runs':>4}", file=out)
    for r in rows:
        print(
            f"{label(r):<46} {r['acked_per_s']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
            f"{r['p999_ms']:9.2f} {r['cpu_us_per_write_per_member']:20.1f} {r['errors']:8d} "
            f"{r['runs']:4d}",
            file=out,
        )
    for topo, got in rat.items():
        parts = []
        for k, v in got.items():
            each = [r[topo][k] for r in per_run if k in r.get(topo, {})]
            spread = f" ({min(each):.2f}-{max(each):.2f})" if len(each) > 1 else ""
            parts.append(f"{k} {v:.2f}x{spread}")
        print(f"grenex ({topo}) / etcd:\n  " + "\n  ".join(parts), file=out)
    print(
        "(of the medians; per run, min-max, in brackets; writes: grenex's / etcd's, higher",
        file=out,
    )
    print(" is better for grenex; cpu: etcd's per write per member / grenex's)", file=out)


async def main_async(binary: str, args: argparse.Namespace) -> dict[str, Any]:
    points: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="grenex-etcd-", dir=args.tmp_dir) as name:
        tmp = Path(name)
        for run in range(args.runs):
            steps: list[tuple[str, int]] = []  # (system, nodes)
            if not args.no_etcd:
                steps.append(("etcd", 3))
            if not args.no_grenex:
                steps.append(("grenex", 3))
                if args.learners:
                    steps.append(("grenex", 5))
            if run % 2:
                steps.reverse()  # alternate which system runs first
            for system, nodes in steps:
                if system == "etcd":
                    got = await run_etcd(binary, args, tmp, run)
                else:
                    got = await run_grenex(args, tmp, run, nodes, 3)
                points += [{**p, "run": run} for p in got]
    rows = medians(points)
    rat = ratios(rows)
    per_run = [ratios(medians([p for p in points if p["run"] == r])) for r in range(args.runs)]
    report_table(rows, rat, per_run, sys.stdout)
    return {
        "benchmark": "EXB-1R etcd side by side",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "etcd": etcd_version(binary),
            "loadavg_at_end": loadavg(),
        },
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "points": points,
        "summary": rows,
        "ratios": rat,
        "ratios_per_run": per_run,
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--etcd", default=None, help="the etcd binary (default: etcd on PATH)")
    p.add_argument("--clients", type=int, default=4, help="client processes, for each system")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight per client")
    p.add_argument("--duration", type=float, default=15.0, help="seconds per point")
    p.add_argument("--batch", type=int, default=32, help="writes per batched request (1: none)")
    p.add_argument("--learners", action="store_true", help="also grenex 3 voters + 2 learners")
    p.add_argument("--runs", type=int, default=1, help="repeat; medians in the summary")
    p.add_argument("--no-etcd", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-grenex", action="store_true", help="etcd only")
    p.add_argument("--grenex-client-args", default="", help="extra arguments for cluster_client.py")
    p.add_argument(
        "--http",
        choices=["fast", "aiohttp"],
        default="fast",
        help="the etcd clients' HTTP client: fast (the one grenex's client uses) or aiohttp",
    )
    p.add_argument(
        "--client-loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="both systems' client processes' event loop (uvloop where installed)",
    )
    p.add_argument("--tmp-dir", type=Path, default=None, help="where the data dirs go")
    p.add_argument("--json", type=Path, default=None)
    # worker mode (one etcd client process)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--client", default="c", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=float, default=30.0, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return p


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.worker:
        result = run_event_loop(etcd_worker(args), args.client_loop == "uvloop")
        args.out.write_text(json.dumps(result))
        return 0
    binary, why = find_etcd(args.etcd)
    if binary is None:
        print(f"SKIP etcd side by side: {why}; to run it, install etcd: {INSTALL_HINT}")
        return 0
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        result = asyncio.run(main_async(binary, args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        PROCS.stop()  # whatever is still running (a failure halfway), by PID
        signal.signal(signal.SIGTERM, previous)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
