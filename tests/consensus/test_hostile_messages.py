"""Decodable but hostile consensus messages never stop a node (found by tests/node).

Proves:
* the wire refuses terms and indexes at or above 2**62 (a forged term of 2**64 - 1 used to be
  adopted and overflow the next election's encoding);
* a leader ignores an acknowledgement of entries it never sent (it used to trip an assertion
  in ``_send_append``);
* a replica drops a snapshot message whose data is not a replica snapshot before the core
  sees it, so it is never persisted or applied.
"""

from __future__ import annotations

import random

import pytest

from grenex.codec.genesis import parse_genesis
from grenex.codec.raft import POSITION_MAX, WireError, decode_message, encode_message
from grenex.codec.signer import Keyring
from grenex.consensus import (
    Config,
    ConfState,
    MemoryStorage,
    Message,
    MessageType,
    Role,
    Snapshot,
    bootstrap,
)
from grenex.replica import Replica, ReplicaConfig

from .harness import Cluster

GENESIS = parse_genesis(Keyring("hostile").genesis("main", ["n1", "n2", "n3"]))


@pytest.mark.parametrize("field", ["term", "index", "commit", "log_term", "reject_hint"])
def test_the_wire_refuses_huge_positions(field: str) -> None:
    ok = Message(MessageType.HEARTBEAT, "x", "n1", 3)
    assert decode_message(encode_message(ok)).term == 3
    fields: dict[str, int] = {"term": 3, field: POSITION_MAX}
    bad = Message(MessageType.HEARTBEAT, "x", "n1", **fields)  # type: ignore[arg-type]
    with pytest.raises(WireError):
        decode_message(encode_message(bad))


def test_a_leader_ignores_an_ack_beyond_its_log() -> None:
    c = Cluster(["n1", "n2", "n3"])
    c.elect("n1")
    c.propose("n1", b"x")
    c.stabilize()
    last = c["n1"].log.last_index()
    forged = Message(MessageType.APP_RESP, "n2", "n1", c["n1"].term, index=last + 1000)
    c.deliver([forged])
    c.process_all()
    c.propose("n1", b"y")  # still leading, still committing
    c.stabilize()
    assert c.role("n1") == Role.LEADER
    assert c.applied_data("n3")[-1] == b"y"


def test_a_replica_drops_a_garbage_snapshot() -> None:
    st = MemoryStorage()
    bootstrap(st, ["n1", "n2", "n3"])
    rep = Replica(ReplicaConfig(raft=Config(id="n2"), genesis=GENESIS), st, random.Random(1))
    snap = Snapshot(1000, 5, ConfState(("n1", "n2", "n3")), b"not a replica snapshot")
    msg = Message(MessageType.SNAP, "n1", "n2", 5, snapshot=snap)
    assert rep.step(msg) is False
    rd = rep.ready()
    assert rd is None or rd.snapshot is None
    assert st.snapshot().index == 0 and rep.raft.term < 5


def test_a_member_ignores_strangers() -> None:
    st = MemoryStorage()
    bootstrap(st, ["n1", "n2", "n3"])
    rep = Replica(ReplicaConfig(raft=Config(id="n2"), genesis=GENESIS), st, random.Random(1))
    while (rd := rep.ready()) is not None:  # apply the bootstrap entries: n2 knows its peers
        rep.persist(rd)
        rep.apply(rd)
    forged = Message(MessageType.HEARTBEAT_RESP, "ghost", "n2", POSITION_MAX - 1)
    assert rep.step(forged) is False
    assert rep.raft.term < 2
    assert rep.step(Message(MessageType.HEARTBEAT, "n1", "n2", 2)) is True  # a member
    assert rep.raft.term == 2
