"""One lab run: set up the hosts, trade through every node while the seeded nemeses strike,
heal everything, check the history, tear everything down, report.

The runner process moves itself (setns) into the bridge's namespace, from where it reaches
every host's address and nothing else; every process it starts runs inside a host's namespace.
Teardown (``Lab.cleanup``) runs in a ``finally`` and from the SIGINT/SIGTERM handlers' path:
it kills every process this run started by PID (and, as a last resort, any PID still inside
this run's namespaces), unmounts the tmpfs, deletes every namespace with this run's prefix,
and moves the runner back to the namespace it came from.

Keys (SPEC §8): every run has its own :class:`~grenex.codec.signer.Keyring` (a random salt):
``genesis.json`` (every host a founding voter, with its certificate) and ``keys/*.key`` (each
node's, each client's, the operator's) are written in the run directory; nodes run with
``--genesis``/``--key``, clients sign with their own key, and the lab's own commands (the
markets, registering the command-line account) are signed by the operator's or that account's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from grenex.codec.api import statuses_agree
from grenex.codec.genesis import Genesis, parse_genesis
from grenex.codec.keys import SecretKey, write_key_file
from grenex.codec.signer import Keyring, Signer
from grenex.grenache import GrenacheError
from grenex.grenache.tls import b64url, check_cert, make_self_signed
from grenex.lab import nemesis as nem
from grenex.lab.checker import (
    CheckResult,
    Observer,
    Op,
    check,
    check_export,
    group_log,
    load_history,
)
from grenex.lab.net import LabError, LabNet, preflight, setns_path
from grenex.lab.procs import (
    GRAPE_API_PORT,
    LabHost,
    ProcTable,
    grape_argv,
    node_argv,
)
from grenex.lab.workload import MARKETS

__all__ = ["Lab", "RunConfig", "run_lab"]

CONVERGE_TIMEOUT_S: Final = 60.0
TMPFS_SIZE: Final = "16m"
_run_counter = 0


@dataclass
class RunConfig:
    seed: int
    nemeses: list[str]
    nodes: int = 3
    rate: float = 8.0  # operations per second per client
    concurrency: int = 4
    op_timeout: float = 10.0
    workdir: Path = field(default_factory=lambda: Path("/tmp/grenex-lab"))
    keep: bool = False  # keep logs and data dirs after a clean run (else only violating runs)
    secret: str = "lab-secret"
    # run every child process (nodes, clients, replay) from this source tree (a ``src``
    # directory) instead of the installed grenex: see ``grenex lab run --code``
    code_dir: Path | None = None
    grape_bootstrap: str = "mesh"  # mesh: every other Grape (README); ring: the next one
    node_verbose: int = 0  # -v flags for the nodes (their logs are in the run directory)


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(p * (len(s) - 1) + 0.5))], 4)


class Lab:
    def __init__(self, cfg: RunConfig) -> None:
        global _run_counter
        _run_counter += 1
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.prefix = f"glab-{os.getpid()}-{_run_counter}-"
        self.hosts = [f"n{i + 1}" for i in range(cfg.nodes)]
        self.net = LabNet(self.prefix, self.hosts)
        self.procs = ProcTable()
        self.cluster = f"lab{cfg.seed}"
        self.dir = cfg.workdir / f"seed{cfg.seed}-{os.getpid()}-{_run_counter}"
        self._hosts = {h: LabHost(h, self.net.ip(h), self.dir / h) for h in self.hosts}
        self.tmpfs_host = ""
        self.workers: list[subprocess.Popen[bytes]] = []
        self.observer: Observer | None = None
        self.timeline: list[tuple[float, dict[str, dict[str, Any] | None]]] = []
        self.admin: list[Op] = []
        self.errors: list[str] = []
        self.events: list[str] = []  # a readable log of what the runner did
        self._orig_ns: int | None = None
        self._mounted: list[Path] = []
        self._cleaned = False
        self._cli_n = 0
        self.exported: list[str] = []  # nodes whose `log` export was checked
        self.notes: list[str] = []  # findings that are not violations
        self.keyring = Keyring(salt=os.urandom(16).hex())  # this run's keys (SPEC §8)
        self.genesis: Genesis | None = None
        self.signer: Signer | None = None

    # ------------------------------------------------------------------ keys

    @property
    def genesis_path(self) -> Path:
        return self.dir / "genesis.json"

    def key_path(self, name: str) -> Path:
        """The key file of node or account ``name`` (``node-<id>`` / ``<account>``)."""
        return self.dir / "keys" / f"{name}.key"

    def write_keys(self) -> None:
        """The genesis (every host a founding voter) and every key file of the run."""
        kr = self.keyring
        data = kr.genesis(
            self.cluster, self.hosts, cert=lambda k, n: b64url(make_self_signed(k.seed, n))
        )
        self.genesis_path.write_bytes(data)
        self.genesis = parse_genesis(data, check_cert)
        self.signer = Signer(self.genesis.cluster_id, kr, lambda: time.time_ns() // 1_000)
        (self.dir / "keys").mkdir(parents=True, exist_ok=True)
        keys: list[tuple[str, SecretKey]] = [(f"node-{h}", kr.node_key(h)) for h in self.hosts]
        keys += [(f"c{i + 1}", kr.key(f"c{i + 1}")) for i in range(len(self.hosts))]
        keys += [("cli", kr.key("cli")), ("operator", kr.key(kr.operator))]
        for name, key in keys:
            path = self.key_path(name)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            write_key_file(path, key)

    # ------------------------------------------------------------------ helpers

    def now(self) -> float:
        return time.time()

    def note(self, msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        self.events.append(line)
        with contextlib.suppress(OSError), (self.dir / "runner.log").open("a") as f:
            f.write(line + "\n")

    async def hold(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def host(self, h: str) -> LabHost:
        return self._hosts[h]

    def live_hosts(self) -> list[str]:
        return [h for h in self.hosts if self._hosts[h].node_alive]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["GRENEX_CLUSTER_SECRET"] = self.cfg.secret
        env.pop("GRENEX_GRAPE", None)
        env.pop("GRENEX_CLUSTER", None)
        if self.cfg.code_dir is not None:
            env["PYTHONPATH"] = str(self.cfg.code_dir)
        return env

    # ------------------------------------------------------------------ processes

    async def start_grape(self, h: str) -> bool:
        host = self._hosts[h]
        argv = self.net.in_ns(h, grape_argv(self.net, h, self.cfg.grape_bootstrap))
        host.grape = self.procs.spawn(f"grape {h}", argv, host.dir / "grape.log", self._env())
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if host.grape.poll() is not None:
                self.errors.append(f"grape {h} exited with {host.grape.returncode}")
                return False
            if await self._grape_answers(host):
                return True
            await asyncio.sleep(0.1)
        self.errors.append(f"grape {h} API did not answer in 15 s")
        return False

    async def _grape_answers(self, host: LabHost) -> bool:
        try:
            _r, w = await asyncio.wait_for(asyncio.open_connection(host.ip, GRAPE_API_PORT), 0.5)
        except (OSError, TimeoutError):
            return False
        w.close()
        with contextlib.suppress(OSError):
            await w.wait_closed()
        return True

    def kill_grape(self, h: str) -> None:
        g = self._hosts[h].grape
        if g is not None:
            self.procs.stop(g, signal.SIGKILL, 5)
        self.note(f"kill -9 grape {h}")

    async def start_node(self, h: str, timeout_s: float = 30.0) -> bool:
        host = self._hosts[h]
        with contextlib.suppress(FileNotFoundError):
            host.ready_file.unlink()
        argv = node_argv(
            host,
            self.hosts,
            self.cluster,
            memory=False,
            genesis=self.genesis_path,
            key=self.key_path(f"node-{h}"),
        )
        if self.cfg.node_verbose:
            argv.append("-" + "v" * self.cfg.node_verbose)
        argv = self.net.in_ns(h, argv)
        host.node = self.procs.spawn(f"node {h}", argv, host.dir / "node.log", self._env())
        host.paused = False
        host.restarts += 1
        self.note(f"start node {h} (pid {host.node.pid})")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if host.node.poll() is not None:
                self.note(f"node {h} exited with {host.node.returncode} while starting")
                return False
            r = host.ready()
            if r is not None and r.get("pid") == host.node.pid:
                return True
            await asyncio.sleep(0.05)
        self.note(f"node {h} not ready in {timeout_s} s")
        return False

    def kill_node(self, h: str) -> None:
        n = self._hosts[h].node
        if n is not None:
            self.procs.stop(n, signal.SIGKILL, 5)
        self.note(f"kill -9 node {h}")

    def signal_node(self, h: str, sig: int) -> None:
        host = self._hosts[h]
        if host.node is not None:
            self.procs.send(host.node, sig)
            host.paused = sig == signal.SIGSTOP
        self.note(f"{signal.Signals(sig).name} node {h}")

    # ------------------------------------------------------------------ disk faults

    def tear_tail(self, h: str, rng: random.Random) -> dict[str, Any]:
        """After a kill: leave a torn, never-synced record after the last synced one."""
        segs = sorted(self._hosts[h].data_dir.glob("wal-*.log"))
        if not segs:
            return {"torn": "no segment"}
        seg = segs[-1]
        if rng.random() < 0.5:
            body = bytes([1]) + rng.randbytes(rng.randint(16, 400))
            rec = struct.pack("<II", len(body), zlib.crc32(body)) + body
            torn = rec[: rng.randint(1, len(rec) - 1)]  # never a whole record
            shape = "partial record"
        else:
            torn = b"\0" * rng.randint(1, 4096)
            shape = "zero fill"
        with seg.open("ab") as f:
            f.write(torn)
        self.note(f"tore {len(torn)} bytes ({shape}) onto {seg.name} of {h}")
        return {"torn_bytes": len(torn), "torn_shape": shape, "segment": seg.name}

    def fill_disk(self, h: str) -> dict[str, Any]:
        filler = self._hosts[h].data_dir / "lab-filler"
        written = 0
        with contextlib.suppress(OSError), filler.open("wb") as f:
            for chunk in (1 << 20, 1 << 12, 1):
                while True:
                    try:
                        f.write(b"\0" * chunk)
                        f.flush()
                        written += chunk
                    except OSError:
                        break
        self.note(f"filled the tmpfs of {h} ({written} bytes)")
        return {"filled_bytes": written}

    async def free_disk(self, h: str) -> dict[str, Any]:
        with contextlib.suppress(FileNotFoundError):
            (self._hosts[h].data_dir / "lab-filler").unlink()
        out: dict[str, Any] = {}
        host = self._hosts[h]
        if not host.node_alive:
            out["node_exit_code"] = host.node.returncode if host.node else None
            out["restarted_after_full"] = await self.start_node(h)
            if not out["restarted_after_full"]:
                tail = (host.dir / "node.log").read_text(errors="replace")[-600:]
                out["start_error"] = tail
        self.note(f"freed the tmpfs of {h}: {out}")
        return out

    # ------------------------------------------------------------------ observation

    async def statuses(self, *, fresh_hash: bool = False) -> dict[str, dict[str, Any] | None]:
        assert self.observer is not None
        obs = self.observer
        hosts = [h for h in self.hosts if self._hosts[h].node_alive and not self._hosts[h].paused]
        replies = await asyncio.gather(
            *(obs.status(self._hosts[h].api_addr, h, fresh_hash=fresh_hash) for h in hosts)
        )
        return dict(zip(hosts, replies, strict=True))

    async def leader(self, timeout_s: float = 10.0) -> str | None:
        deadline = time.monotonic() + timeout_s
        while True:
            st = await self.statuses()
            leaders = [(s["term"], h) for h, s in st.items() if s and s.get("role") == "leader"]
            if leaders:
                return max(leaders)[1]
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.1)

    async def _probe(self) -> None:
        while True:
            st = await self.statuses()
            self.timeline.append((self.now(), st))
            if len(self.timeline) > 20_000:
                del self.timeline[:1000]
            await asyncio.sleep(0.25)

    async def _admin(self, kind: str, cmd: dict[str, Any]) -> Op:
        """A command from the lab itself (``cmd`` with its ``client``: the markets by the
        operator, a register by its account), signed once and sent until acknowledged."""
        assert self.observer is not None and self.signer is not None
        if kind == "register":
            env_json = self.signer.register(str(cmd["client"]))
        else:
            env_json = self.signer.command({"type": kind, **cmd})
        env = json.loads(env_json)
        op = Op(str(cmd.get("client", "")), "", kind, json.loads(env["cmd"]), t0=self.now())
        op.env = env
        self.admin.append(op)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            leader = await self.leader(5.0) or self.hosts[0]
            op.node = leader
            try:
                r = await self.observer.ask(
                    self._hosts[leader].api_addr, leader, kind, env, timeout_ms=5_000
                )
            except GrenacheError as e:
                op.error = str(e)[:200]
                await asyncio.sleep(0.2)
                continue
            op.status, op.seq, op.t1 = "ok", int(r["seq"]), self.now()
            from grenex.lab.checker import norm_events

            op.events = norm_events(r["events"])
            return op
        raise LabError(f"{kind} {cmd} was not acknowledged in 30 s: {op.error}")

    async def cli_orders(self, h: str, n: int, tag: str) -> list[dict[str, Any]]:
        """``n`` orders through node ``h`` by the ``grenex place`` command line, each a new
        process in ``h``'s namespace (as a user on that host would type them), one after
        the other; recorded in the history like every other client's."""
        out: list[dict[str, Any]] = []
        hist = self.dir / "history-cli.jsonl"
        host = self._hosts[h]
        if not any(op.kind == "register" and op.client == "cli" for op in self.admin):
            await self._admin("register", {"client": "cli"})
            # the node ``h`` checks the account against its own applied state: wait for it
            await self.converge(10.0)
        for _i in range(n):
            self._cli_n += 1
            oid = f"s{self.cfg.seed}cli{self._cli_n}"
            args = {
                "client": "cli",
                "id": oid,
                "market": "BTC-USD",
                "side": "buy",
                "qty": "0.0001",
                "price": "90",
            }
            argv = self.net.in_ns(
                h,
                [
                    sys.executable,
                    "-m",
                    "grenex",
                    "place",
                    "--node",
                    h,
                    "--client",
                    "cli",
                    "--market",
                    "BTC-USD",
                    "--side",
                    "buy",
                    "--qty",
                    "0.0001",
                    "--price",
                    "90",
                    "--id",
                    oid,
                    "--grape",
                    host.grape_url,
                    "--cluster",
                    self.cluster,
                    "--genesis",
                    str(self.genesis_path),
                    "--key",
                    str(self.key_path("cli")),
                    "--json",
                ],
            )
            t0 = self.now()
            with hist.open("a") as f:
                f.write(
                    json.dumps(
                        {
                            "rec": "invoke",
                            "op": self._cli_n,
                            "t": t0,
                            "node": h,
                            "kind": "place",
                            "args": args,
                        }
                    )
                    + "\n"
                )
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env(),
            )
            self.procs.procs[proc.pid] = (f"grenex place on {h}", proc)  # type: ignore[assignment]
            try:
                stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
            except TimeoutError:
                proc.kill()
                stdout, stderr = b"", b"killed after 60 s"
                await proc.wait()
            self.procs.procs.pop(proc.pid, None)
            t1 = self.now()
            rec: dict[str, Any] = {"rec": "done", "op": self._cli_n, "t": t1, "t0": t0}
            if proc.returncode == 0:
                rec.update({"status": "ok", **json.loads(stdout)})
            else:
                rec.update({"status": "unknown", "error": stderr.decode(errors="replace")[-300:]})
            with hist.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            out.append(
                {
                    "latency_s": round(t1 - t0, 3),
                    "exit": proc.returncode,
                    "error": rec.get("error", "")[-160:].strip(),
                }
            )
        return out

    # ------------------------------------------------------------------ workers

    def start_workers(self) -> None:
        for i, h in enumerate(self.hosts):
            host = self._hosts[h]
            argv = self.net.in_ns(
                h,
                [
                    sys.executable,
                    "-m",
                    "grenex.lab.workload",
                    "--grape",
                    host.grape_url,
                    "--cluster",
                    self.cluster,
                    "--genesis",
                    str(self.genesis_path),
                    "--key",
                    str(self.key_path(f"c{i + 1}")),
                    "--node",
                    h,
                    "--client",
                    f"c{i + 1}",
                    "--seed",
                    str(self.cfg.seed * 100 + i),
                    "--tag",
                    f"s{self.cfg.seed}c{i + 1}",
                    "--rate",
                    str(self.cfg.rate),
                    "--concurrency",
                    str(self.cfg.concurrency),
                    "--duration",
                    "3600",
                    "--op-timeout",
                    str(self.cfg.op_timeout),
                    "--out",
                    str(self.dir / f"history-{h}.jsonl"),
                ],
            )
            self.workers.append(
                self.procs.spawn(f"client of {h}", argv, self.dir / f"client-{h}.log", self._env())
            )

    async def stop_workers(self) -> None:
        for w in self.workers:
            self.procs.send(w, signal.SIGTERM)
        deadline = time.monotonic() + self.cfg.op_timeout + 15
        while any(w.poll() is None for w in self.workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for w in self.workers:
            self.procs.stop(w, signal.SIGKILL, 2)

    # ------------------------------------------------------------------ the run

    async def heal_all(self) -> float:
        self.net.heal()
        for h in self.hosts:
            host = self._hosts[h]
            if host.paused:
                self.signal_node(h, signal.SIGCONT)
            if not host.grape_alive:
                await self.start_grape(h)
            if not host.node_alive:
                await self.start_node(h)
        self.note("healed everything")
        return self.now()

    async def converge(self, timeout_s: float) -> tuple[bool, dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        st: dict[str, Any] = {}
        while time.monotonic() < deadline:
            st = await self.statuses(fresh_hash=True)
            good = [s for s in st.values() if s]
            if (
                good
                and len(good) == len(st)
                and statuses_agree(good)
                and len({s.get("leader") for s in good}) == 1
                and good[0].get("leader")
            ):
                return True, st
            await asyncio.sleep(0.1)
        return False, st

    async def run(self) -> dict[str, Any]:
        cfg = self.cfg
        t_begin = self.now()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.note(f"lab run seed {cfg.seed}: {cfg.nemeses} on {self.hosts}, prefix {self.prefix}")
        self.net.setup()
        self._orig_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
        setns_path(f"/var/run/netns/{self.net.bridge_ns}")
        self.write_keys()
        assert self.genesis is not None
        self.observer = Observer(self.cluster, self.genesis)
        if "disk_full" in cfg.nemeses:
            self.tmpfs_host = self.rng.choice(self.hosts)
            d = self._hosts[self.tmpfs_host].data_dir
            d.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(d)],
                check=True,
                capture_output=True,
            )
            self._mounted.append(d)
        for h in self.hosts:
            if not await self.start_grape(h):
                raise LabError(f"grape {h} did not start: {self.errors}")
        started = await asyncio.gather(*(self.start_node(h) for h in self.hosts))
        if not all(started):
            raise LabError(f"nodes did not start: {dict(zip(self.hosts, started, strict=True))}")
        if await self.leader(30.0) is None:
            raise LabError("no leader elected in 30 s")
        for market, (tick, lot) in sorted(MARKETS.items()):
            await self._admin(
                "add_market",
                {"market": market, "tick": tick, "lot": lot, "client": self.keyring.operator},
            )
        t_setup = self.now()
        probe = asyncio.create_task(self._probe())
        self.start_workers()
        faults: list[nem.Fault] = []
        try:
            await self.hold(3.0)  # a baseline before the first fault
            faults = await nem.run_schedule(self, list(cfg.nemeses), self.rng)
            await self.hold(2.0)
            t_heal = await self.heal_all()
            await self.hold(2.0)  # traffic after the heal
            await self.stop_workers()
            ok, final = await self.converge(CONVERGE_TIMEOUT_S)
            t_conv = self.now()
        finally:
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe
        report: dict[str, Any] = {
            "seed": cfg.seed,
            "nemeses": cfg.nemeses,
            "nodes": cfg.nodes,
            "dir": str(self.dir),
            "setup_s": round(t_setup - t_begin, 2),
            "faults": [f.to_json() for f in faults],
            "final_converged": ok,
            "final_converge_s": round(t_conv - t_heal, 3),
            "final_status": {
                h: (s and {k: s.get(k) for k in ("role", "term", "applied", "state_hash")})
                for h, s in final.items()
            },
        }
        violations: list[tuple[str, str]] = []
        if not ok:
            violations.append(
                (
                    "diverged",
                    f"replicas did not converge {CONVERGE_TIMEOUT_S} s after healing: "
                    f"{report['final_status']}",
                )
            )
        ops = load_history(sorted(self.dir.glob("history-*.jsonl")))
        result = await self._check(ops, violations)
        report["ops"] = _op_summary(ops)
        report["check"] = result.to_json()
        report["recovery"] = self._recovery(faults, ops)
        report["violations"] = [list(v) for v in result.violations]
        report["export_checked_on"] = self.exported
        report["notes"] = self.notes
        report["errors"] = self.errors
        report["duration_s"] = round(self.now() - t_begin, 2)
        with (self.dir / "timeline.jsonl").open("w") as tl:
            for ts, st in self.timeline:
                row = {
                    h: s
                    and [
                        s.get("role"),
                        s.get("term"),
                        s.get("leader"),
                        s.get("commit"),
                        s.get("applied"),
                    ]
                    for h, s in st.items()
                }
                tl.write(json.dumps({"t": round(ts, 3), **row}) + "\n")
        return report

    async def _check(self, ops: list[Op], violations: list[tuple[str, str]]) -> CheckResult:
        assert self.observer is not None
        views: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        books: dict[str, Any] = {}
        firsts: dict[str, int] = {}
        for h in self.live_hosts():
            addr = self._hosts[h].api_addr
            try:
                first, _applied, events = await self.observer.events(addr, h)
                views[h] = (first, events)
                firsts[h] = first
                books[h] = await self.observer.books(addr, h)
            except (GrenacheError, KeyError, TypeError) as e:
                violations.append(("unreadable", f"{h}: {type(e).__name__}: {e}"))
        exports: dict[str, dict[int, str]] = {}
        for h in self.live_hosts():
            try:
                got = await self.observer.log(self._hosts[h].api_addr, h)
            except (GrenacheError, KeyError, TypeError) as e:
                violations.append(("unreadable", f"{h} log: {type(e).__name__}: {e}"))
                continue
            if got is not None:
                exports[h] = got
        log = group_log(views, violations)
        if firsts and min(firsts.values()) > 1:
            violations.append(("coverage", f"no node shows the log from index 1: {firsts}"))
        genesis = self.genesis_path.read_bytes()
        times = self.observer.times
        exported = exports[sorted(exports)[0]] if exports else None
        result, log_lines = check(
            ops,
            log,
            self.admin,
            env=self._env(),
            genesis=genesis,
            times=times,
            exported=exported,
        )
        result.violations[:0] = violations
        (self.dir / "log.jsonl").write_bytes(log_lines)
        from grenex.lab.checker import replay

        _ev, want_books = replay(log_lines, self._env())
        export_v, export_books = check_export(
            exports, log, log_lines, self._env(), genesis=genesis, times=times
        )
        self.notes += [m for c, m in export_v if c == "note"]
        result.violations += [x for x in export_v if x[0] != "note"]
        for h, b in books.items():
            if b.get("books") != want_books:
                result.violations.append(("books", f"{h}'s books differ from the replay"))
            if export_books is not None and b.get("books") != export_books:
                result.violations.append(("books", f"{h}'s books differ from the export's"))
        self.exported = sorted(exports)
        return result

    def _recovery(self, faults: list[nem.Fault], ops: list[Op]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i, f in enumerate(faults):
            rec: dict[str, Any] = {"name": f.name, "host": f.host}
            # this fault's window ends where the next one begins (or 10 s after its heal)
            until = min(f.healed + 10, faults[i + 1].start if i + 1 < len(faults) else 1e18)
            if f.healed:
                rec["recover_s"] = self._caught_up_after(f.healed)
            if f.leader is not None and (f.host == f.leader or f.name == "partition"):
                after = [
                    op.t1 - f.start
                    for op in ops
                    if op.status == "ok" and f.start <= op.t0 < until and op.node != f.host
                ]
                rec["first_new_op_ack_s"] = round(min(after), 3) if after else None
                # the window with no acknowledgement at all through the other nodes
                acks = sorted(
                    op.t1
                    for op in ops
                    if op.status == "ok" and op.node != f.host and f.start - 5 <= op.t1 <= until
                )
                gaps = [b - max(a, f.start) for a, b in itertools.pairwise(acks) if b > f.start]
                rec["unavailable_s"] = round(max(gaps), 3) if gaps else None
                rec["new_leader_s"] = self._new_leader_after(f.start, f.leader)
            if f.name == "cut_host":
                rec.update(self._latency(f, ops))
            out.append(rec)
        return out

    def _caught_up_after(self, t: float) -> float | None:
        """Seconds from ``t`` until every probed node agreed on a leader and had applied
        everything that was committed anywhere at ``t``."""
        before = [st for ts, st in self.timeline if ts <= t]
        if not before:
            return None
        target = max((s["commit"] for s in before[-1].values() if s), default=0)
        for ts, st in self.timeline:
            if ts < t:
                continue
            good = [s for s in st.values() if s]
            if (
                good
                and len(good) == len(self.hosts)
                and len({s.get("leader") for s in good}) == 1
                and good[0].get("leader")
                and min(s["applied"] for s in good) >= target
            ):
                return round(ts - t, 3)
        return None

    def _new_leader_after(self, t: float, old: str) -> float | None:
        """Seconds from ``t`` until a node other than ``old`` led in a later term."""
        before = [st for ts, st in self.timeline if ts <= t]
        terms = [s["term"] for s in before[-1].values() if s] if before else []
        old_term = max(terms, default=0)
        for ts, st in self.timeline:
            if ts < t:
                continue
            for h, s in st.items():
                if s and s.get("role") == "leader" and s["term"] > old_term:
                    return round(ts - t, 3) if h != old else None
        return None

    def _latency(self, f: nem.Fault, ops: list[Op]) -> dict[str, Any]:
        during = [op for op in ops if op.node != f.host and f.start <= op.t0 < f.healed]
        first_fault = min((x.start for x in [f]), default=f.start)
        base = [op for op in ops if op.node != f.host and op.t0 < first_fault - 0.5]
        lat = [op.t1 - op.t0 for op in during if op.status == "ok"]
        blat = [op.t1 - op.t0 for op in base if op.status == "ok"]
        return {
            "healthy_ops_during": len(during),
            "healthy_ok_during": len(lat),
            "healthy_not_ok_during": len(during) - len(lat),
            "latency_during_p50_s": _pct(lat, 0.5),
            "latency_during_p95_s": _pct(lat, 0.95),
            "latency_during_max_s": round(max(lat), 4) if lat else None,
            "latency_before_p50_s": _pct(blat, 0.5),
            "latency_before_p95_s": _pct(blat, 0.95),
        }

    # ------------------------------------------------------------------ teardown

    def cleanup(self) -> list[str]:
        """Kill, unmount, delete; safe to call twice; returns what went wrong."""
        if self._cleaned:
            return []
        self._cleaned = True
        problems: list[str] = []
        left = self.procs.kill_all()
        if left:
            self.note(f"killed at teardown: {left}")
        for d in reversed(self._mounted):
            p = subprocess.run(
                ["umount", "-l", str(d)], capture_output=True, text=True, check=False
            )
            if p.returncode != 0:
                problems.append(f"umount {d}: {p.stderr.strip()}")
        self._mounted.clear()
        if self._orig_ns is not None:
            try:
                setns_path(f"/proc/self/fd/{self._orig_ns}")
            except LabError as e:
                problems.append(str(e))
            os.close(self._orig_ns)
            self._orig_ns = None
        for pid in self.net.pids_inside():
            if pid == os.getpid():
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                problems.append(f"pid {pid} was still inside a lab namespace")
        problems += self.net.teardown()
        return problems


def _op_summary(ops: list[Op]) -> dict[str, Any]:
    out: dict[str, Any] = {"total": len(ops)}
    for op in ops:
        out[op.status] = out.get(op.status, 0) + 1
        out[op.kind] = out.get(op.kind, 0) + 1
    lat = [op.t1 - op.t0 for op in ops if op.status == "ok"]
    out["latency_p50_s"] = _pct(lat, 0.5)
    out["latency_p99_s"] = _pct(lat, 0.99)
    return out


def run_lab(cfg: RunConfig) -> dict[str, Any]:
    """One run, start to teardown, whatever happens (Ctrl-C and SIGTERM included)."""
    preflight()
    for name in cfg.nemeses:
        if name not in nem.NEMESES:
            raise LabError(f"unknown nemesis {name!r} (known: {', '.join(nem.NEMESES)})")
    lab = Lab(cfg)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, on_term)
    report: dict[str, Any] = {"seed": cfg.seed, "nemeses": cfg.nemeses}
    try:
        report = asyncio.run(_run_and_close(lab))
    except KeyboardInterrupt:
        report["aborted"] = "interrupted"
        raise
    except Exception as e:
        report["aborted"] = f"{type(e).__name__}: {e}"
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let teardown finish
        try:
            problems = lab.cleanup()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)
        report["teardown_problems"] = problems
        with contextlib.suppress(OSError):
            (lab.dir / "report.json").write_text(json.dumps(report, indent=1, default=str))
    if not cfg.keep and not report.get("violations") and not problems:
        shutil.rmtree(lab.dir, ignore_errors=True)  # a clean run leaves only its report
        report["dir"] = None
    return report


async def _run_and_close(lab: Lab) -> dict[str, Any]:
    try:
        return await lab.run()
    finally:
        if lab.observer is not None:
            await lab.observer.close()
