"""Issue 5, test 7: a Node.js Grenache client trades on a grenex node and gets the events back.

How: three voters on one Grape, the event stream of n3 recorded from the first command.
``js/client.js`` (grenache-nodejs-link + grenache-nodejs-http, the ``ws`` package and Node's
built-in crypto, nothing of grenex) is given the genesis file and two accounts' key seeds.  It
checks the node's cluster id against the SHA-256 of the genesis, subscribes to
``grenex:<cluster>:events`` over TLS pinned to the genesis certificates, then sends to
``grenex:<cluster>:node:n2`` (TLS, the node's key checked) commands it signs itself with
Ed25519 (SPEC §8): two ``register``s, a limit buy, a gzip-compressed sell from the other
account that trades with it, a buy whose decimals are JavaScript *numbers*, the first buy's
envelope again (a retry), an unknown action, an unsigned place, and a ``book`` read — and
prints every reply and the streamed events of its commands as JSON lines.

Proves:

* Node's signatures verify on grenex: each command's reply is ``{"seq", "events"}`` with the
  SPEC §3 events (registered, accepted, resting, trade at the maker's price, filled),
  decimals canonical, numbers read exactly;
* the compressed request works; the retried envelope is answered with the first outcome
  (flagged ``"duplicate": true``); the unknown action and the unsigned command come back as
  the error ``ERR_GRENEX_BAD_REQUEST: …`` in Node's callback;
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

from grenex.grenache.tls import b64url, cert_pem, make_self_signed, private_key_pem

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
    c = h.cluster
    assert c.base_dir is not None and c.genesis_path is not None
    tls_seed = c.keyring.key("js-tls").seed  # the client's TLS identity (the API is not mutual)
    (c.base_dir / "js-tls.key").write_bytes(private_key_pem(tls_seed))
    (c.base_dir / "js-tls.crt").write_text(cert_pem(make_self_signed(tls_seed, "js")))
    config = {
        "grape": c.grape_urls[0],
        "node": node,
        "genesis": str(c.genesis_path),
        "keys": {a: b64url(c.keyring.key(a).seed) for a in ("js", "js2")},
        "tls_key": str(c.base_dir / "js-tls.key"),
        "tls_cert": str(c.base_dir / "js-tls.crt"),
        "requests": requests,
    }
    path = c.base_dir / "js-config.json"
    path.write_text(json.dumps(config))
    proc = await asyncio.create_subprocess_exec(
        node_bin,
        str(SCRIPT),
        str(path),
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


def recorded(reply: dict[str, Any], node: str) -> Op:
    """The op of a reply line: the envelope Node.js signed, as it was sent."""
    env = reply["sent"]["args"][0]
    args = json.loads(env["cmd"])
    r = reply["result"]
    raw = json.dumps(env, separators=(",", ":"))
    return Op(args["client"], args["type"], args, node, OK, r["seq"], r["events"], 1, raw=raw)


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
        {"sign": {"type": "register", "client": "js"}},
        {"sign": {"type": "register", "client": "js2"}},
        {"sign": {"type": "place", **j1}},
        {"sign": {"type": "place", **j2}, "compress": True},
        {"sign": {"type": "place", **j3}},
        {"again": 2},
        {"payload": {"action": "launch", "args": [{}]}},
        {"payload": {"action": "place", "args": [{"cmd": json.dumps({"type": "place", **j1})}]}},
        {"payload": {"action": "book", "args": [{"market": "BTC-USD"}]}},
    ]
    lines = await run_js(h, "n2", requests)
    assert lines[0] == {"subscribed": True}, lines
    replies = lines[1 : 1 + len(requests)]
    streamed = [line["event"] for line in lines[1 + len(requests) :]]
    assert all(r["ok"] for i, r in enumerate(replies) if i not in (6, 7)), replies
    reg1, reg2 = replies[0]["result"], replies[1]["result"]
    assert kinds(reg1["events"]) == ["registered"] and reg1["events"][0]["client"] == "js"
    assert reg1["events"][0]["key"] == h.cluster.keyring.key("js").public_key
    assert kinds(reg2["events"]) == ["registered"]
    replies = replies[2:]

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
    assert replies[4]["ok"] is False
    assert replies[4]["error"].startswith("ERR_GRENEX_BAD_REQUEST: unknown action"), replies[4]
    assert replies[5]["ok"] is False
    assert replies[5]["error"].startswith("ERR_GRENEX_BAD_REQUEST: invalid_command"), replies[5]
    book = replies[6]["result"]["books"][0]
    assert [(o["id"], o["price"], o["qty"]) for o in book["bids"]] == [
        ("j1", "100.5", "0.3"),
        ("j3", "99.9", "0.1"),
    ]
    assert book["asks"] == []

    # the Node.js subscriber saw exactly the events of its five commands
    want = reg1["events"] + reg2["events"] + r1["events"] + r2["events"] + r3["events"]
    assert streamed == want, streamed

    for line in [*lines[1:3], *replies[:4]]:
        h.ops.append(recorded(line, "n2"))
    await h.verify()
    assert (await h.books("n1"))["books"][0] == book
