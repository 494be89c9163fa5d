"""A history-recording client harness for real-process node tests, and its checker.

Clients
-------
Every command is a SPEC §8 signed envelope: :class:`Signing` signs it once, with the test
keyring's key of its account and a nonce from the microsecond clock, and the :class:`Op`
keeps the envelope's exact text (``raw``).  :func:`call` sends that envelope to one node's
client API (``grenex:<cluster>:node:<id>``) and keeps retrying **the same envelope** on
``ERR_GRENEX_UNAVAILABLE``, timeouts and transport errors, until it is answered or its
deadline passes.  Each command becomes an :class:`Op` with a status:

* ``ok`` — acknowledged: the node returned ``{"seq", "events"}`` (``"duplicate": true`` when
  answered from the account's nonce window: the first outcome);
* ``failed`` — refused with ``ERR_GRENEX_BAD_REQUEST`` on the first attempt (it must never
  reach the log);
* ``unknown`` — never answered (it may or may not have been committed, at most once).

Every account is registered once (a recorded ``register`` op) before its first command.
:class:`OpGen` makes random place/cancel/amend commands for one client (prices around 100 so
orders cross, every ``tif``, ``post_only``, ``stp`` mode, market orders, a few invalid ones);
:func:`run_load` signs and drives them with bounded concurrency and optional pacing.
``driver.py`` runs the same code in a separate process.

The log, as seen from outside
-----------------------------
There is no log-dump API.  :class:`EventStream` subscribes to **one** node's WebSocket event
publisher directly (its port is read from the node's ready line; no reconnect to another
publisher, so a gap cannot hide), before the first command of a test's history.  Every event
carries ``seq``, the log index of its command, so the stream groups into log entries; indexes
that never appear are no-op or membership-configuration entries, entries from before the
subscription (the operator admitting the learners), or an envelope that reached the log again
and was absorbed by its account's nonce window (nothing ran, so nothing is published).
``Harness.verify`` also compares the stream with every node's ``events`` action (its bounded
window of applied entries), so every replica is shown to have applied the same entries with
the same events.

The checker
-----------
:func:`check` matches every stream entry to the one command that produced it:

* an acknowledged op claims the entry at its ``seq``, whose events must equal the reply's
  exactly (no acknowledged command lost; the reply told the truth; a duplicate answer is the
  first outcome);
* every other entry must be the first and only execution of an unacknowledged op with the
  same key (``place`` ``(client, id)``, ``cancel``/``amend`` ``(client, id)`` and compatible
  values, ``register`` its client, ``add_market`` its market) — an entry no client sent, a
  second execution of any op, a ``duplicate_id`` rejection of one of our (never reused) ids, or
  a ``failed`` op in the log is an error.  An entry the §8 checks rejected at apply without
  consuming anything (``stale_nonce``, ``bad_signature``…) executed nothing: it must carry the
  key of some op sent, and does not count as an execution.  Membership entries (the
  operator's ``admit``/``promote``/``remove``, sent by the cluster, not by a client) need no op;
* the reconstructed envelopes, at their log positions with their entries' times, are applied
  to a fresh replicated state built from the genesis (:class:`grenex.replica.state.
  ReplicaState`: every §8 check, the nonce windows and the engine) and must yield **exactly**
  the streamed events; the replay's final books are returned for the caller to compare with
  every node's ``book`` reply, and the reconstruction as a ``grenex export`` file
  (:attr:`CheckResult.log_lines`) for ``grenex replay``;
* independently of the engine, an order-quantity model over the stream: an order is accepted
  once, never trades more than its remaining quantity, ``filled`` only at zero,
  ``resting``/``cancelled`` report the remaining quantity the trades imply, nothing happens to
  an order after it is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import aiohttp

from grenex.codec.api import service_names
from grenex.codec.genesis import Genesis, parse_genesis
from grenex.codec.signer import KeySource, Signer
from grenex.grenache import GrenacheError, LookupEmptyError, PeerRPCClient, RemoteError
from grenex.lab.checker import INERT_REASONS, MEMBERSHIP_EVENTS, export_file
from grenex.replica.state import ReplicaState

__all__ = [
    "FAILED",
    "OK",
    "UNKNOWN",
    "CheckResult",
    "Client",
    "EventStream",
    "HistoryError",
    "Op",
    "OpGen",
    "Signing",
    "call",
    "check",
    "node_ports",
    "run_load",
]

OK: Final = "ok"
FAILED: Final = "failed"
UNKNOWN: Final = "unknown"

MARKETS: Final = {"BTC-USD": ("0.01", "0.0001"), "ETH-USD": ("0.01", "0.001")}
_QTYS: Final = {
    "BTC-USD": ("0.0001", "0.0005", "0.001", "0.0025", "0.01", "0.0137"),
    "ETH-USD": ("0.001", "0.005", "0.01", "0.1", "0.25"),
}

Json = Any


class HistoryError(AssertionError):
    """The history violates a guarantee; ``violations`` lists (category, detail) pairs."""

    def __init__(self, violations: list[tuple[str, str]] | str) -> None:
        if isinstance(violations, str):
            violations = [("harness", violations)]
        self.violations = violations
        shown = "\n  ".join(f"[{c}] {m}" for c, m in violations[:40])
        more = f"\n  … and {len(violations) - 40} more" if len(violations) > 40 else ""
        super().__init__(f"{len(violations)} violations:\n  {shown}{more}")

    @property
    def categories(self) -> set[str]:
        return {c for c, _ in self.violations}


# ----------------------------------------------------------------------------- operations


@dataclass
class Op:
    """One client command (one signed envelope) and what became of it."""

    client: str
    kind: str  # the command's type; the action it is sent with (any action, for bad input)
    args: dict[str, Json]  # the command as signed (TEXT decoded: type, client, nonce, ...)
    node: str = ""
    status: str = UNKNOWN
    seq: int | None = None
    events: list[dict[str, Json]] | None = None  # None: a duplicate whose events were dropped
    attempts: int = 0
    started: float = 0.0  # wall clock (time.time()): comparable across processes
    ended: float = 0.0
    error: str = ""
    raw: str | None = None  # the envelope's exact JSON text, sent as args[0] on every attempt
    duplicate: bool = False  # the reply came from the account's nonce window (a retry)

    @property
    def command(self) -> dict[str, Json]:
        """The command object (SPEC §2/§8, ``type`` first)."""
        return {"type": self.kind, **{k: v for k, v in self.args.items() if k != "type"}}

    @property
    def nonce(self) -> int | None:
        n = self.args.get("nonce")
        return n if type(n) is int else None

    @property
    def key(self) -> tuple[str, str, str]:
        if self.kind == "batch":  # a signed batch: the key of its first command
            items = self.args.get("batch")
            first = items[0] if isinstance(items, list) and items else {}
            first = first if isinstance(first, dict) else {}
            return (str(first.get("type")), str(self.args.get("client")), str(first.get("id")))
        if self.kind == "add_market":
            return ("add_market", "", str(self.args.get("market")))
        if self.kind in ("register", "admit", "promote", "remove", "rotate_key"):
            return (self.kind, str(self.args.get("client")), "")
        return (self.kind, str(self.args.get("client")), str(self.args.get("id")))

    def payload(self) -> dict[str, Json]:
        """The request: the envelope (or, without one, ``args`` as they are)."""
        arg = json.loads(self.raw) if self.raw is not None else self.args
        return {"action": "submit" if self.kind == "batch" else self.kind, "args": [arg]}

    def to_json(self) -> dict[str, Json]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Json]) -> Op:
        return cls(**d)


def _micros() -> int:
    return time.time_ns() // 1_000


class Signing:
    """Signs commands of one cluster into ops: every account's key from ``keys``
    (the test keyring), nonces from the microsecond clock (strictly increasing per account,
    so processes signing for different accounts never collide)."""

    def __init__(
        self,
        genesis: Genesis,
        keys: KeySource,
        operator: str = "op",
        nonces: Callable[[], int] | None = _micros,
    ) -> None:
        self.genesis = genesis
        self.operator = operator
        self.signer = Signer(genesis.cluster_id, keys, nonces)

    def envelope(self, cmd: dict[str, Json]) -> str:
        """``cmd`` (with ``type`` and ``client``) as a signed envelope's JSON text."""
        if cmd.get("type") == "register" and "key" not in cmd:
            return self.signer.register(str(cmd["client"])).decode()
        return self.signer.command(cmd).decode()

    def batch(self, node: str, client: str, cmds: list[dict[str, Json]]) -> Op:
        """An op for a signed batch of ``client``'s commands (one log entry)."""
        raw = self.signer.batch(client, cmds).decode()
        args = json.loads(json.loads(raw)["cmd"])
        return Op(client, "batch", args, node, raw=raw)

    def op(self, node: str, cmd: dict[str, Json]) -> Op:
        """An op for ``cmd`` (an ``add_market`` without a client: the operator's)."""
        if cmd.get("type") == "add_market" and "client" not in cmd:
            cmd = {**cmd, "client": self.operator}
        raw = self.envelope(cmd)
        args = json.loads(json.loads(raw)["cmd"])
        return Op(str(args["client"]), str(args["type"]), args, node, raw=raw)

    def register(self, node: str, client: str) -> Op:
        return self.op(node, {"type": "register", "client": client})


