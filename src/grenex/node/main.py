"""``grenex node``: run one node until SIGTERM or Ctrl-C (then stop gracefully)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from grenex.codec.genesis import Genesis, GenesisError, read_genesis
from grenex.codec.keys import KeyFileError, SecretKey, read_key_file
from grenex.grenache.link import parse_grapes
from grenex.grenache.tls import check_cert
from grenex.node.config import NodeConfig
from grenex.node.errors import NodeError
from grenex.node.gcpolicy import GcPolicy
from grenex.node.node import Node

__all__ = ["node_command", "run_node"]

T = TypeVar("T")


async def run_node(cfg: NodeConfig, ready_file: Path | None = None) -> int:
    node = Node(cfg)
    try:
        await node.start()
    except NodeError as e:
        click.echo(f"grenex node {cfg.node_id}: {e}", err=True)
        return 2
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    line = (
        f"node {cfg.node_id} ready: cluster {cfg.cluster}, api {cfg.host}:{node.api_port}, "
        f"peer {node.peer_port}, events {node.events_port}"
    )
    click.echo(line, err=True)
    if ready_file is not None:
        # line 1: the API port (what LocalCluster reads); line 2: every port, as JSON
        ports = {
            "api": node.api_port,
            "peer": node.peer_port,
            "events": node.events_port,
            "pid": os.getpid(),
        }
        tmp = ready_file.with_suffix(".tmp")
        tmp.write_text(f"{node.api_port}\n{json.dumps(ports)}\n")
        tmp.replace(ready_file)
    policy = GcPolicy()
    policy.install()
    gc_task = asyncio.create_task(policy.run(), name="gc")
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(node.wait_stopped())]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for w in [*waiters, gc_task]:
        w.cancel()
    failed = node.failed and not stop.is_set()  # the driver stopped by itself
    await node.stop(graceful=not failed)
    return 1 if failed else 0


@click.command("node")
@click.option("--id", "node_id", required=True, help="This node's id (1-64 of A-Za-z0-9._:-).")
@click.option(
    "--genesis",
    "genesis_path",
    envvar="GRENEX_GENESIS",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The cluster's genesis file (docs/trust.md): its voters found the cluster.",
)
@click.option(
    "--key",
    "key_path",
    envvar="GRENEX_NODE_KEY",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="This node's key file (its identity; required for a genesis voter's TLS).",
)
@click.option("--voters", default="", help="(Deprecated: the genesis names the voters.)")
@click.option("--join", is_flag=True, help="Join a running cluster as a learner.")
@click.option("--memory", is_flag=True, help="Keep the log in memory (lost on exit).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option(
    "--port",
    type=click.IntRange(0, 65533),
    default=0,
    help="Client API port; the peer service then listens on P+1 and events on P+2 (0: free ports).",
)
@click.option(
    "--peer-port", type=int, default=None, help="Consensus port [default: P+1, or a free one]."
)
@click.option(
    "--events-port", type=int, default=None, help="Event stream port [default: P+2, or a free one]."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--grape", envvar="GRENEX_GRAPE", default="http://127.0.0.1:30001", show_default=True)
@click.option("--cluster", envvar="GRENEX_CLUSTER", default="main", show_default=True)
@click.option("--tick-ms", type=int, default=50, show_default=True)
@click.option(
    "--snapshot-interval",
    type=int,
    default=100_000,
    show_default=True,
    help="Snapshot the state machine after this many applied entries.",
)
@click.option(
    "--compaction-retain",
    type=int,
    default=10_000,
    show_default=True,
    help="Log entries kept below a snapshot for slightly lagging members.",
)
@click.option(
    "--peer-chunk-bytes",
    type=click.IntRange(1024, 4 << 20),
    default=1 << 20,
    show_default=True,
    help="A larger consensus message (a snapshot) travels to a peer in pieces of this size.",
)
@click.option(
    "--verify-threads",
    type=click.IntRange(0, 64),
    default=0,
    show_default=True,
    help="Threads that verify signatures off the event loop (0: on the loop). Worth it only "
    "where the node has cores to itself: with more nodes than cores they add latency.",
)
@click.option(
    "--commit-notice-delay-ms",
    type=click.IntRange(0, 1000),
    default=5,
    show_default=True,
    help="As leader, tell a new commit index at once only to the nodes waiting for it (their "
    "clients' commands); the others with their next append or this long after. 0: everyone "
    "at once.",
)
@click.option(
    "--no-peer-streams",
    is_flag=True,
    help="Send consensus messages as peer requests instead of on one stream per peer.",
)
@click.option(
    "--ready-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the API port here once serving (for supervisors and tests).",
)
@click.option(
    "--no-uvloop",
    is_flag=True,
    envvar="GRENEX_NO_UVLOOP",
    help="Run on the standard asyncio loop even where uvloop is installed.",
)
@click.option("-v", "--verbose", count=True)
def node_command(
    node_id: str,
    genesis_path: Path,
    key_path: Path | None,
    voters: str,
    join: bool,
    memory: bool,
    data_dir: Path | None,
    port: int,
    peer_port: int | None,
    events_port: int | None,
    host: str,
    grape: str,
    cluster: str,
    tick_ms: int,
    snapshot_interval: int,
    compaction_retain: int,
    peer_chunk_bytes: int,
    verify_threads: int,
    commit_notice_delay_ms: int,
    no_peer_streams: bool,
    ready_file: Path | None,
    no_uvloop: bool,
    verbose: int,
) -> None:
    """Run one grenex node: a full replica of every order book.

    Set GRENEX_CLUSTER_SECRET (the same on every node) to sign and check all traffic between
    nodes; without it the consensus endpoint accepts messages from anyone who can reach it.
    """
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbose, 2),
        format=f"%(asctime)s {node_id} %(name)s %(levelname)s %(message)s",
    )
    if memory and data_dir is not None:
        raise click.UsageError("--memory and --data-dir exclude each other")
    if not memory and data_dir is None:
        data_dir = Path(".grenex") / cluster / node_id
    voter_ids = tuple(v for v in voters.split(",") if v)
    if snapshot_interval < 1 or compaction_retain < 0:
        raise click.UsageError("--snapshot-interval >= 1 and --compaction-retain >= 0")
    if voter_ids and join:
        raise click.UsageError("--voters bootstraps a new cluster; --join joins one: not both")
    try:
        grapes = tuple(parse_grapes(grape))
    except ValueError as e:
        raise click.UsageError(f"--grape: {e}") from None
    genesis, key = _read_trust(genesis_path, key_path)
    if cluster not in ("main", genesis.cluster):
        raise click.UsageError(f"--cluster {cluster} is not the genesis' {genesis.cluster}")
    cfg = NodeConfig(
        node_id=node_id,
        genesis=genesis,
        key=key,
        grapes=grapes,
        cluster=genesis.cluster,
        host=host,
        port=port,
        peer_port=peer_port if peer_port is not None else (port + 1 if port else 0),
        events_port=events_port if events_port is not None else (port + 2 if port else 0),
        data_dir=None if memory else data_dir,
        voters=voter_ids,
        join=join,
        tick_ms=tick_ms,
        snapshot_interval_entries=snapshot_interval,
        compaction_retain_entries=compaction_retain,
        peer_chunk_bytes=peer_chunk_bytes,
        verify_threads=verify_threads,
        commit_notice_delay_ms=commit_notice_delay_ms,
        peer_streams=not no_peer_streams,
        secret=os.environb.get(b"GRENEX_CLUSTER_SECRET") or None,
    )
    sys.exit(run_event_loop(run_node(cfg, ready_file), uvloop_ok=not no_uvloop))


def _read_trust(genesis_path: Path, key_path: Path | None) -> tuple[Genesis, SecretKey | None]:
    """The genesis and the node's key (if given), or a usage error saying what is wrong."""
    try:
        genesis = read_genesis(genesis_path, check_cert)
    except GenesisError as e:
        raise click.UsageError(f"--genesis: {e}") from None
    if key_path is None:
        return genesis, None
    try:
        return genesis, read_key_file(key_path)
    except KeyFileError as e:
        raise click.UsageError(f"--key: {e}") from None


def run_event_loop(main: Coroutine[Any, Any, T], uvloop_ok: bool = True) -> T:
    """Run ``main`` (the node, or a client) on uvloop where it is installed (the
    field-standard loop: measurably less CPU per request), else on the standard loop."""
    if uvloop_ok:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - the platform has no uvloop
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
