"""The CLI as a new user meets it (issue 14), run as ``python -m grenex`` against a real cluster.

Proves: ``markets``, ``orders``, ``order`` and ``cancel-all`` print tables and one JSON document
with ``--json``; the order ``place`` prints (``CLIENT/ID``) is accepted by ``cancel``, ``amend``
and ``order``, and a ``CLIENT/ID`` naming another client than ``--client`` is a usage error;
a reply the node answers from the nonce window is shown as a duplicate (``--json`` keeps the
flag, the text says nothing new was executed), while a re-run reusing an id is rejected
``duplicate_id``; a partly
filled IOC is headlined "partly filled, rest cancelled"; ``--qty .1`` is refused with "write
0.1"; ``invalid_price``/``invalid_qty`` name the market's tick or lot; ``trades`` and ``book``
both exit 1 for an unknown market; a node that never answers gives "the outcome is unknown;
retrying ... with the same id is safe" with the id; ``grenache put`` prints a hash ``get``
takes; ``watch`` in an 80-column tmux pane is not cut off and Ctrl-C exits 130, as Ctrl-C on
a command waiting for its node does (one line, ``error: interrupted``).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from grenex.client import CommandResult
from grenex.client.commands import report
from grenex.devnet import LocalCluster
from grenex.grenache import Link

from .helpers import account_key, black_hole, operator_key
from .test_cli import g, grenex

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(90)]


def placed_order(out: str) -> str:
    """The CLIENT/ID from ``place``'s headline."""
    m = re.search(r"^place (\S+/\S+) →", out, re.M)
    assert m is not None, out
    return m.group(1)


async def test_markets_orders_order_cancel_all(cluster: LocalCluster) -> None:
    opened = await g(
        cluster,
        "add-market",
        "--key",
        operator_key(cluster),
        "--market",
        "FX-USD",
        "--tick",
        "0.25",
        "--lot",
        "2",
    )
    assert opened.code == 0, opened.err
    text, js = await asyncio.gather(g(cluster, "markets"), g(cluster, "markets", "--json"))
    assert text.code == 0 and "FX-USD" in text.out and "0.25" in text.out and "tick" in text.out
    assert {"market": "FX-USD", "tick": "0.25", "lot": "2"} in js.json()["markets"]

    al = await account_key(cluster, "fx-al")
    for price in ("10", "10.5", "11"):
        r = await g(
            cluster,
            "place",
            "--node",
            "n1",
            "--client",
            "fx-al",
            "--key",
            al,
            "--market",
            "FX-USD",
            "--side",
            "buy",
            "--qty",
            "4",
            "--price",
            price,
            "--id",
            f"fx-{price}",
        )
        assert r.code == 0, r.err
    listing, lj, none = await asyncio.gather(
        g(cluster, "orders", "--client", "fx-al"),
        g(cluster, "orders", "--client", "fx-al", "--market", "FX-USD", "--json"),
        g(cluster, "orders", "--client", "fx-nobody"),
    )
    assert listing.code == 0 and "fx-al/fx-11" in listing.out and "remaining" in listing.out
    assert [o["id"] for o in lj.json()["orders"]] == ["fx-11", "fx-10.5", "fx-10"]
    assert lj.json()["orders"][0] == {
        "id": "fx-11",
        "market": "FX-USD",
        "side": "buy",
        "price": "11",
        "qty": "4",
        "remaining": "4",
    }
    assert none.code == 0 and "no resting orders" in none.out

    one, oj, unknown = await asyncio.gather(
        g(cluster, "order", "--client", "fx-al", "--id", "fx-10"),
        g(cluster, "order", "--id", "fx-al/fx-10", "--json"),
        g(cluster, "order", "--client", "fx-al", "--id", "fx-never"),
    )
    assert one.code == 0 and "resting" in one.out and "remaining 4" in one.out
    assert oj.json()["state"] == "resting" and oj.json()["remaining"] == "4"
    assert unknown.code == 0 and "unknown" in unknown.out and "never used" in unknown.out

    alld = await g(cluster, "cancel-all", "--node", "n2", "--key", al, "--json")
    assert alld.code == 0, alld.err
    doc = alld.json()
    assert doc["cancelled"] == 3 and doc["failed"] == 0 and len(doc["listed"]) == 3
    assert doc["client"] == "fx-al" and doc["batches"] == 1  # one signed batch
    again = await g(cluster, "cancel-all", "--node", "n2", "--client", "fx-al", "--key", al)
    assert again.code == 0 and "0 resting orders listed" in again.out
    assert "orders placed after the listing are not cancelled" in again.out
    gone = await g(cluster, "order", "--id", "fx-al/fx-10")
    assert "used" in gone.out and "no longer remembers" in gone.out


