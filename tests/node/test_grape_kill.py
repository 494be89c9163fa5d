"""Issue 5, test 3: one of the two Grapes is killed in the middle of the load; trading goes on.

How: 3 voters + 2 learners on two Grapes (every node and client knows both URLs), the event
stream of n5 recorded from the first command.  Four client processes send 500 random commands
each through n1–n4, paced over about 17 seconds, 15 s of retries per command.  When a fifth of
them are in the log, the first Grape (the one every Link starts with) gets SIGKILL; the load
goes on for about 13 s more.  The test clients keep using a node's last known address when a
lookup fails or is empty (``node.history.Client``), so what is measured is the nodes.

Proves (when it passes):

* every command is acknowledged, including the 1,500 or so started after the kill, each
  within 10 s;
* the history holds (``node.history.check``) and all five replicas converge to books equal
  to the replay of the log.

A surviving Grape whose only DHT neighbour died answers most lookups with ``[]`` after a
2–2.5 s stall.  Until the Link kept serving the last known non-empty lookup while Grapes fail
(stale-while-revalidate), nodes lost their peers' addresses within seconds of the kill, lost
their leader, and an idle cluster never recovered; ``TradingStoppedError`` reports such a
stall with the acknowledgements per 2.5 s window and the terms before and after (elections).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from .conftest import started_harness
from .harness import ClientProcs, Harness, summary
from .history import OK, Op

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(240),
    pytest.mark.long,
]


class TradingStoppedError(AssertionError):
    """Commands stopped being acknowledged after the Grape died."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def harness(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    async with started_harness(tmp_path_factory, "gkill", stream_node="n5", grapes=2) as h:
        yield h


def timeline(ops: list[Op], since: float) -> str:
    windows: dict[int, list[Op]] = {}
    for op in ops:
        if op.started > since:
            windows.setdefault(int((op.started - since) // 2.5), []).append(op)
    lines = []
    for w, wops in sorted(windows.items()):
        lat = sorted(op.ended - op.started for op in wops)
        n_ok = sum(op.status == OK for op in wops)
        lines.append(
            f"started +{w * 2.5:4.1f}s: {n_ok}/{len(wops)} acknowledged, "
            f"latency p50 {statistics.median(lat):.2f}s max {lat[-1]:.2f}s"
        )
    return "\n  ".join(lines)


def terms(st: dict[str, object]) -> dict[str, object]:
    return {n: s["term"] if isinstance(s, dict) else s for n, s in st.items()}


async def test_one_grape_killed_mid_load(harness: Harness) -> None:
    c = harness.cluster
    stream = harness.stream
    assert stream is not None and c.grape_cluster is not None
    procs = ClientProcs(
        harness,
        [("n1", "p1"), ("n2", "p2"), ("n3", "p3"), ("n4", "p4")],
        500,
        rate_per_s=30.0,
        concurrency=64,
        deadline_s=15.0,
    )
    await procs.start()
    base = stream.last_seq
    before = terms(await harness.status_direct())
    procs.go()
    try:
        await stream.wait_seq(base + 400, timeout_s=60)
        c.grape_cluster[0].kill()
        killed_at = time.time()
        try:
            ops = await procs.wait(timeout_s=45)
        except TimeoutError:
            after = terms(await harness.status_direct())
            raise TradingStoppedError(
                f"the clients were still retrying 45 s after the Grape died; "
                f"terms {before} -> {after}; stream at seq {stream.last_seq}"
            ) from None
    finally:
        await procs.aclose()
    counts = summary(ops)
    print("after the Grape kill:\n  " + timeline(ops, killed_at))
    late = [op for op in ops if op.started > killed_at]
    bad = [op for op in ops if op.status != OK]
    worst = max(op.ended - op.started for op in late)
    if bad or worst >= 10.0:
        after = terms(await harness.status_direct())
        raise TradingStoppedError(
            f"{len(bad)} commands never acknowledged, slowest after the kill {worst:.1f} s "
            f"({counts}); terms {before} -> {after}; after the kill:\n  "
            + timeline(ops, killed_at)
            + (f"\n  e.g. {bad[0].error}" if bad else "")
        )
    assert len(late) > 1000, f"the load should go on well past the kill: {counts}"
    _res, statuses = await harness.verify(timeout_s=60)
    assert len(statuses) == 5
    assert not c.grape_cluster[0].alive and c.grape_cluster[1].alive
