"""Hostile but well-formed messages on the consensus endpoint must not stop a cluster.

The peer endpoint ``grenex:<cluster>:peer:<id>`` is mutual TLS with the current members'
certificates (SPEC §8 "Endpoints"), and a member may speak only for itself.  Garbage is refused
(``test_bad_input.py``); these are single *decodable* messages, each sent to one follower of a
fresh three-voter cluster, after which every node must still run and the cluster must still
elect a leader and commit (then ``Harness.verify``).  Each is sent by a stranger (no member
certificate: refused in the handshake, nothing read) and by the third voter naming another
sender (``ERR_GRENEX_BAD_REQUEST``: the sender is bound to its certificate); the forged
snapshot also by the leader itself (its own key), which the follower must drop, not obey:

* a message with term 2^64 - 1 (the largest MessagePack integer): refused on the wire
  (positions >= 2^62); before, the term spread, the next election's term 2^64 could not be
  encoded, and every node's driver died with OverflowError;
* a message with term 2^62 - 1, the largest the wire still accepts: it used to be adopted
  (every election then needed term 2^62, which the wire refuses, and the cluster stayed
  leaderless for good); now no stranger gets it read, and a member ignores messages from
  outside its configuration (``test_forged_inprocess.py``, without TLS);
* a snapshot message naming the leader and its term with garbage data: dropped before the
  core; before, it stopped the follower (ReplicaSnapshotError) and its acknowledgement of
  index 1000 stopped the leader (an assertion in _send_append).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from grenex.codec.api import service_names
from grenex.codec.peer import RaftAck, RaftBatch, decode_peer_reply, encode_peer_request
from grenex.codec.raft import POSITION_MAX, encode_message
from grenex.consensus import Message, MessageType
from grenex.consensus.types import ConfState, Snapshot
from grenex.grenache import PeerRPCClient, RemoteError, TransportError
from grenex.grenache.tls import pinned_client_context, unb64url

from .conftest import started_harness
from .harness import Harness
from .history import OK, node_ports

pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.timeout(120)]


class NodeCrashedError(AssertionError):
    """A node process exited, or the cluster stopped electing or committing, after one
    message."""


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


async def send_to_follower(h: Harness, make: MessageMaker, as_node: str | None = None) -> Any:
    """Send one message to a follower's peer endpoint over TLS pinned to its certificate,
    presenting ``as_node``'s certificate (``"leader"``, ``"other"``: the third voter; None: no
    certificate, a stranger); its reply, or the error it raised."""
    assert h._link is not None
    leader = await h.cluster.wait_leader()
    st = (await h.status_direct())[leader]
    follower = next(n for n in h.cluster.voter_ids if n != leader)
    other = next(n for n in h.cluster.voter_ids if n not in (leader, follower))
    port = node_ports(h.cluster.procs[follower].log_path, follower)["peer"]
    msg = make(leader, follower, st["term"])
    c = h.cluster
    pins = [unb64url(c.cert_of(follower))]
    who = {"leader": leader, "other": other}.get(as_node or "")
    if who is None:
        ctx = pinned_client_context(pins)
    else:
        mine = unb64url(c.cert_of(who))
        ctx = pinned_client_context(
            pins, client_cert=mine, client_seed=c.keyring.node_key(who).seed
        )
    rpc = PeerRPCClient(h._link, ssl_context=ctx, attempts_max=1)
    try:
        return await rpc.request_peer(
            f"127.0.0.1:{port}",
            service_names(h.name, follower)["peer"],
            encode_peer_request(RaftBatch(msg.src, [encode_message(msg)])),
            timeout_ms=5_000,
        )
    except (RemoteError, TransportError) as e:
        return e
    finally:
        await rpc.close()


async def refused_unless_a_member(h: Harness, make: MessageMaker) -> None:
    """A stranger is refused in the handshake; the third voter may not speak for the
    message's sender."""
    stranger = await send_to_follower(h, make)
    assert isinstance(stranger, TransportError) and not isinstance(stranger, RemoteError), stranger
    named = await send_to_follower(h, make, "other")
    assert isinstance(named, RemoteError), named
    assert str(named).startswith("ERR_GRENEX_BAD_REQUEST"), named


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
        deadline_s=15,
    )
    if op.status != OK:
        st = {
            n: (s["role"], s["term"]) if isinstance(s, dict) else s
            for n, s in (await h.status_direct()).items()
        }
        raise NodeCrashedError(f"the cluster stopped committing: {op.error}; {st}")
    await h.verify()


async def test_stranger_with_the_largest_term(harness: Harness) -> None:
    await refused_unless_a_member(
        harness,
        lambda _leader, follower, _term: Message(
            MessageType.HEARTBEAT_RESP, "ghost", follower, (1 << 64) - 1
        ),
    )
    await still_serving(harness)


async def test_stranger_with_the_largest_accepted_term(harness: Harness) -> None:
    await refused_unless_a_member(
        harness,
        lambda _leader, follower, _term: Message(
            MessageType.HEARTBEAT_RESP, "ghost", follower, POSITION_MAX - 1
        ),
    )
    # observed before: every node pre_candidate at term 2**62 - 1, "no leader is known"
    await still_serving(harness)


async def test_forged_snapshot_from_the_leader(harness: Harness) -> None:
    def snap(leader: str, follower: str, term: int) -> Message:
        return Message(
            MessageType.SNAP,
            leader,
            follower,
            term,
            snapshot=Snapshot(1000, term, ConfState(("n1", "n2", "n3"), ()), b"garbage"),
        )

    await refused_unless_a_member(harness, snap)
    # the leader's own certificate: delivered, and dropped before the core
    reply = await send_to_follower(harness, snap, "leader")
    assert isinstance(reply, RemoteError) or decode_peer_reply(reply) == RaftAck(1, 0), reply
    await still_serving(harness)
