"""Issue 10, item 9: a founding voter that restarts empty must not vote acknowledged orders away.

How (real processes, in-memory logs, as a user of ``grenex up`` did it): three voters A (the
leader), B and C.  C is paused with SIGSTOP; twenty orders are placed through A and
acknowledged (so they are stored on A and B, a majority); A and B get SIGKILL; B is started
again with the same id, ``--memory`` and ``--voters`` (so its log is empty), then C resumes.

Before the fix B bootstrapped a brand-new log, granted C its vote (C's log, with the founding
entries and a no-op, looked more up to date than B's), C led, and the acknowledged orders were
gone from every node.  Now B asks the other founding voters first; C reports a commit index
beyond the founding entries, so B does not found: it waits to be re-admitted, never votes, and
C cannot lead on B's word.  The test watches B and C for several election timeouts after C
answers again and fails as soon as any of them leads with an acknowledged order missing from
its books, or leads at all (the only replica that holds the orders is A).

A second test restarts B the same way while A and C keep running: B asks to rejoin, the leader
demotes it to a learner, B catches up, and the leader promotes it again; B then holds every
acknowledged order and votes again.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from grenex.devnet import LocalCluster
from grenex.grenache import GrenacheError
from grenex.grenache.testing import async_wait_for

pytestmark = [pytest.mark.timeout(180)]

ORDERS = 20
# The node's default election timeout is 16 ticks of 50 ms, randomised up to twice that: 1.6 s.
ELECTION_TIMEOUT_MAX_S = 1.6


def _cluster(tmp_path: Path, name: str) -> LocalCluster:
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed (the Grapes are npm grenache-grape)")
    return LocalCluster(
        nodes=3, voters=3, grapes=1, cluster=name, memory=True, base_dir=tmp_path / name
    )


def _signal(c: LocalCluster, node: str, sig: int) -> None:
    """SIGSTOP/SIGCONT by PID (``LocalCluster.kill`` waits for the process to end)."""
    proc = c.procs[node].proc
    assert proc is not None and proc.poll() is None, node
    proc.send_signal(sig)


async def _status(c: LocalCluster, node: str) -> dict[str, Any] | None:
    try:
        st = await c.request(node, "status", timeout_ms=1_000)
    except GrenacheError:
        return None
    return st if isinstance(st, dict) else None


async def _place_orders(c: LocalCluster, leader: str) -> dict[str, int]:
    """Twenty resting buys through the leader; their ids and acknowledged log indices."""
    acked: dict[str, int] = {}
    await c.register(leader, "alice")
    for i in range(ORDERS):
        oid = f"o{i + 1}"
        args = {
            "type": "place",
            "client": "alice",
            "id": oid,
            "market": "BTC-USD",
            "side": "buy",
            "qty": "0.01",
            "price": f"{100 + i}",
        }
        reply = await c.command(leader, args, timeout_ms=10_000)
        assert isinstance(reply, dict) and type(reply.get("seq")) is int, reply
        assert reply["events"][0]["type"] == "accepted", reply
        acked[oid] = reply["seq"]
    return acked


async def _resting_ids(c: LocalCluster, node: str) -> set[str]:
    reply = await c.request(node, "book", {"market": "BTC-USD"}, timeout_ms=3_000)
    books = reply["books"] if isinstance(reply, dict) else []
    return {o["id"] for b in books for o in b["bids"] if o["client"] == "alice"}


async def _applied_at_least(c: LocalCluster, node: str, index: int) -> bool:
    st = await _status(c, node)
    return st is not None and st["applied"] >= index


async def test_empty_voter_does_not_vote_acknowledged_orders_away(tmp_path: Path) -> None:
    c = _cluster(tmp_path, "emptyvoter")
    await c.start(timeout_s=90)
    try:
        a = await c.wait_leader()
        b, cc = (n for n in c.voter_ids if n != a)
        _signal(c, cc, signal.SIGSTOP)
        acked = await _place_orders(c, a)
        last = max(acked.values())
        await async_wait_for(
            lambda: _applied_at_least(c, b, last), 10, interval=0.1, message=f"{b} applies"
        )
        assert await _resting_ids(c, b) == set(acked), "B must hold every acknowledged order"

        c.kill(a, signal.SIGKILL)
        c.kill(b, signal.SIGKILL)
        await c.restart(b)  # same id, --memory, --voters: an empty log
        _signal(c, cc, signal.SIGCONT)

        # The point is a duration: C must stay leaderless for several election timeouts once
        # it answers again.  Measured from C's first answer, not from a sleep.
        await async_wait_for(
            lambda: _answers(c, cc), 30, interval=0.1, message=f"{cc} answers after SIGCONT"
        )
        watch_until = time.monotonic() + 5 * ELECTION_TIMEOUT_MAX_S
        seen_terms: set[int] = set()
        while time.monotonic() < watch_until:
            for node in (b, cc):
                st = await _status(c, node)
                if st is None:
                    continue
                if node == cc:
                    seen_terms.add(st["term"])
                if st["role"] == "leader":
                    held = await _resting_ids(c, node)
                    lost = sorted(set(acked) - held, key=lambda o: int(o[1:]))
                    assert not lost, (
                        f"{node} leads (term {st['term']}) without {len(lost)} of the "
                        f"{ORDERS} acknowledged orders: {lost}"
                    )
                    pytest.fail(f"{node} leads although only the killed {a} holds the orders")
            await asyncio.sleep(0.2)
        assert seen_terms, f"{cc} never answered"
        st_b = await _status(c, b)
        assert st_b is not None and st_b["role"] != "leader"
        assert b not in st_b["members"]["voters"], "B has founded nothing and votes for nobody"
    finally:
        for node in c.voter_ids:
            proc = c.procs[node].proc
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a stopped process ignores SIGTERM
        await c.stop()


async def _answers(c: LocalCluster, node: str) -> bool:
    return await _status(c, node) is not None


async def test_empty_voter_rejoins_and_is_promoted_again(tmp_path: Path) -> None:
    c = _cluster(tmp_path, "rejoiner")
    await c.start(timeout_s=90)
    try:
        a = await c.wait_leader()
        b = next(n for n in c.voter_ids if n != a)
        acked = await _place_orders(c, a)
        c.kill(b, signal.SIGKILL)
        await c.restart(b)

        async def readmitted() -> bool:
            st = await _status(c, a)
            if st is None or st["role"] != "leader" or b not in st["members"]["voters"]:
                return False
            mine = await _status(c, b)
            return mine is not None and mine["applied"] >= max(acked.values())

        await async_wait_for(readmitted, 60, interval=0.2, message=f"{b} re-admitted")
        assert await _resting_ids(c, b) == set(acked)
        log = c.procs[b].log_path.read_text(errors="replace")
        assert "rejoin" in log, "B must have asked to be re-admitted, not have founded anew"
        # B counts again: with B back, the cluster survives losing C
        cc = next(n for n in c.voter_ids if n not in (a, b))
        c.kill(cc, signal.SIGKILL)
        await c.register(a, "bob", timeout_ms=15_000)
        reply = await c.command(
            a,
            {
                "type": "place",
                "client": "bob",
                "id": "x1",
                "market": "BTC-USD",
                "side": "sell",
                "qty": "0.01",
                "price": "500",
            },
            timeout_ms=15_000,
        )
        assert reply["events"][0]["type"] == "accepted", reply
    finally:
        await c.stop()