def _fmt(d: Decimal) -> str:
    text = format(d, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


class OpGen:
    """Random commands for one client: about 60% place, 20% cancel, 20% amend."""

    def __init__(self, client: str, rng: random.Random, *, invalid_rate: float = 0.02) -> None:
        self.client = client
        self.rng = rng
        self.invalid_rate = invalid_rate
        self.n = 0
        self.placed: list[tuple[str, str]] = []  # (id, market)

    def _price(self) -> str:
        return _fmt(Decimal(100) + Decimal(self.rng.randint(-6, 6)) * Decimal("0.01"))

    def next(self) -> tuple[str, dict[str, Json]]:
        """(type, the command's fields without ``type``)."""
        rng = self.rng
        self.n += 1
        r = rng.random()
        if not self.placed or r < 0.6:
            market = rng.choice(sorted(MARKETS))
            oid = f"{self.client}-{self.n}"
            args: dict[str, Json] = {
                "client": self.client,
                "id": oid,
                "market": market,
                "side": rng.choice(("buy", "sell")),
                "qty": rng.choice(_QTYS[market]),
            }
            t = rng.random()
            if t < 0.05:
                pass  # a market order (IOC by default)
            else:
                args["price"] = self._price()
                if t < 0.20:
                    args["tif"] = "IOC"
                elif t < 0.30:
                    args["tif"] = "FOK"
                elif t < 0.40:
                    args["post_only"] = True
                elif t < 0.55:
                    args["tif"] = "GTC"
            if rng.random() < 0.3:
                args["stp"] = rng.choice(("cancel_maker", "cancel_taker", "cancel_both"))
            if rng.random() < self.invalid_rate:
                args[rng.choice(("qty", "price", "side"))] = rng.choice(("0", "-1", "x", "1e3"))
            self.placed.append((oid, market))
            return "place", args
        oid, market = rng.choice(self.placed)
        if r < 0.8:
            return "cancel", {"client": self.client, "id": oid}
        args = {"client": self.client, "id": oid}
        what = rng.random()
        if what < 0.4:
            args["qty"] = rng.choice(_QTYS[market])
        elif what < 0.8:
            args["price"] = self._price()
        else:
            args["qty"] = rng.choice(_QTYS[market])
            args["price"] = self._price()
        return "amend", args


def api_name(cluster: str, node: str) -> str:
    return service_names(cluster, node)["node"]


class Client:
    """A PeerRPCClient that remembers the last addresses a lookup gave for each name.

    A surviving Grape whose only DHT neighbour died answers most lookups with ``[]``
    (observed; grenache.md §9.7), so a client that trusted every lookup would lose its own
    node although the node runs.  These test clients keep using the last known addresses when a
    lookup fails or comes back empty, so the tests measure the nodes, not the client.
    """

    def __init__(
        self, rpc: PeerRPCClient, fallback: Callable[[str], list[str]] | None = None
    ) -> None:
        self.rpc = rpc
        self.known: dict[str, list[str]] = {}
        self.fallback = fallback  # name -> addresses, when no lookup ever answered

    async def request(self, name: str, payload: Json, timeout_ms: int) -> Json:
        rpc = self.rpc
        try:
            peers = await rpc.link.lookup(name)
            if peers and all(rpc.is_dead(p) for p in peers):
                peers = await rpc.link.lookup(name, use_cache=False) or peers
        except GrenacheError:
            peers = []
        if peers:
            self.known[name] = peers
        else:
            peers = self.known.get(name) or (self.fallback(name) if self.fallback else [])
            if not peers:
                raise LookupEmptyError(name)
        dest = random.choice([p for p in peers if not rpc.is_dead(p)] or peers)
        return await rpc.request_peer(dest, name, payload, timeout_ms=timeout_ms)


async def call(
    rpc: Client,
    cluster: str,
    op: Op,
    *,
    deadline_s: float = 60.0,
    attempt_timeout_ms: int = 12_000,
) -> Op:
    """Send ``op`` (the same envelope every time) to its node until answered or ``deadline_s``
    passes; fill in its outcome."""
    name = api_name(cluster, op.node)
    op.started = time.time()
    end = time.monotonic() + deadline_s
    delay = 0.05
    payload = op.payload()
    while True:
        op.attempts += 1
        try:
            reply = await rpc.request(name, payload, attempt_timeout_ms)
        except RemoteError as e:
            op.error = str(e)[:300]
            if e.code == "ERR_GRENEX_BAD_REQUEST":
                # a refusal of the shape: nothing was proposed by this attempt
                op.status = FAILED if op.attempts == 1 else UNKNOWN
                break
        except GrenacheError as e:
            op.error = f"{type(e).__name__}: {str(e)[:300]}"
        else:
            dup = isinstance(reply, dict) and reply.get("duplicate") is True
            if isinstance(reply, dict) and isinstance(reply.get("results"), list):
                # a batch: the stream's form of its events (each with ``n``, its position)
                reply = {
                    **reply,
                    "events": [
                        {"n": n, **e} for n, r in enumerate(reply["results"]) for e in r["events"]
                    ],
                }
            if (
                isinstance(reply, dict)
                and type(reply.get("seq")) is int
                and (isinstance(reply.get("events"), list) or (dup and reply["events"] is None))
            ):
                op.status = OK
                op.seq = reply["seq"]
                op.events = reply["events"]
                op.duplicate = dup
            else:
                op.status = UNKNOWN
                op.error = f"malformed reply {str(reply)[:300]}"
            break
        if time.monotonic() + delay > end:
            op.status = UNKNOWN
            break
        await asyncio.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 1.0)
    op.ended = time.time()
    return op