async def test_ids_round_trip(cluster: LocalCluster) -> None:
    key = await account_key(cluster, "ids-c")
    placed = await g(
        cluster,
        "place",
        "--node",
        "n3",
        "--key",
        key,
        "--market",
        "ETH-USD",
        "--side",
        "sell",
        "--qty",
        "2",
        "--price",
        "5000",
    )
    assert placed.code == 0, placed.err
    ref = placed_order(placed.out)  # ids-c/<fresh id>: the key's account
    assert ref.startswith("ids-c/")
    amended = await g(cluster, "amend", "--node", "n3", "--key", key, "--id", ref, "--qty", "1")
    assert amended.code == 0 and "amended" in amended.out, amended.err
    state = await g(cluster, "order", "--id", ref, "--json")
    assert state.json()["remaining"] == "1"
    other = await g(
        cluster, "cancel", "--node", "n3", "--key", key, "--client", "someone", "--id", ref
    )
    assert other.code == 2 and "someone" in other.one_line_error()
    cancelled = await g(cluster, "cancel", "--node", "n3", "--key", key, "--id", ref)
    assert cancelled.code == 0 and "cancelled" in cancelled.out, cancelled.err


async def test_a_duplicate_reply_is_shown_as_such(capsys: pytest.CaptureFixture[str]) -> None:
    """A reply the node answered from the account's nonce window (an earlier attempt of the
    same signed envelope got through, its reply was lost): the text says so and that nothing
    new was executed, and ``--json`` keeps the flag.  (The lost-reply retry itself is
    test_library's proxy test.)"""
    reply = {
        "seq": 7,
        "time": 1,
        "duplicate": True,
        "events": [
            {
                "type": "accepted",
                "seq": 7,
                "client": "dup-c",
                "id": "dup-1",
                "market": "ETH-USD",
                "side": "sell",
                "price": "6000",
                "qty": "0.5",
                "tif": "GTC",
            },
            {
                "type": "resting",
                "seq": 7,
                "client": "dup-c",
                "id": "dup-1",
                "market": "ETH-USD",
                "price": "6000",
                "remaining": "0.5",
            },
        ],
    }
    r = CommandResult.from_reply(reply, "dup-c", "dup-1")
    report("place", r, as_json=False)
    text = capsys.readouterr().out
    assert "dup-c/dup-1" in text and "resting" in text
    assert "duplicate" in text and "nothing new" in text
    report("place", r, as_json=True)
    assert json.loads(capsys.readouterr().out)["duplicate"] is True
    fresh = CommandResult.from_reply({k: v for k, v in reply.items() if k != "duplicate"}, "c", "i")
    report("place", fresh, as_json=False)
    assert "duplicate" not in capsys.readouterr().out


