"""The client commands of the ``grenex`` CLI, run as a user runs them: ``python -m grenex ...``
in its own process, against a real cluster (2 Grapes, 3 node processes on loopback).

Proves:

* ``place``, ``cancel``, ``amend``, ``add-market``, ``book``, ``trades``, ``status`` print a
  readable table by default and exactly one JSON document with ``--json``, and what they print
  is what the nodes hold; signed commands take ``--key`` (the account defaults to the one the
  key is bound to) and the genesis from ``$GRENEX_GENESIS``; the same order id placed again is
  rejected ``duplicate_id`` (never placed twice); ``add-market`` with another key than the
  operator's is refused before anything is sent;
* a rejected command prints its reason as one line on stderr and exits 0 (``--json`` still
  prints the reply on stdout); a float-looking bad quantity is passed through as text and
  rejected by the engine;
* bad usage (a signed command without --key or a genesis, a --cluster that contradicts the
  genesis), an unknown node, a node announced but dead, no Grape at the URL, a Grape that
  never answers: one line on stderr, no traceback, a non-zero exit, within a bounded time;
* ``watch`` in a pseudo-terminal renders the ladder of the market, redraws when an order
  arrives through another node (the event stream), and exits 0 on SIGINT without a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from asyncio.subprocess import DEVNULL, PIPE
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from grenex.devnet import LocalCluster
from grenex.grenache import Link
from grenex.grenache.tls import b64url, make_self_signed

from .helpers import account_key, black_hole, closed_port, operator_key

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]


@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float

    def json(self) -> Any:
        lines = self.out.strip().splitlines()
        assert len(lines) == 1, self.out
        return json.loads(lines[0])

    def rejection(self) -> str:
        """The one ``rejected: …`` line on stderr of a command the node answered with a
        rejection (exit 0: the node answered)."""
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("rejected: "), self.err
        return lines[0]

    def one_line_error(self) -> str:
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, self.err
        assert "Traceback" not in self.err and lines[0].startswith("error: "), self.err
        return lines[0]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRENEX_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def grenex(
    *args: str,
    grape: str | None = None,
    timeout_s: float = 30,
    env: dict[str, str] | None = None,
) -> Run:
    """Run ``python -m grenex ARGS`` to completion (killed after ``timeout_s``)."""
    cmd = [sys.executable, "-m", "grenex", *args]
    if grape is not None:
        cmd += ["--grape", grape]
    t0 = time.monotonic()
    p = await asyncio.create_subprocess_exec(
        *cmd, stdout=PIPE, stderr=PIPE, stdin=DEVNULL, env={**_env(), **(env or {})}
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await p.communicate()
    finally:
        if p.returncode is None:
            p.kill()
            await p.wait()
    assert p.returncode is not None
    return Run(p.returncode, out.decode(), err.decode(), time.monotonic() - t0)


async def g(c: LocalCluster, *args: str) -> Run:
    """``grenex ARGS`` against the cluster: its Grapes, and its genesis in $GRENEX_GENESIS."""
    return await grenex(
        *args, grape=",".join(c.grape_urls), env={"GRENEX_GENESIS": str(c.genesis_path)}
    )


async def test_place_text_and_json(cluster: LocalCluster) -> None:
    al = await account_key(cluster, "cli-al")
    sell = (
        "place",
        "--node",
        "n1",
        "--key",
        al,
        "--market",
        "BTC-USD",
        "--side",
        "sell",
        "--qty",
        "0.5",
        "--price",
        "200.5",
        "--id",
        "cli-s1",
    )
    r = await g(cluster, *sell)
    assert r.code == 0, r.err
    # the account is the one the key is bound to
    assert "cli-al/cli-s1" in r.out and "resting" in r.out and "200.5" in r.out
    # the same id again is a new command: rejected duplicate_id, never placed twice
    again = await g(cluster, *sell, "--json")
    assert again.code == 0 and "duplicate_id" in again.rejection()
    reply = again.json()
    assert [e["type"] for e in reply["events"]] == ["rejected"]
    assert (reply["events"][0]["client"], reply["events"][0]["reason"]) == (
        "cli-al",
        "duplicate_id",
    )

    bob = await account_key(cluster, "cli-bob")
    taker = await g(
        cluster,
        "place",
        "--node",
        "n2",
        "--client",
        "cli-bob",
        "--key",
        bob,
        "--market",
        "BTC-USD",
        "--side",
        "buy",
        "--qty",
        "0.2",
        "--tif",
        "ioc",
        "--json",
    )
    assert taker.code == 0, taker.err
    events = taker.json()["events"]
    assert [e["type"] for e in events] == ["accepted", "trade", "filled"]
    assert events[0]["tif"] == "IOC" and events[0]["price"] is None
    assert (events[1]["price"], events[1]["maker"], events[1]["taker_client"]) == (
        "200.5",
        "cli-s1",
        "cli-bob",
    )
    text = await g(
        cluster,
        "place",
        "--node",
        "n2",
        "--key",
        bob,
        "--market",
        "BTC-USD",
        "--side",
        "buy",
        "--qty",
        "0.1",
        "--price",
        "201",
    )
    assert text.code == 0, text.err
    assert "filled" in text.out and "1 trade" in text.out and "cli-bob/" in text.out

    # a key signs only for its own account: another account's name is refused before the log
    forged = await g(cluster, *sell[:-2], "--id", "cli-s9", "--client", "cli-bob")
    line = forged.one_line_error()
    assert forged.code == 1 and "bad_signature" in line, line


async def test_rejections_are_one_line_and_exit_0(cluster: LocalCluster) -> None:
    key = await account_key(cluster, "cli-rej")
    r, j, post = await asyncio.gather(
        g(
            cluster,
            "place",
            "--node",
            "n3",
            "--key",
            key,
            "--market",
            "BTC-USD",
            "--side",
            "buy",
            "--qty",
            "1.5e3",
            "--price",
            "100",
        ),
        g(
            cluster,
            "place",
            "--node",
            "n3",
            "--key",
            key,
            "--market",
            "NOPE",
            "--side",
            "buy",
            "--qty",
            "1",
            "--price",
            "1",
            "--json",
        ),
        g(
            cluster,
            "place",
            "--node",
            "n3",
            "--key",
            key,
            "--market",
            "ETH-USD",
            "--side",
            "buy",
            "--qty",
            "1",
            "--tif",
            "FOK",
            "--post-only",
        ),
    )
    assert r.code == 0 and "invalid_qty" in r.rejection()
    assert "invalid_qty" in r.out  # the table of events is still shown
    assert j.code == 0 and "unknown_market" in j.rejection()
    assert j.json()["events"][0]["reason"] == "unknown_market"
    assert post.code == 0 and "invalid_tif" in post.rejection()


async def test_amend_and_cancel(cluster: LocalCluster) -> None:
    key = await account_key(cluster, "cli-am")
    placed = await g(
        cluster,
        "place",
        "--node",
        "n2",
        "--key",
        key,
        "--market",
        "ETH-USD",
        "--side",
        "buy",
        "--qty",
        "3",
        "--price",
        "10",
        "--id",
        "cli-a1",
    )
    assert placed.code == 0, placed.err
    k = ("--node", "n2", "--key", key)
    small = await g(cluster, "amend", *k, "--id", "cli-a1", "--qty", "2")
    assert small.code == 0, small.err
    assert "amended" in small.out and "2 resting" in small.out
    moved, neither = await asyncio.gather(
        g(cluster, "amend", *k, "--id", "cli-a1", "--price", "11", "--json"),
        g(cluster, "amend", *k, "--id", "cli-a1"),
    )
    assert [e["type"] for e in moved.json()["events"]] == ["amended", "resting"]
    assert neither.code == 0 and "invalid_amend" in neither.rejection()

    gone = await g(cluster, "cancel", *k, "--id", "cli-am/cli-a1")
    assert gone.code == 0 and "cancelled" in gone.out and "user" in gone.out
    twice = await g(cluster, "cancel", *k, "--id", "cli-a1", "--json")
    assert twice.code == 0 and "unknown_order" in twice.rejection()
    assert twice.json()["events"][0]["type"] == "rejected"


async def test_add_market_book_and_trades(cluster: LocalCluster) -> None:
    op = ("--key", operator_key(cluster))
    opened = await g(
        cluster, "add-market", *op, "--market", "CLI-USD", "--tick", "0.5", "--lot", "1"
    )
    assert opened.code == 0 and "market_added" in opened.out, opened.err
    dup = await g(
        cluster, "add-market", *op, "--market", "CLI-USD", "--tick", "0.5", "--lot", "1", "--json"
    )
    assert dup.code == 0 and "market_exists" in dup.rejection()
    assert dup.json()["events"][0]["reason"] == "market_exists"
    # only the operator opens markets: another key is refused before anything is sent
    other = await account_key(cluster, "cli-notop")
    refused = await g(
        cluster, "add-market", "--key", other, "--market", "X-USD", "--tick", "1", "--lot", "1"
    )
    line = refused.one_line_error()
    assert refused.code == 1 and "operator" in line, line

    async with cluster.client("n1") as c:
        for i, (side, price, qty) in enumerate(
            [("buy", "10", "2"), ("buy", "10", "1"), ("buy", "9.5", "4"), ("sell", "12", "5")]
        ):
            assert (await c.place("CLI-USD", side, qty, price, id=f"cli-b{i}")).status == "resting"
    book, js, every, unknown = await asyncio.gather(
        g(cluster, "book", "--node", "n1", "--market", "CLI-USD"),
        g(cluster, "book", "--node", "n1", "--market", "CLI-USD", "--json", "--depth", "1"),
        g(cluster, "book", "--json"),
        g(cluster, "book", "--market", "NOPE-USD"),
    )
    assert book.code == 0, book.err
    assert "CLI-USD" in book.out and "spread 2" in book.out
    best = next(line for line in book.out.splitlines() if " 10 " in line and " 12 " in line)
    assert best.replace("│", " ").split() == ["2", "3", "10", "12", "5", "1"], best
    snap = js.json()
    (b,) = snap["books"]
    assert [o["id"] for o in b["bids"]] == ["cli-b0", "cli-b1"] and len(b["asks"]) == 1
    assert snap["applied"] > 0
    assert {x["market"] for x in every.json()["books"]} >= {"BTC-USD", "ETH-USD", "CLI-USD"}
    assert unknown.code == 1 and "NOPE-USD" in unknown.one_line_error()

    sold = await g(
        cluster,
        "place",
        "--node",
        "n3",
        "--market",
        "CLI-USD",
        "--side",
        "sell",
        "--qty",
        "3",
        "--price",
        "10",
        "--key",
        await account_key(cluster, "cli-seller"),
    )
    assert sold.code == 0, sold.err
    trades, tj, none = await asyncio.gather(
        g(cluster, "trades", "--node", "n3", "--market", "CLI-USD"),
        g(cluster, "trades", "--node", "n3", "--market", "CLI-USD", "--json", "--limit", "1"),
        g(cluster, "trades", "--node", "n3", "--market", "ETH-USD", "--since", "999999"),
    )
    assert trades.code == 0, trades.err
    assert "cli-seller/" in trades.out and "n1/cli-b0" in trades.out
    (t,) = tj.json()["trades"]
    assert (t["maker"], t["qty"], t["taker_side"]) == ("cli-b1", "1", "sell")
    assert none.code == 0 and "no trades" in none.out


async def test_status(cluster: LocalCluster) -> None:
    await cluster.wait_converged()
    r, j, one, text = await asyncio.gather(
        g(cluster, "status"),
        g(cluster, "status", "--json"),
        g(cluster, "status", "--node", "n2", "--json"),
        g(cluster, "status", "--node", "n2"),
    )
    assert r.code == 0, r.err
    for node in ("n1", "n2", "n3"):
        assert node in r.out
    assert "leader" in r.out and "follower" in r.out and "all 3 nodes agree" in r.out
    every = j.json()
    assert every["agree"] is True and every["unreachable"] == []
    assert sorted(s["node"] for s in every["nodes"]) == ["n1", "n2", "n3"]
    n2 = one.json()
    assert n2["node"] == "n2" and n2["members"]["voters"] == ["n1", "n2", "n3"]
    assert text.code == 0 and "n2" in text.out and n2["state_hash"][:12] in text.out


async def test_usage_errors_are_one_line(cluster: LocalCluster) -> None:
    grape = ",".join(cluster.grape_urls)
    key = await account_key(cluster, "cli-usage")
    genesis = {"GRENEX_GENESIS": str(cluster.genesis_path)}
    buy = ("place", "--node", "n1", "--market", "BTC-USD", "--side", "buy", "--qty", "1")
    side, missing, url, no_node, no_key, no_genesis, other_cluster = await asyncio.gather(
        g(cluster, *buy[:-4], "--side", "up", "--qty", "1", "--key", key),
        g(cluster, *buy[:-2], "--key", key),
        grenex("status", "--grape", "ftp://nowhere", env=genesis),
        g(cluster, "cancel", "--id", "x", "--key", key),
        g(cluster, *buy),
        grenex(*buy, "--key", key, grape=grape),
        grenex("status", "--cluster", "nowhere", grape=grape, env=genesis),
    )
    assert side.code == 2 and "--side" in side.one_line_error()
    assert missing.code == 2 and "--qty" in missing.one_line_error()
    assert url.code == 2 and "http://" in url.one_line_error()
    assert no_node.code == 2 and "--node" in no_node.one_line_error()
    assert no_key.code == 2 and "--key" in no_key.one_line_error()
    assert no_genesis.code == 2 and "--genesis" in no_genesis.one_line_error()
    line = other_cluster.one_line_error()
    assert other_cluster.code == 2 and "nowhere" in line and "'main'" in line, line
    bare = await grenex("status", grape=grape)  # reads authenticate the nodes: genesis needed
    assert bare.code == 2 and "GRENEX_GENESIS" in bare.one_line_error()


def nowhere_genesis(cluster: LocalCluster) -> str:
    """A valid genesis of another cluster, ``nowhere``, that no node runs."""
    assert cluster.base_dir is not None
    path = cluster.base_dir / "nowhere.json"
    kr = cluster.keyring
    path.write_bytes(
        kr.genesis("nowhere", ["n1"], cert=lambda k, n: b64url(make_self_signed(k.seed, n)))
    )
    return str(path)


async def test_unreachable_things_fail_fast(cluster: LocalCluster) -> None:
    key = await account_key(cluster, "cli-far")
    genesis = {"GRENEX_GENESIS": str(cluster.genesis_path)}
    async with (
        Link(cluster.grape_urls) as link,  # a node that is announced (all along) but dead
        black_hole() as silent_url,
    ):
        await link.start_announcing(cluster.api_name("cli-ghost"), closed_port())
        dead, unknown, refused, silent, wrong_cluster = await asyncio.gather(
            g(
                cluster,
                "cancel",
                "--node",
                "cli-ghost",
                "--key",
                key,
                "--client",
                "cli-far",
                "--id",
                "x",
                "--timeout",
                "1",
            ),
            g(
                cluster,
                "place",
                "--node",
                "n42",
                "--key",
                key,
                "--market",
                "BTC-USD",
                "--side",
                "buy",
                "--qty",
                "1",
                "--price",
                "1",
            ),
            grenex("status", grape=f"http://127.0.0.1:{closed_port()}", env=genesis),
            grenex("book", "--node", "n1", "--timeout", "1", grape=silent_url, env=genesis),
            grenex(
                "status",
                grape=",".join(cluster.grape_urls),
                env={"GRENEX_GENESIS": nowhere_genesis(cluster)},
            ),
        )
    assert dead.code == 1 and "gave up" in dead.one_line_error()
    assert unknown.code == 1 and "n42" in unknown.one_line_error()
    assert refused.code == 1 and "ERR_GRAPE_UNAVAILABLE" in refused.one_line_error()
    assert silent.code == 1 and "ERR_GRAPE_UNAVAILABLE" in silent.one_line_error()
    assert wrong_cluster.code == 1 and "grenex:nowhere:nodes" in wrong_cluster.one_line_error()
    for r in (dead, unknown, refused, silent, wrong_cluster):
        assert r.seconds < 10, r


# ------------------------------------------------------------------------------- watch


class Terminal:
    """A child process on a pseudo-terminal of 120×40; collects everything it writes."""

    def __init__(self, args: list[str]) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        env = {**_env(), "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
        self.proc = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        self.data = b""

    def read_until(self, predicate: Any, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not predicate(self.text):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self.master], [], [], min(left, 0.2))
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    return predicate(self.text)  # type: ignore[no-any-return]
                if not chunk:
                    return predicate(self.text)  # type: ignore[no-any-return]
                self.data += chunk
        return True

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    def wait(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.read_until(lambda _t: False, 0.1)
        self.read_until(lambda _t: False, 0.2)
        return self.proc.wait(max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        with contextlib.suppress(OSError):
            os.close(self.master)


@contextlib.contextmanager
def terminal(args: list[str]) -> Iterator[Terminal]:
    t = Terminal(args)
    try:
        yield t
    finally:
        t.close()


async def test_watch_renders_refreshes_and_exits_on_ctrl_c(cluster: LocalCluster) -> None:
    async with cluster.client("n2", client_id="cli-watch") as c:
        await c.place("ETH-USD", "sell", "1.5", "4321.5", id="w-ask")
        await c.place("ETH-USD", "buy", "0.75", "4300", id="w-bid")
        args = [
            sys.executable,
            "-m",
            "grenex",
            "watch",
            "--node",
            "n1",
            "--market",
            "ETH-USD",
            "--grape",
            ",".join(cluster.grape_urls),
            "--genesis",
            str(cluster.genesis_path),
            "--poll",
            "0.5",
        ]
        with terminal(args) as term:
            assert term.read_until(
                lambda t: "4321.5" in t and "4300" in t and "spread" in t and "leader" in t,
                20,
            ), term.text[-3000:]
            # a new order through another node reaches the screen
            await c.place("ETH-USD", "sell", "0.25", "4310.25", id="w-new")
            assert term.read_until(lambda t: "4310.25" in t, 10), term.text[-3000:]
            term.proc.send_signal(signal.SIGINT)
            code = term.wait(10)
        await c.cancel(None, "w-ask")
        await c.cancel(None, "w-bid")
        await c.cancel(None, "w-new")
    assert code in (0, 130), term.text[-3000:]
    assert "Traceback" not in term.text


async def test_watch_unknown_market_is_one_line(cluster: LocalCluster) -> None:
    r = await g(cluster, "watch", "--node", "n1", "--market", "NOPE-USD")
    assert r.code == 1 and "NOPE-USD" in r.one_line_error()
