"""A member whose configuration went stale while it was away, on the real node (in process).

n3 (a voter) is cut off (its peer service refuses connections); meanwhile n4 is admitted,
caught up and promoted, and the leadership is handed to n4; then n3's peer service comes back.
n3 still knows only n1, n2, n3: it drops everything n4 sends ("not a member") and the leader it
knew (n1) leads no more.  What the node does (``Membership.vouch_turn``): after three election
timeouts without a leader it asks a member it knows for ``members``, takes that member's word
for n4, steps n4's messages and catches up, its configuration now naming n4.  Without the hook
n3 stays behind (the second test: the gap the simulator found, seed 169 under quiet commit
notices).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from grenex.node.membership import Membership
from grenex.replica import Replica

from .inproc import InProcCluster, running

MARKET = {"type": "add_market", "market": "BTC-USD", "tick": "0.01", "lot": "0.001"}


@pytest.fixture
async def cluster() -> AsyncIterator[InProcCluster]:
    async with running(voters=3) as c:
        yield c


async def stale_n3(c: InProcCluster) -> None:
    """n3 away while n4 joins, becomes a voter and leads; then n3 is reachable again."""
    leader = await c.wait_leader()
    if leader == "n3":
        driver = c.nodes["n3"].driver
        assert driver is not None
        await c.during(driver.conf_change("transfer", "n1"))
        leader = await c.wait_leader_other_than("n3")
    await c.operator(leader, MARKET)
    await c.until(lambda: min(c.applied().values()) == max(c.applied().values()))
    n3 = c.nodes["n3"]
    assert n3.peer_server is not None
    dest = f"{c.io.net.host}:{n3.peer_server.port}"
    c.io.net.kill(dest)
    c.learner_ids.append("n4")
    await c.start_node("n4")

    def raft_of(nid: str) -> Replica:
        r = c.nodes[nid].replica
        assert r is not None
        return r

    await c.until(lambda: "n4" in raft_of(leader).raft.learners, 30)
    await c.operator(leader, {"type": "promote", "node": "n4"})
    await c.until(lambda: "n4" in raft_of(leader).raft.voters, 30)
    driver = c.nodes[leader].driver
    assert driver is not None
    await c.during(driver.conf_change("transfer", "n4"))
    await c.until(lambda: c.leader() == "n4", 30)
    await c.operator("n4", {**MARKET, "market": "ETH-USD"})
    assert raft_of("n3").raft.voters == ("n1", "n2", "n3")  # stale: n4 is a stranger to it
    c.io.net.revive(dest)


async def test_a_stale_member_catches_up_on_a_members_word(cluster: InProcCluster) -> None:
    await stale_n3(cluster)
    await cluster.converged(seconds_max=30)
    n3 = cluster.nodes["n3"]
    assert n3.replica is not None and "n4" in n3.replica.raft.voters
    assert n3.membership is not None and n3.membership.vouches >= 1
    assert n3.replica.dropped.get("not a member", 0) >= 1  # it did drop n4 before


async def test_without_asking_a_member_the_stale_member_stays_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Membership, "vouch_turn", lambda self, replica: None)  # before start
    async with running(voters=3) as cluster:
        await stale_n3(cluster)
        with pytest.raises(AssertionError, match="condition not met"):
            await cluster.converged(seconds_max=15)
        n3 = cluster.nodes["n3"].replica
        assert n3 is not None and "n4" not in n3.raft.voters
        assert n3.dropped["not a member"] >= 10  # everything n4 sends