async def test_a_reused_id_and_partly_filled(cluster: LocalCluster) -> None:
    key = await account_key(cluster, "dup-c")
    args = (
        "place",
        "--node",
        "n1",
        "--key",
        key,
        "--market",
        "ETH-USD",
        "--side",
        "sell",
        "--qty",
        "0.5",
        "--price",
        "6000",
        "--id",
        "dup-1",
    )
    first = await g(cluster, *args)
    assert first.code == 0 and "duplicate" not in first.out, first.err
    # the same id in a new command: rejected, never placed twice
    again, again_json = await asyncio.gather(g(cluster, *args), g(cluster, *args, "--json"))
    assert again.code == 0 and "duplicate_id" in again.rejection()
    assert again_json.json()["events"][0]["reason"] == "duplicate_id"

    ioc = await g(
        cluster,
        "place",
        "--node",
        "n2",
        "--key",
        await account_key(cluster, "dup-t"),
        "--market",
        "ETH-USD",
        "--side",
        "buy",
        "--qty",
        "0.75",
        "--price",
        "6000",
        "--tif",
        "IOC",
    )
    assert ioc.code == 0, ioc.err
    head = ioc.out.splitlines()[0]
    assert "partly filled, rest cancelled (unfilled" in head and "0.5 filled" in head


async def test_remedies_and_usage_hints(cluster: LocalCluster) -> None:
    rem = await account_key(cluster, "rem-a")
    base = ("place", "--node", "n2", "--key", rem, "--market", "BTC-USD", "--side", "buy")
    dot, price, qty, unknown = await asyncio.gather(
        g(cluster, *base, "--qty", ".1", "--price", "100"),
        g(cluster, *base, "--qty", "0.1", "--price", "100.001"),
        g(cluster, *base, "--qty", "0.00001", "--price", "100"),
        g(cluster, *base[:-4], "--market", "NO-USD", "--side", "buy", "--qty", "1"),
    )
    assert dot.code == 2 and "write 0.1" in dot.one_line_error()
    line = price.rejection()
    assert price.code == 0 and "invalid_price" in line and "tick 0.01" in line, line
    line = qty.rejection()
    assert qty.code == 0 and "invalid_qty" in line and "lot 0.0001" in line, line
    assert unknown.code == 0 and "grenex markets" in unknown.rejection()

    rest = await g(
        cluster, *base, "--qty", "0.1", "--price", "100", "--client", "rem-a", "--id", "rem-1"
    )
    assert rest.code == 0, rest.err
    bad = await g(
        cluster, "amend", "--node", "n2", "--key", rem, "--id", "rem-a/rem-1", "--price", "100.005"
    )
    assert bad.code == 0 and "tick 0.01 of BTC-USD" in bad.rejection()
    await g(cluster, "cancel", "--node", "n2", "--key", rem, "--id", "rem-a/rem-1")

    trades, book = await asyncio.gather(
        g(cluster, "trades", "--market", "NOPE-USD"), g(cluster, "book", "--market", "NOPE-USD")
    )
    assert trades.code == book.code == 1
    assert "NOPE-USD" in trades.one_line_error() and "NOPE-USD" in book.one_line_error()


async def test_unknown_outcome_says_retry_with_the_same_id(cluster: LocalCluster) -> None:
    async with black_hole() as url, Link(cluster.grape_urls) as link:
        port = int(url.rsplit(":", 1)[1])
        await link.announce(cluster.api_name("silent"), port)
        r = await g(
            cluster,
            "place",
            "--node",
            "silent",
            "--key",
            await account_key(cluster, "maybe"),
            "--client",
            "maybe",
            "--market",
            "BTC-USD",
            "--side",
            "buy",
            "--qty",
            "1",
            "--price",
            "1",
            "--id",
            "maybe-1",
            "--timeout",
            "1",
        )
    line = r.one_line_error()
    assert r.code == 1 and "no leader reachable or no answer in time" in line, line
    assert "outcome is unknown" in line and "--id maybe-1" in line and "safe" in line


