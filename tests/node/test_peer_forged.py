"""Hostile but well-formed messages on the consensus endpoint must not crash a node.

The peer endpoint ``grenex:<cluster>:peer:<id>`` is unauthenticated: anyone who can reach it
can send consensus messages that decode cleanly.  Garbage is refused (``test_bad_input.py``);
these are single *decodable* messages, each sent once to one follower of a fresh three-voter
cluster, after which every node must still run and the cluster must still commit.

Both are strict xfails today, with the diagnosis in the reason:

* a message from a stranger carrying term 2^64 - 1 (the largest the wire accepts): the term
  spreads, the next election needs term 2^64, which MessagePack cannot encode, and every
  node's driver dies with OverflowError — one packet stops the whole cluster;
* a snapshot message claiming to come from the leader (its id and term are public in
  ``status``) with garbage data: the follower persists and applies it and dies in
  ``ReplicaState.restore``; its acknowledgement of index 1000 then kills the leader on an
  assertion in ``_send_append`` — one packet, quorum lost.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from grenex.codec.raft import encode_message
from grenex.consensus import Message, MessageType
from grenex.consensus.types import ConfState, Snapshot
from grenex.node.transport import encode_batch

from .conftest import started_harness
from .harness import Harness
from .history import OK, node_ports

pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.timeout(120)]

TERM_BUG = (
    "BUG (consensus wire): decode_message accepts terms up to 2**64-1 (any msgpack uint64) "
    "and a stranger's higher term is adopted; the next election's term 2**64 cannot be "
    "encoded (OverflowError in encode_message inside the driver), so every node stops. "
    "Fix: refuse positions >= 2**62 in decode_message (and ignore non-members)"
)
SNAPSHOT_BUG = (
    "BUG (consensus/replica): a SNAP message naming the leader and its term (both public "
    "in status) with garbage data is persisted and applied unchecked: ReplicaSnapshotError "
    "in Replica.apply stops the follower; its APP_RESP index 1000 then trips "
    "'assert prev_index <= log.last_index()' in Raft._send_append and stops the leader. "
    "Fix: validate snapshot data before persisting it (reject), and have the leader ignore "
    "acknowledgements beyond its last index"
)


class NodeCrashedError(AssertionError):
    """A node process exited (or the cluster stopped committing) after one message."""


@pytest_asyncio.fixture
async def harness(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> AsyncIterator[Harness]:
    name = "forge-" + request.node.name.removeprefix("test_")
    async with started_harness(
        tmp_path_factory, name, stream_node="n3", nodes=3, voters=3, grapes=1
    ) as h:
        yield h


MessageMaker = Callable[[str, str, int], Message]  # (leader, follower, term) -> message


async def send_to_follower(h: Harness, make: MessageMaker) -> tuple[str, str]:
    assert h.rpc is not None
    leader = await h.cluster.wait_leader()
    st = (await h.status_direct())[leader]
    follower = next(n for n in h.cluster.voter_ids if n != leader)
    port = node_ports(h.cluster.procs[follower].log_path, follower)["peer"]
    msg = make(leader, follower, st["term"])
    reply = await h.rpc.request_peer(
        f"127.0.0.1:{port}",
        f"grenex:{h.name}:peer:{follower}",
        encode_batch(msg.src, [encode_message(msg)]),
        timeout_ms=5_000,
    )
    assert reply == {"ok": 1}
    return leader, follower


def crash_reason(log: str) -> str:
    """The last exception line of a node's log."""
    found = re.findall(r"^([A-Za-z_.]*(?:Error|Exception)\b.*)$", log, re.MULTILINE)
    return found[-1][:300] if found else "(no exception in the log)"


async def still_serving(h: Harness) -> None:
    """Every node alive 5 s later, and a command commits."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        dead = [n for n, p in h.cluster.procs.items() if not p.alive]
        if dead:
            why = {n: crash_reason(h.cluster.procs[n].log_path.read_text()) for n in dead}
            raise NodeCrashedError(f"stopped: {why}")
        await asyncio.sleep(0.2)
    op = await h.command(
        "n1",
        "place",
        {
            "client": "x",
            "id": "after",
            "market": "BTC-USD",
            "side": "buy",
            "qty": "1",
            "price": "1",
        },
        deadline_s=30,
    )
    if op.status != OK:
        raise NodeCrashedError(f"the cluster stopped committing: {op.error}")
    await h.verify()


@pytest.mark.xfail(strict=True, raises=NodeCrashedError, reason=TERM_BUG)
async def test_stranger_with_the_largest_term(harness: Harness) -> None:
    await send_to_follower(
        harness,
        lambda _leader, follower, _term: Message(
            MessageType.HEARTBEAT_RESP, "ghost", follower, (1 << 64) - 1
        ),
    )
    await still_serving(harness)


@pytest.mark.xfail(strict=True, raises=NodeCrashedError, reason=SNAPSHOT_BUG)
async def test_forged_snapshot_from_the_leader(harness: Harness) -> None:
    await send_to_follower(
        harness,
        lambda leader, follower, term: Message(
            MessageType.SNAP,
            leader,
            follower,
            term,
            snapshot=Snapshot(1000, term, ConfState(("n1", "n2", "n3"), ()), b"garbage"),
        ),
    )
    await still_serving(harness)
