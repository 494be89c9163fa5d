"""With a cluster secret, the consensus endpoint refuses whatever is not signed with it.

How: three real node processes on real Grapes with ``GRENEX_CLUSTER_SECRET`` set (through
``LocalCluster(secret=...)``).  Proves: the cluster elects and commits (its own traffic is
signed); a well-formed but unsigned consensus batch, one signed with another secret, and an
unsigned forwarded command are each refused with ``ERR_GRENEX_BAD_REQUEST``; nothing reached
the log (the applied index and state hash do not move) and the cluster still commits.
"""

from __future__ import annotations

from typing import Any

import pytest

from grenex.codec.api import service_names
from grenex.codec.peer import Forward, Join, RaftBatch, encode_peer_request
from grenex.codec.raft import encode_message
from grenex.consensus import Message, MessageType
from grenex.devnet import LocalCluster
from grenex.grenache import RemoteError

pytestmark = pytest.mark.timeout(120)


async def test_unsigned_peer_traffic_is_refused() -> None:
    async with LocalCluster(nodes=3, voters=3, grapes=1, secret="correct horse") as c:
        leader = await c.wait_leader()
        follower = next(n for n in c.node_ids if n != leader)
        placed = await c.request(
            follower,
            "place",
            {
                "client": "a",
                "id": "1",
                "market": "BTC-USD",
                "side": "buy",
                "qty": "1",
                "price": "1",
            },
        )
        assert placed["events"][-1]["type"] == "resting"  # forwarded and committed: signed
        before = await c.wait_converged(30)

        forged = Message(MessageType.HEARTBEAT, leader, follower, 10**6, commit=10**6)
        batch = RaftBatch(leader, [encode_message(forged)])
        attempts: list[dict[str, Any]] = [
            encode_peer_request(batch),
            encode_peer_request(batch, b"wrong secret"),
            encode_peer_request(Forward(leader, 1, [b'{"type":"cancel","client":"a","id":"1"}'])),
            encode_peer_request(Join("intruder")),
        ]
        assert c._client is not None
        for payload in attempts:
            with pytest.raises(
                RemoteError, match="ERR_GRENEX_BAD_REQUEST: peer payload not signed"
            ):
                await c._client.request(
                    service_names("main", follower)["peer"], payload, timeout_ms=5_000
                )

        after = await c.wait_converged(30)
        assert {s["applied"] for s in after.values()} == {s["applied"] for s in before.values()}
        assert max(s["term"] for s in after.values()) < 10**6
        book = await c.request(leader, "book", {"market": "BTC-USD"})
        assert [o["id"] for o in book["books"][0]["bids"]] == ["1"]  # the cancel never ran
        again = await c.request(
            leader,
            "place",
            {
                "client": "a",
                "id": "2",
                "market": "BTC-USD",
                "side": "buy",
                "qty": "1",
                "price": "1",
            },
        )
        assert again["events"][-1]["type"] == "resting"
