"""The node: one replica of the books, served over Grenache — built from small services.

Theory of operation
-------------------
:class:`Node` only assembles and runs the parts, over an injected :class:`NodeIO` (real
sockets and Grapes, or ``grenache.fakes`` and a manual clock in tests):

* the **driver service** (``driving.py``) — the one task that touches the replica; it runs the
  turn shared with the simulator (``grenex.replica.driver``) and carries the pure gateway's
  decisions (propose, forward, answer, unknown);
* the **client API** (``client_api.py``) — requests in, commands to the driver, bounded reads;
* the **peer API** (``peer_api.py``) and **peers** (``peers.py``) — typed messages between
  nodes (``grenex.codec.peer``);
* the **publisher** (``publisher.py``) — applied events to subscribers;
* snapshots — serialised in a forked child (``snapshotter.py``) or inline.

Lifecycle: open storage → found, join or resume (``founding.py`` decides for an empty founding
voter) → listen → announce → run; stop: a leader hands leadership over first, then every
service stops and storage closes.  Errors at this boundary are :class:`NodeError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
from collections.abc import Callable
from dataclasses import replace

from grenex.codec.api import service_names
from grenex.codec.genesis import Genesis
from grenex.codec.peer import RAFT_STREAM_PATH, RAFT_STREAM_PATH_V1
from grenex.consensus import (
    Config,
    MemoryStorage,
    Role,
    Storage,
)
from grenex.engine import JsonNumber
from grenex.grenache import GrenacheError, Link, PeerRPCClient
from grenex.grenache.errors import GrapeError
from grenex.grenache.link import DHT_DOWN
from grenex.grenache.stream import StreamSender
from grenex.node.client_api import ClientAPI, ClientLimits
from grenex.node.config import NodeConfig
from grenex.node.driving import DriverService
from grenex.node.errors import NodeError
from grenex.node.founding import FOUNDED, Founding
from grenex.node.identity import NodeIdentity
from grenex.node.io import Endpoint, NodeIO, Publisher, PublisherOptions, RealIO, ServeOptions
from grenex.node.membership import Membership, Reconciler
from grenex.node.peer_api import Assemblies, PeerAPI, PeerLimitsIn
from grenex.node.peers import PeerLimits, Peers
from grenex.node.publisher import EventsPublisher
from grenex.node.snapshotter import BackgroundSnapshots
from grenex.node.verifying import Signatures
from grenex.replica import Applied, Replica, ReplicaConfig
from grenex.replica.driver import InlineSnapshots, Snapshots
from grenex.replica.gateway import Gateway, GatewayLimits

__all__ = ["Node", "NodeError"]

log = logging.getLogger("grenex.node")


FIRST_BATCH_BITS = 62  # a random start for this run's forward batch numbers


def _ticks(ms: int, tick_ms: int) -> int:
    return max(1, -(-ms // tick_ms))


def gateway_limits(cfg: NodeConfig) -> GatewayLimits:
    t = cfg.tick_ms
    return GatewayLimits(
        submitted_max=cfg.commands_pending_max,
        command_timeout_ticks=_ticks(cfg.command_timeout_ms, t),
        leader_wait_ticks=_ticks(cfg.leader_wait_ms, t),
        forward_batch_commands_max=cfg.forward_batch_max,
        forwards_inflight_max=cfg.forwards_inflight_max,
        forward_timeout_ticks=_ticks(cfg.command_timeout_ms, t),
        forwarded_batches_max=cfg.forwarded_batches_max,
        recent_entries_max=cfg.recent_outcomes_max,
    )


def raft_config(cfg: NodeConfig) -> Config:
    """The consensus core's settings from the node's."""
    return Config(
        id=cfg.node_id,
        election_timeout_ticks=cfg.election_timeout_ticks,
        heartbeat_interval_ticks=cfg.heartbeat_interval_ticks,
        defer_commit_notices=cfg.commit_notice_delay_ms > 0,
    )


def client_limits(cfg: NodeConfig) -> ClientLimits:
    return ClientLimits(
        command_bytes_max=cfg.command_bytes_max,
        batch_commands_max=cfg.batch_commands_max,
        client_rate_per_s=cfg.client_rate_per_s,
        client_burst=cfg.client_burst,
        client_buckets_max=cfg.client_buckets_max,
        trades_kept_max=cfg.trades_kept_max,
        trades_reply_max=cfg.trades_reply_max,
        events_window_entries_max=cfg.recent_outcomes_max,
    )


def build_peer_api(
    cfg: NodeConfig,
    driver: DriverService,
    founding: Founding,
    signatures: Signatures,
    identity: NodeIdentity | None,
    clock: Callable[[], float],
) -> PeerAPI:
    """The peer service with its bounds, hooks and snapshot assembly."""
    return PeerAPI(
        cfg.node_id,
        driver,
        PeerLimitsIn(
            messages_per_batch_max=cfg.inbox_messages_max,
            forward_commands_max=cfg.forward_batch_max,
            command_bytes_max=cfg.command_bytes_max,
            forward_wait_ms=cfg.command_timeout_ms,
        ),
        cfg.secret,
        on_probe=founding.on_probe,
        on_rejoin=founding.on_rejoin,
        accepts_raft=founding.accepts_raft,
        prepare=signatures.prepare if signatures.threaded else None,
        prefetch=signatures.prefetch,
        identity=identity,
        assemblies=Assemblies(
            cfg.snapshot_bytes_max,
            cfg.snapshot_transfers_max,
            cfg.peer_snapshot_timeout_ms / 1000,
            clock,
        ),
    )


def with_genesis(config: NodeConfig) -> tuple[NodeConfig, Genesis]:
    """The configuration as the genesis (SPEC §8) makes it: the cluster's name, and the
    founding voters (the genesis' voters); a node that is not one joins."""
    g = config.genesis
    if g is None:
        raise NodeError("a node needs the cluster's genesis (--genesis FILE)")
    if config.cluster != g.cluster:
        if config.cluster != "main":  # the default: the genesis names the cluster
            raise NodeError(f"--cluster {config.cluster} is not the genesis' {g.cluster}")
        config = replace(config, cluster=g.cluster)
    ids = tuple(v.id for v in g.voters)
    if not config.join and config.node_id in ids:
        if config.voters and tuple(config.voters) != ids:
            raise NodeError("the founding voters are the genesis' voters")
        config = replace(config, voters=ids)
    elif not config.voters:
        config = replace(config, join=True)
    return config, g


class Node:
    """One grenex node.  ``await node.start()``, then ``await node.stop()``."""

    def __init__(self, config: NodeConfig, io: NodeIO | None = None) -> None:
        config, g = with_genesis(config)
        self.cfg = config
        self.io: NodeIO = io if io is not None else RealIO()
        self.signatures = Signatures(
            g.cluster_id, config.verify_threads, config.verdicts_max, self.io.wall_ms
        )
        self.names = service_names(config.cluster, config.node_id)
        self.storage: Storage | None = None
        self.replica: Replica | None = None
        self.snapshots: Snapshots | None = None
        self.link: Link | None = None
        self.rpc: PeerRPCClient | None = None
        self.peers: Peers | None = None
        self.driver: DriverService | None = None
        self.api: ClientAPI | None = None
        self.membership: Membership | None = None
        self.peer_api: PeerAPI | None = None
        self.api_server: Endpoint | None = None
        self.peer_server: Endpoint | None = None
        self.pub: Publisher | None = None
        self.publisher: EventsPublisher | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        self._stopping = False
        self.identity: NodeIdentity | None = None

    # -- parts ---------------------------------------------------------------------------------

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

    def _on_applied(self, applied: list[Applied]) -> None:
        assert self.api is not None and self.publisher is not None
        self.api.record(applied)
        self.publisher.record(applied)

    def _snapshot_index(self) -> int:
        return self.storage.snapshot().index if self.storage is not None else 0

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open storage, build the services, listen, announce, run."""
        cfg, io = self.cfg, self.io
        replica, probing = self._open_replica()
        self.identity = None
        if io.secure:
            if cfg.key is None:
                raise NodeError("a node needs its key (--key FILE): its TLS identity")
            self.identity = NodeIdentity(cfg.node_id, cfg.cluster, cfg.key, replica.state.auth)
            why = self.identity.check_own(replica.state.auth)
            if why is not None:
                raise NodeError(why)
        self.link = io.link(list(cfg.grapes), cfg.grape_request_timeout_ms)
        try:
            await self.link.start()
        except GrenacheError as e:
            raise NodeError(f"cannot reach the Grapes: {e}") from None
        self.rpc = io.rpc_client(
            self.link,
            cfg.peer_request_timeout_ms,
            self.identity.ssl_for if self.identity is not None else None,
        )
        self.founding = Founding(cfg.node_id, cfg.voters, replica, probing)
        self._build_services(replica)
        await self._listen()
        assert self.driver is not None and self.pub is not None and self.peers is not None
        self.publisher = EventsPublisher(self.pub)
        self.driver.start()
        try:
            await self._announce()
        except GrenacheError as e:
            await self.stop(graceful=False)
            raise NodeError(
                f"cannot announce on the Grapes ({', '.join(cfg.grapes)}): {e}"
            ) from None
        if cfg.join and self.membership is not None:
            join = self.membership.join(replica)
            self._tasks.append(asyncio.create_task(join, name="joiner"))
        if self.founding.probing:
            run = self.founding.run(self.peers, io.sleep)
            self._tasks.append(asyncio.create_task(run, name="founding"))
        self._tasks.append(asyncio.create_task(self._watch_driver(), name="watch"))
        log.info(
            "node %s up: api %s, peer %s, events %s",
            cfg.node_id,
            self.api_port,
            self.peer_port,
            self.events_port,
        )

    def _open_replica(self) -> tuple[Replica, bool]:
        """Storage and the replica over it; True when this is an empty founding voter that
        must ask the others before it founds (``founding.py``)."""
        cfg = self.cfg
        storage = self._open_storage()
        self.storage = storage
        probing = False
        if storage.last_index() == 0 and storage.snapshot().index == 0:
            if cfg.voters:
                if cfg.node_id not in cfg.voters:
                    raise NodeError(
                        f"{cfg.node_id} is not among the voters {','.join(cfg.voters)}; "
                        "a node that is not a founding voter starts with --join"
                    )
                probing = True
            elif not cfg.join:
                raise NodeError("empty storage: give --voters to start a cluster or --join")
        replica = Replica(
            ReplicaConfig(
                raft=raft_config(cfg),
                genesis=self._genesis(),
                snapshot_interval_entries=cfg.snapshot_interval_entries,
                compaction_retain_entries=cfg.compaction_retain_entries,
                auto_snapshot=False,  # the snapshot service takes them, between turns
            ),
            storage,
            random.Random(os.urandom(16)),  # the shell may use real randomness
        )
        self.signatures.attach(replica)
        self.replica = replica
        return replica, probing

    def _genesis(self) -> Genesis:
        g = self.cfg.genesis
        assert g is not None
        return g

    def _build_services(self, replica: Replica) -> None:
        cfg = self.cfg
        assert self.rpc is not None
        self.peers = Peers(
            cfg.node_id,
            cfg.cluster,
            self.rpc,
            PeerLimits(
                queue_bytes_max=cfg.peer_queue_bytes_max,
                batch_bytes_max=cfg.peer_batch_bytes_max,
                inflight_max=cfg.peer_requests_inflight_max,
                request_timeout_ms=cfg.peer_request_timeout_ms,
                snapshot_timeout_ms=cfg.peer_snapshot_timeout_ms,
                chunk_bytes=cfg.peer_chunk_bytes,
            ),
            self._on_send_failure,
            lambda peer: self._report(peer, True),
            secret=cfg.secret,
            streams=_streams(self.io, self.link, self.identity, cfg),
        )
        wake = asyncio.Event()  # the forked snapshots wake the driver when a child is done
        snapshots: Snapshots
        if cfg.snapshot_in_background:
            snapshots = BackgroundSnapshots(replica, wake)
        else:
            snapshots = InlineSnapshots(replica)
        self.snapshots = snapshots
        self.driver = DriverService(
            node_id=cfg.node_id,
            io=self.io,
            replica=replica,
            # forward batch numbers never repeat across restarts: a late answer meant for a
            # previous run's batch must not match a new one (found by simulator seed 342)
            gateway=Gateway(
                cfg.node_id,
                gateway_limits(cfg),
                first_batch=secrets.randbits(FIRST_BATCH_BITS),
                precheck=self.signatures.precheck,
            ),
            snapshots=snapshots,
            peers=self.peers,
            tick_ms=cfg.tick_ms,
            durable=cfg.data_dir is not None,
            inbox_messages_max=cfg.inbox_messages_max,
            forward_timeout_ms=cfg.command_timeout_ms,
            commit_notice_delay_ms=cfg.commit_notice_delay_ms,
            on_applied=self._on_applied,
            wake=wake,
        )
        self.driver.add_turn_hook(self.founding.turn)
        self.membership = Membership(cfg, self.io, self.link, self.rpc, self.peers, self.names)
        self.membership.identity = self.identity
        self.driver.add_turn_hook(self.membership.keep_peers_fresh)
        self.driver.add_turn_hook(self.membership.vouch_turn)
        self.reconciler = Reconciler()
        self.driver.add_turn_hook(self.reconciler.turn)
        if self.identity is not None:
            self.driver.add_turn_hook(self.identity.turn)
        self.api = ClientAPI(
            cfg.node_id,
            self.driver,
            client_limits(cfg),
            self.io.clock,
            self._snapshot_index,
            self.io.wall_ms,
            self.signatures.verdicts,
            self.signatures.verify,
        )
        self.peer_api = build_peer_api(
            cfg, self.driver, self.founding, self.signatures, self.identity, self.io.clock
        )
        self.api.catching_up = lambda: (
            self.founding.state != FOUNDED
            or replica.raft.lead is None
            or replica.raft.log.committed > replica.applied_index
        )
        asm = self.peer_api.assemblies
        if asm is not None:
            self.api.snapshot_transfers = lambda: asm.completed
        self.api.peer_streams = self.peers.streams_up

    async def _listen(self) -> None:
        cfg, io = self.cfg, self.io
        assert self.api is not None and self.peer_api is not None
        ident = self.identity
        handler_timeout_ms = cfg.command_timeout_ms + cfg.handler_slack_ms
        try:
            self.api_server = await io.serve(
                self.api.handle,
                ServeOptions(
                    host=cfg.host,
                    port=cfg.port,
                    body_bytes_max=cfg.api_body_bytes_max,
                    concurrency_max=cfg.api_concurrency_max,
                    handler_timeout_ms=handler_timeout_ms,
                    float_hook=JsonNumber,
                    connections_max=cfg.api_connections_max,
                    connections_per_address_max=cfg.connections_per_address_max,
                    body_read_timeout_ms=cfg.body_read_timeout_ms,
                    tls=ident.api_tls if ident is not None else None,
                ),
            )
            self.peer_server = await io.serve(
                self.peer_api.handle,
                ServeOptions(
                    host=cfg.host,
                    port=cfg.peer_port,
                    body_bytes_max=cfg.peer_body_bytes_max,
                    concurrency_max=cfg.peer_concurrency_max,
                    handler_timeout_ms=handler_timeout_ms,
                    websocket=False,
                    connections_max=cfg.peer_connections_max,
                    connections_per_address_max=cfg.connections_per_address_max,
                    body_read_timeout_ms=cfg.peer_body_read_timeout_ms,
                    tls=ident.peer_tls if ident is not None else None,
                    with_peer_cert=True,
                    upgrades={
                        RAFT_STREAM_PATH: self.peer_api.open_stream,
                        RAFT_STREAM_PATH_V1: self.peer_api.open_stream_v1,
                    },
                ),
            )
            self.pub = await io.publisher(
                PublisherOptions(
                    cfg.host,
                    cfg.events_port,
                    cfg.events_ring_frames_max,
                    subscribers_max=cfg.events_subscribers_max,
                    subscribers_per_address_max=cfg.events_subscribers_per_address_max,
                    body_read_timeout_ms=cfg.body_read_timeout_ms,
                    tls=ident.api_tls if ident is not None else None,
                )
            )
        except OSError as e:
            await self._close_io()
            raise NodeError(f"cannot listen on {cfg.host}: {e}") from None

    @property
    def api_port(self) -> int:
        return self.api_server.port if self.api_server else 0

    @property
    def peer_port(self) -> int:
        return self.peer_server.port if self.peer_server else 0

    @property
    def events_port(self) -> int:
        return self.pub.port if self.pub else 0

    @property
    def failed(self) -> bool:
        """The driver stopped by itself (a broken invariant)."""
        return self.driver is not None and self.driver.failed

    async def _announce(self) -> None:
        """Announce every service; the peer endpoint first (others can reach us before
        clients do).  A Grape that answers but whose DHT reaches no other node (this host is
        cut off, or the others are down) does not stop the node: the announcements go on in
        the background and reach the DHT when it heals (a node restarted during a partition
        once refused to start and stayed down).  A Grape that does not answer at all is a
        configuration error and stops the start."""
        link, names = self.link, self.names
        assert link is not None
        wait = True
        for name, port in (
            (names["peer"], self.peer_port),
            (names["node"], self.api_port),
            (names["nodes"], self.api_port),
            (names["events"], self.events_port),
            (names["node_events"], self.events_port),
        ):
            try:
                await link.start_announcing(name, port, wait=wait)
            except GrapeError as e:
                if e.code not in DHT_DOWN:
                    raise
                log.warning("the Grapes' DHT reaches no node yet (%s); announcing on", e.code)
                wait = False
                await link.start_announcing(name, port, wait=False)

    async def _watch_driver(self) -> None:
        assert self.driver is not None
        await self.driver.stopped.wait()
        self._stopped.set()

    async def stop(self, graceful: bool = True) -> None:
        """Stop serving; a leader first hands leadership to another voter."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        replica = self.replica
        if graceful and replica is not None and replica.raft.role == Role.LEADER:
            await self._hand_over()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.driver is not None:
            await self.driver.stop()
        if self.membership is not None:
            await self.membership.close()
        if isinstance(self.snapshots, BackgroundSnapshots):
            await self.snapshots.close()
        await self._close_io()
        self.signatures.close()
        close = getattr(self.storage, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):
                close()
        self._stopped.set()

    async def _close_io(self) -> None:
        for closer in (
            self.api_server.stop if self.api_server else None,
            self.peer_server.stop if self.peer_server else None,
            self.pub.stop if self.pub else None,
            self.peers.close if self.peers else None,
            self.rpc.close if self.rpc else None,
            self.link.stop if self.link else None,
        ):
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def _hand_over(self) -> None:
        """Leadership transfer to the most up-to-date other voter (graceful shutdown)."""
        replica, driver = self.replica, self.driver
        assert replica is not None and driver is not None
        voters = [v for v in replica.raft.conf_state().voters if v != self.cfg.node_id]
        if not voters:
            return
        progress = replica.raft.progress()
        best = max(voters, key=lambda v: (progress[v].match if v in progress else -1, v))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                driver.conf_change("transfer", best), self.cfg.shutdown_transfer_ms / 1000
            )
        io = self.io
        deadline = io.clock() + self.cfg.shutdown_transfer_ms / 1000
        while replica.raft.role == Role.LEADER and io.clock() < deadline:
            await io.sleep(self.cfg.tick_ms / 1000)
        log.info("handed leadership to %s: %s", best, replica.raft.role != Role.LEADER)

    # -- peers ---------------------------------------------------------------------------------

    def _report(self, peer: str, ok: bool | None) -> None:
        if self.driver is not None:
            self.driver.report(peer, ok)

    def _on_send_failure(self, peer: str, snapshot: bool) -> None:
        self._report(peer, False if snapshot else None)


def _streams(
    io: NodeIO, link: Link | None, ident: NodeIdentity | None, cfg: NodeConfig
) -> Callable[[str], StreamSender | None] | None:
    """The consensus streams' factory: only with TLS (the certificate names the sender)."""
    if not cfg.peer_streams or ident is None or link is None:
        return None
    return lambda name: io.stream_sender(
        link, name, RAFT_STREAM_PATH, ident.ssl_for, cfg.peer_request_timeout_ms
    )
