"""Deferred commit notices on the real node (in process, fake network and clock).

The leader tells a new commit index at once only to the node that forwarded the command (it
answers its client when it applies it); the third node learns it with the next append or,
when none comes, from the leader's commit-notice timer ``commit_notice_delay_ms`` later, long
before a heartbeat would tell it (heartbeats here every 2.5 s).  With the delay 0 every node
hears at once (the old behaviour), and the timer never runs.
"""

from __future__ import annotations

from typing import Any

from .inproc import InProcCluster, running

MARKET = {"type": "add_market", "market": "M", "tick": "1", "lot": "1"}
SLOW_BEATS: dict[str, Any] = {"heartbeat_interval_ticks": 50, "election_timeout_ticks": 60}


def _order(i: int) -> dict[str, Any]:
    return {
        "type": "place",
        "client": "c",
        "id": f"o{i}",
        "market": "M",
        "side": "buy",
        "qty": "1",
        "price": "5",
    }


async def _settled(c: InProcCluster) -> tuple[str, str, str]:
    leader = await c.wait_leader(60)
    a, b = (n for n in c.voter_ids if n != leader)
    await c.command(leader, MARKET)
    await c.command(leader, _order(0))  # registers c everywhere first
    await c.until(lambda: min(c.applied().values()) == max(c.applied().values()), 10)
    return leader, a, b


async def test_the_forwarder_hears_at_once_the_others_from_the_timer() -> None:
    async with running(voters=3, commit_notice_delay_ms=300, **SLOW_BEATS) as c:
        leader, a, b = await _settled(c)
        driver = c.nodes[leader].driver
        assert driver is not None
        fired = driver.counters["commit_timer"]
        reply = await c.command(a, _order(1))  # a forwards it: a answers once it applied it
        assert reply["events"][0]["type"] == "accepted"
        applied = c.applied()
        assert applied[a] == applied[leader]
        assert applied[b] < applied[a]  # b was not told yet
        took = await c.until(lambda: c.applied()[b] == c.applied()[a], 2.0, step_s=0.01)
        assert took <= 0.5  # the timer (300 ms), not a heartbeat (2.5 s)
        assert driver.counters["commit_timer"] > fired


async def test_with_no_delay_everyone_hears_at_once() -> None:
    async with running(voters=3, commit_notice_delay_ms=0, **SLOW_BEATS) as c:
        leader, a, b = await _settled(c)
        driver = c.nodes[leader].driver
        assert driver is not None
        await c.command(a, _order(1))
        took = await c.until(lambda: c.applied()[b] == c.applied()[a], 2.0, step_s=0.01)
        assert took <= 0.05
        assert driver.counters["commit_timer"] == 0
