"""Issue 5, test 7: a Node.js Grenache client trades on a grenex node and gets the events back.

How: three voters on one Grape, the event stream of n3 recorded from the first command.
``js/client.js`` (grenache-nodejs-link + grenache-nodejs-http + grenache-nodejs-ws from
node_modules, nothing of grenex) subscribes to ``grenex:<cluster>:events``, then sends requests
to ``grenex:<cluster>:node:n2`` — a limit buy, a gzip-compressed sell from another client that
trades with it, a buy whose decimals are JavaScript *numbers*, the first buy again (a retry), an
unknown action, and a ``book`` read — and prints every reply and the streamed events of its
commands as JSON lines.

Proves:

* each command's reply is ``{"seq", "events"}`` with the SPEC §3 events (accepted, resting,
  trade at the maker's price, filled), decimals canonical, numbers read exactly;
* the compressed request works; the retry is answered with the first outcome (flagged
  ``"duplicate": true``); the unknown
  action comes back as the error ``ERR_GRENEX_BAD_REQUEST: …`` in Node's callback;
* the Node.js subscriber receives exactly the same events on the stream;
* the book it reads equals grenex's own, and the history checks out.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from .conftest import started_harness
from .harness import Harness
from .history import OK, Op

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

SCRIPT = Path(__file__).parent / "js" / "client.js"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def harness(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    async with started_harness(
        tmp_path_factory, "js", stream_node="n3", nodes=3, voters=3, grapes=1
    ) as h:
        yield h


async def run_js(h: Harness, node: str, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    node_bin = shutil.which("node")
    assert node_bin is not None
    proc = await asyncio.create_subprocess_exec(
        node_bin,
        str(SCRIPT),
        h.cluster.grape_urls[0],
        h.name,
        node,
        json.dumps(requests),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, (out, err)
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


async def test_nodejs_client_places_and_gets_events(harness: Harness) -> None:
    h = harness
    j1 = {
        "client": "js",
        "id": "j1",
        "market": "BTC-USD",
        "side": "buy",
        "qty": "0.5",
        "price": "100.50",
    }
    j2 = {
        "client": "js2",
        "id": "j2",
        "market": "BTC-USD",
        "side": "sell",
        "qty": "0.2",
        "price": "100.5",
    }
    j3 = {"client": "js", "id": "j3", "market": "BTC-USD", "side": "buy", "qty": 0.1, "price": 99.9}
    requests: list[dict[str, Any]] = [
        {"payload": {"action": "place", "args": [j1]}},
        {"payload": {"action": "place", "args": [j2]}, "compress": True},
        {"payload": {"action": "place", "args": [j3]}},
        {"payload": {"action": "place", "args": [j1]}},
        {"payload": {"action": "launch", "args": [{}]}},
        {"payload": {"action": "book", "args": [{"market": "BTC-USD"}]}},
    ]
    lines = await run_js(h, "n2", requests)
    assert lines[0] == {"subscribed": True}, lines
    replies = lines[1 : 1 + len(requests)]
    streamed = [line["event"] for line in lines[1 + len(requests) :]]
    assert all(r["ok"] for i, r in enumerate(replies) if i != 4), replies

    r1, r2, r3, again = (replies[i]["result"] for i in range(4))
    assert kinds(r1["events"]) == ["accepted", "resting"]
    assert r1["events"][0] | {"seq": 0} == {
        "type": "accepted",
        "seq": 0,
        "client": "js",
        "id": "j1",
        "market": "BTC-USD",
        "side": "buy",
        "price": "100.5",
        "qty": "0.5",
        "tif": "GTC",
    }
    assert kinds(r2["events"]) == ["accepted", "trade", "filled"]
    trade = r2["events"][1]
    assert (trade["price"], trade["qty"], trade["maker"], trade["taker"]) == (
        "100.5",
        "0.2",
        "j1",
        "j2",
    )
    assert kinds(r3["events"]) == ["accepted", "resting"]
    assert (r3["events"][0]["price"], r3["events"][0]["qty"]) == ("99.9", "0.1")
    assert again == r1 | {"duplicate": True}, "a retry is answered with the first outcome"
    assert replies[4] == {"ok": False, "error": replies[4]["error"]}
    assert replies[4]["error"].startswith("ERR_GRENEX_BAD_REQUEST: unknown action"), replies[4]
    book = replies[5]["result"]["books"][0]
    assert [(o["id"], o["price"], o["qty"]) for o in book["bids"]] == [
        ("j1", "100.5", "0.3"),
        ("j3", "99.9", "0.1"),
    ]
    assert book["asks"] == []

    # the Node.js subscriber saw exactly the events of its three commands
    assert streamed == r1["events"] + r2["events"] + r3["events"], streamed

    for args, r in ((j1, r1), (j2, r2), (j3, r3)):
        h.ops.append(Op(str(args["client"]), "place", args, "n2", OK, r["seq"], r["events"], 1))
    await h.verify()
    assert (await h.books("n1"))["books"][0] == book
