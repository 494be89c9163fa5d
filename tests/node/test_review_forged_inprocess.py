"""Review: forged consensus messages in a member's name that still stop a node.

The replica's rule (``Replica.step``): nothing a peer sends reaches an assertion of the core
or an exception in the driver.  ``tests/node/test_forged_inprocess.py`` covers five forgeries;
these four still stop the follower they are sent to (the driver raises, ``node.failed``):

* a snapshot message whose snapshot has *empty* data at an index beyond the log: the data
  check in ``Replica.step`` is skipped for ``b""``; ``Replica.apply`` then restores the empty
  state (index 0) and asserts ``state.index == snapshot.index``.  With a data directory the
  bogus snapshot file is written first (``flush``), so the node cannot even start again
  (``Replica.__init__`` makes the same assertion);
* a snapshot whose data is a valid replica snapshot, but of another index: same assertion;
* a snapshot whose membership lists a node as voter *and* learner: ``Raft._set_conf``
  asserts while stepping the message;
* an append of a CONFIG entry whose data is not a membership change, with the commit index
  over it: ``Raft.advance`` raises ``ValueError`` from ``decode_conf_change``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from grenex.codec.api import service_names
from grenex.codec.peer import RaftBatch, encode_peer_request
from grenex.codec.raft import encode_message
from grenex.consensus import ConfState, Entry, EntryKind, Message, MessageType, Snapshot
from grenex.replica import Replica

from .inproc import InProcCluster

Forge = Callable[[str, str, Replica], Message]  # (leader, follower, follower's replica)


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
    c = InProcCluster(voters=3)
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


@pytest.mark.parametrize(
    "forge",
    [
        snapshot_with_empty_data,
        snapshot_of_another_index,
        snapshot_with_a_broken_membership,
        undecodable_config_entry,
    ],
)
async def test_review_a_forged_message_stops_no_node(cluster: InProcCluster, forge: Forge) -> None:
    leader = await cluster.wait_leader()
    await cluster.call(leader, "add_market", {"market": "M", "tick": "1", "lot": "1"})
    await cluster.converged()
    follower = next(n for n in cluster.voter_ids if n != leader)
    replica = cluster.nodes[follower].replica
    assert replica is not None
    m = forge(leader, follower, replica)
    await cluster.during(
        cluster.client.request(
            service_names("main", follower)["peer"],
            encode_peer_request(RaftBatch(m.src, [encode_message(m)])),
        )
    )
    await cluster.run(1.0)
    assert [n for n, node in cluster.nodes.items() if node.failed] == []
