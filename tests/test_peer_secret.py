"""With a cluster secret, the consensus endpoint refuses whatever is not signed with it.

How: three real node processes on real Grapes with ``GRENEX_CLUSTER_SECRET`` set (through
``LocalCluster(secret=...)``).  Proves: the cluster elects and commits (its own traffic is
signed); a well-formed but unsigned consensus batch, one signed with another secret, and an
unsigned forwarded command are each refused — sent with a member's certificate (the peer
service is mutual TLS: a stranger without one is refused in the handshake) — with
``ERR_GRENEX_BAD_REQUEST``; nothing reached the log (the applied index and state hash do not
move) and the cluster still commits.
"""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from grenex.codec.api import service_names
from grenex.codec.peer import Forward, Join, RaftBatch, encode_peer_request
from grenex.codec.raft import encode_message
from grenex.consensus import Message, MessageType
from grenex.devnet import LocalCluster
from grenex.grenache import PeerRPCClient, RemoteError, TransportError
from grenex.grenache.tls import pinned_client_context, unb64url

pytestmark = pytest.mark.timeout(120)


def tls_to(c: LocalCluster, node: str, as_node: str | None = None) -> ssl.SSLContext:
    """A client context pinning ``node``'s certificate; with ``as_node``, presenting that
    member's certificate (mutual TLS), else none."""
    pins = [unb64url(c.cert_of(node))]
    if as_node is None:
        return pinned_client_context(pins)
    return pinned_client_context(
        pins,
        client_cert=unb64url(c.cert_of(as_node)),
        client_seed=c.keyring.node_key(as_node).seed,
    )


async def test_unsigned_peer_traffic_is_refused() -> None:
    async with LocalCluster(nodes=3, voters=3, grapes=1, secret="correct horse") as c:
        leader = await c.wait_leader()
        follower = next(n for n in c.node_ids if n != leader)
        await c.register(follower, "a")
        placed = await c.command(
            follower,
            {
                "type": "place",
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

        cancel = c.signer.command({"type": "cancel", "client": "a", "id": "1"})
        forged = Message(MessageType.HEARTBEAT, leader, follower, 10**6, commit=10**6)
        batch = RaftBatch(leader, [encode_message(forged)])
        attempts: list[dict[str, Any]] = [
            encode_peer_request(batch),
            encode_peer_request(batch, b"wrong secret"),
            encode_peer_request(Forward(leader, 1, [cancel])),
            encode_peer_request(Join("intruder")),
        ]
        name = service_names(c.cluster, follower)["peer"]
        assert c._link is not None
        # a stranger (no member certificate) is refused in the TLS handshake: nothing is read
        stranger = PeerRPCClient(c._link, ssl_context=tls_to(c, follower), attempts_max=1)
        try:
            with pytest.raises(TransportError):
                await stranger.request(name, attempts[0], timeout_ms=5_000)
        finally:
            await stranger.close()
        # a member's certificate (the leader's own key) without the secret is refused too
        member = PeerRPCClient(c._link, ssl_context=tls_to(c, follower, leader))
        try:
            for payload in attempts:
                with pytest.raises(
                    RemoteError, match="ERR_GRENEX_BAD_REQUEST: peer payload not signed"
                ):
                    await member.request(name, payload, timeout_ms=5_000)
        finally:
            await member.close()

        after = await c.wait_converged(30)
        assert {s["applied"] for s in after.values()} == {s["applied"] for s in before.values()}
        assert max(s["term"] for s in after.values()) < 10**6
        book = await c.request(leader, "book", {"market": "BTC-USD"})
        assert [o["id"] for o in book["books"][0]["bids"]] == ["1"]  # the cancel never ran
        again = await c.command(
            leader,
            {
                "type": "place",
                "client": "a",
                "id": "2",
                "market": "BTC-USD",
                "side": "buy",
                "qty": "1",
                "price": "1",
            },
        )
        assert again["events"][-1]["type"] == "resting"
