"""Every setting of a node, with its unit last; every queue, cache and timeout is bounded here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from grenex.codec.genesis import Genesis
from grenex.codec.keys import SecretKey

__all__ = ["NodeConfig"]


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: str
    grapes: tuple[str, ...] = ("http://127.0.0.1:30001",)
    cluster: str = "main"
    # Where the node listens.  On one host the Grape sees 127.0.0.1; across hosts bind a
    # routable address (the Grape stores the address it sees the announce coming from).
    host: str = "127.0.0.1"
    port: int = 0  # client API (node:<id> and nodes); 0 picks a free port
    peer_port: int = 0  # consensus messages (peer:<id>)
    events_port: int = 0  # WebSocket event stream (events)
    data_dir: Path | None = None  # None: in-memory storage (lost on exit)
    voters: tuple[str, ...] = ()  # bootstrap a new cluster with these voters
    join: bool = False  # join a running cluster as a learner
    # The cluster's genesis (SPEC §8; required) and this node's own key (its identity: peer
    # TLS certificate, the ``join`` command).  Founding voters are the genesis' voters.
    genesis: Genesis | None = None
    key: SecretKey | None = None
    verify_threads: int = 0  # signatures are verified in these threads, off the loop (0: on it)
    verdicts_max: int = 65_536  # signature verdicts kept for reuse at apply
    # Shared by every node of the cluster: peer payloads are HMAC-signed with it and unsigned
    # ones refused.  None: the peer endpoint is open (keep it on a private network).
    secret: bytes | None = None

    # Consensus timing: a tick is the unit of the core's clock.
    tick_ms: int = 50
    election_timeout_ticks: int = 16  # randomised in [t, 2t): 0.8–1.6 s
    heartbeat_interval_ticks: int = 2
    # A leader tells a new commit index at once only to the members that forwarded what it
    # commits (they answer clients when they apply it); the others learn it with their next
    # append or at most this long after (consensus/raft.py, "Commit notices").  0: every
    # member at once.
    commit_notice_delay_ms: int = 5
    snapshot_interval_entries: int = 100_000
    compaction_retain_entries: int = 10_000
    snapshot_in_background: bool = True  # serialise in a forked child (snapshotter.py)

    # Client API bounds.
    api_body_bytes_max: int = 1024 * 1024  # a batch of commands fits
    command_bytes_max: int = 96 * 1024  # one envelope in the log (TEXT ≤ 64 KiB, escaped)
    batch_commands_max: int = 256
    command_timeout_ms: int = 10_000  # a command not applied by then: ERR_GRENEX_UNAVAILABLE
    handler_slack_ms: int = 5_000  # a request handler's time beyond command_timeout_ms
    leader_wait_ms: int = 3_000  # how long a command waits for a leader to be known
    commands_pending_max: int = 20_000  # queued or awaiting their outcome, node-wide
    client_rate_per_s: float = 5_000.0  # per client id (token bucket)
    client_burst: float = 10_000.0
    client_buckets_max: int = 10_000
    trades_kept_max: int = 10_000
    trades_reply_max: int = 1_000
    api_concurrency_max: int = 1_024

    # Peer (consensus) traffic bounds.
    # every peer request is small: consensus batches up to peer_batch_bytes_max, and a larger
    # message (a snapshot) in pieces of peer_chunk_bytes (base64 in JSON: x4/3 on the wire)
    peer_body_bytes_max: int = 8 * 1024 * 1024
    peer_chunk_bytes: int = 1024 * 1024
    snapshot_bytes_max: int = 1024 * 1024 * 1024  # one snapshot received in pieces
    snapshot_transfers_max: int = 4  # snapshots being received at once (one per sender)
    peer_queue_bytes_max: int = 64 * 1024 * 1024  # per destination, before dropping
    peer_batch_bytes_max: int = 4 * 1024 * 1024  # per request
    peer_requests_inflight_max: int = 1  # per destination
    peer_request_timeout_ms: int = 5_000
    # consensus messages on one long-lived stream per peer (real sockets, TLS); False: every
    # batch as a request
    peer_streams: bool = True
    peer_snapshot_timeout_ms: int = 120_000  # a whole snapshot transfer, all its pieces
    inbox_messages_max: int = 100_000
    forward_batch_max: int = 1_024
    forwards_inflight_max: int = 4
    forwarded_batches_max: int = 64  # batches forwarded to us (as leader) waiting to propose
    peer_concurrency_max: int = 256  # peer requests handled at once
    join_retry_ms: int = 1_000
    recent_outcomes_max: int = 65_536  # applied outcomes kept for late forwarded answers

    # Events stream bounds.
    # Frames kept in the broadcast ring: a subscriber further behind is dropped (it may
    # reconnect and fill the gap with the events action).
    events_ring_frames_max: int = 65_536
    events_subscribers_max: int = 1_024
    events_subscribers_per_address_max: int = 256

    # Connection bounds on every server (beyond them: 503 ERR_SERVICE_BUSY at once, unread).
    # On one host every node, client and test connects from 127.0.0.1: the per-address cap
    # must leave room for all of them.
    api_connections_max: int = 4_096
    peer_connections_max: int = 1_024
    connections_per_address_max: int = 1_024
    body_read_timeout_ms: int = 5_000  # a request's head and body (client API, events)
    peer_body_read_timeout_ms: int = 10_000  # a peer request is at most a few MiB

    grape_request_timeout_ms: int = 4_000
    shutdown_transfer_ms: int = 3_000
