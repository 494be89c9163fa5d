"""A whole grenex network on one machine: Grapes and node processes on loopback.

Used by ``grenex up``, ``grenex demo``, the real-process tests and the cluster benchmark.
Every process it starts, it stops by PID (SIGTERM, then SIGKILL after a bounded wait), also
when the caller is interrupted.  Nodes ``n1``…``nN`` are ``grenex node`` processes; the first
``voters`` bootstrap the cluster, the rest join as learners.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grenex.codec.api import STATUS_WITH_HASH, service_names, statuses_agree
from grenex.grenache import GrenacheError, Link, PeerRPCClient
from grenex.grenache.testing import GrapeCluster, astart_grapes

__all__ = ["DEFAULT_MARKETS", "ClusterError", "LocalCluster", "NodeProc"]

DEFAULT_MARKETS: tuple[tuple[str, str, str], ...] = (
    ("BTC-USD", "0.01", "0.0001"),
    ("ETH-USD", "0.01", "0.001"),
)


class ClusterError(RuntimeError):
    """The local network could not be started or did not become healthy in time."""


@dataclass
class NodeProc:
    id: str
    voter: bool
    log_path: Path
    data_dir: Path | None
    ready_file: Path
    proc: subprocess.Popen[bytes] | None = None
    api_port: int = 0
    restarts: int = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class LocalCluster:
    nodes: int = 5
    voters: int = 3
    grapes: int = 2
    cluster: str = "main"
    memory: bool = True
    base_dir: Path | None = None  # logs (and data dirs); a temporary directory by default
    dpa_ms: int = 4_000
    tick_ms: int = 50
    markets: tuple[tuple[str, str, str], ...] = DEFAULT_MARKETS
    node_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    # GRENEX_CLUSTER_SECRET for every node: peer traffic signed and checked (None: open)
    secret: str | None = None
    procs: dict[str, NodeProc] = field(default_factory=dict)
    grape_cluster: GrapeCluster | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    _link: Link | None = None
    _client: PeerRPCClient | None = None

    # ------------------------------------------------------------------ start / stop

    @property
    def grape_urls(self) -> list[str]:
        assert self.grape_cluster is not None
        return list(self.grape_cluster.api_urls)

    @property
    def voter_ids(self) -> list[str]:
        return [f"n{i}" for i in range(1, self.voters + 1)]

    @property
    def node_ids(self) -> list[str]:
        return list(self.procs)

    async def start(self, timeout_s: float = 60.0, open_markets: bool = True) -> None:
        if not 1 <= self.voters <= self.nodes:
            raise ClusterError("1 <= voters <= nodes")
        if self.base_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="grenex-")
            self.base_dir = Path(self._tmp.name)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.grape_cluster = await astart_grapes(self.grapes, dpa_ms=self.dpa_ms)
            self._link = Link(self.grape_urls)
            await self._link.start()
            self._client = PeerRPCClient(self._link, request_timeout_ms=5_000)
            deadline = time.monotonic() + timeout_s
            for i in range(1, self.nodes + 1):
                node_id = f"n{i}"
                self.procs[node_id] = self._node_proc(node_id, voter=i <= self.voters)
                self._spawn(self.procs[node_id])
            await self.wait_ready(list(self.procs), deadline - time.monotonic())
            await self.wait_leader(deadline - time.monotonic())
            if open_markets:
                for market, tick, lot in self.markets:
                    await self.request(
                        "n1", "add_market", {"market": market, "tick": tick, "lot": lot}
                    )
            await self.wait_members(deadline - time.monotonic())
        except BaseException:
            await self.stop()
            raise

    def _node_proc(self, node_id: str, voter: bool) -> NodeProc:
        assert self.base_dir is not None
        return NodeProc(
            id=node_id,
            voter=voter,
            log_path=self.base_dir / f"{node_id}.log",
            data_dir=None if self.memory else self.base_dir / "data" / node_id,
            ready_file=self.base_dir / f"{node_id}.ready",
        )

    def _spawn(self, np: NodeProc) -> None:
        with contextlib.suppress(FileNotFoundError):
            np.ready_file.unlink()
        args = [
            sys.executable,
            "-m",
            "grenex",
            "node",
            "--id",
            np.id,
            "--grape",
            ",".join(self.grape_urls),
            "--cluster",
            self.cluster,
            "--tick-ms",
            str(self.tick_ms),
            "--ready-file",
            str(np.ready_file),
            *self.node_args,
        ]
        if np.data_dir is None:
            args.append("--memory")
        else:
            args += ["--data-dir", str(np.data_dir)]
        has_state = np.data_dir is not None and np.data_dir.exists() and any(np.data_dir.iterdir())
        if np.voter and not has_state:
            args += ["--voters", ",".join(self.voter_ids)]
        elif not np.voter:
            args.append("--join")
        log = np.log_path.open("ab")
        try:
            np.proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._node_env(),
                start_new_session=True,  # Ctrl-C in a terminal reaches us, not the nodes
            )
        finally:
            log.close()

    def _node_env(self) -> dict[str, str]:
        env = {**os.environ, **self.env}
        env.pop("GRENEX_CLUSTER_SECRET", None)
        if self.secret:
            env["GRENEX_CLUSTER_SECRET"] = self.secret
        return env

    async def wait_ready(self, node_ids: list[str], timeout_s: float) -> None:
        deadline = time.monotonic() + max(timeout_s, 0.1)
        for node_id in node_ids:
            np = self.procs[node_id]
            while not np.ready_file.exists():
                if not np.alive:
                    raise ClusterError(f"node {node_id} exited: {self.log_tail(node_id)}")
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"node {node_id} not ready in time: {self.log_tail(node_id)}"
                    )
                await asyncio.sleep(0.05)
            first_line = np.ready_file.read_text().splitlines()[:1]
            np.api_port = int(first_line[0]) if first_line else 0

    def log_tail(self, node_id: str, lines: int = 8) -> str:
        try:
            text = self.procs[node_id].log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:])

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every node (SIGTERM, then SIGKILL) and every Grape; idempotent."""
        for np in self.procs.values():
            if np.alive:
                assert np.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    np.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for np in self.procs.values():
            if np.proc is None:
                continue
            while np.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if np.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    np.proc.kill()
                np.proc.wait(5)
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._link is not None:
            await self._link.stop()
            self._link = None
        if self.grape_cluster is not None:
            self.grape_cluster.stop()
            self.grape_cluster = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def __aenter__(self) -> LocalCluster:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ faults

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> None:
        np = self.procs[node_id]
        if np.proc is not None and np.alive:
            np.proc.send_signal(sig)
            np.proc.wait(10)

    async def restart(self, node_id: str, timeout_s: float = 30.0) -> None:
        """Start a stopped node again (same id, same data directory)."""
        np = self.procs[node_id]
        if np.alive:
            raise ClusterError(f"{node_id} is running")
        np.restarts += 1
        self._spawn(np)
        await self.wait_ready([node_id], timeout_s)

    async def add_node(self, timeout_s: float = 30.0) -> str:
        """Start one more node; it joins as a learner."""
        node_id = f"n{len(self.procs) + 1}"
        self.procs[node_id] = self._node_proc(node_id, voter=False)
        self._spawn(self.procs[node_id])
        await self.wait_ready([node_id], timeout_s)
        return node_id

    # ------------------------------------------------------------------ talking to nodes

    def api_name(self, node_id: str) -> str:
        return service_names(self.cluster, node_id)["node"]

    async def request(
        self,
        node_id: str,
        action: str,
        args: dict[str, Any] | None = None,
        timeout_ms: int = 15_000,
    ) -> Any:
        assert self._client is not None
        return await self._client.request(
            self.api_name(node_id), {"action": action, "args": [args or {}]}, timeout_ms=timeout_ms
        )

    async def statuses(self, node_ids: list[str] | None = None) -> dict[str, Any]:
        """Each node's status, or the exception its request raised."""
        ids = node_ids if node_ids is not None else [n for n, p in self.procs.items() if p.alive]

        async def one(node_id: str) -> Any:
            try:
                return await self.request(node_id, "status", STATUS_WITH_HASH, timeout_ms=3_000)
            except GrenacheError as e:
                return e

        results = await asyncio.gather(*(one(n) for n in ids))
        return dict(zip(ids, results, strict=True))

    async def wait_leader(self, timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + max(timeout_s, 0.1)
        while True:
            st = await self.statuses()
            leaders = {s["leader"] for s in st.values() if isinstance(s, dict) and s["leader"]}
            roles = [n for n, s in st.items() if isinstance(s, dict) and s["role"] == "leader"]
            if len(leaders) == 1 and roles and roles[0] in leaders:
                return roles[0]
            if time.monotonic() > deadline:
                raise ClusterError(f"no leader in time: {st}")
            await asyncio.sleep(0.1)

    async def wait_members(self, timeout_s: float = 30.0) -> None:
        """Until every running node is a member (learners have joined)."""
        deadline = time.monotonic() + max(timeout_s, 0.1)
        while True:
            st = await self.statuses()
            ok = [
                n
                for n, s in st.items()
                if isinstance(s, dict) and n in s["members"]["voters"] + s["members"]["learners"]
            ]
            if len(ok) == len(st):
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"nodes did not join in time: {st}")
            await asyncio.sleep(0.1)

    async def wait_converged(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Until every running node reports the same applied index and state hash."""
        deadline = time.monotonic() + max(timeout_s, 0.1)
        while True:
            st = await self.statuses()
            good = [s for s in st.values() if isinstance(s, dict)]
            if len(good) == len(st) and statuses_agree(good):
                return st
            if time.monotonic() > deadline:
                raise ClusterError(f"replicas did not converge in time: {st}")
            await asyncio.sleep(0.1)
