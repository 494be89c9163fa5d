"""Forwards that ride with consensus messages (``FwdItem``) and answers that ride back
(``FwdAnswer``): the wire, who may answer, the bounds, and the leader's side over the
in-process cluster (the ``raft`` request carries them as a stream frame does)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from grenex.codec.api import service_names
from grenex.codec.peer import (
    FwdAnswer,
    FwdAt,
    FwdDeclined,
    FwdItem,
    FwdNotLeader,
    PeerWireError,
    RaftAck,
    RaftBatch,
    decode_peer_reply,
    decode_peer_request,
    decode_raft_frame,
    encode_peer_request,
    encode_raft_frame,
)
from grenex.consensus import Role
from grenex.grenache.errors import GrenacheError, TransportError
from grenex.node.peers import ANSWERS_QUEUED_MAX, PeerLimits, Peers
from grenex.replica.gateway import At, Fate, Forward, Gateway, GatewayLimits, Outcome

from .inproc import InProcCluster, running

# -- the wire --------------------------------------------------------------------------------


def test_a_frame_carries_messages_forwards_and_answers() -> None:
    fwd = FwdItem(7, [b'{"a":1}', b'{"b":2}'])
    answers = [FwdAnswer(3, FwdAt(10, 2, [(1, "duplicate")])), FwdAnswer(4, FwdNotLeader("n2"))]
    f = decode_raft_frame(encode_raft_frame([b"m1", b"m2"], [fwd], answers))
    assert f.msgs == [b"m1", b"m2"]
    assert f.fwds == [fwd]
    assert f.answers == [
        FwdAnswer(3, FwdAt(10, 2, [(1, "duplicate")])),
        FwdAnswer(4, FwdNotLeader("n2")),
    ]
    assert decode_raft_frame(encode_raft_frame([b"m"])).fwds == []


def test_a_frame_of_the_first_stream_version_is_read_only_as_one() -> None:
    """``/grenex/raft/1`` frames are a bare array of messages (still served, for nodes of the
    previous version): not a frame of version 2, and no forwards in it."""
    v1 = msgspec.msgpack.encode([b"m1", b"m2"])
    with pytest.raises(PeerWireError):
        decode_raft_frame(v1)
    f = decode_raft_frame(v1, version=1)
    assert f.msgs == [b"m1", b"m2"] and f.fwds == [] and f.answers == []
    with pytest.raises(PeerWireError):
        decode_raft_frame(encode_raft_frame([b"m"]), version=1)
    with pytest.raises(PeerWireError):
        decode_raft_frame(msgspec.msgpack.encode([[b"m"], [[1, "not a list"]], []]))


def test_a_raft_request_without_forwards_is_unchanged_on_the_wire() -> None:
    plain = encode_peer_request(RaftBatch("n1", [b"m"]))
    body = msgspec.msgpack.decode(base64.b64decode(plain["b"]))
    assert set(body) == {"type", "src", "msgs"}  # nothing new for those that do not ride
    with_fwd = decode_peer_request(encode_peer_request(RaftBatch("n1", [], [FwdItem(1, [b"c"])])))
    assert isinstance(with_fwd, RaftBatch) and with_fwd.fwds == [FwdItem(1, [b"c"])]


# -- who may answer --------------------------------------------------------------------------


class _View:
    def __init__(self, lead: str) -> None:
        self.raft = self
        self.role = Role.FOLLOWER
        self.lead = lead


def _forwarded(gw: Gateway[str]) -> Forward:
    gw.submit("x", b"{}")
    gw.pump(_View("L"))  # type: ignore[arg-type]
    [fwd] = gw.take()
    assert isinstance(fwd, Forward) and fwd.to == "L"
    return fwd


def test_only_the_node_a_batch_went_to_answers_it() -> None:
    """An answer that rode another member's traffic is not the leader's: a member that
    guessed a batch number cannot make a client believe its order was refused or placed."""
    gw: Gateway[str] = Gateway("f", GatewayLimits(forward_timeout_ticks=1_000))
    fwd = _forwarded(gw)
    refused = At(0, 0, ((0, "bad_signature"),))
    gw.forward_replied(fwd.batch, refused, "n4")
    assert gw.take() == [] and gw.inflight() == 1
    assert gw.counters["forward_replies_ignored"] == 1
    gw.forward_replied(fwd.batch, refused, "L")
    [out] = gw.take()
    assert isinstance(out, Outcome) and out.fate == Fate.INVALID and gw.inflight() == 0


def test_an_answer_on_the_forwards_own_request_needs_no_sender() -> None:
    gw: Gateway[str] = Gateway("f", GatewayLimits(forward_timeout_ticks=1_000))
    fwd = _forwarded(gw)
    gw.forward_replied(fwd.batch, At(0, 0, ((0, "bad_signature"),)))
    [out] = gw.take()
    assert isinstance(out, Outcome) and out.fate == Fate.INVALID


# -- the leader's side, in process -------------------------------------------------------------


@pytest.fixture
async def cluster() -> AsyncIterator[InProcCluster]:
    async with running(voters=3) as c:
        yield c


def _order(cluster: InProcCluster, oid: str) -> bytes:
    env = cluster.sign(
        {
            "type": "place",
            "client": "rider",
            "id": oid,
            "market": "M",
            "side": "buy",
            "qty": "1",
            "price": "5",
        }
    )
    return msgspec.json.encode(env)


def _gateway(cluster: InProcCluster, node: str) -> Gateway[int]:
    driver = cluster.nodes[node].driver
    assert driver is not None
    return driver.gateway


async def _raft(cluster: InProcCluster, to: str, batch: RaftBatch) -> Any:
    task = asyncio.ensure_future(
        cluster.client.request(service_names("main", to)["peer"], encode_peer_request(batch))
    )
    return decode_peer_reply(await cluster.during(task))


async def test_a_forward_riding_a_raft_request_is_proposed_and_answered_the_same_way(
    cluster: InProcCluster,
) -> None:
    leader = await cluster.wait_leader()
    follower = next(n for n in cluster.voter_ids if n != leader)
    await cluster.command(leader, {"type": "add_market", "market": "M", "tick": "1", "lot": "1"})
    await cluster.register("rider")
    ignored = _gateway(cluster, follower).counters["forward_replies_ignored"]
    cmds = [_order(cluster, "r1"), _order(cluster, "r2")]
    reply = await _raft(cluster, leader, RaftBatch(follower, [], [FwdItem(5, cmds)]))
    assert reply == RaftAck(0, 0)
    await cluster.converged()
    for node in cluster.nodes:
        for oid in ("r1", "r2"):
            r = await cluster.call(node, "order", {"client": "rider", "id": oid})
            assert r["state"] == "resting", (node, r)
    # the leader's answer rode back to the follower (which forwarded no batch 5: it is
    # ignored there, and counted)
    await cluster.until(
        lambda: _gateway(cluster, follower).counters["forward_replies_ignored"] > ignored
    )


async def test_a_copy_of_a_riding_forward_is_proposed_once(cluster: InProcCluster) -> None:
    leader = await cluster.wait_leader()
    follower = next(n for n in cluster.voter_ids if n != leader)
    await cluster.command(leader, {"type": "add_market", "market": "M", "tick": "1", "lot": "1"})
    await cluster.register("rider")
    before = cluster.nodes[leader].replica.raft.status().last_index  # type: ignore[union-attr]
    item = FwdItem(9, [_order(cluster, "c1")])
    for _ in range(3):
        await _raft(cluster, leader, RaftBatch(follower, [], [item]))
    await cluster.run(1.0)
    after = cluster.nodes[leader].replica.raft.status().last_index  # type: ignore[union-attr]
    assert after == before + 1
    await cluster.converged()


@pytest.mark.parametrize(
    "bad",
    [
        [FwdItem(1, [])],  # no commands
        [FwdItem(-1, [b"{}"])],  # a negative batch
        [FwdItem(1, [b"x" * (200 * 1024)])],  # a command over the size cap
        [FwdItem(i, [b"{}"]) for i in range(65)],  # too many forwards in one batch
    ],
)
async def test_a_batch_with_a_bad_forward_is_refused_whole(
    cluster: InProcCluster, bad: list[FwdItem]
) -> None:
    leader = await cluster.wait_leader()
    follower = next(n for n in cluster.voter_ids if n != leader)
    before = cluster.nodes[leader].replica.raft.status().last_index  # type: ignore[union-attr]
    with pytest.raises(GrenacheError, match="BAD_REQUEST"):
        await _raft(cluster, leader, RaftBatch(follower, [], bad))
    await cluster.run(0.5)
    assert cluster.nodes[leader].replica.raft.status().last_index == before  # type: ignore[union-attr]
    assert not cluster.nodes[leader].failed


async def test_too_many_answers_in_one_batch_are_refused(cluster: InProcCluster) -> None:
    leader = await cluster.wait_leader()
    follower = next(n for n in cluster.voter_ids if n != leader)
    answers = [FwdAnswer(i, FwdDeclined("x", True)) for i in range(1_025)]
    with pytest.raises(GrenacheError, match="BAD_REQUEST"):
        await _raft(cluster, follower, RaftBatch(leader, [], [], answers))
    assert not cluster.nodes[follower].failed


async def test_a_riding_forward_from_outside_the_configuration_is_dropped(
    cluster: InProcCluster,
) -> None:
    """Its answer would ride to a claimed name: no channel is opened, nothing proposed."""
    leader = await cluster.wait_leader()
    await cluster.command(leader, {"type": "add_market", "market": "M", "tick": "1", "lot": "1"})
    await cluster.register("rider")
    node = cluster.nodes[leader]
    assert node.driver is not None and node.peers is not None
    before = node.driver.replica.raft.status().last_index
    reply = await _raft(
        cluster, leader, RaftBatch("stranger", [], [FwdItem(1, [_order(cluster, "s1")])])
    )
    assert reply == RaftAck(0, 0)
    await cluster.run(1.0)
    assert node.driver.replica.raft.status().last_index == before
    assert "stranger" not in node.peers.channels
    assert node.driver.counters["forwards_refused"] == 1


LIMITS = PeerLimits(1 << 20, 1 << 20, 1, 5_000, 5_000)


class _Silent:
    """A peer client whose requests never get an answer."""

    async def request(self, *_a: Any, **_k: Any) -> Any:
        await asyncio.Event().wait()


class _Refused:
    """A peer client whose requests surely never arrive (connection refused)."""

    async def request(self, *_a: Any, **_k: Any) -> Any:
        raise TransportError("ERR_REQUEST_GENERIC: refused", delivered=False)


async def test_answers_queued_for_one_member_are_bounded() -> None:
    """A member that forwards faster than it takes answers cannot grow the leader's queue."""

    peers = Peers("n1", "main", _Silent(), LIMITS, lambda *_: None, lambda _: None)  # type: ignore[arg-type]
    try:
        for b in range(ANSWERS_QUEUED_MAX + 76):
            peers.answer("n2", b, FwdDeclined("leader busy", True))
        ch = peers.channels["n2"]
        assert len(ch.answers) == ANSWERS_QUEUED_MAX and ch.dropped == 76
    finally:
        await peers.close()


