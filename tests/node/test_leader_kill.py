"""Issue 5, test 2: the leader is killed with SIGKILL in the middle of the load.

How: 3 voters + 2 learners with **disk** storage (``--data-dir``) and signed peer traffic (a
cluster secret), the event stream of learner n5 recorded from the first command. Four client
processes p1–p4 send 500 random commands each through n1–n4, paced (so the load spans the
fault). When a third of the commands are in the log, the leader's process gets ``kill -9``; its
client keeps retrying (same id / same req) against its dead node. Once another leader is
elected, the killed node is restarted from its data directory and its client's retries go
through it again.

Proves:

* another voter becomes leader, in a higher term, and commands are acknowledged under it;
* no acknowledged command is lost and none executes twice, with exactly the events it was
  answered with (``node.history.check``; a retried place answered from the session table is
  answered with its first outcome, never ``duplicate_id``);
* the restarted node catches up: all five replicas converge to one applied index and state
  hash, and their books equal the replay of the committed log.
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
        tmp_path_factory, "lkill", stream_node="n5", memory=False, secret="s3cret-lkill"
    ) as h:
        yield h


async def test_leader_sigkill_mid_load(harness: Harness) -> None:
    c = harness.cluster
    stream = harness.stream
    assert stream is not None
    before = await c.statuses()
    old_leader = await c.wait_leader()
    old_term = before[old_leader]["term"]
    procs = ClientProcs(
        harness,
        [("n1", "p1"), ("n2", "p2"), ("n3", "p3"), ("n4", "p4")],
        500,
        rate_per_s=100.0,
        concurrency=16,
    )
    await procs.start()
    base = stream.last_seq
    procs.go()
    try:
        await stream.wait_seq(base + 650, timeout_s=60)
        c.kill(old_leader, signal.SIGKILL)
        killed_at = time.time()
        new_leader = await c.wait_leader(timeout_s=30)
        elected_at = time.time()
        await asyncio.sleep(1.0)
        await c.restart(old_leader)
        ops = await procs.wait(timeout_s=150)
    finally:
        await procs.aclose()
    assert new_leader != old_leader
    st = await c.statuses()
    assert st[new_leader]["term"] > old_term

    counts = summary(ops)
    after = [op for op in ops if op.status == "ok" and op.started > elected_at]
    assert len(after) > 100, f"commands should be acknowledged under the new leader: {counts}"
    assert counts.get("failed", 0) == 0, counts
    retried = [op for op in ops if op.attempts > 1]
    assert retried, "the kill should catch commands in flight"
    res, statuses = await harness.verify(timeout_s=90)
    assert len(statuses) == 5
    print(
        f"killed {old_leader}; {new_leader} led after {elected_at - killed_at:.2f} s; "
        f"ops {counts}; retried {len(retried)}, of which answered from the session table "
        f"{sum(op.duplicate for op in retried)}; unacknowledged but executed "
        f"{res.unknown_executed}"
    )
