"""Issue 5, test 6: bad input over RPC is answered with a clear error and changes nothing.

How: three voters on one Grape, the event stream of n3 recorded from the first command.  A
*fingerprint* of the cluster — every node's pid, term, applied and commit index, state hash,
and n1's books — is taken before and after each batch of bad input; every request must be
answered within ``ANSWER_S`` seconds.

Proves:

* shape errors sent with the Python Grenache client to a node's client API (not an object,
  ``[]``, ``{"action": 5}``, a command without args, args not a list, two objects, unknown
  actions (``batch`` is one since SPEC §8), a command that is not an envelope, bad read
  arguments) are each answered ``ERR_GRENEX_BAD_REQUEST: <why>`` and change nothing (same
  fingerprint);
* unsigned and garbled envelopes (no ``sig``, ``cmd`` not a string, TEXT not JSON or with a
  repeated key, a batch of nothing or of a ``register``, a bad nonce, a garbage or foreign
  signature, a signature of other TEXT or of another cluster, an unknown account, a register
  of a bad key, a ``type`` that contradicts the action, TEXT over 64 KiB) are each answered
  ``ERR_GRENEX_BAD_REQUEST: <§8 reason>`` and nothing reaches the log;
* raw HTTP garbage (aiohttp, over the node's TLS) — empty, not JSON, ``NaN``, bad UTF-8, not
  a ``[rid,key,payload]`` frame, over the node's body limit (with a length, chunked, and as a
  gzip bomb; the limit is 1 MiB, where issue 5 had 64 KiB), gzip garbage, 100,000
  nested brackets, a 5,000-digit integer literal (beyond the JSON decoder: the frame is
  refused with 400), a stalled half-sent body, WebSocket garbage — is answered with a 4xx status
  or an error frame (never a hang) and changes nothing; a valid gzip request still works;
* field-level problems in signed commands reach the log as exactly one engine ``rejected``
  event each, with the reason SPEC §2 prescribes (including ``1e400``, ``-1``, a 3,000-digit
  integer price, 2^63 lots, wrong JSON types); the applied index advances by exactly one
  entry per such command (a retried rejected place is answered with its first outcome; a
  signed batch is one entry with one outcome per command); the books do not change;
* garbage on the consensus endpoint ``grenex:<cluster>:peer:<id>``, sent with a member's
  certificate (mutual TLS; a stranger gets no handshake) — not objects, unknown kinds, bad
  base64, bad MessagePack, wrong wire version, negative positions, unknown message types and
  entry kinds, a sender that is not the certificate's owner, malformed forwards and joins —
  is refused without crashing the node and changes nothing; stale messages are ignored;
* the whole history still checks out (``node.history.check``).

Forged but well-formed consensus messages are in ``test_peer_forged.py``.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio

from grenex.codec import api as codec_api
from grenex.codec.api import service_names
from grenex.codec.keys import SecretKey
from grenex.codec.peer import (
    Forward,
    FwdNotLeader,
    Join,
    RaftAck,
    RaftBatch,
    decode_peer_reply,
    encode_peer_request,
)
from grenex.codec.raft import encode_message
from grenex.codec.signer import Signer
from grenex.consensus import Message, MessageType
from grenex.grenache import PeerRPCClient, RemoteError
from grenex.grenache.tls import pinned_client_context, unb64url
from grenex.node.config import NodeConfig

from .conftest import started_harness
from .harness import Harness
from .history import OK, Op, node_ports

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(180)]

ANSWER_S = 5.0
LIMITS = NodeConfig("limits")  # the defaults every ``grenex node`` runs with


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def harness(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    async with started_harness(
        tmp_path_factory, "bad", stream_node="n3", nodes=3, voters=3, grapes=1
    ) as h:
        yield h


async def fingerprint(h: Harness) -> dict[str, Any]:
    st = await h.status_direct()
    out: dict[str, Any] = {
        n: (s["pid"], s["term"], s["applied"], s["commit"], s["state_hash"])
        if isinstance(s, dict)
        else s
        for n, s in st.items()
    }
    out["books"] = (await h.books("n1"))["books"]
    return out


async def settled(h: Harness) -> dict[str, Any]:
    """The fingerprint once every node has applied everything (the cluster is idle)."""
    await h.converged(30)
    return await fingerprint(h)


# TLS for raw requests, by port: the node's certificate pinned (the peer port: presenting a
# member's certificate, the peer service being mutual TLS)
_TLS: dict[int, ssl.SSLContext] = {}


def api_port(h: Harness, node: str = "n1") -> int:
    port = h.cluster.procs[node].api_port
    _TLS[port] = pinned_client_context([unb64url(h.cluster.cert_of(node))])
    return port


def member_tls(h: Harness, node: str, as_node: str) -> ssl.SSLContext:
    """Pinned to ``node``'s certificate, presenting ``as_node``'s (a member's)."""
    c = h.cluster
    return pinned_client_context(
        [unb64url(c.cert_of(node))],
        client_cert=unb64url(c.cert_of(as_node)),
        client_seed=c.keyring.node_key(as_node).seed,
    )


def peer_port(h: Harness, node: str, as_node: str) -> int:
    port = node_ports(h.cluster.procs[node].log_path, node)["peer"]
    _TLS[port] = member_tls(h, node, as_node)
    return port


async def post(
    port: int,
    body: bytes,
    *,
    headers: dict[str, str] | None = None,
    method: str = "POST",
    path: str = "/",
) -> tuple[int, bytes]:
    """One raw HTTP request; it must be answered within ANSWER_S."""
    t = time.monotonic()
    async with (
        aiohttp.ClientSession(auto_decompress=False) as s,
        s.request(
            method,
            f"https://127.0.0.1:{port}{path}",
            data=body,
            headers=headers or {},
            timeout=aiohttp.ClientTimeout(total=ANSWER_S),
            ssl=_TLS[port],
        ) as r,
    ):
        data = await r.read()
    assert time.monotonic() - t < ANSWER_S
    return r.status, data


def frame(data: bytes) -> list[Any] | None:
    try:
        v = json.loads(data)
    except ValueError:
        return None
    return v if isinstance(v, list) and len(v) == 3 else None


# ----------------------------------------------------------------------------- shapes

SHAPE_ERRORS: list[tuple[str, Any]] = [
    ("a string", "place"),
    ("a number", 5),
    ("null", None),
    ("an empty list", []),
    ("a list", [{"action": "status"}]),
    ("no action", {"args": [{}]}),
    ("action 5", {"action": 5}),
    ("action null", {"action": None, "args": [{}]}),
    ("action a list", {"action": ["place"], "args": [{}]}),
    ("unknown action", {"action": "launch", "args": [{}]}),
    ("empty action", {"action": "", "args": [{}]}),
    ("upper-case action", {"action": "PLACE", "args": [{}]}),
    ("action with a space", {"action": "place ", "args": [{}]}),
    ("a 10,000-character action", {"action": "x" * 10_000, "args": [{}]}),
    ("place without args", {"action": "place"}),
    ("place with args null", {"action": "place", "args": None}),
    ("place with args []", {"action": "place", "args": []}),
    ("args an object", {"action": "place", "args": {"client": "a"}}),
    ("args a string", {"action": "cancel", "args": "x"}),
    ("two objects", {"action": "place", "args": [{"client": "a"}, {"client": "b"}]}),
    ("args [5]", {"action": "amend", "args": [5]}),
    ("args [[]]", {"action": "place", "args": [[]]}),
    ("args [null]", {"action": "place", "args": [None]}),
    ("status with args [5]", {"action": "status", "args": [5]}),
    ("type contradicts action", {"action": "place", "args": [{"type": "cancel", "client": "a"}]}),
    ("type 5", {"action": "cancel", "args": [{"type": 5, "client": "a", "id": "x"}]}),
    (
        "nesting 20 deep",
        {
            "action": "place",
            "args": [{"client": "a", "id": "x", "tag": [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}],
        },
    ),
    (
        "a 5,000-digit price (command over 4 KiB)",
        {"action": "place", "args": [{"client": "a", "id": "x", "price": "9" * 5000}]},
    ),
    ("book market 5", {"action": "book", "args": [{"market": 5}]}),
    ("book market not a name", {"action": "book", "args": [{"market": "BTC USD"}]}),
    ("trades limit 0", {"action": "trades", "args": [{"limit": 0}]}),
    ("trades limit huge", {"action": "trades", "args": [{"limit": 1 << 62}]}),
    ("trades since -1", {"action": "trades", "args": [{"since": -1}]}),
    ("trades since a string", {"action": "trades", "args": [{"since": "0"}]}),
    ("batch without args", {"action": "batch"}),
    ("batch without commands", {"action": "batch", "args": [{}]}),
    ("batch commands an object", {"action": "batch", "args": [{"commands": {}}]}),
    ("batch of nothing", {"action": "batch", "args": [{"commands": []}]}),
    (
        "batch over the limit",
        {
            "action": "batch",
            "args": [{"commands": [{"type": "cancel"}] * (LIMITS.batch_commands_max + 1)}],
        },
    ),
    ("batch command without type", {"action": "batch", "args": [{"commands": [{"client": "a"}]}]}),
    ("batch in a batch", {"action": "batch", "args": [{"commands": [{"type": "batch"}]}]}),
    ("batch command a string", {"action": "batch", "args": [{"commands": ["place"]}]}),
]


async def test_shape_errors_are_bad_requests(harness: Harness) -> None:
    h = harness
    assert h.rpc is not None
    before = await settled(h)
    dest, key = f"127.0.0.1:{api_port(h)}", h.cluster.api_name("n1")
    for what, payload in SHAPE_ERRORS:
        t = time.monotonic()
        with pytest.raises(RemoteError) as info:
            await h.rpc.request_peer(dest, key, payload, timeout_ms=int(ANSWER_S * 1000))
        assert time.monotonic() - t < ANSWER_S, what
        assert str(info.value).startswith(codec_api.ERR_BAD_REQUEST + ": "), (what, str(info.value))
        assert len(str(info.value)) < 400, (what, "the error must not echo the input")
    assert await settled(h) == before


# ----------------------------------------------------------------------------- envelopes


def text_of(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def envelope_errors(h: Harness) -> list[tuple[str, str, Any, str]]:
    """(what, action, args[0], the §8 reason) of unsigned and garbled commands."""
    kr = h.cluster.keyring
    cid = h.signing.genesis.cluster_id
    bad, eve = kr.key("bad"), kr.key("eve")
    n = int(time.time() * 1_000_000)

    def signed(text: str, key: SecretKey = bad, cluster_id: str = cid) -> dict[str, Any]:
        return {"cmd": text, "sig": key.sign(cluster_id, text.encode())}

    cancel = text_of({"type": "cancel", "client": "bad", "id": "x", "nonce": n})
    other = text_of({"type": "cancel", "client": "bad", "id": "y", "nonce": n})
    big = text_of({"type": "cancel", "client": "bad", "id": "x", "pad": "p" * 70_000, "nonce": n})
    return [
        ("no sig", "cancel", {"cmd": cancel}, "invalid_command"),
        ("sig null", "cancel", {"cmd": cancel, "sig": None}, "invalid_command"),
        ("cmd an object", "cancel", {"cmd": json.loads(cancel), "sig": "x"}, "invalid_command"),
        ("cmd not JSON", "cancel", signed("cancel x"), "invalid_command"),
        ("cmd a list", "cancel", signed("[1]"), "invalid_command"),
        (
            "a repeated key",
            "cancel",
            signed('{"type":"cancel","client":"bad","id":"x","id":"y","nonce":1}'),
            "invalid_command",
        ),
        (
            "client not a name",
            "cancel",
            signed(text_of({"type": "cancel", "client": "b d", "nonce": 1})),
            "invalid_command",
        ),
        (
            "client 5",
            "cancel",
            signed(text_of({"type": "cancel", "client": 5, "nonce": 1})),
            "invalid_command",
        ),
        ("no client", "place", signed(text_of({"type": "place", "nonce": 1})), "invalid_command"),
        (
            "nonce 0",
            "cancel",
            signed(text_of({"type": "cancel", "client": "bad", "nonce": 0})),
            "invalid_nonce",
        ),
        (
            "nonce 1.5",
            "cancel",
            signed('{"type":"cancel","client":"bad","nonce":1.5}'),
            "invalid_nonce",
        ),
        (
            "nonce a string",
            "cancel",
            signed('{"type":"cancel","client":"bad","nonce":"1"}'),
            "invalid_nonce",
        ),
        (
            "nonce 2^53",
            "cancel",
            signed(text_of({"type": "cancel", "client": "bad", "nonce": 2**53})),
            "invalid_nonce",
        ),
        (
            "nonce two days ahead",
            "cancel",
            signed(
                text_of(
                    {"type": "cancel", "client": "bad", "id": "x", "nonce": n + 172_800_000_000}
                )
            ),
            "invalid_nonce",
        ),
        (
            "a batch of nothing",
            "submit",
            signed(text_of({"client": "bad", "nonce": n, "batch": []})),
            "invalid_command",
        ),
        (
            "a register in a batch",
            "submit",
            signed(text_of({"client": "bad", "nonce": n, "batch": [{"type": "register"}]})),
            "invalid_command",
        ),
        ("a garbage sig", "cancel", {"cmd": cancel, "sig": "x" * 86}, "bad_signature"),
        ("sig a number", "cancel", {"cmd": cancel, "sig": 5}, "invalid_command"),
        ("another key's sig", "cancel", signed(cancel, eve), "bad_signature"),
        (
            "the sig of other TEXT",
            "cancel",
            {"cmd": cancel, "sig": signed(other)["sig"]},
            "bad_signature",
        ),
        ("signed for another cluster", "cancel", signed(cancel, bad, "0" * 64), "bad_signature"),
        (
            "an unknown account",
            "cancel",
            signed(text_of({"type": "cancel", "client": "eve", "id": "x", "nonce": n}), eve),
            "unknown_client",
        ),
        (
            "register of a bad key",
            "register",
            signed(text_of({"type": "register", "client": "zed", "key": "k" * 43, "nonce": n})),
            "invalid_key",
        ),
        (
            "register of a taken name",
            "register",
            signed(
                text_of({"type": "register", "client": "bad", "key": eve.public_key, "nonce": n}),
                eve,
            ),
            "client_taken",
        ),
        ("type contradicts action", "place", signed(cancel), "invalid_command"),
        ("TEXT over 64 KiB", "cancel", signed(big), "invalid_command"),
    ]


async def test_unsigned_and_garbled_envelopes(harness: Harness) -> None:
    h = harness
    assert h.rpc is not None
    await h.ensure_registered("n1", "bad")
    before = await settled(h)
    dest, key = f"127.0.0.1:{api_port(h)}", h.cluster.api_name("n1")
    for what, action, env, reason in envelope_errors(h):
        payload = {"action": action, "args": [env]}
        t = time.monotonic()
        with pytest.raises(RemoteError) as info:
            await h.rpc.request_peer(dest, key, payload, timeout_ms=int(ANSWER_S * 1000))
        assert time.monotonic() - t < ANSWER_S, what
        want = f"{codec_api.ERR_BAD_REQUEST}: {reason}"
        got = str(info.value)
        assert got == want or got.startswith(want + ":"), (what, got)
        assert len(got) < 400, (what, "the error must not echo the input")
    assert await settled(h) == before, "nothing reached the log"


# ----------------------------------------------------------------------------- raw HTTP


def request_body(h: Harness, payload: str) -> bytes:
    return f'["rid-x","{h.cluster.api_name("n1")}",{payload}]'.encode()


async def test_raw_http_garbage(harness: Harness) -> None:
    h = harness
    port = api_port(h)
    before = await settled(h)
    status_req = request_body(h, '{"action":"status","args":[{}]}')
    pad = "x" * (LIMITS.api_body_bytes_max + 1)
    big = request_body(h, '{"action":"status","args":[{"pad":"' + pad + '"}]}')

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(LIMITS.api_body_bytes_max // 65536 + 2):
            yield b" " * 65536

    cases: list[tuple[str, bytes, dict[str, str], set[int]]] = [
        ("empty body", b"", {}, {400}),
        ("not JSON", b"hello, exchange", {}, {400}),
        ("a bracket", b"[", {}, {400}),
        ("an object", b"{}", {}, {400}),
        ("an empty list", b"[]", {}, {400}),
        ("numbers", b"[1,2,3]", {}, {400}),
        ("empty rid", b'["","k",{}]', {}, {400}),
        ("NaN", b'["r","k",{"action":"place","args":[{"qty":NaN}]}]', {}, {400}),
        ("Infinity", b'["r","k",{"action":"place","args":[{"qty":Infinity}]}]', {}, {400}),
        ("bad UTF-8", b'["r\xff\xfe","k",{"action":"status"}]', {}, {400}),
        ("trailing garbage", status_req + b"]]]", {}, {400}),
        ("100,000 brackets", b"[" * 100_000, {}, {400}),
        (
            "a 5,000-digit integer price",
            request_body(h, '{"action":"place","args":[{"price":' + "9" * 5000 + "}]}"),
            {},
            {400},  # beyond what the JSON decoder reads as an integer: the frame is refused
        ),
        ("over the body limit", big, {}, {413}),
        ("gzip header, garbage body", b"\x1f\x8b\x08garbage", {"grc-compress": "gzip"}, {400}),
        ("gzip header, empty body", b"", {"grc-compress": "gzip"}, {400}),
        (
            "gzip bomb",
            gzip.compress(b"[" + b" " * 10_000_000 + b"]"),
            {"grc-compress": "gzip"},
            {413},
        ),
        ("huge header", status_req, {"X-Big": "y" * 20_000}, {400, 431}),
    ]
    for what, body, headers, statuses in cases:
        status, data = await post(port, body, headers=headers)
        assert status in statuses, (what, status, data[:200])
        # the node keeps serving
        status, data = await post(port, status_req)
        assert status == 200 and frame(data) is not None, what

    # rid readable, the rest wrong: an error frame addressed to that rid
    for what, body in [
        ("no key", b'["rid-1"]'),
        ("key 5", b'["rid-1",5,{"action":"status"}]'),
    ]:
        status, data = await post(port, body)
        f = frame(data)
        assert status == 200 and f is not None and f[0] == "rid-1", (what, status, data)
        assert isinstance(f[1], str) and f[1].startswith("ERR_REQUEST_INVALID"), (what, f)
    for what, body in [
        ("payload missing", b'["rid-1","k"]'),
        ("payload a number", b'["rid-1","k",1e999]'),
        (
            "nested 200 deep in args",
            request_body(h, '{"action":"place","args":[{"x":' + "[" * 200 + "]" * 200 + "}]}"),
        ),
    ]:
        status, data = await post(port, body)
        f = frame(data)
        assert status == 200 and f is not None and f[0] in ("rid-1", "rid-x"), (what, data)
        assert str(f[1]).startswith(codec_api.ERR_BAD_REQUEST), (what, f)

    # chunked, no length, over the limit
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"https://127.0.0.1:{port}/",
            data=chunks(),
            timeout=aiohttp.ClientTimeout(total=ANSWER_S),
            ssl=_TLS[port],
        ) as r,
    ):
        assert r.status == 413
    # any method and path, as Node's server; a valid gzip request works
    status, data = await post(port, status_req, method="PUT", path="/any/where")
    assert status == 200 and frame(data) is not None
    status, data = await post(port, gzip.compress(status_req), headers={"grc-compress": "gzip"})
    f = frame(gzip.decompress(data))
    assert status == 200 and f is not None and f[1] is None and f[2]["node"] == "n1"

    # a client that stalls half-way through its body does not block anyone else
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=_TLS[port])
    writer.write(b'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n["rid",')
    await writer.drain()
    for _ in range(3):
        status, data = await post(port, status_req)
        assert status == 200
    writer.close()

    # WebSocket RPC on the same port: garbage frames, then a bad and a good request on the
    # same socket; both are answered (frames without a readable rid get no answer, as in Node)
    async with (
        aiohttp.ClientSession() as s,
        s.ws_connect(f"wss://127.0.0.1:{port}/ws", ssl=_TLS[port]) as ws,
    ):
        await ws.send_str("not json")
        await ws.send_bytes(b"\x00\xff" * 100)
        await ws.send_str("[" * 50_000)
        await ws.send_str('["r2","k",{"action":"launch"}]')
        await ws.send_str('["r3","k",{"action":"status"}]')
        got: dict[str, Any] = {}
        async with asyncio.timeout(ANSWER_S):
            async for msg in ws:
                assert msg.type is aiohttp.WSMsgType.TEXT, msg
                reply = json.loads(msg.data)
                got[reply[0]] = reply
                if {"r2", "r3"} <= set(got):
                    break
        assert str(got["r2"][1]).startswith(codec_api.ERR_BAD_REQUEST), got
        assert got["r3"][1] is None and got["r3"][2]["node"] == "n1", got
    assert await settled(h) == before


# ----------------------------------------------------------------------------- field level

P = '"client":"bad","market":"BTC-USD","side":"buy"'
FIELD_ERRORS: list[tuple[str, str, str, str]] = [
    # (what, action, args JSON text, expected rejection reason); signed by "bad" (add_market:
    # by the operator) with the nonce added at the end of the TEXT
    ("no id", "place", '{"client":"bad"}', "invalid_command"),
    ("id a list", "place", '{"client":"bad","id":["f1"]}', "invalid_command"),
    ("id 65 chars", "place", '{"client":"bad","id":"' + "i" * 65 + '"}', "invalid_command"),
    ("market 5", "place", '{"client":"bad","id":"f2","market":5,"side":"buy"}', "unknown_market"),
    ("market unknown", "place", '{"client":"bad","id":"f3","market":"DOGE-USD"}', "unknown_market"),
    (
        "side BUY",
        "place",
        '{"client":"bad","id":"f4","market":"BTC-USD","side":"BUY"}',
        "invalid_side",
    ),
    (
        "side true",
        "place",
        '{"client":"bad","id":"f5","market":"BTC-USD","side":true}',
        "invalid_side",
    ),
    ("qty 1e400", "place", "{" + P + ',"id":"f6","qty":1e400,"price":100}', "invalid_qty"),
    ("qty -1", "place", "{" + P + ',"id":"f7","qty":-1,"price":100}', "invalid_qty"),
    ("qty 1E2", "place", "{" + P + ',"id":"f8","qty":1E2,"price":100}', "invalid_qty"),
    ("qty '1e3'", "place", "{" + P + ',"id":"f9","qty":"1e3","price":100}', "invalid_qty"),
    ("qty ' 1'", "place", "{" + P + ',"id":"f10","qty":" 1","price":100}', "invalid_qty"),
    ("qty 0", "place", "{" + P + ',"id":"f11","qty":0,"price":100}', "invalid_qty"),
    (
        "qty below the lot",
        "place",
        "{" + P + ',"id":"f12","qty":"0.00001","price":100}',
        "invalid_qty",
    ),
    (
        "qty 2^63 lots",
        "place",
        "{" + P + ',"id":"f13","qty":"922337203685477.5808","price":100}',
        "invalid_qty",
    ),
    ("qty {}", "place", "{" + P + ',"id":"f14","qty":{},"price":100}', "invalid_qty"),
    (
        "price 3,000 digits",
        "place",
        "{" + P + ',"id":"f15","qty":1,"price":' + "9" * 3000 + "}",
        "invalid_price",
    ),
    (
        "price off the tick",
        "place",
        "{" + P + ',"id":"f16","qty":1,"price":"100.001"}',
        "invalid_price",
    ),
    ("price [100]", "place", "{" + P + ',"id":"f17","qty":1,"price":[100]}', "invalid_price"),
    ("price true", "place", "{" + P + ',"id":"f18","qty":1,"price":true}', "invalid_price"),
    ("price 0", "place", "{" + P + ',"id":"f19","qty":1,"price":0}', "invalid_price"),
    ("tif gtc", "place", "{" + P + ',"id":"f20","qty":1,"price":1,"tif":"gtc"}', "invalid_tif"),
    (
        "post_only 'yes'",
        "place",
        "{" + P + ',"id":"f21","qty":1,"price":1,"post_only":"yes"}',
        "invalid_tif",
    ),
    ("market order GTC", "place", "{" + P + ',"id":"f22","qty":1,"tif":"GTC"}', "invalid_tif"),
    (
        "post_only IOC",
        "place",
        "{" + P + ',"id":"f23","qty":1,"price":1,"tif":"IOC","post_only":true}',
        "invalid_tif",
    ),
    ("stp none", "place", "{" + P + ',"id":"f24","qty":1,"price":1,"stp":"none"}', "invalid_stp"),
    (
        "FOK on an empty book",
        "place",
        "{" + P + ',"id":"f25","qty":1,"price":1,"tif":"FOK"}',
        "fok_unfillable",
    ),
    ("cancel unknown", "cancel", '{"client":"bad","id":"nope"}', "unknown_order"),
    ("amend unknown", "amend", '{"client":"bad","id":"nope","qty":1}', "unknown_order"),
    ("amend nothing", "amend", '{"client":"bad","id":"nope"}', "unknown_order"),
    (
        "add_market existing",
        "add_market",
        '{"market":"BTC-USD","tick":"0.01","lot":"1"}',
        "market_exists",
    ),
    ("add_market tick 0", "add_market", '{"market":"X-1","tick":"0","lot":"1"}', "invalid_market"),
    ("add_market tick -1", "add_market", '{"market":"X-2","tick":-1,"lot":"1"}', "invalid_market"),
    (
        "add_market bad name",
        "add_market",
        '{"market":"X 3","tick":"1","lot":"1"}',
        "invalid_market",
    ),
]


def signed_text(h: Harness, action: str, args: str) -> tuple[str, dict[str, Any]]:
    """The envelope (JSON text) of ``action`` with the fields of ``args`` (JSON text, kept as
    written: exotic numbers stay as they are) and a nonce, signed by its account (the
    operator's for add_market), and those fields as the checker reads them."""
    signer: Signer = h.signing.signer
    body = args[1:-1]
    if action == "add_market":
        client = h.cluster.keyring.operator
        body = f'"client":"{client}",' + body
    else:
        client = json.loads(args)["client"]
    text = '{"type":"' + action + '",' + body + f',"nonce":{signer.next_nonce(client)}' + "}"
    raw = signer.sign_text(client, text.encode()).decode()
    return raw, json.loads(text, parse_float=str, parse_constant=str)


async def test_field_errors_are_rejected_events(harness: Harness) -> None:
    h = harness
    port = api_port(h)
    await h.ensure_registered("n1", "bad")
    before = await settled(h)
    entries = 0
    first_f2: Op | None = None
    for i, (what, action, args, reason) in enumerate(FIELD_ERRORS):
        raw, fields = signed_text(h, action, args)
        body = request_body(h, f'{{"action":"{action}","args":[{raw}]}}').replace(
            b"rid-x", f"rid-{i}".encode()
        )
        status, data = await post(port, body)
        f = frame(data)
        assert status == 200 and f is not None and f[1] is None, (what, status, data[:300])
        reply = f[2]
        events = reply["events"]
        assert [(e["type"], e["reason"]) for e in events] == [("rejected", reason)], (what, events)
        assert events[0]["cmd"] == action, (what, events)
        entries += 1
        op = Op(str(fields["client"]), action, fields, "n1", OK, reply["seq"], events, 1, raw=raw)
        h.ops.append(op)
        if what == "market 5":
            first_f2 = op
    # a signed batch: one entry, each command with its own outcome
    items: list[dict[str, Any]] = [
        {"type": "place", "id": "fb1", "market": "BTC-USD", "side": "SELL"},
        {"type": "cancel", "id": "nope2"},
        {"type": "amend", "id": "nope3", "qty": "1"},
    ]
    batch = await h.send(h.signing.batch("n1", "bad", items))
    assert batch.status == OK and batch.events is not None, batch
    assert [(e["n"], e["type"], e["reason"]) for e in batch.events] == [
        (0, "rejected", "invalid_side"),
        (1, "rejected", "unknown_order"),
        (2, "rejected", "unknown_order"),
    ], batch.events
    entries += 1
    # a retried rejected place (its envelope again) is answered with its first outcome
    assert first_f2 is not None
    again = await h.send(h.again(first_f2, "n2"))
    assert again.duplicate and (again.seq, again.events) == (first_f2.seq, first_f2.events)
    after = await settled(h)
    assert after["books"] == before["books"]
    for n in ("n1", "n2", "n3"):
        pid, term, applied, _commit, _hash = after[n]
        assert (pid, term) == before[n][:2], (n, "a node restarted or a leader changed")
        assert applied == before[n][2] + entries, (n, applied, before[n][2], entries)


# ----------------------------------------------------------------------------- peer endpoint


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def env(body: bytes) -> dict[str, Any]:
    """A peer payload around arbitrary MessagePack bytes (no cluster secret in this test)."""
    return {"v": 1, "b": b64(body), "mac": None}


SENDER = ["ghost"]  # who the messages below name as their sender (set per target node)


def batch(*msgs: bytes) -> dict[str, Any]:
    return encode_peer_request(RaftBatch(SENDER[0], list(msgs)))


def wire(*fields: Any) -> bytes:
    return msgspec.msgpack.encode(list(fields))


async def test_peer_endpoint_garbage(harness: Harness) -> None:
    h = harness
    assert h._link is not None
    before = await settled(h)
    leader = await h.cluster.wait_leader()
    follower = next(n for n in h.cluster.voter_ids if n != leader)
    other = next(n for n in h.cluster.voter_ids if n not in (leader, follower))
    # every message below is sent with ``other``'s certificate and names it as the sender
    # (a member; the peer service refuses strangers in the handshake); ``ghost`` named
    # instead is refused: a member speaks only for itself
    SENDER[0] = other
    stale = [
        encode_message(Message(t, other, node, 0, index=5, commit=5))
        for t in MessageType
        for node in (leader, follower)
    ]
    ok_ = [1, 6, other, follower, 0, 0, 0, 0, False, 0, False, [], None]  # a stale heartbeat

    def variant(i: int, v: Any) -> bytes:
        fields = list(ok_)
        fields[i] = v
        return wire(*fields)

    garbage: list[tuple[str, Any]] = [
        ("a string", "raft"),
        ("a list", []),
        ("a number", 5),
        ("null", None),
        ("no version", {}),
        ("version 2", {"v": 2, "b": b64(b"")}),
        ("no body", {"v": 1}),
        ("body a number", {"v": 1, "b": 5}),
        ("body not base64", {"v": 1, "b": "***"}),
        ("body not MessagePack", env(b"\xc1garbage")),
        ("body not a message", env(msgspec.msgpack.encode([1, 2]))),
        ("unknown message", env(msgspec.msgpack.encode({"t": "nope", "src": "x"}))),
        ("raft without msgs", env(msgspec.msgpack.encode({"t": "raft", "src": "ghost"}))),
        (
            "raft msgs not bytes",
            env(msgspec.msgpack.encode({"t": "raft", "src": "g", "msgs": [1]})),
        ),
        ("a message of garbage", batch(b"garbage")),
        ("an empty message", batch(b"")),
        ("wire version 2", batch(variant(0, 2))),
        ("type 99", batch(variant(1, 99))),
        ("type -1", batch(variant(1, -1))),
        ("negative term", batch(variant(4, -1))),
        ("negative commit", batch(variant(7, -5))),
        ("term a float", batch(variant(4, 1.5))),
        ("term a string", batch(variant(4, "1"))),
        ("src 5", batch(variant(2, 5))),
        ("entries not a list", batch(variant(11, 5))),
        ("an entry of kind 99", batch(variant(11, [[1, 0, 99, b"x"]]))),
        ("an entry at index 0", batch(variant(11, [[0, 0, 0, b"x"]]))),
        ("snapshot garbage", batch(variant(12, [1, 2]))),
        ("too few fields", batch(wire(1, 6, "ghost"))),
        ("one good message among garbage", batch(stale[0], b"garbage")),
        ("forward without cmds", env(msgspec.msgpack.encode({"t": "fwd", "src": "g", "batch": 1}))),
        ("forward no cmds", encode_peer_request(Forward(other, 1, []))),
        (
            "forward a command over the limit",
            encode_peer_request(Forward(other, 1, [b"x" * (LIMITS.command_bytes_max + 1)])),
        ),
        ("forward 2,000 commands", encode_peer_request(Forward(other, 1, [b"{}"] * 2000))),
        ("forward a negative batch", encode_peer_request(Forward(other, -1, [b"{}"]))),
        ("join without a name", env(msgspec.msgpack.encode({"t": "join"}))),
        ("join from 5", env(msgspec.msgpack.encode({"t": "join", "src": 5}))),
        ("join from a bad name", encode_peer_request(Join("bad name!"))),
        ("a batch from a ghost", encode_peer_request(RaftBatch("ghost", [stale[0]]))),
        ("a forward from a ghost", encode_peer_request(Forward("ghost", 1, [b"{}"]))),
    ]
    for node in (leader, follower):
        port = peer_port(h, node, other)
        dest = f"127.0.0.1:{port}"
        key = service_names(h.name, node)["peer"]
        rpc = PeerRPCClient(h._link, ssl_context=_TLS[port])
        try:
            for what, payload in garbage:
                t = time.monotonic()
                with pytest.raises(RemoteError) as info:
                    await rpc.request_peer(dest, key, payload, timeout_ms=int(ANSWER_S * 1000))
                assert time.monotonic() - t < ANSWER_S, (node, what)
                err = str(info.value)
                assert err.startswith(codec_api.ERR_BAD_REQUEST), (node, what, err)
            # a forward to a follower is answered "not the leader", not proposed
            if node == follower:
                fwd = encode_peer_request(Forward(other, 1, [b"{}"]))
                reply = await rpc.request_peer(dest, key, fwd, timeout_ms=5000)
                assert isinstance(decode_peer_reply(reply), FwdNotLeader), reply
            # stale messages of every type from a member: accepted by the transport, ignored
            reply = await rpc.request_peer(dest, key, batch(*stale), timeout_ms=5000)
            assert decode_peer_reply(reply) == RaftAck(len(stale), 0)
        finally:
            await rpc.close()
        # raw garbage bodies
        for body in (b"", b"garbage", b"[" * 100_000, b'["r","k",{"v":1,"b":NaN}]'):
            status, _ = await post(port, body)
            assert status == 400
    await asyncio.sleep(0.5)  # let the stale messages reach the cores
    assert await settled(h) == before


async def test_history_after_bad_input(harness: Harness) -> None:
    res, statuses = await harness.verify()
    assert len(statuses) == 3
    assert res.acked >= len(FIELD_ERRORS)
