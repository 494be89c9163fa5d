"""``grenex tail``: the event stream as it comes, with ``--since`` to resume.

Proves, on a real 3-node cluster (``grenex tail`` in its own process):

* ``--since N --json`` prints every event after index N that the node had applied (filled from
  the ``events`` action), then the events of commands sent afterwards through other nodes
  (the stream), each exactly once and in log order: the lines are exactly the node's own
  ``events`` after N, each with its entry's ``seq`` and ``time`` (the time the ``log`` action
  reports for that index);
* text mode shows the seq, the time in ISO-8601 UTC with milliseconds and the event;
* an idle tail says ``waiting for events…`` on stderr within a few seconds; Ctrl-C (SIGINT)
  exits 130 without a traceback.

And without a cluster, :func:`grenex.client.tail.fill` (fake reads): pages on until the
applied index, merges times from the ``log`` action, stops at ``upto``, refuses to start with
a gap (``WindowGap``) or reports it and goes on; the CLI turns a gap into one line, exit 1.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from click.testing import CliRunner

from grenex.client import tail as tail_mod
from grenex.client.tail import Cursor, Entry, WindowGap, fill
from grenex.codec.api import LogLine, LogReply
from grenex.devnet import LocalCluster

pytestmark = pytest.mark.timeout(120)
aio = pytest.mark.asyncio(loop_scope="module")

MARKET = "TL-USD"
ISO = re.compile(r"^\s*(\d+)  (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)  (\w+)\s")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRENEX_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Tail:
    """``grenex tail ARGS`` running in its own process; lines read with bounded waits."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @classmethod
    async def start(cls, c: LocalCluster, *args: str) -> Tail:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "grenex",
            "tail",
            *args,
            "--grape",
            ",".join(c.grape_urls),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
            env={**_env(), "GRENEX_GENESIS": str(c.genesis_path)},
        )
        return cls(proc)

    async def read(self, n: int, timeout_s: float = 20.0) -> list[str]:
        """Until ``n`` lines in all were printed."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            while len(self.lines) < n:
                line = await self.proc.stdout.readline()
                assert line, f"tail ended after {self.lines}"
                self.lines.append(line.decode().rstrip("\n"))
        return self.lines

    async def interrupt(self, timeout_s: float = 10.0) -> tuple[int, str]:
        """SIGINT (Ctrl-C); (exit code, everything on stderr)."""
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.stderr is not None
        try:
            async with asyncio.timeout(timeout_s):
                err = await self.proc.stderr.read()
                code = await self.proc.wait()
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
        return code, err.decode()


async def events_after(c: LocalCluster, node: str, since: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        r = await c.request(node, "events", {"since": since, "limit": 1000})
        out += r["events"]
        if r["through"] >= r["applied"]:
            return out
        since = r["through"]


async def times_after(c: LocalCluster, node: str, since: int) -> dict[int, int]:
    out: dict[int, int] = {}
    while True:
        r = await c.request(node, "log", {"since": since, "limit": 1000})
        out |= {e["seq"]: e["time"] for e in r["entries"]}
        if r["through"] >= r["applied"]:
            return out
        since = r["through"]


async def wait_applied(c: LocalCluster, index: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        st = await c.statuses()
        if all(isinstance(s, dict) and s["applied"] >= index for s in st.values()):
            return
        assert time.monotonic() < deadline, f"not every node applied {index}: {st}"
        await asyncio.sleep(0.05)


@aio
async def test_since_fills_the_gap_then_streams_each_event_once(cluster: LocalCluster) -> None:
    async with (
        cluster.client("n1", timeout=20.0) as n1,
        cluster.client("n3", timeout=20.0) as n3,
    ):
        await n1.add_market(MARKET, "1", "1")
        await n3.register()  # before the tail: its `registered` event is not under test
        before = [await n1.place(MARKET, "sell", "1", str(100 + i), id=f"s{i}") for i in range(4)]
        since = before[0].seq  # the first order is before the tail, the other three after
        cross = await n1.place(MARKET, "buy", "2", "101", id="b0")
        await wait_applied(cluster, cross.seq)
        backlog = await events_after(cluster, "n2", since)
        assert {e["seq"] for e in backlog} >= {r.seq for r in [*before[1:], cross]}

        tail = await Tail.start(cluster, "--node", "n2", "--since", str(since), "--json")
        try:
            await tail.read(len(backlog))
            # now the live part: commands through another node, while the tail runs
            live = [await n3.place(MARKET, "buy", "1", str(90 + i), id=f"l{i}") for i in range(3)]
            live.append(await n3.cancel(None, "l0"))
            await wait_applied(cluster, live[-1].seq)
            expected = await events_after(cluster, "n2", since)
            assert len(expected) == len(backlog) + sum(len(r.events) for r in live)
            lines = await tail.read(len(expected))
            # nothing more (no repeat) arrives in a moment
            await asyncio.sleep(0.5)
        finally:
            code, err = await tail.interrupt()
        assert code == 130 and "Traceback" not in err, err
        assert len(tail.lines) == len(expected), tail.lines[len(expected) :]
        got = [json.loads(x) for x in lines]
        times = await times_after(cluster, "n2", since)
        assert all(isinstance(g["seq"], int) and g["time"] == times[g["seq"]] for g in got)
        assert [{k: v for k, v in g.items() if k != "time"} for g in got] == expected


@aio
async def test_text_lines_carry_iso_times_and_an_idle_tail_says_it_waits(
    cluster: LocalCluster,
) -> None:
    # the whole history, readably: seq, ISO time, event
    tail = await Tail.start(cluster, "--node", "n1", "--since", "0")
    try:
        lines = await tail.read(2)
    finally:
        code, err = await tail.interrupt()
    assert code == 130 and "Traceback" not in err, err
    first = ISO.match(lines[0])
    assert first is not None and first.group(3) == "market_added", lines[0]
    times = await times_after(cluster, "n1", 0)
    ms = times[int(first.group(1))]
    assert first.group(2) == tail_mod.format_time(ms)

    # a market where nothing happens: a hint on stderr, not silence
    tail = await Tail.start(cluster, "--market", "QUIET-USD")
    deadline = time.monotonic() + tail_mod.IDLE_HINT_S + 10
    assert tail.proc.stderr is not None
    hint = b""
    try:
        async with asyncio.timeout(deadline - time.monotonic()):
            hint = await tail.proc.stderr.readline()
    finally:
        code, err = await tail.interrupt()
    assert hint.decode().startswith("waiting for events in QUIET-USD"), hint
    assert code == 130 and "Traceback" not in err, err


# ------------------------------------------------------------------------------- the fill


class FakeNode:
    """The ``events`` and ``log`` actions of a node that applied entries ``first..applied``
    (each with one event, except every fifth: none), limited to ``page`` events a reply."""

    def __init__(self, first: int, applied: int, page: int = 4) -> None:
        self.first, self.applied, self.page = first, applied, page
        self.calls: list[tuple[str, int]] = []

    def has_events(self, i: int) -> bool:
        return i % 5 != 0

    async def events_after(
        self, since: int = 0, limit: int | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        self.calls.append(("events", since))
        out: list[dict[str, Any]] = []
        through = since
        for i in range(max(since + 1, self.first), self.applied + 1):
            through = i
            if self.has_events(i):
                out.append({"type": "filled", "seq": i, "client": "c", "id": str(i)})
                if len(out) >= self.page:
                    break
        return {"events": out, "through": through, "first": self.first, "applied": self.applied}

    async def log(
        self, since: int = 0, limit: int | None = None, *, timeout: float | None = None
    ) -> LogReply:
        self.calls.append(("log", since))
        end = min(self.applied, since + 3)
        entries = [LogLine(i, 1000 + i, "{}") for i in range(since + 1, end + 1)]
        return LogReply(entries, end, self.applied)


async def collect(it: AsyncIterator[Entry]) -> list[Entry]:
    return [e async for e in it]


@aio
async def test_fill_pages_to_the_applied_index_with_times() -> None:
    node = FakeNode(first=1, applied=23)
    cur = Cursor(0)
    got = await collect(fill(node, 6, cursor=cur))
    want = [i for i in range(7, 24) if node.has_events(i)]
    assert [e.seq for e in got] == want
    assert all(e.time == 1000 + e.seq and e.events[0]["seq"] == e.seq for e in got)
    assert cur.at == 23


@aio
async def test_fill_stops_at_upto() -> None:
    node = FakeNode(first=1, applied=30)
    cur = Cursor(0)
    got = await collect(fill(node, 0, 12, cursor=cur))
    assert [e.seq for e in got] == [i for i in range(1, 13) if node.has_events(i)]
    assert cur.at == 12


@aio
async def test_fill_refuses_a_gap_or_reports_it() -> None:
    node = FakeNode(first=10, applied=20)
    with pytest.raises(WindowGap) as info:
        await collect(fill(node, 3))
    assert (info.value.since, info.value.first) == (3, 10)
    assert "entries 4..9 are no longer in its window" in info.value.message
    gaps: list[WindowGap] = []
    got = await collect(fill(node, 3, strict=False, on_gap=gaps.append))
    assert len(gaps) == 1 and got[0].seq == 11
    # from just before the window: no gap
    assert [e.seq for e in await collect(fill(node, 9))][:1] == [11]


def test_the_cli_says_what_to_do_about_a_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    async def gap(*_args: Any) -> None:
        raise WindowGap("the node keeps events from log index 50 on; …", 3, 50)

    monkeypatch.setattr(tail_mod, "_tail", gap)
    r = CliRunner().invoke(tail_mod.tail_command, ["--since", "3"])
    assert r.exit_code == 1
    assert "--since 3: the node keeps events from log index 50 on" in r.output
    assert "--since 49" in r.output and "grenex export" in r.output
