"""Five (or three) whole nodes in one process, over fake Grenache and a manual clock.

What it proves: the node's own order path — client API → gateway → forward to the leader →
log → apply → answer — and its failure paths (leader killed, a slow follower, a forward lost
or duplicated, an outcome that is unknown, catch-up by snapshot), with the real node code
and no sockets, in seconds.  The slow real-process tests keep what needs real processes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from grenex.codec import api as wire
from grenex.grenache.testing import async_wait_for

from .inproc import InProcCluster, running

MARKET = {"market": "BTC-USD", "tick": "0.01", "lot": "0.001"}


@pytest.fixture
async def cluster() -> AsyncIterator[InProcCluster]:
    async with running(voters=3, learners=2) as c:
        yield c


def _place(client: str, oid: str, side: str, qty: str, price: str) -> dict[str, Any]:
    return {
        "type": "place",
        "client": client,
        "id": oid,
        "market": "BTC-USD",
        "side": side,
        "qty": qty,
        "price": price,
    }


async def test_orders_through_every_node_trade_and_converge(cluster: InProcCluster) -> None:
    leader = await cluster.wait_leader()
    await cluster.command(leader, {"type": "add_market", **MARKET})
    follower = next(n for n in sorted(cluster.nodes) if n != leader)
    r1 = await cluster.command(follower, _place("alice", "a1", "sell", "1", "100"))
    assert [e["type"] for e in r1["events"]] == ["accepted", "resting"]
    learner = "n5"
    r2 = await cluster.command(learner, _place("bob", "b1", "buy", "1", "100"))
    types = [e["type"] for e in r2["events"]]
    assert types == ["accepted", "trade", "filled", "filled"], types
    # read your writes on the node that answered
    book = await cluster.call(learner, "book", {"market": "BTC-USD"})
    assert book["books"][0]["bids"] == [] and book["books"][0]["asks"] == []
    await cluster.converged()


async def _market(cluster: InProcCluster) -> str:
    leader = await cluster.wait_leader()
    await cluster.command(leader, {"type": "add_market", **MARKET})
    return leader


def _trades_of(cluster: InProcCluster, node: str) -> int:
    engine = cluster.nodes[node].replica
    assert engine is not None
    return sum(len(b["bids"]) + len(b["asks"]) for b in engine.state.engine.books())


async def test_leader_killed_acknowledged_orders_survive(cluster: InProcCluster) -> None:
    leader = await _market(cluster)
    follower = next(n for n in sorted(cluster.nodes) if n != leader and n in cluster.voter_ids)
    for i in range(10):
        r = await cluster.command(follower, _place("alice", f"a{i}", "sell", "1", "100"))
        assert r["events"][-1]["type"] == "resting"
    await cluster.kill(leader)
    started = cluster.io.clock()
    new_leader = await cluster.wait_leader()
    assert new_leader != leader
    # the first command under the new leader, sent to a learner (forwarded)
    r = await cluster.command("n5", _place("bob", "b1", "buy", "10", "100"))
    fills = [e for e in r["events"] if e["type"] == "trade"]
    assert len(fills) == 10  # every acknowledged order was still there
    assert cluster.io.clock() - started < 10.0  # simulated seconds to recover
    await cluster.converged()


async def test_slow_follower_does_not_slow_commits(cluster: InProcCluster) -> None:
    leader = await _market(cluster)
    slow = next(n for n in cluster.voter_ids if n != leader)
    node = cluster.nodes[slow]
    assert node.peer_server is not None
    dest = f"{cluster.io.net.host}:{node.peer_server.port}"
    await cluster.register("alice")  # known everywhere first (registering waits for all)
    cluster.io.net.set_delay(dest, 0.3)  # every message to it takes 0.3 s of real time
    for i in range(5):
        await cluster.command(leader, _place("alice", f"s{i}", "sell", "1", "100"))
    cluster.io.net.set_delay(dest, 0.0)
    await cluster.converged()


async def test_forward_lost_is_unknown_and_a_retry_executes_once(
    cluster: InProcCluster,
) -> None:
    leader = await _market(cluster)
    follower = next(n for n in cluster.voter_ids if n != leader)
    peers = cluster.nodes[follower].peers
    assert peers is not None
    real_ask = peers.ask
    lost: list[str] = []

    async def ask(dst: str, msg: Any, timeout_ms: int) -> Any:
        reply = await real_ask(dst, msg, timeout_ms)
        if type(msg).__name__ == "Forward" and not lost:
            lost.append(dst)
            from grenex.node.peers import AskError

            raise AskError("reply lost", True)  # delivered and proposed, answer lost
        return reply

    peers.ask = ask  # type: ignore[method-assign]
    await cluster.register("alice")
    order = cluster.sign(_place("alice", "x1", "sell", "1", "100"))  # one envelope
    err = await cluster.call_error(follower, "place", order)
    assert err.startswith(wire.ERR_UNAVAILABLE) and "unknown" in err, err
    # the command did execute: the same envelope again returns its first outcome
    again = await cluster.call(follower, "place", order)
    assert again.get("duplicate") is True
    assert [e["type"] for e in again["events"]] == ["accepted", "resting"]
    await cluster.converged()
    book = cluster.nodes[leader].replica
    assert book is not None
    assert len(book.state.engine.books("BTC-USD")[0]["asks"]) == 1


async def test_forward_duplicated_executes_once(cluster: InProcCluster) -> None:
    leader = await _market(cluster)
    follower = next(n for n in cluster.voter_ids if n != leader)
    peers = cluster.nodes[follower].peers
    assert peers is not None
    real_ask = peers.ask

    async def ask(dst: str, msg: Any, timeout_ms: int) -> Any:
        if type(msg).__name__ == "Forward":
            await real_ask(dst, msg, timeout_ms)  # the network delivers it twice
        return await real_ask(dst, msg, timeout_ms)

    peers.ask = ask  # type: ignore[method-assign]
    r = await cluster.command(follower, _place("alice", "d1", "sell", "2", "100"))
    assert [e["type"] for e in r["events"]] == ["accepted", "resting"]
    await cluster.converged()
    replica = cluster.nodes[leader].replica
    assert replica is not None
    asks = replica.state.engine.books("BTC-USD")[0]["asks"]
    assert [(o["id"], o["qty"]) for o in asks] == [("d1", "2")]


async def test_leader_cut_off_outcome_unknown_then_retry_is_safe(
    cluster: InProcCluster,
) -> None:
    leader = await _market(cluster)
    follower = next(n for n in cluster.voter_ids if n != leader)
    old = cluster.nodes[leader].driver
    assert old is not None
    # the leader can still take forwards, but no consensus message it sends reaches anyone
    await cluster.register("carol")
    old.driver.send = lambda m: None
    order = cluster.sign(_place("carol", "c1", "buy", "1", "99"))
    err = await cluster.call_error(follower, "place", order)
    assert err.startswith(wire.ERR_UNAVAILABLE), err
    new_leader = await cluster.wait_leader_other_than(leader)
    assert new_leader != leader
    await cluster.kill(leader)
    r = await cluster.call(follower, "place", order)
    assert [e["type"] for e in r["events"]][:1] == ["accepted"]
    await cluster.converged()


async def test_snapshot_catch_up_of_a_new_learner() -> None:
    c = InProcCluster(voters=3, snapshot_interval_entries=16, compaction_retain_entries=0)
    await c.start()
    try:
        leader = await _market(c)
        for i in range(60):
            await c.command(leader, _place("alice", f"o{i}", "sell", "1", str(100 + i)))
        await c.run(1.0)
        replica = c.nodes[leader].replica
        assert replica is not None and replica.storage.first_index() > 2  # compacted
        c.learner_ids.append("n4")
        await c.start_node("n4")
        await c.converged(seconds_max=60)
        learner = c.nodes["n4"].replica
        assert learner is not None and learner.snapshots_installed >= 1
    finally:
        await c.stop()


async def test_status_is_bounded_and_reports_the_hash_with_its_index(
    cluster: InProcCluster,
) -> None:
    leader = await _market(cluster)
    for i in range(5):
        await cluster.command(leader, _place("alice", f"h{i}", "sell", "1", "100"))
    await cluster.converged()
    st = await cluster.call(leader, "status", {"hash": True})
    await cluster.run(0.2)
    st = await cluster.call(leader, "status", {})
    replica = cluster.nodes[leader].replica
    assert replica is not None
    assert st["state_hash_index"] == replica.applied_index
    assert st["state_hash"] == replica.state_hash()
    assert st["applied"] == replica.applied_index


async def test_log_action_pages_the_committed_log_with_times(cluster: InProcCluster) -> None:
    leader = await _market(cluster)
    for i in range(7):
        await cluster.command("n4", _place("alice", f"l{i}", "sell", "1", str(100 + i)))
    await cluster.converged()
    lines: list[dict[str, Any]] = []
    since = 0
    while True:
        r = await cluster.call("n5", "log", {"since": since, "limit": 3})
        lines += r["entries"]
        if r["through"] >= r["applied"]:
            break
        assert r["through"] > since
        since = r["through"]
    texts = [json.loads(json.loads(x["cmd"])["cmd"]) for x in lines]  # envelope -> TEXT
    kinds = [t["type"] for t in texts]
    assert kinds == ["admit", "admit", "add_market", "register"] + ["place"] * 7, kinds
    assert all(json.loads(x["cmd"])["sig"] for x in lines)  # logged as signed
    times = [x["time"] for x in lines]
    assert all(isinstance(t, int) for t in times) and times == sorted(times)
    seqs = [x["seq"] for x in lines]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # the reply of a command carries the same time as its log line
    r = await cluster.command(leader, _place("bob", "t1", "buy", "1", "1"))
    page = await cluster.call(leader, "log", {"since": r["seq"] - 1, "limit": 1})
    assert page["entries"][0]["time"] == r["time"]


async def test_log_action_says_compacted() -> None:
    c = InProcCluster(voters=1, snapshot_interval_entries=8, compaction_retain_entries=0)
    await c.start()
    try:
        leader = await _market(c)
        for i in range(20):
            await c.command(leader, _place("alice", f"o{i}", "sell", "1", "100"))
        await c.run(0.5)
        err = await c.call_error(leader, "log", {"since": 0})
        assert err.startswith(wire.ERR_COMPACTED + ": "), err
    finally:
        await c.stop()


async def test_a_retry_is_answered_with_the_first_outcome_and_its_time(
    cluster: InProcCluster,
) -> None:
    leader = await _market(cluster)
    await cluster.register("dora")
    order = cluster.sign(_place("dora", "r1", "sell", "1", "100"))
    first = await cluster.call("n4", "place", order)
    await cluster.run(2.0)  # the clock moves on: a new stamp would differ
    again = await cluster.call(leader, "place", order)
    assert again["duplicate"] is True
    assert (again["seq"], again["time"], again["events"]) == (
        first["seq"],
        first["time"],
        first["events"],
    )


async def test_a_node_starts_while_its_dht_reaches_no_node(cluster: InProcCluster) -> None:
    """Found by the fault lab: a node restarted while its host was cut off refused to start
    ("cannot announce on the Grapes: No nodes to query") and stayed down.  It must start, and
    announce once the DHT heals."""
    leader = await _market(cluster)
    victim = next(n for n in cluster.voter_ids if n != leader)
    await cluster.kill(victim)
    cluster.io.grape.dht_down = True
    await cluster.start_node(victim)  # before: NodeError
    cluster.io.grape.dht_down = False
    node = cluster.nodes[victim]
    mine = f"{cluster.io.grape.host}:{node.peer_port}"
    # the link re-announces on its own (real-time) interval: wait for it, bounded
    await async_wait_for(
        lambda: mine in cluster.io.grape.lookup(node.names["peer"]),
        10,
        message="the restarted node announced",
    )
    await cluster.converged()