async def test_grenache_put_prints_what_get_takes(cluster: LocalCluster) -> None:
    grape = ",".join(cluster.grape_urls)
    put = await grenex("grenache", "put", "round trip", grape=grape)
    digest = put.out.strip()
    assert put.code == 0 and re.fullmatch(r"[0-9a-f]{40}", digest), put.out
    got = await grenex("grenache", "get", digest, grape=grape)
    assert got.code == 0 and got.json()["v"] == "round trip", got.err
    quoted = await grenex("grenache", "put", "round trip", "--json", grape=grape)
    assert quoted.json() == digest


def _tmux(*args: str) -> str:
    return subprocess.run(
        ["tmux", *args], capture_output=True, text=True, check=True, timeout=10
    ).stdout


async def test_watch_fits_80_columns_and_ctrl_c_exits_130(cluster: LocalCluster) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    w80 = await account_key(cluster, "w80")
    trade = await g(
        cluster,
        "place",
        "--node",
        "n1",
        "--key",
        w80,
        "--client",
        "w80",
        "--market",
        "BTC-USD",
        "--side",
        "sell",
        "--qty",
        "1.2345",
        "--price",
        "123456.78",
        "--id",
        "w80-a",
    )
    assert trade.code == 0, trade.err
    hit = await g(
        cluster,
        "place",
        "--node",
        "n1",
        "--key",
        await account_key(cluster, "w80-b"),
        "--client",
        "w80-b",
        "--market",
        "BTC-USD",
        "--side",
        "buy",
        "--qty",
        "0.2345",
        "--price",
        "123456.78",
    )
    assert hit.code == 0, hit.err
    session = f"grenex-w80-{time.monotonic_ns()}"
    grape = ",".join(cluster.grape_urls)
    cmd = (
        f"{sys.executable} -m grenex watch --node n2 --market BTC-USD --grape {grape} "
        f"--genesis {cluster.genesis_path}; "
        "echo EXIT=$?; sleep 60"
    )
    _tmux("new-session", "-d", "-s", session, "-x", "80", "-y", "50", cmd)
    try:
        screen = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            screen = _tmux("capture-pane", "-p", "-t", session)
            if "last trades" in screen and "123456.78" in screen and "Ctrl-C" in screen:
                break
            await asyncio.sleep(0.2)
        assert "last trades" in screen and "0.2345" in screen, screen
        # the ladder's ask level and the trade are whole: each row ends with its table's right
        # border (cut at column 80, the trades table beside the ladder lost its right part)
        rows = [ln for ln in screen.splitlines() if "123456.78" in ln]
        assert len(rows) >= 2 and all(ln.rstrip().endswith("│") for ln in rows), screen
        _tmux("send-keys", "-t", session, "C-c")
        deadline = time.monotonic() + 10
        while "EXIT=" not in screen and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            screen = _tmux("capture-pane", "-p", "-t", session)
        assert "EXIT=130" in screen, screen
        assert "Traceback" not in screen
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, check=False)
        await g(cluster, "cancel", "--node", "n1", "--key", w80, "--id", "w80-a")


async def test_ctrl_c_on_a_pending_command_exits_130(cluster: LocalCluster) -> None:
    arrived = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def hold(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)
        arrived.set()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with Link(cluster.grape_urls) as link:
            await link.announce(cluster.api_name("held"), port)
        p = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "grenex",
            "cancel",
            "--node",
            "held",
            "--key",
            await account_key(cluster, "held-c"),
            "--client",
            "held-c",
            "--genesis",
            str(cluster.genesis_path),
            "--id",
            "x",
            "--timeout",
            "30",
            "--grape",
            ",".join(cluster.grape_urls),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await asyncio.wait_for(arrived.wait(), 15)  # the request is in flight
            p.send_signal(signal.SIGINT)
            out, err = await asyncio.wait_for(p.communicate(), 15)
        finally:
            if p.returncode is None:
                p.kill()
                await p.wait()
        assert p.returncode == 130, err
        assert err.decode().strip() == "error: interrupted" and out == b""
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()
