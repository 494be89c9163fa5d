"""Forged consensus messages in a member's name must not stop a node (issue: a forged
heartbeat with commit = last + 1000 killed a node with ``AssertionError: (1004, 4)``).

Anyone who can reach the peer endpoint of a cluster without a secret can send messages that
name a real member as their sender.  Authenticating senders is the trust work's job; here the
node's own rule: nothing a peer sends reaches an assertion of the consensus core.  Each forged
message goes to a follower of an in-process cluster (real node code over fake Grenache); the
node must still run and the cluster must still commit afterwards.

Before the fix, three of them stopped the cluster: the heartbeat beyond the log and the
snapshot message without a snapshot each killed the follower (assertions in the core), and a
member's name with term 2^62 - 1 left the cluster without a leader.  The other two (entries
rewriting committed ones, an acknowledgement beyond the leader's log) were already ignored by
the core; they stay here as guards of the replica's own check, which now drops them first.
A review then found four more that stopped a follower: a snapshot with empty data beyond the
log (with a data directory the bogus file was even written first, so the node could not start
again), a valid replica snapshot sent under another index, a snapshot whose membership lists
a node as voter and learner, and an appended membership entry that does not decode (under the
commit index).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from grenex.codec.api import service_names
from grenex.codec.peer import RaftBatch, encode_peer_request
from grenex.codec.raft import encode_message
from grenex.consensus import ConfState, Entry, EntryKind, Message, MessageType, Snapshot
from grenex.replica import Replica

from .inproc import InProcCluster, running

Forge = Callable[[str, str, Replica], Message]  # (leader, follower, follower's replica)


def heartbeat_beyond_the_log(leader: str, follower: str, r: Replica) -> Message:
    st = r.raft.status()
    return Message(MessageType.HEARTBEAT, leader, follower, st.term, commit=st.last_index + 1000)


def huge_term(leader: str, follower: str, r: Replica) -> Message:
    return Message(MessageType.HEARTBEAT, leader, follower, (1 << 62) - 1)


def rewrite_committed(leader: str, follower: str, r: Replica) -> Message:
    st = r.raft.status()
    bad = Entry(
        1, st.term, EntryKind.NORMAL, b'{"type":"add_market","market":"X","tick":1,"lot":1}'
    )
    return Message(
        MessageType.APP,
        leader,
        follower,
        st.term,
        index=0,
        log_term=0,
        entries=[bad],
        commit=st.commit,
    )


def ack_beyond_the_log(leader: str, follower: str, r: Replica) -> Message:
    # sent to the *leader*, as the follower's acknowledgement of entries nobody has
    return Message(MessageType.APP_RESP, follower, leader, r.raft.status().term, index=10**6)


def snapshot_without_data(leader: str, follower: str, r: Replica) -> Message:
    return Message(MessageType.SNAP, leader, follower, r.raft.status().term)


def _conf(r: Replica) -> ConfState:
    return r.raft.conf_state()


def snapshot_with_empty_data(leader: str, follower: str, r: Replica) -> Message:
    st = r.raft.status()
    snap = Snapshot(st.last_index + 1000, st.term, _conf(r), b"")
    return Message(MessageType.SNAP, leader, follower, st.term, snapshot=snap)


def snapshot_of_another_index(leader: str, follower: str, r: Replica) -> Message:
    st = r.raft.status()
    data = r.state.snapshot()  # a valid replica snapshot, at the follower's applied index
    snap = Snapshot(st.last_index + 1000, st.term, _conf(r), data)
    return Message(MessageType.SNAP, leader, follower, st.term, snapshot=snap)


def snapshot_with_a_broken_membership(leader: str, follower: str, r: Replica) -> Message:
    st = r.raft.status()
    conf = _conf(r)
    broken = ConfState(conf.voters, (conf.voters[0],))
    snap = Snapshot(st.last_index + 1000, st.term, broken, b"")
    return Message(MessageType.SNAP, leader, follower, st.term, snapshot=snap)


def undecodable_config_entry(leader: str, follower: str, r: Replica) -> Message:
    st = r.raft.status()
    last = st.last_index
    term_last = r.raft.log.term(last)
    assert term_last is not None
    bad = Entry(last + 1, st.term, EntryKind.CONFIG, b"NONSENSE")
    return Message(
        MessageType.APP,
        leader,
        follower,
        st.term,
        index=last,
        log_term=term_last,
        entries=[bad],
        commit=last + 1,
    )


@pytest.fixture
async def cluster() -> AsyncIterator[InProcCluster]:
    async with running(voters=3) as c:
        yield c


@pytest.mark.parametrize(
    "forge",
    [
        heartbeat_beyond_the_log,
        huge_term,
        rewrite_committed,
        ack_beyond_the_log,
        snapshot_without_data,
        snapshot_with_empty_data,
        snapshot_of_another_index,
        snapshot_with_a_broken_membership,
        undecodable_config_entry,
    ],
)
async def test_a_forged_message_stops_no_node(cluster: InProcCluster, forge: Forge) -> None:
    leader = await cluster.wait_leader()
    await cluster.command(leader, {"type": "add_market", "market": "M", "tick": "1", "lot": "1"})
    follower = next(n for n in cluster.voter_ids if n != leader)
    replica = cluster.nodes[follower].replica
    assert replica is not None
    m = forge(leader, follower, replica)
    target = m.dst
    await cluster.during(
        cluster.client.request(
            service_names("main", target)["peer"],
            encode_peer_request(RaftBatch(m.src, [encode_message(m)])),
        )
    )
    await cluster.run(2.0)
    assert [n for n, node in cluster.nodes.items() if node.failed] == []
    # and the cluster still commits, through every node
    for i, node in enumerate(sorted(cluster.nodes)):
        order = {
            "client": "c",
            "id": f"o{i}",
            "market": "M",
            "side": "buy",
            "qty": "1",
            "price": "5",
        }
        r = await cluster.command(node, {"type": "place", **order})
        assert r["events"][0]["type"] == "accepted"
    await cluster.converged()
    hit = cluster.nodes[target].replica
    assert hit is not None
    assert sum(hit.dropped.values()) >= (0 if forge is heartbeat_beyond_the_log else 1)