async def test_riding_forwards_whose_request_never_left_are_reported_not_delivered() -> None:
    """With the stream down, riding forwards go in the channel's raft request; when that
    request surely never arrived (connection refused), the forwarder is told so, as a
    forward's own request would tell it: its commands go again, nothing is unknown."""

    failed: list[tuple[list[int], bool]] = []
    lost = asyncio.Event()

    def on_failed(batches: list[int], delivered: bool, _why: str) -> None:
        failed.append((batches, delivered))
        lost.set()

    peers = Peers("n2", "main", _Refused(), LIMITS, lambda *_: None, lambda _: None)  # type: ignore[arg-type]
    peers.on_forwards_failed = on_failed
    try:
        peers.forward("n1", 41, [b"{}"])
        peers.forward("n1", 42, [b"{}"])
        await asyncio.wait_for(lost.wait(), 5.0)
        assert failed == [([41, 42], False)]
    finally:
        await peers.close()


class _FakeStream:
    """What a channel uses of a StreamSender: a connection that can break and come back."""

    def __init__(self) -> None:
        self.connected = True
        self.connects = 1
        self.frames: list[bytes] = []

    def ready(self) -> bool:
        return self.connected

    def write(self, frame: bytes) -> None:
        self.frames.append(frame)

    async def close(self) -> None:
        self.connected = False


async def test_riding_forwards_on_a_broken_stream_are_unknown_at_once() -> None:
    """A forward written on a connection that then broke may or may not have been read: its
    forwarder learns that at the next turn (unknown; the client sends it again), not at its
    deadline.  Forwards written on the new connection are not touched."""

    stream = _FakeStream()
    failed: list[tuple[list[int], bool]] = []
    peers = Peers(
        "n2",
        "main",
        _Silent(),  # type: ignore[arg-type]
        LIMITS,
        lambda *_: None,
        lambda _: None,
        streams=lambda _name: stream,  # type: ignore[arg-type,return-value]
    )
    peers.on_forwards_failed = lambda b, d, _w: failed.append((b, d))
    try:
        peers.forward("n1", 7, [b"{}"])
        peers.flush()
        assert len(stream.frames) == 1 and decode_raft_frame(stream.frames[0]).fwds[0].batch == 7
        peers.flush()
        assert failed == []  # the connection is up: nothing to say
        stream.connects = 2  # it broke and came back
        peers.forward("n1", 8, [b"{}"])
        peers.flush()
        assert failed == [([7], True)]
        stream.connected = False
        peers.flush()
        assert failed == [([7], True), ([8], True)]
    finally:
        await peers.close()
