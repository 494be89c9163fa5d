"""A LocalCluster with a recorded history: the shared fixture code of the node tests.

:class:`Harness` starts a :class:`~grenex.devnet.LocalCluster` **without** markets,
subscribes :class:`~node.history.EventStream` to one node's publisher (a node the test never
kills), and only then opens the markets, through recorded commands signed by the genesis
operator: so the stream holds every client command of the cluster's log (what comes before is
the operator admitting the learners).  Every command sent through the harness (in-process with
:meth:`Harness.command`, or by client processes with :class:`ClientProcs`) is a signed envelope
recorded as an :class:`~node.history.Op`; every account is registered once, by a recorded
``register``, before its first command.  :meth:`Harness.verify` waits for convergence and runs
the checker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from grenex.codec.api import STATUS_WITH_HASH, statuses_agree
from grenex.devnet import DEFAULT_MARKETS, LocalCluster
from grenex.grenache import GrenacheError, Link, PeerRPCClient
from grenex.grenache.tls import pinned_client_context, unb64url

from .history import (
    OK,
    CheckResult,
    Client,
    EventStream,
    HistoryError,
    Op,
    Signing,
    call,
    check,
    node_ports,
)

__all__ = ["TESTS_DIR", "ClientProcs", "Harness"]

TESTS_DIR = Path(__file__).resolve().parent.parent
OPERATOR_TYPES = ("add_market", "admit", "promote", "remove")  # signed by the operator


class Harness:
    def __init__(self, cluster: LocalCluster, stream_node: str) -> None:
        self.cluster = cluster
        self.stream_node = stream_node
        self.ops: list[Op] = []
        self.stream: EventStream | None = None
        self._link: Link | None = None
        self.rpc: PeerRPCClient | None = None
        self.client: Client | None = None
        self._signing: Signing | None = None
        self._registering: dict[str, asyncio.Task[Op]] = {}  # account -> its register
        self._sentinels = 0

    @property
    def signing(self) -> Signing:
        """Signs the harness' commands (the cluster's keyring, microsecond nonces)."""
        if self._signing is None:
            c = self.cluster
            assert c.genesis is not None, "start the cluster first"
            self._signing = Signing(c.genesis, c.keyring, c.keyring.operator)
        return self._signing

    @property
    def genesis_bytes(self) -> bytes:
        assert self.cluster.genesis_path is not None
        return self.cluster.genesis_path.read_bytes()

    @property
    def name(self) -> str:
        return self.cluster.cluster

    async def start(self, timeout_s: float = 90.0) -> None:
        c = self.cluster
        await c.start(timeout_s=timeout_s, open_markets=False)
        try:
            self._link = Link(c.grape_urls, request_timeout_ms=3_000, lookup_cache_ttl_ms=5_000)
            await self._link.start()
            assert c.pins is not None  # the nodes' certificates (SPEC §8 "Endpoints")
            self.rpc = PeerRPCClient(self._link, request_timeout_ms=12_000, ssl_for=c.pins.ssl_for)
            self.client = Client(self.rpc, fallback=self._ready_address)
            self.stream = self.event_stream(self.stream_node)
            await self.stream.start()
            for market, tick, lot in DEFAULT_MARKETS:
                op = await self.command(
                    c.voter_ids[0], "add_market", {"market": market, "tick": tick, "lot": lot}
                )
                assert op.status == OK and op.events and op.events[0]["type"] == "market_added", op
        except BaseException:
            await self.stop()
            raise

    def _ready_address(self, name: str) -> list[str]:
        """A node's API address from its ready file, for when the Grapes do not say."""
        for node, np in self.cluster.procs.items():
            if self.cluster.api_name(node) == name and np.api_port:
                return [f"127.0.0.1:{np.api_port}"]
        return []

    async def ask(self, node: str, action: str, args: dict[str, Any] | None = None) -> Any:
        """A read request to ``node``'s API port directly (no Grape involved)."""
        assert self.rpc is not None
        return await self.rpc.request_peer(
            f"127.0.0.1:{self.cluster.procs[node].api_port}",
            self.cluster.api_name(node),
            {"action": action, "args": [args or {}]},
            timeout_ms=10_000,
        )

    async def converged(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Until every running node reports the same applied index and state hash, with
        everything committed applied; their statuses."""
        deadline = time.monotonic() + timeout_s
        while True:
            st = await self.status_direct()
            good = [s for s in st.values() if isinstance(s, dict)]
            if len(good) == len(st) and statuses_agree(good):
                return st
            if time.monotonic() > deadline:
                raise HistoryError(f"replicas did not converge in {timeout_s} s: {st}")
            await asyncio.sleep(0.1)

    def events_url(self, node_id: str) -> str:
        np = self.cluster.procs[node_id]
        return f"wss://127.0.0.1:{node_ports(np.log_path, node_id)['events']}/ws"

    def event_stream(self, node_id: str) -> EventStream:
        """A stream of ``node_id``'s publisher, pinned to its certificate (TLS 1.3)."""
        cert = unb64url(self.cluster.cert_of(node_id))
        return EventStream(self.events_url(node_id), pinned_client_context([cert]))

    async def stop(self) -> None:
        if self.stream is not None:
            await self.stream.stop()
        if self.rpc is not None:
            await self.rpc.close()
        if self._link is not None:
            await self._link.stop()
        await self.cluster.stop()

    async def command(
        self, node: str, kind: str, args: dict[str, Any], *, deadline_s: float = 60.0
    ) -> Op:
        """One recorded command through ``node``, its envelope retried until answered:
        signed by ``args["client"]`` (``harness`` by default; ``add_market``, ``admit``,
        ``promote`` and ``remove`` by the operator).  An account not registered yet is
        registered first (recorded too)."""
        who = self.cluster.keyring.operator if kind in OPERATOR_TYPES else "harness"
        cmd = {"type": kind, "client": who, **args}
        if kind not in ("register", "add_market"):
            await self.ensure_registered(node, str(cmd["client"]), deadline_s=deadline_s)
        return await self.send(self.signing.op(node, cmd), deadline_s=deadline_s)

    async def send(self, op: Op, *, deadline_s: float = 60.0) -> Op:
        """A signed op (e.g. one made with :attr:`signing`), recorded and sent.  To send an
        envelope again, pass :meth:`again` of its op."""
        assert self.client is not None
        self.ops.append(op)
        return await call(self.client, self.name, op, deadline_s=deadline_s)

    @staticmethod
    def again(op: Op, node: str | None = None) -> Op:
        """A new op for the same envelope (to ``node``, or the same node): a retry."""
        return Op(op.client, op.kind, dict(op.args), node or op.node, raw=op.raw)

    @property
    def registered(self) -> list[str]:
        """Accounts registered (or being registered) through the harness."""
        return sorted(self._registering)

    async def register(self, node: str, client: str, *, deadline_s: float = 60.0) -> Op:
        """A recorded ``register`` of ``client`` (signed by its keyring key), once."""
        task = self._registering.get(client)
        if task is None:
            task = asyncio.ensure_future(self._register(node, client, deadline_s))
            self._registering[client] = task
        return await asyncio.shield(task)

    async def _register(self, node: str, client: str, deadline_s: float) -> Op:
        op = await self.send(self.signing.register(node, client), deadline_s=deadline_s)
        if op.status != OK or not op.events or op.events[0]["type"] != "registered":
            raise HistoryError(f"{client} not registered: {op}")
        await self.wait_account(client)
        return op

    async def wait_account(self, client: str, timeout_s: float = 30.0) -> None:
        """Until every running node that answers knows account ``client``.  A node checks a
        command against its own applied state (SPEC §8): one that has not applied the
        register yet refuses the account's commands ``unknown_client``."""
        deadline = time.monotonic() + timeout_s
        for node, np in self.cluster.procs.items():
            while np.alive:
                try:
                    r = await self.ask(node, "account", {"client": client})
                except GrenacheError:
                    break  # down or cut off: it learns the account when it catches up
                if r.get("client") == client:
                    break
                if time.monotonic() > deadline:
                    raise HistoryError(f"{node} did not apply the register of {client}")
                await asyncio.sleep(0.02)

    async def ensure_registered(self, node: str, client: str, *, deadline_s: float = 60.0) -> None:
        """Register ``client`` unless it is the operator or was registered already."""
        if client != self.cluster.keyring.operator:
            await self.register(node, client, deadline_s=deadline_s)

    async def sentinel(self, node: str | None = None) -> int:
        """Commit one harmless command and wait until the stream has it: every earlier log
        entry is then in the stream.  Returns its log index."""
        assert self.stream is not None
        self._sentinels += 1
        node = node or self.stream_node
        op = await self.command(
            node, "cancel", {"client": "harness", "id": f"sentinel-{self._sentinels}"}
        )
        if op.status != OK or op.seq is None:
            raise HistoryError(f"sentinel not acknowledged: {op}")
        await self.stream.wait_seq(op.seq)
        return op.seq

    async def status_direct(self) -> dict[str, Any]:
        """Every running node's status (or the error its request raised)."""
        out: dict[str, Any] = {}
        for node, np in self.cluster.procs.items():
            if not np.alive:
                continue
            try:
                out[node] = await self.ask(node, "status", dict(STATUS_WITH_HASH))
            except GrenacheError as e:
                out[node] = f"{type(e).__name__}: {e}"
        return out

    async def books(self, node: str) -> dict[str, Any]:
        """``node``'s whole books (depth 0: every order)."""
        reply = await self.ask(node, "book", {"depth": 0})
        assert isinstance(reply, dict)
        return reply

    async def node_events(self, node: str, since: int = 0) -> tuple[int, list[dict[str, Any]]]:
        """(oldest index kept, events) of every command ``node`` applied after log index
        ``since``, by the ``events`` action (a bounded window of recent log entries, paged)."""
        first, out, start = -1, [], since
        while True:
            r = await self.ask(node, "events", {"since": since, "limit": 1_000})
            if first < 0:
                first = int(r["first"])
            # the stream's frames (a batch's events carry ``n``, as on the stream)
            out += [e for frame in r["entries"] for e in frame["events"]]
            if r["through"] <= since or r["through"] >= r["applied"]:
                return max(first, start + 1), out
            since = int(r["through"])

    async def verify(
        self,
        timeout_s: float = 60.0,
        *,
        nodes: list[str] | None = None,
        allow: frozenset[str] = frozenset(),
    ) -> tuple[CheckResult, dict[str, Any]]:
        """Converge, then check the whole history; every node's books equal the replay's.

        Violations of the ``allow``ed categories are left in the result for the caller."""
        assert self.stream is not None
        await self.sentinel()
        st = await self.converged(timeout_s)
        if self.stream.closed_early:
            raise HistoryError(f"the event stream ended early: {self.stream.closed_early}")
        applied = {s["applied"] for s in st.values()}
        ids = nodes if nodes is not None else list(st)
        replies = {n: await self.books(n) for n in ids}
        for n, r in replies.items():
            assert r["applied"] in applied, (n, r["applied"], applied)
        res = check(self.ops, self.stream.events, self.genesis_bytes, self.stream.times)
        res.assert_ok(allow)
        for n, r in replies.items():
            assert r["books"] == res.books, f"{n}'s books differ from the replay of the log"
        # every replica applied the same commands with the same events, not only the same
        # final state: each node's own record of what it applied equals the stream
        for n in ids:
            # from the stream's first entry on (before it: the operator admitting learners)
            start = int(self.stream.events[0]["seq"]) if self.stream.events else 1
            first, events = await self.node_events(n, start - 1)
            want = [e for e in self.stream.events if e["seq"] >= first]
            if events != want:
                diff = next(
                    (i for i, (a, b) in enumerate(zip(events, want, strict=False)) if a != b),
                    min(len(events), len(want)),
                )
                raise HistoryError(
                    f"{n} applied other events than the stream shows: from event {diff}, "
                    f"{events[diff : diff + 2]} / {want[diff : diff + 2]}"
                )
        return res, st


class ClientProcs:
    """Client processes (``python -m node.driver``), each placing through its own node."""

    def __init__(
        self,
        harness: Harness,
        assignments: list[tuple[str, str]],  # (node, client)
        ops_each: int,
        *,
        rate_per_s: float = 0.0,
        concurrency: int = 8,
        seed: int = 1,
        deadline_s: float = 60.0,
    ) -> None:
        self.harness = harness
        self.assignments = assignments
        self.ops_each = ops_each
        self.rate_per_s = rate_per_s
        self.concurrency = concurrency
        self.seed = seed
        self.deadline_s = deadline_s
        self.procs: list[asyncio.subprocess.Process] = []
        self.outs: list[Path] = []
        self.started_at = 0.0  # wall clock of the start signal

    async def start(self, timeout_s: float = 60.0) -> None:
        """Spawn every client and wait until each has reached its node."""
        c = self.harness.cluster
        assert c.base_dir is not None and c.genesis_path is not None
        for node, client in self.assignments:  # every account once, before its first order
            await self.harness.ensure_registered(node, client)
        path = [str(TESTS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        for i, (node, client) in enumerate(self.assignments):
            out = c.base_dir / f"client-{client}.json"
            errlog = (c.base_dir / f"client-{client}.log").open("ab")
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "node.driver",
                    "--grape",
                    ",".join(c.grape_urls),
                    "--cluster",
                    c.cluster,
                    "--genesis",
                    str(c.genesis_path),
                    "--salt",
                    c.keyring.salt,
                    "--node",
                    node,
                    "--client",
                    client,
                    "--ops",
                    str(self.ops_each),
                    "--seed",
                    str(self.seed * 1000 + i),
                    "--concurrency",
                    str(self.concurrency),
                    "--rate",
                    str(self.rate_per_s),
                    "--deadline",
                    str(self.deadline_s),
                    "--out",
                    str(out),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=errlog,
                    env=env,
                    cwd=str(TESTS_DIR),
                )
            finally:
                errlog.close()
            self.procs.append(proc)
            self.outs.append(out)
        try:
            async with asyncio.timeout(timeout_s):
                for proc in self.procs:
                    assert proc.stdout is not None
                    line = await proc.stdout.readline()
                    if line.strip() != b"READY":
                        raise RuntimeError(f"client process did not start: {line!r}")
        except BaseException:
            await self.aclose()
            raise

    def go(self) -> None:
        self.started_at = time.time()
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(b"GO\n")

    async def wait(self, timeout_s: float = 120.0) -> list[Op]:
        """Until every client finished; their ops join the harness' history."""
        try:
            async with asyncio.timeout(timeout_s):
                for proc in self.procs:
                    await proc.wait()
        finally:
            await self.aclose()
        ops: list[Op] = []
        for proc, out in zip(self.procs, self.outs, strict=True):
            if proc.returncode != 0 or not out.exists():
                log = out.with_suffix(".log")
                raise RuntimeError(f"client process failed ({proc.returncode}); see {log}")
            ops += [Op.from_json(d) for d in json.loads(out.read_text())]
        self.harness.ops += ops
        return ops

    def kill(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    async def aclose(self) -> None:
        """Kill whatever still runs (by PID) and reap it."""
        self.kill()
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()


def summary(ops: list[Op]) -> dict[str, int]:
    out: dict[str, int] = {}
    for op in ops:
        out[op.status] = out.get(op.status, 0) + 1
        out[op.kind] = out.get(op.kind, 0) + 1
    return out
