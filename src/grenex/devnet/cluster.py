"""A whole grenex network on one machine: Grapes and node processes on loopback.

Used by ``grenex up``, ``grenex demo``, the real-process tests and the cluster benchmark.
Every process it starts, it stops by PID (SIGTERM, then SIGKILL after a bounded wait), also
when the caller is interrupted.  Nodes ``n1``…``nN`` are ``grenex node`` processes; the first
``voters`` bootstrap the cluster, the rest join as learners (admitted by the operator).

Keys (SPEC §8): the cluster's :class:`~grenex.codec.signer.Keyring` (a random salt per cluster,
so its keys are as unguessable as random ones) gives the operator's key, every node's key and,
for tests and demos, any account's key; ``genesis.json`` and ``keys/*.key`` are written under
the base directory, and every node runs with ``--genesis`` and its own ``--key``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from grenex.client.pins import MemberPins
from grenex.codec.api import STATUS_WITH_HASH, service_names, statuses_agree
from grenex.codec.genesis import Genesis, parse_genesis
from grenex.codec.keys import SecretKey, write_key_file
from grenex.codec.signer import Keyring, Signer
from grenex.grenache import GrenacheError, Link, PeerRPCClient
from grenex.grenache.testing import GrapeCluster, astart_grapes
from grenex.grenache.tls import b64url, check_cert, make_self_signed, unb64url

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
    state_dir: Path | None = None  # genesis.json and keys/ (default: base_dir)
    dpa_ms: int = 4_000
    tick_ms: int = 50
    markets: tuple[tuple[str, str, str], ...] = DEFAULT_MARKETS
    node_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    # GRENEX_CLUSTER_SECRET for every node: peer traffic signed and checked (None: open)
    secret: str | None = None
    # keys of the operator, the nodes and (for tests and demos) any account
    keyring: Keyring = field(default_factory=lambda: Keyring(salt=secrets.token_hex(16)))
    genesis_join: str = "operator"
    genesis: Genesis | None = None
    genesis_path: Path | None = None
    procs: dict[str, NodeProc] = field(default_factory=dict)
    pins: MemberPins | None = None  # the nodes' certificates this process trusts
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
            self._write_genesis()
            self.grape_cluster = await astart_grapes(self.grapes, dpa_ms=self.dpa_ms)
            self._link = Link(self.grape_urls)
            await self._link.start()
            assert self.genesis is not None
            self.pins = MemberPins(self.genesis)
            for i in range(1, self.nodes + 1):
                node = f"n{i}"
                self.pins.add(node, unb64url(self.cert_of(node)))
            self._client = PeerRPCClient(
                self._link, request_timeout_ms=5_000, ssl_for=self.pins.ssl_for
            )
            deadline = time.monotonic() + timeout_s
            for i in range(1, self.nodes + 1):
                node_id = f"n{i}"
                self.procs[node_id] = self._node_proc(node_id, voter=i <= self.voters)
                self._spawn(self.procs[node_id])
            await self.wait_ready(list(self.procs), deadline - time.monotonic())
            await self.wait_leader(deadline - time.monotonic())
            for node_id, np in self.procs.items():
                if not np.voter:
                    await self.admit(node_id)
            if open_markets:
                for market, tick, lot in self.markets:
                    await self.operator(
                        "n1", {"type": "add_market", "market": market, "tick": tick, "lot": lot}
                    )
            await self.wait_members(deadline - time.monotonic())
        except BaseException:
            await self.stop()
            raise

    def cert_of(self, node_id: str) -> str:
        """The node's self-signed certificate (base64url DER) on its key."""
        return b64url(make_self_signed(self.keyring.node_key(node_id).seed, node_id))

    @property
    def keys_dir(self) -> Path:
        """Where ``operator.key`` and ``<node id>.key`` are (``keys/`` under the state dir)."""
        base = self.state_dir or self.base_dir
        assert base is not None
        return base / "keys"

    def _write_genesis(self) -> None:
        keys = self.keys_dir
        keys.mkdir(parents=True, exist_ok=True)
        kr = self.keyring
        data = kr.genesis(
            self.cluster,
            self.voter_ids,
            join=self.genesis_join,
            cert=lambda k, node: b64url(make_self_signed(k.seed, node)),
        )
        path = keys.parent / "genesis.json"
        path.write_bytes(data)
        self.genesis = parse_genesis(data, check_cert)
        self.genesis_path = path
        self._write_key(keys / "operator.key", kr.key(kr.operator))
        self.signer = Signer(self.genesis.cluster_id, kr, lambda: time.time_ns() // 1000)

    def _write_key(self, path: Path, key: SecretKey) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        write_key_file(path, key)

    def key_path(self, node_id: str) -> Path:
        path = self.keys_dir / f"{node_id}.key"
        if not path.exists():
            self._write_key(path, self.keyring.node_key(node_id))
        return path

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
            "--genesis",
            str(self.genesis_path),
            "--key",
            str(self.key_path(np.id)),
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
        if self.pins is not None:
            self.pins.add(node_id, unb64url(self.cert_of(node_id)))
        self.procs[node_id] = self._node_proc(node_id, voter=False)
        self._spawn(self.procs[node_id])
        await self.wait_ready([node_id], timeout_s)
        await self.admit(node_id)
        return node_id

    async def admit(self, node_id: str, via: str | None = None) -> Any:
        """The operator admits ``node_id`` (its key and certificate) as a learner."""
        key = self.keyring.node_key(node_id).public_key
        cmd = {"type": "admit", "node": node_id, "key": key, "cert": self.cert_of(node_id)}
        return await self.operator(via or self.voter_ids[0], cmd)

    async def operator(self, node_id: str, cmd: dict[str, Any], timeout_ms: int = 15_000) -> Any:
        """A command signed with the operator's key, sent to ``node_id``."""
        return await self.command(node_id, {**cmd, "client": self.keyring.operator}, timeout_ms)

    async def command(self, node_id: str, cmd: dict[str, Any], timeout_ms: int = 15_000) -> Any:
        """One command (with ``client``) signed with that account's keyring key."""
        env = msgspec.json.decode(self.signer.command(cmd))
        return await self.request(node_id, cmd["type"], env, timeout_ms)

    async def register(self, node_id: str, client: str, timeout_ms: int = 15_000) -> Any:
        env = msgspec.json.decode(self.signer.register(client))
        return await self.request(node_id, "register", env, timeout_ms)

    def client(self, node: str | None = None, **kw: Any) -> Any:
        """A :class:`~grenex.client.GrenexClient` of this cluster that signs for any account
        with the keyring's keys, registering accounts on first use."""
        from grenex.client import GrenexClient

        kw.setdefault("keys", self.keyring)
        kw.setdefault("genesis", self.genesis)
        kw.setdefault("register", True)
        return GrenexClient(self.grape_urls, node=node, **kw)

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
