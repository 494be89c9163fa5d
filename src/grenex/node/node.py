"""The exchange node: one replica of the books, driven over Grenache.

Theory of operation
-------------------
A node owns a :class:`~grenex.replica.Replica` (consensus core + storage + engine) and is the
only layer with sockets, disk and a clock.  One asyncio task, the **driver**, is the only code
that touches the replica; everything else talks to it through queues and one wake-up event:

* the **ticker** counts ticks (``tick_ms``) for the core's clock;
* the **peer service** (``grenex:<cluster>:peer:<id>``) decodes consensus messages into the
  inbox, and on the leader takes forwarded commands and join requests;
* the **client API** (``grenex:<cluster>:node:<id>`` and ``grenex:<cluster>:nodes``) turns a
  ``place``/``cancel``/``amend``/``add_market`` into canonical command bytes and a future.

Each turn the driver steps the inbox, proposes what waits (all of it in one batch), then runs
the Ready contract: **persist** (in a worker thread for disk storage: one fsync covers the
whole batch) → **send** (per-peer channels batch everything queued into one request) →
**apply** (the engine runs every committed command) → advance.  Outcomes are matched to their
futures by ``(index, term)``: a command is answered only after it is committed *and applied
here*, so the answer's events are already in this node's books (read your writes).

A follower forwards commands to the leader in batches; the leader proposes them and answers
with their ``(index, term)``; the follower then waits for its own apply of that entry.  If the
entry at that index turns out to have another term (leadership changed), the outcome is
unknown and the client gets ``ERR_GRENEX_UNAVAILABLE`` — retrying with the same id is safe,
because the replica's session table answers a retried command with its first outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections import OrderedDict, deque
from typing import Any

import msgspec

from grenex.codec import encode_event, encode_events
from grenex.consensus import (
    Config,
    EntryKind,
    InvalidConfChangeError,
    MemoryStorage,
    Message,
    NotLeader,
    ProposalDroppedError,
    Ready,
    Role,
    Storage,
    bootstrap,
)
from grenex.engine import JsonNumber, Trade
from grenex.grenache import GrenacheError, Link, PeerPub, PeerRPCClient, PeerRPCServer
from grenex.grenache.errors import RemoteError, TransportError
from grenex.node import api
from grenex.node.api import BadRequest, Unavailable
from grenex.node.config import NodeConfig, service_names
from grenex.node.snapshotter import BackgroundSnapshots
from grenex.node.transport import PeerTransport, decode_batch, sign, verify
from grenex.replica import Applied, Proposals, Replica, ReplicaConfig

__all__ = ["Node", "NodeError"]

log = logging.getLogger("grenex.node")

_ROLE_NAMES = {
    Role.FOLLOWER: "follower",
    Role.PRE_CANDIDATE: "pre_candidate",
    Role.CANDIDATE: "candidate",
    Role.LEADER: "leader",
}


def _reply(applied: Applied) -> dict[str, Any]:
    """The answer to one applied command: its seq and its events (already JSON: the reply
    frame embeds the bytes instead of building and re-encoding a dict per event)."""
    events = applied.events
    seq = events[0].seq if events else applied.index
    reply: dict[str, Any] = {"seq": seq, "events": msgspec.Raw(encode_events(events))}
    if applied.duplicate:
        reply["duplicate"] = True  # answered from the session table: the first outcome
    return reply


class NodeError(Exception):
    """A node cannot start or run (bad configuration, storage, no Grape)."""


class _TokenBucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class Node:
    """One grenex node.  ``await node.start()``, then ``await node.stop()``."""

    def __init__(self, config: NodeConfig) -> None:
        self.cfg = config
        self.names = service_names(config.cluster, config.node_id)
        self.storage: Storage | None = None
        self.replica: Replica | None = None
        self.snapshots: BackgroundSnapshots | None = None
        self.link: Link | None = None
        self.peers: PeerRPCClient | None = None
        self.api_server: PeerRPCServer | None = None
        self.peer_server: PeerRPCServer | None = None
        self.pub: PeerPub | None = None
        self.transport: PeerTransport | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._leader_seen = asyncio.Event()
        self._stopped = asyncio.Event()
        self._ticks_due = 0
        self._inbox: deque[Message] = deque()
        self._reports: deque[tuple[str, bool | None]] = deque()  # (peer, snapshot ok | None)
        # commands this node proposes itself (it leads): (data, future of Applied)
        self._to_propose: list[tuple[bytes, asyncio.Future[Applied]]] = []
        # commands to forward to the leader
        self._to_forward: deque[tuple[bytes, asyncio.Future[Applied]]] = deque()
        self._forward_wake = asyncio.Event()
        # forwarded to us as leader: (datas, future of (first index, term))
        self._fwd_props: list[tuple[list[bytes], asyncio.Future[tuple[int, int]]]] = []
        self._conf_requests: list[tuple[str, str, asyncio.Future[None]]] = []  # (op, node, fut)
        self._transfer_to: str | None = None
        self._proposals: Proposals[asyncio.Future[Applied]] = Proposals(
            pending_max=config.commands_pending_max * 2
        )
        self._recent: OrderedDict[int, Applied] = OrderedDict()
        self._pending = 0
        self._buckets: OrderedDict[str, _TokenBucket] = OrderedDict()
        self._trades: deque[Trade] = deque(maxlen=config.trades_kept_max)
        self._hash_cache: tuple[int, str] = (-1, "")
        self._role = Role.FOLLOWER
        self._leader: str | None = None
        self.started_at = time.monotonic()

    # ------------------------------------------------------------------ lifecycle

    def _open_storage(self) -> Storage:
        cfg = self.cfg
        if cfg.data_dir is None:
            return MemoryStorage()
        from grenex.storage import DiskStorage, StorageError

        try:
            cfg.data_dir.mkdir(parents=True, exist_ok=True)
            return DiskStorage(cfg.data_dir)
        except (OSError, StorageError) as e:
            raise NodeError(f"cannot open the data directory {cfg.data_dir}: {e}") from None

    async def start(self) -> None:
        cfg = self.cfg
        storage = self._open_storage()
        self.storage = storage
        if storage.last_index() == 0 and storage.snapshot().index == 0:
            if cfg.voters:
                if cfg.node_id not in cfg.voters:
                    raise NodeError(
                        f"{cfg.node_id} is not among the voters {','.join(cfg.voters)}; "
                        "a node that is not a founding voter starts with --join"
                    )
                bootstrap(storage, list(cfg.voters))
            elif not cfg.join:
                raise NodeError("empty storage: give --voters to start a cluster or --join")
        raft_cfg = Config(
            id=cfg.node_id,
            election_timeout_ticks=cfg.election_timeout_ticks,
            heartbeat_interval_ticks=cfg.heartbeat_interval_ticks,
        )
        self.replica = Replica(
            ReplicaConfig(
                raft=raft_cfg,
                snapshot_interval_entries=cfg.snapshot_interval_entries,
                compaction_retain_entries=cfg.compaction_retain_entries,
                auto_snapshot=False,  # self.snapshots takes them, between driver steps
            ),
            storage,
            random.Random(os.urandom(16)),  # the shell may use real randomness
        )
        self.snapshots = BackgroundSnapshots(
            self.replica, self._wake, fork=cfg.snapshot_in_background
        )
        self.link = Link(list(cfg.grapes), request_timeout_ms=cfg.grape_request_timeout_ms)
        await self.link.start()
        self.peers = PeerRPCClient(self.link, request_timeout_ms=cfg.peer_request_timeout_ms)
        self.transport = PeerTransport(
            cfg.node_id,
            self.peers,
            lambda node: service_names(cfg.cluster, node)["peer"],
            self._on_send_failure,
            lambda peer: self._report(peer, True),
            queue_bytes_max=cfg.peer_queue_bytes_max,
            batch_bytes_max=cfg.peer_batch_bytes_max,
            inflight_max=cfg.peer_requests_inflight_max,
            request_timeout_ms=cfg.peer_request_timeout_ms,
            snapshot_timeout_ms=cfg.peer_snapshot_timeout_ms,
            secret=cfg.secret,
        )
        self.api_server = PeerRPCServer(
            self._api,
            host=cfg.host,
            port=cfg.port,
            body_max_bytes=cfg.api_body_max_bytes,
            concurrency_max=cfg.api_concurrency_max,
            handler_timeout_ms=cfg.command_timeout_ms + 5_000,
            float_hook=JsonNumber,
        )
        self.peer_server = PeerRPCServer(
            self._peer,
            host=cfg.host,
            port=cfg.peer_port,
            body_max_bytes=cfg.peer_body_max_bytes,
            handler_timeout_ms=cfg.command_timeout_ms + 5_000,
            websocket=False,
        )
        self.pub = PeerPub(
            self.link,
            None,
            host=cfg.host,
            port=cfg.events_port,
            queue_max=cfg.events_queue_max,
        )
        try:
            await self.api_server.start()
            await self.peer_server.start()
            await self.pub.start()
        except OSError as e:
            await self._close_io()
            raise NodeError(f"cannot listen on {cfg.host}: {e}") from None
        self._tasks = [
            asyncio.create_task(self._drive(), name="driver"),
            asyncio.create_task(self._tick(), name="ticker"),
            asyncio.create_task(self._forward(), name="forwarder"),
        ]
        try:
            await self._announce()
        except GrenacheError as e:
            await self.stop(graceful=False)
            raise NodeError(
                f"cannot announce on the Grapes ({', '.join(cfg.grapes)}): {e}"
            ) from None
        if cfg.join:
            self._tasks.append(asyncio.create_task(self._join(), name="joiner"))
        log.info(
            "node %s up: api %s, peer %s, events %s",
            cfg.node_id,
            self.api_server.port,
            self.peer_server.port,
            self.pub.port,
        )

    async def _announce(self) -> None:
        link, names = self.link, self.names
        assert link and self.api_server and self.peer_server and self.pub
        # the peer endpoint first: others can reach us before clients do
        await link.start_announcing(names["peer"], self.peer_server.port)
        await link.start_announcing(names["node"], self.api_server.port)
        await link.start_announcing(names["nodes"], self.api_server.port)
        await link.start_announcing(names["events"], self.pub.port)
        await link.start_announcing(names["node_events"], self.pub.port)

    async def stop(self, graceful: bool = True) -> None:
        """Stop serving; a leader first hands leadership to another voter."""
        if self._stopped.is_set():
            return
        if graceful and self.replica is not None and self._role == Role.LEADER:
            await self._hand_over()
        self._stopped.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.snapshots is not None:
            await self.snapshots.close()
        await self._close_io()
        for _, fut in list(self._to_forward) + self._to_propose:
            if not fut.done():
                fut.set_exception(Unavailable("the node is stopping; retry with the same id"))
        close = getattr(self.storage, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):
                close()

    async def _close_io(self) -> None:
        for closer in (
            self.api_server.stop if self.api_server else None,
            self.peer_server.stop if self.peer_server else None,
            self.pub.stop if self.pub else None,
            self.transport.close if self.transport else None,
            self.peers.close if self.peers else None,
            self.link.stop if self.link else None,
        ):
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def _hand_over(self) -> None:
        """Leadership transfer to the most up-to-date other voter (graceful shutdown)."""
        replica = self.replica
        assert replica is not None
        voters = [v for v in replica.raft.conf_state().voters if v != self.cfg.node_id]
        if not voters:
            return
        progress = replica.raft.progress()
        best = max(voters, key=lambda v: (progress[v].match if v in progress else -1, v))
        self._transfer_to = best
        self._wake.set()
        deadline = time.monotonic() + self.cfg.shutdown_transfer_ms / 1000
        while self._role == Role.LEADER and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        log.info("handed leadership to %s: %s", best, self._role != Role.LEADER)

    # ------------------------------------------------------------------ the driver

    async def _tick(self) -> None:
        period = self.cfg.tick_ms / 1000
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += period
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            self._ticks_due += 1
            self._wake.set()

    async def _drive(self) -> None:
        replica = self.replica
        assert replica is not None
        durable = self.cfg.data_dir is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                self._inputs(replica)
                while True:
                    rd = replica.ready()
                    if rd is None:
                        break
                    if durable and (rd.entries or rd.hard_state or rd.snapshot):
                        await asyncio.to_thread(replica.persist, rd)
                    else:
                        replica.persist(rd)
                    assert self.transport is not None
                    for m in rd.messages:
                        self.transport.send(m)
                    applied = replica.apply(rd)
                    self._applied(replica, rd, applied)
                assert self.snapshots is not None
                self.snapshots.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A broken invariant in the pure core: stop rather than diverge.
                log.exception("driver failed; stopping the node")
                self._stopped.set()
                raise

    def _inputs(self, replica: Replica) -> None:
        """Everything that happened since the last turn, in a fixed order."""
        while self._ticks_due:
            self._ticks_due -= 1
            replica.tick()
        inbox = self._inbox
        while inbox:
            replica.step(inbox.popleft())
        raft = replica.raft
        while self._reports:
            peer, ok = self._reports.popleft()
            if ok is None:
                raft.report_unreachable(peer)
            else:
                raft.report_snapshot(peer, ok)
        if self._transfer_to is not None:
            with contextlib.suppress(NotLeader, InvalidConfChangeError):
                replica.transfer_leadership(self._transfer_to)
            self._transfer_to = None
        self._propose(replica)
        self._update_role(replica)

    def _propose(self, replica: Replica) -> None:
        if self._to_propose:
            batch, self._to_propose = self._to_propose, []
            live = [(d, f) for d, f in batch if not f.done()]
            if live:
                try:
                    first, term = replica.raft.propose_many([d for d, _ in live])
                except NotLeader:
                    self._to_forward.extend(live)
                    self._forward_wake.set()
                except ProposalDroppedError as e:
                    for _, f in live:
                        f.set_exception(Unavailable(f"proposal refused ({e}); retry"))
                else:
                    for i, (_, f) in enumerate(live):
                        self._await_outcome(replica, first + i, term, f)
        if self._fwd_props:
            fwd, self._fwd_props = self._fwd_props, []
            for datas, at_fut in fwd:
                if at_fut.done():
                    continue
                try:
                    at_fut.set_result(replica.raft.propose_many(datas))
                except (NotLeader, ProposalDroppedError) as e:
                    at_fut.set_exception(e)
        if self._conf_requests:
            reqs, self._conf_requests = self._conf_requests, []
            for op, node, done in reqs:
                if done.done():
                    continue
                try:
                    if op == "add_learner":
                        replica.add_learner(node)
                    elif op == "remove":
                        replica.remove(node)
                    else:
                        replica.promote(node)
                    done.set_result(None)
                except (NotLeader, ProposalDroppedError, InvalidConfChangeError) as e:
                    done.set_exception(e)

    def _await_outcome(
        self, replica: Replica, index: int, term: int, fut: asyncio.Future[Applied]
    ) -> None:
        """Match ``fut`` to the entry (index, term); it may already have been applied."""
        if index <= replica.applied_index:
            a = self._recent.get(index)
            if not fut.done():
                if a is not None and a.term == term:
                    fut.set_result(a)
                else:
                    fut.set_exception(Unavailable("outcome unknown; retry with the same id"))
            return
        older = self._proposals.add(index, term, fut)
        if older is not None and not older.done():
            older.set_exception(Unavailable("outcome unknown; retry with the same id"))

    def _update_role(self, replica: Replica) -> None:
        st = replica.raft.status()
        self._role = st.role
        if st.leader != self._leader:
            self._leader = st.leader
        if st.leader is not None:
            self._leader_seen.set()
            if self._to_forward:
                self._forward_wake.set()
        else:
            self._leader_seen.clear()

    def _applied(self, replica: Replica, rd: Ready, applied: list[Applied]) -> None:
        pub = self.pub
        subscribed = pub is not None and pub.subscribers > 0
        recent = self._recent
        trades = self._trades
        for a in applied:
            recent[a.index] = a
            if a.kind != EntryKind.NORMAL or a.duplicate:
                continue
            for ev in a.events:
                if subscribed:
                    assert pub is not None
                    pub.pub(encode_event(ev).decode())
                if type(ev) is Trade:
                    trades.append(ev)
        while len(recent) > self.cfg.recent_outcomes_max:
            recent.popitem(last=False)
        for waiter, outcome in self._proposals.resolve(applied, replica.applied_index):
            if waiter.done():
                continue
            if outcome is None:
                waiter.set_exception(Unavailable("outcome unknown; retry with the same id"))
            else:
                waiter.set_result(outcome)
        self._update_role(replica)

    # ------------------------------------------------------------------ forwarding

    async def _forward(self) -> None:
        """Ship queued commands to the leader, in batches, a few batches in flight."""
        cfg = self.cfg
        slots = asyncio.Semaphore(cfg.forwards_inflight_max)
        while True:
            await self._forward_wake.wait()
            self._forward_wake.clear()
            while self._to_forward:
                leader = self._leader
                if leader is None:
                    try:
                        await asyncio.wait_for(self._leader_seen.wait(), cfg.leader_wait_ms / 1000)
                    except TimeoutError:
                        self._fail_forward_queue("no leader is known; retry with the same id")
                    continue
                if leader == cfg.node_id:
                    self._to_propose.extend(self._to_forward)
                    self._to_forward.clear()
                    self._wake.set()
                    break
                batch: list[tuple[bytes, asyncio.Future[Applied]]] = []
                while self._to_forward and len(batch) < cfg.forward_batch_max:
                    item = self._to_forward.popleft()
                    if not item[1].done():
                        batch.append(item)
                if batch:
                    await slots.acquire()
                    task = asyncio.create_task(self._send_forward(leader, batch))
                    task.add_done_callback(lambda _t: slots.release())

    def _fail_forward_queue(self, why: str) -> None:
        while self._to_forward:
            _, fut = self._to_forward.popleft()
            if not fut.done():
                fut.set_exception(Unavailable(why))

    async def _send_forward(
        self, leader: str, batch: list[tuple[bytes, asyncio.Future[Applied]]]
    ) -> None:
        assert self.peers is not None and self.replica is not None
        cfg = self.cfg
        payload = sign(
            {"t": "fwd", "from": cfg.node_id, "cmds": [d.decode() for d, _ in batch]}, cfg.secret
        )
        try:
            reply = await self.peers.request(
                service_names(cfg.cluster, leader)["peer"],
                payload,
                timeout_ms=cfg.command_timeout_ms,
            )
            at = reply.get("at") if isinstance(reply, dict) else None
            if not (isinstance(at, list) and len(at) == 2 and all(type(x) is int for x in at)):
                raise RemoteError("ERR_GRENEX_BAD_REPLY", None)
        except (RemoteError, TransportError) as e:
            delivered = getattr(e, "delivered", True)
            message = str(e)
            if "NOT_LEADER" in message or not delivered:
                # nothing was proposed: queue again for whoever leads now
                for item in batch:
                    if not item[1].done():
                        self._to_forward.append(item)
                await asyncio.sleep(self.cfg.tick_ms / 1000)
                self._forward_wake.set()
                return
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(Unavailable(f"forwarding failed ({message[:120]})"))
            return
        except GrenacheError as e:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(Unavailable(f"forwarding failed ({str(e)[:120]})"))
            return
        first, term = at
        for i, (_, fut) in enumerate(batch):
            self._await_outcome(self.replica, first + i, term, fut)

    # ------------------------------------------------------------------ joining

    async def _join(self) -> None:
        """Until this node is a member: ask the leader to add it as a learner."""
        assert self.peers is not None and self.replica is not None
        cfg = self.cfg
        while cfg.node_id not in self.replica.raft.conf_state().members():
            try:
                leader = await self._find_leader()
                if leader is not None:
                    await self.peers.request(
                        service_names(cfg.cluster, leader)["peer"],
                        sign({"t": "join", "from": cfg.node_id}, cfg.secret),
                        timeout_ms=cfg.peer_request_timeout_ms,
                    )
            except GrenacheError as e:
                log.info("join: %s", e)
            await asyncio.sleep(1.0)
        log.info("%s is a member", cfg.node_id)

    async def _find_leader(self) -> str | None:
        assert self.peers is not None
        replies = await self.peers.map(self.names["nodes"], {"action": "status", "args": [{}]})
        for r in replies:
            if r.ok and isinstance(r.result, dict) and isinstance(r.result.get("leader"), str):
                leader: str = r.result["leader"]
                if leader != self.cfg.node_id:
                    return leader
        return None

    # ------------------------------------------------------------------ peer service

    def _report(self, peer: str, ok: bool | None) -> None:
        self._reports.append((peer, ok))
        self._wake.set()

    def _on_send_failure(self, peer: str, snapshot: bool) -> None:
        self._report(peer, False if snapshot else None)

    async def _peer(self, key: str, payload: Any) -> Any:
        if type(payload) is not dict:
            raise BadRequest("peer payload must be an object")
        if not verify(payload, self.cfg.secret):
            raise BadRequest("peer payload not signed with this cluster's secret")
        kind = payload.get("t")
        if kind == "raft":
            try:
                msgs = decode_batch(payload, self.cfg.inbox_messages_max)
            except (ValueError, TypeError, msgspec.DecodeError) as e:
                raise BadRequest(f"malformed consensus batch: {str(e)[:200]}") from None
            if len(self._inbox) + len(msgs) > self.cfg.inbox_messages_max:
                return {"dropped": len(msgs)}  # overloaded: Raft will send again
            me = self.cfg.node_id
            self._inbox.extend(m for m in msgs if m.dst == me)
            self._wake.set()
            return {"ok": len(msgs)}
        if kind == "fwd":
            return await self._take_forwarded(payload)
        if kind == "join":
            node = payload.get("from")
            if type(node) is not str or api.name_or_none({"n": node}, "n") is None:
                raise BadRequest("join needs a node name")
            return await self._conf_change("add_learner", node)
        raise BadRequest("unknown peer message")

    async def _take_forwarded(self, payload: dict[str, Any]) -> Any:
        cmds = payload.get("cmds")
        if (
            type(cmds) is not list
            or not cmds
            or len(cmds) > self.cfg.forward_batch_max
            or any(type(c) is not str or len(c) > self.cfg.command_bytes_max for c in cmds)
        ):
            raise BadRequest("cmds must be a list of command strings")
        if self._role != Role.LEADER:
            raise RemoteError(f"ERR_GRENEX_NOT_LEADER: {self._leader or ''}", None)
        fut: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._fwd_props.append(([c.encode() for c in cmds], fut))
        self._wake.set()
        try:
            first, term = await asyncio.wait_for(fut, self.cfg.command_timeout_ms / 1000)
        except NotLeader as e:
            raise RemoteError(f"ERR_GRENEX_NOT_LEADER: {e}", None) from None
        except ProposalDroppedError as e:
            raise Unavailable(f"proposal refused ({e}); retry") from None
        return {"at": [first, term]}

    async def _conf_change(self, op: str, node: str) -> Any:
        replica = self.replica
        assert replica is not None
        conf = replica.raft.conf_state()
        if op == "add_learner" and node in conf.members():
            return {"ok": True, "already": True}
        if self._role != Role.LEADER:
            raise RemoteError(f"ERR_GRENEX_NOT_LEADER: {self._leader or ''}", None)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._conf_requests.append((op, node, fut))
        self._wake.set()
        try:
            await asyncio.wait_for(fut, self.cfg.command_timeout_ms / 1000)
        except (NotLeader, ProposalDroppedError, InvalidConfChangeError) as e:
            raise Unavailable(f"{op} {node}: {e}") from None
        return {"ok": True}

    # ------------------------------------------------------------------ client API

    async def _api(self, key: str, payload: Any) -> Any:
        req = api.parse_request(payload)
        action = req.action
        if action in api.COMMAND_ACTIONS:
            return await self._command(req)
        if action == api.BATCH_ACTION:
            return await self._batch(req)
        if action == "book":
            return self._book(req.args)
        if action == "trades":
            return self._trades_reply(req.args)
        if action == "events":
            return self._events_reply(req.args)
        return self.status()

    def _rate_ok(self, client: str) -> bool:
        cfg = self.cfg
        now = time.monotonic()
        b = self._buckets.get(client)
        if b is None:
            b = self._buckets[client] = _TokenBucket(cfg.client_burst, now)
            if len(self._buckets) > cfg.client_buckets_max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
            b.tokens = min(cfg.client_burst, b.tokens + (now - b.stamp) * cfg.client_rate_per_s)
            b.stamp = now
        if b.tokens < 1:
            return False
        b.tokens -= 1
        return True

    def _submit(self, req: api.Request) -> asyncio.Future[Applied]:
        """Queue one command for the log; its future resolves when it is applied here."""
        cfg = self.cfg
        data = api.command_bytes(req, cfg.command_bytes_max)
        client = api.client_of(req.args)
        if client is not None and not self._rate_ok(client):
            raise Unavailable(f"rate limit for client {client}; retry later")
        if self._pending >= cfg.commands_pending_max:
            raise Unavailable("node overloaded; retry later")
        fut: asyncio.Future[Applied] = asyncio.get_running_loop().create_future()
        self._pending += 1
        fut.add_done_callback(self._one_less)
        if self._role == Role.LEADER:
            self._to_propose.append((data, fut))
            self._wake.set()
        else:
            self._to_forward.append((data, fut))
            self._forward_wake.set()
        return fut

    def _one_less(self, _fut: asyncio.Future[Applied]) -> None:
        self._pending -= 1

    async def _outcome(self, fut: asyncio.Future[Applied]) -> Any:
        ms = self.cfg.command_timeout_ms
        try:
            applied = await asyncio.wait_for(fut, ms / 1000)
        except TimeoutError:
            raise self._late() from None
        return _reply(applied)

    def _late(self) -> Unavailable:
        ms = self.cfg.command_timeout_ms
        return Unavailable(f"not applied within {ms} ms; retry with the same id")

    async def _command(self, req: api.Request) -> Any:
        return await self._outcome(self._submit(req))

    async def _batch(self, req: api.Request) -> Any:
        """Each command of a batch is its own log entry with its own outcome (not atomic):
        ``{"results": [{"seq", "events"} | {"error": "ERR_GRENEX_…"}, ...]}`` in order.

        One wait (and one timer) for the whole batch, not a task per command."""
        reqs = api.batch_requests(req, self.cfg.batch_commands_max)
        futs: list[asyncio.Future[Applied] | Exception] = []
        for r in reqs:
            try:
                futs.append(self._submit(r))
            except (BadRequest, Unavailable) as e:
                futs.append(e)
        live = [f for f in futs if isinstance(f, asyncio.Future)]
        ms = self.cfg.command_timeout_ms
        try:
            if live:
                await asyncio.wait(live, timeout=ms / 1000)
        finally:
            for fut in live:
                if not fut.done():
                    fut.cancel()  # as wait_for would: the outcome is no longer awaited here
        results: list[Any] = []
        for f in futs:
            if isinstance(f, Exception):
                results.append({"error": str(f)})
            elif f.cancelled():
                results.append({"error": str(self._late())})
            elif (exc := f.exception()) is not None:
                if not isinstance(exc, (Unavailable, BadRequest)):
                    raise exc
                results.append({"error": str(exc)})
            else:
                results.append(_reply(f.result()))
        return {"results": results}

    def _book(self, args: dict[str, Any]) -> Any:
        replica = self.replica
        assert replica is not None
        market = api.name_or_none(args, "market")
        depth = api.int_or_default(args, "depth", 0, 0, 1 << 30)  # orders per side; 0: all
        books = replica.state.engine.books(market)
        if depth:
            for b in books:
                b["bids"] = b["bids"][:depth]
                b["asks"] = b["asks"][:depth]
        return {"applied": replica.applied_index, "books": books}

    def _trades_reply(self, args: dict[str, Any]) -> Any:
        """Without ``since``: the newest ``limit`` trades.  With ``since``: the oldest
        ``limit`` trades after that seq, and ``more`` when others follow (to page forward)."""
        market = api.name_or_none(args, "market")
        since = api.int_or_default(args, "since", -1, 0, 1 << 62)
        limit = api.int_or_default(args, "limit", 100, 1, self.cfg.trades_reply_max)
        trades = [
            t for t in self._trades if t.seq > since and (market is None or t.market == market)
        ]
        more = False
        if since < 0:
            out = trades[-limit:]
        else:
            # a page never ends inside a log entry: its trades share one seq, and the next page
            # starts after that seq
            end = min(limit, len(trades))
            while 0 < end < len(trades) and trades[end].seq == trades[end - 1].seq:
                end += 1
            out, more = trades[:end], end < len(trades)
        reply: dict[str, Any] = {"trades": [msgspec.to_builtins(t) for t in out]}
        if since >= 0:
            reply["more"] = more
        return reply

    def _events_reply(self, args: dict[str, Any]) -> Any:
        """Events of the commands applied after log index ``since``, oldest first (from a
        bounded window: ``first`` is the oldest index still kept), to fill gaps in the stream."""
        since = api.int_or_default(args, "since", 0, 0, 1 << 62)
        limit = api.int_or_default(args, "limit", 1_000, 1, 10_000)
        recent = self._recent
        out: list[Any] = []
        last = since
        indices = [i for i in recent if i > since]
        for index in indices:
            a = recent[index]
            last = index
            if a.kind == EntryKind.NORMAL and not a.duplicate:
                out.extend(msgspec.to_builtins(e) for e in a.events)
                if len(out) >= limit:
                    break
        first = next(iter(recent), 0)
        assert self.replica is not None
        return {
            "events": out,
            "through": last,
            "first": first,
            "applied": self.replica.applied_index,
        }

    def status(self) -> dict[str, Any]:
        replica = self.replica
        assert replica is not None
        st = replica.raft.status()
        applied = replica.applied_index
        if self._hash_cache[0] != applied:
            self._hash_cache = (applied, replica.state_hash())
        return {
            "node": self.cfg.node_id,
            "role": _ROLE_NAMES.get(st.role, str(st.role)),
            "term": st.term,
            "leader": st.leader,
            "commit": st.commit,
            "applied": applied,
            "members": {"voters": list(st.conf.voters), "learners": list(st.conf.learners)},
            "state_hash": self._hash_cache[1],
            "pid": os.getpid(),
            # where this replica's log starts and ends (a log that starts after 1 was compacted
            # below a snapshot, taken here or installed from the leader)
            "snapshot_index": replica.storage.snapshot().index,
            "first_index": st.first_index,
            "last_index": st.last_index,
        }