async def run_load(
    rpc: Client,
    cluster: str,
    node: str,
    gen: OpGen,
    signing: Signing,
    ops_total: int,
    *,
    concurrency: int = 8,
    rate_per_s: float = 0.0,
    deadline_s: float = 60.0,
    sink: list[Op] | None = None,
) -> list[Op]:
    """``ops_total`` commands from ``gen`` through ``node``, at most ``concurrency`` at once,
    started at ``rate_per_s`` (0: as fast as answers come back)."""
    ops: list[Op] = sink if sink is not None else []
    slots = asyncio.Semaphore(concurrency)
    tasks: list[asyncio.Task[Op]] = []
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i in range(ops_total):
        if rate_per_s > 0:
            delay = t0 + i / rate_per_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        await slots.acquire()
        kind, args = gen.next()
        op = signing.op(node, {"type": kind, **args})
        ops.append(op)
        task = asyncio.create_task(call(rpc, cluster, op, deadline_s=deadline_s))
        task.add_done_callback(lambda _t: slots.release())
        tasks.append(task)
    await asyncio.gather(*tasks)
    return ops


# ----------------------------------------------------------------------------- the stream

_READY: Final = re.compile(
    r"node (\S+) ready: cluster \S+, api [0-9.]+:(\d+), peer (\d+), events (\d+)"
)


