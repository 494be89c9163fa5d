"""Issue 5, test 1: five replicas converge under concurrent load from four client processes.

How: a cluster of 3 voters (n1–n3) and 2 learners (n4, n5) on real Grapes; the event stream of
n5 is recorded from before the first command.  Four client *processes* (``node.driver``),
p1–p4 (each account registered once), each send 500 random signed place/cancel/amend commands
(every tif, post_only, stp mode, market orders, some invalid fields) through their own node
n1–n4, all started at the same moment, unpaced, 8 in flight each.

Proves, with no fault injected:

* every one of the 2,000 commands is acknowledged;
* all five nodes report the same applied index, commit index and state hash, and identical
  ``book`` replies;
* the history checker (``node.history.check``): every acknowledged command is in the log once,
  with exactly the events it was answered with; nothing else is in the log; no order id runs
  twice; replaying the reconstructed log gives exactly the streamed events, and its books
  equal every node's books; an order-quantity model over the stream holds;
* ``grenex replay FILE --book`` (the CLI, in its own process) on the reconstructed log (a
  ``grenex export``: the genesis, then the signed envelopes at their indexes with their times)
  prints the same events, with their entries' times, and books;
* every node's ``trades`` replies (the newest page, and all of them paged forward) equal the
  stream's trades.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from .conftest import started_harness
from .harness import ClientProcs, Harness, summary

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(240)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def harness(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    async with started_harness(tmp_path_factory, "conv", stream_node="n5") as h:
        yield h


async def test_four_client_processes_converge(harness: Harness) -> None:
    procs = ClientProcs(
        harness, [("n1", "p1"), ("n2", "p2"), ("n3", "p3"), ("n4", "p4")], 500, concurrency=8
    )
    await procs.start()
    procs.go()
    ops = await procs.wait(timeout_s=150)
    assert len(ops) == 2000
    counts = summary(ops)
    assert counts.get("ok") == 2000, (counts, [op for op in ops if op.status != "ok"][:5])
    assert min(counts["place"], counts["cancel"], counts["amend"]) > 200, counts

    res, statuses = await harness.verify()
    assert len(statuses) == 5
    assert len({(s["applied"], s["commit"], s["state_hash"]) for s in statuses.values()}) == 1
    assert res.trades > 100, "the load should trade"
    assert any(b["bids"] or b["asks"] for b in res.books), "and leave resting orders"

    # the CLI replay of the reconstructed log: same events, same books
    c = harness.cluster
    assert c.base_dir is not None
    log_file = c.base_dir / "committed.jsonl"
    log_file.write_bytes(res.log_lines)
    out = subprocess.run(
        [sys.executable, "-m", "grenex", "replay", str(log_file), "--book"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    lines = [json.loads(x) for x in out.splitlines()]
    assert [x for x in lines if x["type"] == "book"] == res.books
    replayed = [x for x in lines if x["type"] != "book"]
    assert untimed(replayed) == harness.stream.events  # type: ignore[union-attr]
    times = harness.stream.times  # type: ignore[union-attr]
    assert all(x["time"] == times[x["seq"]] for x in replayed)

    # trades: bounded (10,000 kept) but the same on every replica: the newest page, and
    # every trade paged forward with since/more
    stream_trades = [e for e in harness.stream.events if e["type"] == "trade"]  # type: ignore[union-attr]
    for node in statuses:
        newest = await harness.ask(node, "trades", {"limit": 1000})
        assert untimed(newest["trades"]) == stream_trades[-1000:], node
        paged: list[dict[str, object]] = []
        since = 0
        while True:
            page = await harness.ask(node, "trades", {"since": since, "limit": 1000})
            paged += page["trades"]
            if not page["more"]:
                break
            since = page["trades"][-1]["seq"]
        assert untimed(paged) == stream_trades, node


def untimed(trades: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trades without the time stamp of their entry (which the stream carries per frame)."""
    assert all(type(t["time"]) is int for t in trades)
    return [{k: v for k, v in t.items() if k != "time"} for t in trades]
