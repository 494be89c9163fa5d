"""``grenex export`` and ``grenex replay`` of an export, on a real 3-node cluster.

Proves:

* a mix of signed commands sent through all three nodes (places that rest, cross, partly
  fill; an IOC, a market order, amends of quantity and price, a cancel, a rejection, a place
  whose envelope is sent again through another node and answered from the account's nonce
  window, and a burst sent at once through every node), exported from one
  node and replayed by ``grenex replay`` in its own process, gives exactly: the events every
  node reports for every log index (``events`` action), the events each command's reply
  returned, the time of each entry (replies, the ``log`` action, trades in the library and in
  ``grenex trades``, as ms and as UTC), and every node's
  books (``book`` with depth 0: all orders);
* the envelope sent twice reached the log once; the export's header carries the genesis
  (its exact text and cluster id), from which the replay checks every signature;
* the exports of the three nodes are identical but for the header's ``node``; the CLI
  (``--out``) and the library (``export_lines``) write the same lines;
* a node that compacted its log below a snapshot refuses to export: exit 1, one line naming
  the index and the remedy, no file written; the library raises ``Compacted``;
* replay of an export refuses a header of another version, entries out of log order, and a
  line that is not an entry (one line, exit 1).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from grenex.client import GrenexClient
from grenex.client.client import CommandResult, Compacted
from grenex.client.timefmt import iso_ms
from grenex.codec.genesis import cluster_id
from grenex.codec.signer import Keyring, Signer
from grenex.devnet import LocalCluster
from grenex.grenache.tls import b64url, make_self_signed

pytestmark = pytest.mark.timeout(120)
aio = pytest.mark.asyncio(loop_scope="module")

MARKET = "EXP-USD"


def _env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("GRENEX_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def grenex(
    *args: str, timeout_s: float = 60, genesis: Path | None = None
) -> tuple[int, bytes, str]:
    """``python -m grenex ARGS`` in its own process: (exit code, stdout, stderr); ``genesis``
    is given as $GRENEX_GENESIS."""
    env = _env()
    if genesis is not None:
        env["GRENEX_GENESIS"] = str(genesis)
    p = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "grenex",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        env=env,
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await p.communicate()
    finally:
        if p.returncode is None:
            p.kill()
            await p.wait()
    assert p.returncode is not None
    return p.returncode, out, err.decode()


def by_seq(events: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ev in events:
        out[ev["seq"]].append(ev)
    return dict(out)


async def node_events(c: LocalCluster, node: str) -> dict[int, list[dict[str, Any]]]:
    """Every event the node reports through its ``events`` action, by log index."""
    out: list[dict[str, Any]] = []
    since = 0
    while True:
        r = await c.request(node, "events", {"since": since, "limit": 1000})
        assert r["first"] == 1, "the window must still hold the whole history"
        out += r["events"]
        if r["through"] >= r["applied"]:
            return by_seq(out)
        since = r["through"]


async def wait_applied(c: LocalCluster, index: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        st = await c.statuses()
        if all(isinstance(s, dict) and s["applied"] >= index for s in st.values()):
            return
        assert time.monotonic() < deadline, f"not every node applied {index}: {st}"
        await asyncio.sleep(0.05)


def replay_output(out: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(events, books) of ``grenex replay --book``."""
    lines = [json.loads(x) for x in out.splitlines()]
    return [x for x in lines if x["type"] != "book"], [x for x in lines if x["type"] == "book"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def clients(cluster: LocalCluster) -> AsyncIterator[dict[str, GrenexClient]]:
    cs = {n: cluster.client(n, timeout=20.0) for n in ("n1", "n2", "n3")}
    for c in cs.values():
        await c.__aenter__()
    try:
        yield cs
    finally:
        for c in cs.values():
            await c.close()


def command_of(entry: dict[str, Any]) -> dict[str, Any]:
    """The command inside an export entry's signed envelope."""
    cmd: dict[str, Any] = json.loads(json.loads(entry["cmd"])["cmd"])
    return cmd


async def trade_mix(c: LocalCluster, cs: dict[str, GrenexClient]) -> list[CommandResult]:
    """A mix of commands through all three nodes; every reply, in the order sent."""
    n1, n2, n3 = cs["n1"], cs["n2"], cs["n3"]
    out: list[CommandResult] = [await n1.add_market(MARKET, "0.5", "0.1")]
    await c.register("n1", "n1")
    a1 = n1.envelope(
        {"type": "place", "client": "n1", "id": "a1", "market": MARKET, "side": "sell"}
        | {"qty": "3", "price": "101"}
    )
    out.append(CommandResult.from_reply(await c.request("n1", "place", a1), "n1", "a1"))
    out.append(await n2.place(MARKET, "sell", "2", "102", id="a2"))
    out.append(await n3.place(MARKET, "sell", "1", "103", id="a3"))
    out.append(await n3.place(MARKET, "buy", "1", "99", id="b1"))
    out.append(await n1.place(MARKET, "buy", "2", "98", id="b2"))
    out.append(await n2.amend(None, "a2", qty="1.5"))
    out.append(await n3.amend(None, "b1", price="99.5"))
    out.append(await n1.cancel(None, "b2"))
    out.append(await n2.place(MARKET, "buy", "4", "102", id="x1"))  # takes a1 and a2, rests
    out.append(await n3.place(MARKET, "sell", "2", "95", id="x2", tif="IOC"))  # partly fills
    out.append(await n1.place(MARKET, "buy", "0.5", id="x3"))  # a market order
    out.append(await n2.place(MARKET, "buy", "1", "100.3", id="bad"))  # invalid_price
    # the same envelope again, through another node (a retry): its first outcome
    again = CommandResult.from_reply(await c.request("n2", "submit", a1), "n1", "a1")
    assert again.duplicate and again.seq == out[1].seq and again.events == out[1].events
    out.append(again)
    burst = await asyncio.gather(
        *(
            cs[f"n{1 + i % 3}"].place(
                MARKET,
                "buy" if i % 2 else "sell",
                str(Decimal("0.1") * (1 + i % 4)),
                str(Decimal(100) + Decimal("0.5") * (i % 7) - Decimal(1)),
                id=f"burst{i}",
            )
            for i in range(18)
        )
    )
    out += burst
    return out


@aio
async def test_export_replays_to_the_nodes_events_times_and_books(
    cluster: LocalCluster, clients: dict[str, GrenexClient], tmp_path: Path
) -> None:
    replies = await trade_mix(cluster, clients)
    assert any(r.trades for r in replies) and any(r.rejected for r in replies)
    assert any(r.partly_filled for r in replies)
    top = max(r.seq for r in replies)
    await wait_applied(cluster, top)

    # export: n1 through the CLI, n2 and n3 through the library
    path = tmp_path / "n1.jsonl"
    grape = ",".join(cluster.grape_urls)
    g = cluster.genesis_path
    assert g is not None
    code, out, err = await grenex(
        "export", "--node", "n1", "--out", str(path), "--grape", grape, genesis=g
    )
    assert code == 0, err
    assert out == b"" and f"from node n1 to {path}" in err
    text = path.read_bytes()
    lines = text.splitlines()
    header = json.loads(lines[0])
    assert header == {
        "grenex_export": 1,
        "cluster": "main",
        "cluster_id": cluster_id(g.read_bytes()),
        "node": "n1",
        "genesis": g.read_text(),
        "first": 1,
    }
    entries = [json.loads(x) for x in lines[1:]]
    assert [e["seq"] for e in entries] == sorted({e["seq"] for e in entries})
    assert entries[-1]["seq"] >= top and all(isinstance(e["time"], int) for e in entries)
    for n in ("n2", "n3"):
        theirs = [x async for x in clients[n].export_lines(g.read_bytes())]
        assert all(x.endswith(b"\n") for x in theirs)
        assert json.loads(theirs[0]) == {**header, "node": n}
        assert b"".join(theirs[1:]) == b"\n".join(lines[1:]) + b"\n", f"{n} exports another log"

    # the envelope sent twice reached the log once (the second answered from the window)
    a1 = [e["seq"] for e in entries if command_of(e).get("id") == "a1"]
    assert a1 == [replies[1].seq], a1

    # replay, in its own process
    code, out, err = await grenex("replay", str(path), "--book")
    assert code == 0, err
    replayed, books = replay_output(out)
    time_of = {e["seq"]: e["time"] for e in entries}
    assert all(ev["time"] == time_of[ev["seq"]] for ev in replayed)
    bare = by_seq([{k: v for k, v in ev.items() if k != "time"} for ev in replayed])

    # = what every node reports, index by index
    for n in ("n1", "n2", "n3"):
        assert await node_events(cluster, n) == bare, f"replay differs from {n}'s events"

    # = what each reply returned, with its time
    for r in replies:
        if r.duplicate:
            continue
        assert bare[r.seq] == r.to_json()["events"], r.seq
        assert r.extra.get("time") == time_of[r.seq]

    # the trades' times: the library, `trades --json` and the table
    timed = await clients["n3"].trades_timed(MARKET, limit=1000)
    assert timed and all(at == time_of[t.seq] for t, at in timed)
    code, out, err = await grenex(
        "trades", "--market", MARKET, "--json", "--grape", grape, genesis=g
    )
    assert code == 0, err
    listed = json.loads(out)["trades"]
    assert listed and all(t["time"] == time_of[t["seq"]] for t in listed)
    code, out, err = await grenex("trades", "--market", MARKET, "--grape", grape, genesis=g)
    assert code == 0 and "time (UTC)" in out.decode(), err
    assert iso_ms(listed[-1]["time"]) in out.decode()

    # = every node's books, whole
    for n in ("n1", "n2", "n3"):
        reply = await cluster.request(n, "book", {"depth": 0})
        assert reply["books"] == books, f"{n}'s books differ from the replay's"
    assert any(b["market"] == MARKET and b["bids"] and b["asks"] for b in books)


# ------------------------------------------------------------------------------- compacted


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def compacting(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalCluster]:
    """One voter that snapshots every 20 entries and keeps 2 below: its log soon loses 1."""
    c = LocalCluster(
        nodes=1,
        voters=1,
        base_dir=tmp_path_factory.mktemp("compacting"),
        node_args=("--snapshot-interval", "20", "--compaction-retain", "2"),
    )
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


@aio
async def test_a_compacted_node_refuses_to_export_and_says_why(
    compacting: LocalCluster, tmp_path: Path
) -> None:
    g = compacting.genesis_path
    assert g is not None
    async with compacting.client("n1", timeout=20.0) as c:
        await asyncio.gather(
            *(c.place("BTC-USD", "buy", "0.001", str(10 + i % 5)) for i in range(45))
        )
        deadline = time.monotonic() + 20
        while (first := (await c.status()).raw.get("first_index", 1)) <= 1:
            assert time.monotonic() < deadline, "the node never compacted its log"
            await asyncio.sleep(0.1)
        with pytest.raises(Compacted) as info:
            _ = [x async for x in c.export_lines(g.read_bytes())]
        assert info.value.first is not None and info.value.first > 1

    path = tmp_path / "gone.jsonl"
    grape = ",".join(compacting.grape_urls)
    code, out, err = await grenex(
        "export", "--node", "n1", "--out", str(path), "--grape", grape, genesis=g
    )
    assert code == 1 and out == b""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: node n1 compacted its log below index ")
    assert int(lines[0].split("below index ")[1].split(":")[0]) >= first
    assert "--snapshot-interval" in lines[0]
    assert not path.exists() and not path.with_name(path.name + ".part").exists()
    # to standard output: nothing at all, not even the header
    code, out, err = await grenex("export", "--node", "n1", "--grape", grape, genesis=g)
    assert code == 1 and out == b"" and "compacted its log" in err
    # another genesis naming the same node (another cluster id): nothing exported, said why
    other = tmp_path / "other.json"
    other.write_bytes(
        compacting.keyring.genesis(
            "main", ["n1"], join="open", cert=lambda k, n: b64url(make_self_signed(k.seed, n))
        )
    )
    code, out, err = await grenex("export", "--node", "n1", "--grape", grape, genesis=other)
    assert code == 1 and out == b"" and "cluster id" in err, err


@aio
async def test_export_without_a_node_is_a_library_error() -> None:
    async with GrenexClient("http://127.0.0.1:1", timeout=1.0) as c:
        with pytest.raises(ValueError, match="one node's log"):
            _ = [x async for x in c.export_lines(b"{}")]


# ------------------------------------------------------------------------------- bad exports


def _replay(data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "grenex", "replay", "-"],
        input=data,
        capture_output=True,
        timeout=60,
        env=_env(),
        check=False,
    )