def node_ports(log_path: Path, node_id: str) -> dict[str, int]:
    """The ports in the last ready line of a node's log (api, peer, events)."""
    found: dict[str, int] | None = None
    for m in _READY.finditer(log_path.read_text(errors="replace")):
        if m.group(1) == node_id:
            found = {"api": int(m.group(2)), "peer": int(m.group(3)), "events": int(m.group(4))}
    if found is None:
        raise RuntimeError(f"no ready line for {node_id} in {log_path}")
    return found


class EventStream:
    """Every event one node publishes, from connection on, in order (one WebSocket)."""

    def __init__(self, url: str, ssl_context: ssl.SSLContext | None = None) -> None:
        self.url = url
        self.ssl_context = ssl_context  # wss: pinned to the node's certificate
        self.events: list[dict[str, Json]] = []
        self.times: dict[int, int] = {}  # log index -> its entry's time (from the frames)
        self.frames = 0
        self.closed_early: str | None = None  # why the stream ended before stop()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._grew = asyncio.Event()

    async def start(self, timeout_s: float = 10.0) -> None:
        self._session = aiohttp.ClientSession()
        async with asyncio.timeout(timeout_s):
            ws = await self._session.ws_connect(
                self.url,
                autoping=True,
                max_msg_size=1 << 24,
                ssl=self.ssl_context if self.ssl_context is not None else True,
            )
        self._task = asyncio.create_task(self._read(ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self.frames += 1
                    frame = json.loads(msg.data)  # one frame an entry
                    if type(frame.get("time")) is int:
                        self.times[int(frame["seq"])] = frame["time"]
                    self.events.extend(frame["events"])
                    self._grew.set()
                else:
                    break
        except Exception as e:  # pragma: no cover - reported through closed_early
            self.closed_early = f"{type(e).__name__}: {e}"
        if not self._stopping and self.closed_early is None:
            self.closed_early = f"publisher closed the stream (close code {ws.close_code})"
        self._grew.set()

    @property
    def last_seq(self) -> int:
        return int(self.events[-1]["seq"]) if self.events else 0

    async def wait_seq(self, seq: int, timeout_s: float = 30.0) -> None:
        """Until an event with ``seq`` or a later one arrived."""
        async with asyncio.timeout(timeout_s):
            while self.last_seq < seq:
                if self.closed_early:
                    raise HistoryError(f"event stream ended: {self.closed_early}")
                self._grew.clear()
                await self._grew.wait()

    def count(self, event_type: str) -> int:
        return sum(1 for e in self.events if e.get("type") == event_type)

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()


# ----------------------------------------------------------------------------- the checker


@dataclass
class CheckResult:
    entries: int  # log entries seen in the stream (commands the engine ran)
    acked: int
    unknown: int
    unknown_executed: int  # unacknowledged ops found in the log
    failed: int
    trades: int
    books: list[dict[str, Json]]  # the replay's final books (SPEC §4), whole
    log_lines: bytes  # the reconstructed log as a ``grenex export`` (header, then entries)
    violations: list[tuple[str, str]] = field(default_factory=list)  # (category, detail)

    def assert_ok(self, allow: frozenset[str] = frozenset()) -> None:
        """Raise :class:`HistoryError` for every violation whose category is not allowed."""
        bad = [v for v in self.violations if v[0] not in allow]
        if bad:
            raise HistoryError(bad)


def _group(
    events: Sequence[dict[str, Json]], errors: list[str]
) -> dict[int, list[dict[str, Json]]]:
    groups: dict[int, list[dict[str, Json]]] = {}
    last = 0
    for ev in events:
        seq = ev.get("seq")
        if type(seq) is not int:
            errors.append(f"event without an integer seq: {ev}")
            continue
        if seq < last:
            errors.append(f"stream out of order: seq {seq} after {last}")
        elif seq > last:
            if seq in groups:
                errors.append(f"log entry {seq} published twice, not contiguously")
            groups[seq] = []
            last = seq
        groups[seq].append(ev)
    return groups


def _entry_key(events: list[dict[str, Json]]) -> tuple[str, str, str] | None:
    """(command kind, client, id) of a log entry, from its first event; None if unnamed."""
    first = events[0]
    t = first.get("type")
    if t == "market_added":
        return ("add_market", "", str(first.get("market")))
    if t == "registered":
        return ("register", str(first.get("client")), "")
    if t == "accepted":
        return ("place", str(first["client"]), str(first["id"]))
    if t == "amended":
        return ("amend", str(first["client"]), str(first["id"]))
    if t == "cancelled" and first.get("reason") == "user":
        return ("cancel", str(first["client"]), str(first["id"]))
    if t == "rejected":
        cmd = first.get("cmd")
        if cmd == "add_market":
            return ("add_market", "", str(first.get("market")))
        if cmd in ("register", "admit", "promote", "remove", "rotate_key") and "client" in first:
            return (str(cmd), str(first["client"]), "")
        if isinstance(cmd, str) and "client" in first and "id" in first:
            return (cmd, str(first["client"]), str(first["id"]))
    return None


def _is_inert(events: list[dict[str, Json]]) -> bool:
    """A §8 rejection at apply that consumed nothing: nothing executed."""
    first = events[0]
    return (
        len(events) == 1
        and first.get("type") == "rejected"
        and first.get("reason") in INERT_REASONS
    )


def _is_membership(events: list[dict[str, Json]]) -> bool:
    return all(e.get("type") in MEMBERSHIP_EVENTS for e in events)


def _is_duplicate_id(events: list[dict[str, Json]]) -> bool:
    first = events[0]
    return first.get("type") == "rejected" and first.get("reason") == "duplicate_id"


def _same_decimal(a: Json, b: Json) -> bool:
    try:
        return Decimal(str(a)) == Decimal(str(b))
    except ArithmeticError:
        return False


def _compatible(op: Op, events: list[dict[str, Json]]) -> bool:
    """Could ``op`` have produced this entry (beyond the key)?"""
    first = events[0]
    if op.kind == "amend" and first.get("type") == "amended":
        for f in ("qty", "price"):
            if f in op.args and not _same_decimal(op.args[f], first.get(f)):
                return False
    return True


def _replay(
    genesis: Genesis, entries: dict[int, str], times: dict[int, int]
) -> tuple[dict[int, list[dict[str, Json]]], list[dict[str, Json]]]:
    """Apply ``entries`` (log index -> envelope JSON) to a fresh replicated state in log order,
    each with its entry's time: the events of each index, and the final books."""
    state = ReplicaState(genesis)
    events: dict[int, list[dict[str, Json]]] = {}
    for seq in sorted(entries):
        o = state.apply_command(seq, 1, entries[seq].encode(), times.get(seq, 0))
        if not o.duplicate:
            events[seq] = json.loads(o.events_json)
    return events, state.engine.books()


def _quantity_model(events: Iterable[dict[str, Json]], errors: list[str]) -> None:
    rem: dict[tuple[str, str], Decimal] = {}
    gone: set[tuple[str, str]] = set()

    def live(k: tuple[str, str], what: str, seq: Json) -> bool:
        if k not in rem:
            errors.append(f"seq {seq}: {what} for {k}, which was never accepted")
            return False
        if k in gone:
            errors.append(f"seq {seq}: {what} for {k} after it left the book")
            return False
        return True

    for ev in events:
        t, seq = ev.get("type"), ev.get("seq")
        if t == "accepted":
            k = (str(ev["client"]), str(ev["id"]))
            if k in rem:
                errors.append(f"seq {seq}: order {k} accepted twice")
            rem[k] = Decimal(ev["qty"])
        elif t == "trade":
            q = Decimal(ev["qty"])
            for k in ((ev["maker_client"], ev["maker"]), (ev["taker_client"], ev["taker"])):
                if live(k, "trade", seq):
                    rem[k] -= q
                    if rem[k] < 0:
                        errors.append(f"seq {seq}: order {k} filled beyond its quantity")
        elif t == "amended":
            k = (str(ev["client"]), str(ev["id"]))
            if live(k, "amended", seq):
                rem[k] = Decimal(ev["qty"])
        elif t == "filled":
            k = (str(ev["client"]), str(ev["id"]))
            if live(k, "filled", seq):
                if rem[k] != 0:
                    errors.append(f"seq {seq}: {k} filled with {rem[k]} remaining")
                gone.add(k)
        elif t in ("resting", "cancelled"):
            k = (str(ev["client"]), str(ev["id"]))
            if live(k, t, seq):
                if rem[k] != Decimal(ev["remaining"]):
                    errors.append(
                        f"seq {seq}: {t} {k} says {ev['remaining']}, trades leave {rem[k]}"
                    )
                if t == "cancelled":
                    gone.add(k)


def check(
    ops: Sequence[Op],
    stream: Sequence[dict[str, Json]],
    genesis: bytes,
    times: dict[int, int] | None = None,
) -> CheckResult:
    """Check ``ops`` (every command any client sent) against the event ``stream`` of one node
    that was subscribed before the first command; ``genesis`` is the cluster's genesis file,
    ``times`` each entry's time (the stream's frames).  See :meth:`CheckResult.assert_ok`.

    Violation categories (``HistoryError.violations``): ``stream`` (malformed stream),
    ``lost`` (an acknowledged command is not in the log), ``mismatch`` (a reply differs from
    the log), ``shared`` (one entry answered to two envelopes), ``phantom`` (an entry no
    client sent), ``reexecuted`` (a command executed a second time, or a retried place answered
    ``duplicate_id``: the nonce window must absorb every retry of an envelope, forever),
    ``duplicate_id``, ``failed_in_log``, ``replay``, ``quantity``.
    """
    gen = parse_genesis(genesis)
    times = times or {}
    violations: list[tuple[str, str]] = []
    errors: list[str] = []
    groups = _group(stream, errors)
    violations += [("stream", e) for e in errors]
    keys = {seq: _entry_key(g) for seq, g in groups.items()}
    inert = {seq for seq, g in groups.items() if _is_inert(g)}
    by_key: dict[tuple[str, str, str], list[int]] = {}  # executions (not inert entries)
    for seq, key in keys.items():
        if key is not None and seq not in inert:
            by_key.setdefault(key, []).append(seq)
    ops_by_key: dict[tuple[str, str, str], list[Op]] = {}
    for op in ops:
        ops_by_key.setdefault(op.key, []).append(op)

    def again(seq: int, other: int, key: tuple[str, str, str], what: str) -> None:
        lo, hi = sorted((seq, other))
        violations.append(("reexecuted", f"{what} {key} at seq {lo} and again at {hi}"))

    def ident(op: Op) -> Json:
        return op.raw if op.raw is not None else op.command

    claimed: dict[int, Op] = {}
    # every op not acknowledged by an execution may have executed once, unacknowledged
    pending: dict[tuple[str, str, str], list[Op]] = {}
    # 1. acknowledged ops: their entry is in the log, with the events they were answered with
    for op in ops:
        if op.status != OK:
            pending.setdefault(op.key, []).append(op)
            continue
        assert op.seq is not None
        g = groups.get(op.seq)
        if g is None:
            violations.append(("lost", f"acknowledged command lost: {op.key} seq {op.seq}"))
            continue
        if op.events is not None and g != op.events:
            violations.append(
                (
                    "mismatch",
                    f"seq {op.seq}: reply to {op.key} differs from the log: {op.events} / {g}",
                )
            )
        if op.seq in claimed and ident(claimed[op.seq]) != ident(op):
            violations.append(
                ("shared", f"seq {op.seq} answered to {claimed[op.seq].key} and {op.key}")
            )
        claimed[op.seq] = op
        if op.seq in inert:  # answered with a rejection that ran nothing: it may run elsewhere
            pending.setdefault(op.key, []).append(op)
    # 2. every other entry: the one execution of an unacknowledged (or failed) op
    matched: dict[int, Op] = {seq: op for seq, op in claimed.items() if seq not in inert}
    executed_unknown = 0
    for seq, g in groups.items():
        if seq in claimed:
            continue
        key = keys[seq]
        if key is None and _is_membership(g):
            continue  # the operator's admit/promote/remove: the cluster's, not a client's
        if seq in inert:
            sent = ops_by_key.get(key, []) if key is not None else []
            if not sent:
                violations.append(("phantom", f"seq {seq}: a rejection no client sent: {g}"))
            elif all(op.status == FAILED for op in sent):
                violations.append(
                    (
                        "failed_in_log",
                        f"seq {seq}: {key} was refused (BAD_REQUEST) yet is in the log",
                    )
                )
            continue
        cands = [op for op in pending.get(key, []) if _compatible(op, g)] if key else []
        if key is not None and not cands:
            others = [s for s in by_key[key] if s != seq and s in matched]
            if others:
                if not any(_is_duplicate_id(groups[s]) for s in [seq, *others]):
                    again(seq, others[0], key, "executed twice:")  # else reported below
                matched[seq] = matched[others[0]]
                continue
        if not cands:
            violations.append(("phantom", f"seq {seq}: a command no client sent: {g}"))
            continue
        op = cands[0]
        pending[key].remove(op)  # type: ignore[index]
        matched[seq] = op
        executed_unknown += 1
        if op.status == FAILED:
            violations.append(
                (
                    "failed_in_log",
                    f"seq {seq}: {op.key} was refused (BAD_REQUEST) yet is in the log",
                )
            )
    # 3. our ids are never reused: duplicate_id means a retried place reached the engine
    for seq, g in groups.items():
        for ev in g:
            if ev.get("type") == "rejected" and ev.get("reason") == "duplicate_id":
                key = ("place", str(ev.get("client")), str(ev.get("id")))
                firsts = [s for s in by_key.get(key, []) if s < seq]
                if firsts:
                    again(seq, firsts[0], key, "executed, then a retry answered duplicate_id:")
                else:
                    violations.append(("duplicate_id", f"seq {seq}: duplicate_id for {key}"))
    # 4. replay the reconstructed log through a fresh replicated state: the same events
    entries: dict[int, str] = {}
    for seq, op in matched.items():
        if op.raw is None:
            violations.append(("replay", f"seq {seq}: {op.key} has no envelope to replay"))
        else:
            entries[seq] = op.raw
    replayed, books = _replay(gen, entries, times)
    for seq in sorted(entries):
        if replayed.get(seq, []) != groups[seq]:
            violations.append(
                (
                    "replay",
                    f"seq {seq}: replay gives {replayed.get(seq)}, the log has {groups[seq]}",
                )
            )
    log_lines = export_file(genesis, entries, times)
    # 5. an order-quantity model over the stream, independent of the engine
    errors = []
    _quantity_model(stream, errors)
    violations += [("quantity", e) for e in errors]
    return CheckResult(
        entries=len(groups),
        acked=sum(1 for op in ops if op.status == OK),
        unknown=sum(1 for op in ops if op.status == UNKNOWN),
        unknown_executed=executed_unknown,
        failed=sum(1 for op in ops if op.status == FAILED),
        trades=sum(1 for ev in stream if ev.get("type") == "trade"),
        books=books,
        log_lines=log_lines,
        violations=violations,
    )
