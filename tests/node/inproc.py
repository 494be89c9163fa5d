"""Whole nodes in one process: the real node code over ``grenache.fakes`` and a manual clock.

:class:`InProcCluster` starts N :class:`~grenex.node.lifecycle.Node` objects on one
:class:`~grenex.node.io.FakeIO` (one fake DHT, one fake network, one clock), talks to them
through a real :class:`~grenex.grenache.PeerRPCClient` over the fake network, and moves time
only when told (:meth:`InProcCluster.run`), so elections, forwarding, timeouts and snapshot
catch-up happen in milliseconds of wall time and the same way every run.

Trust (SPEC §8): the cluster's genesis and every key come from a :class:`~grenex.codec.signer.
Keyring`; the voters are the genesis' voters, and every learner is admitted by an operator
``admit`` (its key and certificate) once the cluster has a leader.  Commands are signed
envelopes (:meth:`InProcCluster.sign`, counter nonces: deterministic); :meth:`InProcCluster.
command` registers an account on its first use and waits until every node applied the
register (a node checks a command against its own applied state).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

from grenex.codec.api import service_names
from grenex.codec.genesis import parse_genesis
from grenex.codec.signer import Keyring, Signer
from grenex.grenache.errors import GrenacheError
from grenex.grenache.tls import b64url, make_self_signed
from grenex.node.config import NodeConfig
from grenex.node.io import FakeIO, settle
from grenex.node.node import Node

T = TypeVar("T")

GRAPE = "http://grape-1"


class InProcCluster:
    def __init__(self, voters: int = 3, learners: int = 0, **overrides: Any) -> None:
        self.io = FakeIO()
        self.voter_ids = [f"n{i + 1}" for i in range(voters)]
        self.learner_ids = [f"n{voters + i + 1}" for i in range(learners)]
        self.keyring = Keyring("inproc")
        self.genesis_bytes = self.keyring.genesis("main", self.voter_ids)
        self.genesis = parse_genesis(self.genesis_bytes)
        self.signer = Signer(self.genesis.cluster_id, self.keyring)
        self.base = NodeConfig(
            node_id="n1",
            grapes=(GRAPE,),
            snapshot_in_background=False,
            genesis=self.genesis,
            **overrides,
        )
        self.nodes: dict[str, Node] = {}
        self.admitted: set[str] = set()  # learners the operator admitted
        self.registered: set[str] = set()
        self.link = self.io.link([GRAPE], 2_000)
        self.client = self.io.rpc_client(self.link, 5_000)

    def config(self, node_id: str, **changes: Any) -> NodeConfig:
        voter = node_id in self.voter_ids
        return replace(
            self.base,
            node_id=node_id,
            key=self.keyring.node_key(node_id),
            voters=tuple(self.voter_ids) if voter else (),
            join=not voter,
            **changes,
        )

    async def start(self) -> None:
        await self.link.start()
        for nid in self.voter_ids:
            await self.start_node(nid)
        for nid in self.learner_ids:
            await self.start_node(nid)

    async def start_node(self, node_id: str, **changes: Any) -> Node:
        """Start ``node_id``; a learner the operator has not admitted yet is admitted (the
        clock runs until a leader is known)."""
        node = Node(self.config(node_id, **changes), self.io)
        await node.start()
        self.nodes[node_id] = node
        if node_id not in self.voter_ids and node_id not in self.admitted:
            await self.admit(node_id)
        return node

    # -- signed commands (SPEC §8) ------------------------------------------------------------

    def cert_of(self, node_id: str) -> str:
        """The node's self-signed certificate (base64url DER) on its key."""
        return b64url(make_self_signed(self.keyring.node_key(node_id).seed, node_id))

    def sign(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """``cmd`` (with ``type`` and ``client``) as a signed envelope (a JSON object); the
        same envelope sent again is a retry."""
        env: dict[str, Any] = json.loads(self.signer.command(cmd))
        return env

    def register_envelope(self, client: str) -> dict[str, Any]:
        env: dict[str, Any] = json.loads(self.signer.register(client))
        return env

    async def admit(self, node_id: str, via: str | None = None) -> Any:
        """The operator admits ``node_id`` (its key and certificate) as a learner."""
        self.admitted.add(node_id)
        key = self.keyring.node_key(node_id).public_key
        cmd = {"type": "admit", "node": node_id, "key": key, "cert": self.cert_of(node_id)}
        return await self.operator(via or await self.wait_leader(), cmd)

    async def operator(self, node_id: str, cmd: dict[str, Any]) -> Any:
        """A command signed by the genesis operator (``add_market``, ``admit``…)."""
        env = self.sign({**cmd, "client": self.keyring.operator})
        return await self.call(node_id, str(cmd["type"]), env)

    async def register(self, client: str, via: str | None = None) -> Any:
        """Register ``client`` (its keyring key), then run until every node applied it."""
        self.registered.add(client)
        node = via or await self.wait_leader()
        r = await self.call(node, "register", self.register_envelope(client))
        assert r["events"][0]["type"] == "registered", r

        def everywhere() -> bool:
            return all(
                n.replica is not None and n.replica.state.auth.account_key(client) is not None
                for n in self.nodes.values()
            )

        await self.until(everywhere)
        return r

    async def command(self, node_id: str, cmd: dict[str, Any]) -> Any:
        """``cmd`` signed by its ``client`` (registered first if needed; ``add_market`` by
        the operator), answered while the clock runs."""
        if cmd["type"] == "add_market":
            return await self.operator(node_id, cmd)
        client = str(cmd["client"])
        if client != self.keyring.operator and client not in self.registered:
            await self.register(client)
        return await self.call(node_id, str(cmd["type"]), self.sign(cmd))

    async def command_error(self, node_id: str, cmd: dict[str, Any]) -> str:
        client = str(cmd["client"])
        if client != self.keyring.operator and client not in self.registered:
            await self.register(client)
        return await self.call_error(node_id, str(cmd["type"]), self.sign(cmd))

    async def kill(self, node_id: str) -> None:
        """The node dies at once (no hand-over): its services refuse connections."""
        node = self.nodes.pop(node_id)
        await node.stop(graceful=False)

    async def stop(self) -> None:
        for nid in list(self.nodes):
            await self.nodes.pop(nid).stop(graceful=False)
        await self.client.close()
        await self.link.stop()

    async def run(self, seconds: float, step_s: float = 0.05) -> None:
        """Move the clock by ``seconds``, a tick at a time."""
        steps = max(1, round(seconds / step_s))
        for _ in range(steps):
            await self.io.manual.advance(step_s)

    async def until(
        self, cond: Callable[[], bool], seconds_max: float = 30.0, step_s: float = 0.05
    ) -> float:
        """Run until ``cond()`` holds; returns the simulated seconds it took."""
        waited = 0.0
        while not cond():
            if waited >= seconds_max:
                raise AssertionError(f"condition not met in {seconds_max} simulated s")
            await self.io.manual.advance(step_s)
            waited += step_s
        return waited

    async def during(self, aw: Awaitable[T], seconds_max: float = 30.0) -> T:
        """Await ``aw`` while the clock runs (a request that needs ticks to be answered)."""
        task = asyncio.ensure_future(aw)
        waited = 0.0
        while not task.done():
            if waited >= seconds_max:
                task.cancel()
                raise AssertionError(f"no answer in {seconds_max} simulated s")
            await self.io.manual.advance(0.05)
            waited += 0.05
        return task.result()

    def leader(self) -> str | None:
        for nid in sorted(self.nodes):
            r = self.nodes[nid].replica
            if r is not None and r.raft.role.name == "LEADER":
                return nid
        return None

    async def wait_leader(self, seconds_max: float = 30.0) -> str:
        await self.until(lambda: self.leader() is not None, seconds_max)
        leader = self.leader()
        assert leader is not None
        return leader

    async def wait_leader_other_than(self, old: str, seconds_max: float = 30.0) -> str:
        def other() -> bool:
            for nid in sorted(self.nodes):
                r = self.nodes[nid].replica
                if nid != old and r is not None and r.raft.role.name == "LEADER":
                    return True
            return False

        await self.until(other, seconds_max)
        return next(
            nid
            for nid in sorted(self.nodes)
            if nid != old
            and self.nodes[nid].replica is not None
            and self.nodes[nid].replica.raft.role.name == "LEADER"  # type: ignore[union-attr]
        )

    def applied(self) -> dict[str, int]:
        return {nid: n.replica.applied_index for nid, n in self.nodes.items() if n.replica}

    async def request(self, node_id: str, action: str, args: dict[str, Any]) -> Any:
        name = service_names("main", node_id)["node"]
        return await self.client.request(name, {"action": action, "args": [args]})

    async def call(self, node_id: str, action: str, args: dict[str, Any]) -> Any:
        """A request answered while the clock runs."""
        return await self.during(self.request(node_id, action, args))

    async def call_error(self, node_id: str, action: str, args: dict[str, Any]) -> str:
        try:
            reply = await self.call(node_id, action, args)
        except GrenacheError as e:
            return str(e)
        raise AssertionError(f"expected an error, got {reply!r}")

    def hashes(self) -> dict[str, str]:
        """Every live replica's exact state hash (computed here, for the test's checks)."""
        return {nid: n.replica.state_hash() for nid, n in self.nodes.items() if n.replica}

    async def converged(self, seconds_max: float = 30.0) -> None:
        def same() -> bool:
            applied = set(self.applied().values())
            return len(applied) == 1

        await self.until(same, seconds_max)
        await settle()
        assert len(set(self.hashes().values())) == 1, self.hashes()


@contextlib.asynccontextmanager
async def running(**kwargs: Any) -> AsyncIterator[InProcCluster]:
    """An :class:`InProcCluster` (``kwargs`` as its constructor's), started, and stopped on
    the way out."""
    c = InProcCluster(**kwargs)
    await c.start()
    try:
        yield c
    finally:
        await c.stop()
