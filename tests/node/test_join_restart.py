"""Issue 5, test 4: a node joins mid-run as a learner; voters restarted from their data dirs.

How: 3 voters + 2 learners with **disk** storage and signed peer traffic (a cluster secret), the
event stream of learner n5 recorded from the first command. Four client processes send 250
random commands each through n1–n4, paced over about five seconds. While they run: a sixth node
``n6`` starts with ``--join`` (it finds the leader through the Grapes and asks to be added as a
learner); a little later a follower voter gets SIGKILL and is restarted from its data directory
one second after. After the load, all three voters get SIGKILL at once and are restarted from
their data directories.

Proves:

* n6 becomes a learner and reaches the same applied index, state hash and books as everyone;
* the restarted voter rejoins as a voter and converges;
* a voter restarts *with its log*: after the all-voter crash only voters can supply entries
  (learners never send any), and the restarted voters come back to at least the commit index
  from before the crash, elect a leader, and commit again;
* through all of it the history holds (``node.history.check``): no acknowledged command lost,
  none executed twice, every replica's books equal the replay of the log.

Not covered: catch-up from a *snapshot*.  A node compacts its log only every 20,000 entries
(``NodeConfig.snapshot_interval_entries``) and ``grenex node`` has no option to change it, so a
test of this size always catches up from the log.  A ``--snapshot-interval`` /
``--compaction-retain`` option would let this test force the snapshot path.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from .conftest import started_harness
from .harness import ClientProcs, Harness, summary

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(240),
    pytest.mark.long,
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def harness(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    async with started_harness(
        tmp_path_factory, "join", stream_node="n5", memory=False, secret="s3cret-join"
    ) as h:
        yield h


async def test_join_and_voter_restart_mid_run(harness: Harness) -> None:
    c = harness.cluster
    stream = harness.stream
    assert stream is not None
    procs = ClientProcs(
        harness,
        [("n1", "p1"), ("n2", "p2"), ("n3", "p3"), ("n4", "p4")],
        250,
        rate_per_s=50.0,
        concurrency=16,
    )
    await procs.start()
    base = stream.last_seq
    procs.go()
    try:
        await stream.wait_seq(base + 250, timeout_s=60)
        joined = await c.add_node()
        await stream.wait_seq(base + 500, timeout_s=60)
        leader = await c.wait_leader()
        victim = next(v for v in c.voter_ids if v != leader)
        c.kill(victim, signal.SIGKILL)
        await asyncio.sleep(1.0)
        await c.restart(victim)
        ops = await procs.wait(timeout_s=150)
    finally:
        await procs.aclose()
    assert joined == "n6"
    counts = summary(ops)
    assert counts.get("failed", 0) == 0, counts
    res, statuses = await harness.verify(timeout_s=90)
    assert set(statuses) == {"n1", "n2", "n3", "n4", "n5", "n6"}
    members = statuses[leader]["members"]
    assert joined in members["learners"] and victim in members["voters"], members

    # Every voter at once: only their own logs can bring them back to the old commit index.
    commit_before = max(s["commit"] for s in statuses.values())
    for v in c.voter_ids:
        c.kill(v, signal.SIGKILL)
    for v in c.voter_ids:
        await c.restart(v)
    await c.wait_leader(timeout_s=60)
    deadline = time.monotonic() + 60
    while True:
        st = await harness.status_direct()
        applied = {v: st[v]["applied"] if isinstance(st[v], dict) else -1 for v in c.voter_ids}
        if min(applied.values()) >= commit_before:
            break
        assert time.monotonic() < deadline, f"voters at {applied}, before the crash {commit_before}"
        await asyncio.sleep(0.2)
    res, statuses = await harness.verify(timeout_s=90)
    assert len(statuses) == 6
    print(
        f"ops {counts}; log entries {res.entries}; unacknowledged but executed "
        f"{res.unknown_executed}"
    )