KEYS = Keyring("export-test")
GENESIS = KEYS.genesis("main", ["n1"])
SIGNER = Signer(cluster_id(GENESIS), KEYS)


def entry(seq: int, time_ms: int | None, envelope: bytes) -> bytes:
    """One export line: a signed envelope as logged."""
    return json.dumps({"seq": seq, "time": time_ms, "cmd": envelope.decode()}).encode() + b"\n"


HEAD = (
    json.dumps(
        {"grenex_export": 1, "cluster": "main", "node": "n1"}
        | {"genesis": GENESIS.decode(), "first": 1}
    ).encode()
    + b"\n"
)
ADD = entry(
    3,
    5,
    SIGNER.command(
        {"type": "add_market", "client": "op", "market": "M"} | {"tick": "1", "lot": "1"}
    ),
)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (HEAD.replace(b": 1,", b": 2,", 1) + ADD, "export format 2 is not supported"),
        (HEAD.replace(b'"first": 1', b'"first": 7'), "starts at log index 7"),
        (HEAD + ADD + ADD, "line 3: log index 3 after 3"),
        (HEAD + ADD + b'{"seq": 4}\n', "line 3: not an export entry"),
        (HEAD + b"not json\n", "line 2: not an export entry"),
    ],
)
def test_replay_refuses_a_bad_export_in_one_line(data: bytes, says: str) -> None:
    p = _replay(data)
    err = p.stderr.decode()
    assert p.returncode == 1 and says in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_replay_of_an_export_numbers_events_by_log_index_with_time() -> None:
    place = {"type": "place", "client": "c", "id": "1", "market": "M", "side": "buy"}
    place |= {"qty": "1", "price": "2"}
    register = entry(5, 6, SIGNER.register("c"))
    p = _replay(HEAD + ADD + b"\n" + register + entry(9, 7, SIGNER.command(place)))
    assert p.returncode == 0, p.stderr
    got = [json.loads(x) for x in p.stdout.splitlines()]
    assert [(e["type"], e["seq"], e["time"]) for e in got] == [
        ("market_added", 3, 5),
        ("registered", 5, 6),
        ("accepted", 9, 7),
        ("resting", 9, 7),
    ]
    # a forged signature is caught by the replay as it was by the nodes
    forged = json.loads(SIGNER.command(place | {"id": "2"}))
    forged["sig"] = json.loads(SIGNER.command(place | {"id": "3"}))["sig"]
    p = _replay(HEAD + ADD + register + entry(9, 7, json.dumps(forged).encode()))
    got = [json.loads(x) for x in p.stdout.splitlines()]
    assert got[-1]["type"] == "rejected" and got[-1]["reason"] == "bad_signature", got
