"""``GrenexClient``: the async Python client of a grenex node (SPEC §6, §7).

Theory of operation
-------------------
A client talks to one node (``node="n1"``: the name ``grenex:<cluster>:node:n1``) or to any
node (the name ``grenex:<cluster>:nodes``), found through the Grapes, with Grenache HTTP peer
RPC.  Every call has an overall deadline (``timeout``) and each attempt its own timeout.

Retries never create a second order.  A ``place`` carries its ``(client, id)``; ``cancel``,
``amend`` and ``add_market`` carry a ``req`` generated once per call.  When an attempt fails
in a way that leaves the outcome unknown (``ERR_GRENEX_UNAVAILABLE``, a timeout, a broken
connection, a garbled reply), the *same* command is sent again after a bounded, jittered
backoff, and the node answers a repeat with the first outcome (SPEC §6 "exactly once").  A
fresh id is never invented on retry.

Errors that retrying cannot fix are raised at once: a request the node refuses
(:class:`BadRequest`), and, on the first attempt (before anything can have been delivered),
no node under the name (:class:`NotFound`) or no Grape answering
(:class:`GrapeUnavailable`).  Once an attempt may have reached a node, every transient error
is retried until the deadline, then the last one is raised as :class:`Unavailable` with the
command attached (``exc.command``), so the caller can retry it with the same id later.

Engine rejections are not errors: they are ``rejected`` events in a normal
:class:`CommandResult` (``result.rejected``, ``result.reason``).

All Grenache errors are translated into this module's tree at one place, :func:`_translate`::

    GrenexClientError
    ├── BadRequest          the node refused the request (ERR_GRENEX_BAD_REQUEST, HTTP 4xx)
    ├── NotFound            no node is announced under the name (ERR_GRAPE_LOOKUP_EMPTY)
    └── Unavailable         no outcome within the deadline (retried until then)
        └── GrapeUnavailable  no Grape could be reached

Decimals are given as ``str`` (passed through as text, the engine judges them), ``Decimal``
(written in plain notation) or ``int``; a ``float`` is refused with ``TypeError``, because
it cannot carry an exact price.  Output decimals stay canonical strings (SPEC §1).
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType
from typing import Any, Final, Literal, Self

import msgspec

from grenex.client.pins import MemberPins
from grenex.codec import api as wire
from grenex.codec.envelope import (
    KeyRotated,
    MemberAdded,
    MemberPromoted,
    MemberRemoved,
    Registered,
)
from grenex.codec.genesis import Genesis, GenesisError, read_genesis
from grenex.codec.keys import SecretKey
from grenex.codec.signer import KeySource, Signer
from grenex.engine import (
    Amended,
    Cancelled,
    Event,
    Filled,
    MarketAdded,
    Rejected,
    Resting,
    Trade,
)
from grenex.grenache import (
    DEFAULT_GRAPE,
    GrapeError,
    GrapeUnavailableError,
    GrenacheError,
    Link,
    LookupEmptyError,
    PeerRPCClient,
    PeerSub,
    RemoteError,
    ReplyError,
    TransportError,
    WsPeerRPCClient,
)
from grenex.grenache.link import LOOKUP_TIMEOUT_MS_MIN

__all__ = [
    "DEFAULT_CLUSTER",
    "BadRequest",
    "Book",
    "BookOrder",
    "BookSnapshot",
    "CommandResult",
    "Compacted",
    "EventStream",
    "GrapeUnavailable",
    "GrenexClient",
    "GrenexClientError",
    "Level",
    "MarketInfo",
    "NodeStatus",
    "NotFound",
    "OpenOrder",
    "OrderState",
    "StatusReply",
    "Unavailable",
    "new_order_id",
]

DEFAULT_CLUSTER: Final = "main"
# Commands in one ``batch`` request (the node's limit).
BATCH_MAX: Final = 256  # commands in one signed batch (SPEC §8)
_REGISTER_WAIT_S: Final = 5.0  # how long a command waits for its new account to be applied
DecimalLike = str | Decimal | int

# An attempt is not started with less time than this left before the deadline.
_ATTEMPT_MIN_S: Final = 0.01
# Remote error codes after which the same command may be sent again.
# (ERR_GRENEX_BUSY: a per-node bound refused it, nothing was done; retried after a backoff.)
_RETRY_CODES: Final = wire.RETRYABLE_CODES


# ---------------------------------------------------------------------------------- errors


class GrenexClientError(Exception):
    """Base of everything :class:`GrenexClient` raises (besides TypeError/ValueError for bad
    arguments).  ``code`` is the Grenache error code behind it; ``command`` the command args
    that were sent (with their ``id``/``req``), when the call was a command."""

    code: str = wire.ERR_CLIENT

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.command: dict[str, Any] | None = None
        self.attempts = 0

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class BadRequest(GrenexClientError):  # noqa: N818 - named after ERR_GRENEX_BAD_REQUEST
    """The node refused the request's shape; sending it again cannot help."""

    code = wire.ERR_BAD_REQUEST


class NotFound(GrenexClientError):  # noqa: N818
    """No node is announced under the name (wrong ``node``, ``cluster`` or Grape)."""

    code = "ERR_GRAPE_LOOKUP_EMPTY"


class Unavailable(GrenexClientError):  # noqa: N818
    """No outcome could be had within the deadline; retrying with the same id is safe."""

    code = wire.ERR_UNAVAILABLE


class GrapeUnavailable(Unavailable):
    """None of the Grapes answered."""

    code = "ERR_GRAPE_UNAVAILABLE"


class Compacted(GrenexClientError):  # noqa: N818 - named after ERR_GRENEX_COMPACTED
    """The entries asked for were compacted below a snapshot; ``first`` is the oldest kept."""

    code = wire.ERR_COMPACTED

    def __init__(self, message: str, first: int | None) -> None:
        super().__init__(message)
        self.first = first

    @classmethod
    def of(cls, e: GrenexClientError) -> Compacted | None:
        """``e`` as a :class:`Compacted` when it is the node's ``ERR_GRENEX_COMPACTED``."""
        if e.code != wire.ERR_COMPACTED:
            return None
        tail = e.message.partition(":")[2].strip()
        return cls(e.message, int(tail) if tail.isdigit() else None)


def _translate(exc: GrenacheError) -> tuple[GrenexClientError, bool]:
    """The one boundary: a Grenache error → (our error, whether sending again may help)."""
    msg = exc.message or exc.code
    if isinstance(exc, RemoteError):
        if exc.code == wire.ERR_BAD_REQUEST:
            return BadRequest(msg), False
        if exc.code in _RETRY_CODES:
            return Unavailable(msg, code=exc.code), True
        return GrenexClientError(msg, code=exc.code), False
    if isinstance(exc, LookupEmptyError):
        return NotFound(
            f"no node is announced as {exc.name!r} (is it running, and the Grape "
            "and --cluster right?)"
        ), True
    if isinstance(exc, GrapeUnavailableError | GrapeError):
        return GrapeUnavailable(msg, code=exc.code), True
    if isinstance(exc, TransportError):
        if exc.status is not None and 400 <= exc.status < 500:
            return BadRequest(msg, code=exc.code), False
        return Unavailable(msg, code=exc.code), True
    if isinstance(exc, ReplyError):
        return Unavailable(msg, code=exc.code), True
    return GrenexClientError(msg, code=exc.code), False


def _item_error(message: str) -> GrenexClientError:
    """The error for one command of a batch, from the node's ``ERR_…: why`` text."""
    code = wire.error_code(message)
    if code == wire.ERR_BAD_REQUEST:
        return BadRequest(message, code=code)
    if code in _RETRY_CODES:
        return Unavailable(message, code=code)
    return GrenexClientError(message, code=code or None)


# ---------------------------------------------------------------------------------- results


AnyEvent = Event | Registered | KeyRotated | MemberAdded | MemberPromoted | MemberRemoved


def _decode_events(raw: Any) -> tuple[Any, ...]:
    if raw is None:  # a duplicate whose first outcome's events the node no longer keeps
        return ()
    try:
        return tuple(msgspec.convert(raw, list[AnyEvent]))
    except msgspec.ValidationError as e:
        raise GrenexClientError(f"the node sent events this client cannot read: {e}") from None


@dataclass(frozen=True, slots=True)
class CommandResult:
    """A command's outcome: its log position and events (SPEC §3), with helpers.

    ``client``/``id`` name the order the command was about (None for ``add_market``).
    """

    seq: int
    events: tuple[Any, ...]
    client: str | None = None
    id: str | None = None
    # answered from the account's nonce window: the *first* outcome of this envelope, not a
    # new execution (a place whose id was used before placed nothing now); not part of the
    # outcome, so a repeat compares equal to the first answer
    duplicate: bool = field(default=False, compare=False)
    # any other field of the reply (e.g. ``time``), kept for ``to_json``
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_reply(cls, reply: Mapping[str, Any], client: str | None, id: str | None) -> Self:
        """From a node's ``{"seq", "events", "duplicate"?, ...}`` reply."""
        extra = {k: v for k, v in reply.items() if k not in ("seq", "events", "duplicate")}
        return cls(
            reply["seq"],
            _decode_events(reply["events"]),
            client,
            id,
            reply.get("duplicate") is True,
            extra,
        )

    @property
    def rejected(self) -> bool:
        return any(type(e) is Rejected for e in self.events)

    @property
    def reason(self) -> str | None:
        """The rejection reason, else the order's cancel reason, else None."""
        for e in self.events:
            if type(e) is Rejected:
                return e.reason
        for e in reversed(self.events):
            if type(e) is Cancelled and self._mine(e):
                return e.reason
        return None

    @property
    def trades(self) -> list[Trade]:
        return [e for e in self.events if type(e) is Trade]

    @property
    def status(self) -> str:
        """What became of the order: ``rejected``, ``filled``, ``resting``, ``cancelled`` or
        ``amended`` (in place); ``market_added`` for a market; else the last event's type."""
        if self.rejected:
            return "rejected"
        for e in reversed(self.events):
            if type(e) in (Filled, Resting, Cancelled, Amended) and self._mine(e):
                return _type_of(e)
            if type(e) is MarketAdded:
                return "market_added"
        return _type_of(self.events[-1]) if self.events else "unknown"

    @property
    def remaining(self) -> str | None:
        """The order's quantity still resting (``"0"`` when filled or cancelled)."""
        for e in reversed(self.events):
            if not self._mine(e):
                continue
            if type(e) is Resting:
                return e.remaining
            if type(e) in (Filled, Cancelled):
                return "0"
            if type(e) is Amended:
                return e.qty
        return None

    @property
    def filled_qty(self) -> Decimal:
        """How much of the order traded in this command (as maker or taker)."""
        total = Decimal(0)
        for t in self.trades:
            if (t.taker_client, t.taker) == (self.client, self.id) or (
                t.maker_client,
                t.maker,
            ) == (self.client, self.id):
                total += Decimal(t.qty)
        return total

    def _mine(self, e: Event) -> bool:
        if self.client is None:
            return True
        return getattr(e, "client", None) == self.client and getattr(e, "id", None) == self.id

    @property
    def partly_filled(self) -> bool:
        """Some of the order traded in this command and the rest was cancelled (an IOC or
        market order's unfilled remainder, or a self-trade stop)."""
        return self.status == "cancelled" and self.filled_qty > 0

    def to_json(self) -> dict[str, Any]:
        """The node's reply: ``{"seq": N, "events": [...]}``, with ``"duplicate": true`` when
        the node answered from the account's nonce window, and any other field it sent."""
        out: dict[str, Any] = {
            "seq": self.seq,
            "events": [msgspec.to_builtins(e) for e in self.events],
        }
        if self.duplicate:
            out["duplicate"] = True
        out.update(self.extra)
        return out


def _type_of(e: Event) -> str:
    return type(e).__struct_config__.tag  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class BookOrder:
    client: str
    id: str
    price: str
    qty: str


@dataclass(frozen=True, slots=True)
class Level:
    """One price level: total quantity and number of orders."""

    price: Decimal
    qty: Decimal
    orders: int


@dataclass(frozen=True, slots=True)
class Book:
    """One market's book (SPEC §4): each side in priority order."""

    market: str
    bids: tuple[BookOrder, ...]
    asks: tuple[BookOrder, ...]

    @property
    def best_bid(self) -> Decimal | None:
        return Decimal(self.bids[0].price) if self.bids else None

    @property
    def best_ask(self) -> Decimal | None:
        return Decimal(self.asks[0].price) if self.asks else None

    @property
    def spread(self) -> Decimal | None:
        bid, ask = self.best_bid, self.best_ask
        return None if bid is None or ask is None else ask - bid

    def levels(self, side: Literal["bids", "asks"], depth: int | None = None) -> list[Level]:
        """Orders grouped by price, best first; at most ``depth`` levels."""
        out: list[Level] = []
        for o in self.bids if side == "bids" else self.asks:
            price = Decimal(o.price)
            if out and out[-1].price == price:
                last = out[-1]
                out[-1] = Level(price, last.qty + Decimal(o.qty), last.orders + 1)
            elif depth is not None and len(out) >= depth:
                break
            else:
                out.append(Level(price, Decimal(o.qty), 1))
        return out

    def to_json(self) -> dict[str, Any]:
        def side(orders: tuple[BookOrder, ...]) -> list[dict[str, str]]:
            return [
                {"client": o.client, "id": o.id, "price": o.price, "qty": o.qty} for o in orders
            ]

        return {
            "type": "book",
            "market": self.market,
            "bids": side(self.bids),
            "asks": side(self.asks),
        }


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """The node's books at its ``applied`` log index, by market name."""

    applied: int
    books: dict[str, Book]

    def __getitem__(self, market: str) -> Book:
        return self.books[market]

    def to_json(self) -> dict[str, Any]:
        return {"applied": self.applied, "books": [b.to_json() for b in self.books.values()]}


@dataclass(frozen=True, slots=True)
class NodeStatus:
    node: str
    role: str
    term: int
    leader: str | None
    commit: int
    applied: int
    voters: tuple[str, ...]
    learners: tuple[str, ...]
    state_hash: str | None  # the hash of the state at state_hash_index (a snapshot's)
    pid: int
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def state_hash_index(self) -> int | None:
        """The log index ``state_hash`` belongs to (``status(fresh_hash=True)`` asks for one
        at the applied index)."""
        v = self.raw.get("state_hash_index")
        return v if type(v) is int else None

    @classmethod
    def from_json(cls, raw: Any) -> NodeStatus:
        try:
            members = raw["members"]
            return cls(
                node=str(raw["node"]),
                role=str(raw["role"]),
                term=int(raw["term"]),
                leader=None if raw["leader"] is None else str(raw["leader"]),
                commit=int(raw["commit"]),
                applied=int(raw["applied"]),
                voters=tuple(members["voters"]),
                learners=tuple(members["learners"]),
                state_hash=None if raw["state_hash"] is None else str(raw["state_hash"]),
                pid=int(raw["pid"]),
                raw=dict(raw),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise GrenexClientError(
                f"the node sent a status this client cannot read: {e}"
            ) from None


@dataclass(frozen=True, slots=True)
class StatusReply:
    """One entry of :meth:`GrenexClient.statuses`: a node's status, or why it did not answer."""

    peer: str
    status: NodeStatus | None
    error: GrenexClientError | None = None


@dataclass(frozen=True, slots=True)
class MarketInfo:
    """An open market: its price step (``tick``) and quantity step (``lot``), canonical."""

    market: str
    tick: str
    lot: str


@dataclass(frozen=True, slots=True)
class OpenOrder:
    """One of an account's resting orders (``orders``).  ``qty`` is the quantity it was placed
    with while the node still remembers its place (else None); ``remaining`` is exact."""

    id: str
    market: str
    side: str
    price: str
    qty: str | None
    remaining: str


@dataclass(frozen=True, slots=True)
class OrderState:
    """One order's state (``order``), as far as the replicated state can tell.

    ``state``: ``resting``, ``filled``, ``cancelled``, ``rejected`` (the last three while the
    node remembers the order's place, for an order that never rested), ``used`` (the id is
    used up and the order is not resting; whether it was filled or cancelled is no longer
    known), or ``unknown`` (the id was never used).  See docs/api.md.
    """

    state: str
    seq: int | None = None
    market: str | None = None
    side: str | None = None
    price: str | None = None
    qty: str | None = None
    remaining: str | None = None
    reason: str | None = None
    # its fills this node still holds in its trade window: {"seq", "time", "price", "qty",
    # "role"} (maker or taker), oldest first
    fills: tuple[dict[str, Any], ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


# ---------------------------------------------------------------------------------- helpers


def _now_us() -> int:
    """A nonce candidate: microseconds since the epoch (SPEC §8 allows a counter or this)."""
    return time.time_ns() // 1000


def _as_args(envelope_json: bytes) -> dict[str, str]:
    """Envelope JSON as a request's ``args[0]``."""
    out: dict[str, str] = msgspec.json.decode(envelope_json)
    return out


def new_order_id() -> str:
    """A fresh order id: a SPEC name, unique without coordination (ms time + 40 random bits)."""
    ms = time.time_ns() // 1_000_000
    return f"{_base36(ms)}-{secrets.token_hex(5)}"


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def _decimal(name: str, value: DecimalLike | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, (bool, float)):
        raise TypeError(
            f"{name} must be a str or Decimal, not {type(value).__name__} "
            "(a float cannot hold an exact price or quantity)"
        )
    if isinstance(value, str):
        return value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"{name} must be a str or Decimal, not {type(value).__name__}")


def _str_or_none(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _env_grapes() -> str:
    return os.environ.get("GRENEX_GRAPE") or DEFAULT_GRAPE


# ---------------------------------------------------------------------------------- client


class GrenexClient:
    """An async client of a grenex cluster.  Use ``async with GrenexClient(...) as c``.

    ``grapes``: Grape API URL(s) (list or comma-separated; default ``$GRENEX_GRAPE`` or
    ``http://127.0.0.1:30001``).  ``cluster``: default ``$GRENEX_CLUSTER`` or ``main``.
    ``node``: talk to this node; None: any node.  ``client_id``: the default ``client`` of
    orders (default: the node id).  ``timeout``: each call's overall deadline in seconds;
    ``attempt_timeout``: one attempt of a command (reads use ``read_timeout``);
    ``grape_timeout``: one Grape request.  ``transport``: how requests reach the nodes,
    ``"http"`` (one request per connection at a time) or ``"ws"`` (one WebSocket per node, many
    requests in flight on it, written together: less CPU per request on both sides); default
    ``$GRENEX_TRANSPORT`` or ``"http"``.  Both are TLS pinned to the members' certificates.
    """

    def __init__(
        self,
        grapes: str | Sequence[str] | None = None,
        cluster: str | None = None,
        node: str | None = None,
        *,
        client_id: str | None = None,
        timeout: float = 20.0,
        attempt_timeout: float = 12.0,
        read_timeout: float = 5.0,
        grape_timeout: float = 2.0,
        backoff_min: float = 0.05,
        backoff_max: float = 1.0,
        rng: random.Random | None = None,
        key: SecretKey | None = None,
        keys: KeySource | Mapping[str, SecretKey] | None = None,
        genesis: Genesis | str | os.PathLike[str] | None = None,
        register: bool = False,
        transport: str | None = None,
    ) -> None:
        if min(timeout, attempt_timeout, read_timeout, grape_timeout, backoff_min) <= 0:
            raise ValueError("timeouts and backoff must be positive")
        self.transport = transport or os.environ.get("GRENEX_TRANSPORT") or "http"
        if self.transport not in ("http", "ws"):
            raise ValueError(f"transport is 'http' or 'ws', not {self.transport!r}")
        self.cluster = cluster or os.environ.get("GRENEX_CLUSTER") or DEFAULT_CLUSTER
        self.node = node
        self.client_id = client_id or node
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.read_timeout = read_timeout
        self.backoff_min = backoff_min
        self.backoff_max = max(backoff_max, backoff_min)
        self._rng = rng or random.Random()
        grape_ms = max(1, int(grape_timeout * 1000))
        self.link = Link(
            grapes if grapes is not None else _env_grapes(),
            request_timeout_ms=grape_ms,
            # a DHT lookup may take seconds while a host is unreachable (the Link's floor), but
            # never longer than this client would wait for a whole command
            lookup_timeout_ms=max(grape_ms, min(LOOKUP_TIMEOUT_MS_MIN, int(timeout * 1000))),
        )
        # SPEC §8: commands are signed for the genesis' cluster id with the account's key
        if genesis is None and os.environ.get("GRENEX_GENESIS"):
            genesis = os.environ["GRENEX_GENESIS"]
        if genesis is not None and not isinstance(genesis, Genesis):
            try:
                genesis = read_genesis(genesis)
            except GenesisError as e:
                raise ValueError(f"genesis: {e}") from None
        self.genesis: Genesis | None = genesis
        if genesis is not None and cluster is None and not os.environ.get("GRENEX_CLUSTER"):
            self.cluster = genesis.cluster
        self.key = key
        self._keys = keys
        self.register_accounts = register  # register an unknown account on first use
        self._registered: set[str] = set()
        self._signer: Signer | None = None
        self.pins: MemberPins | None = None
        if genesis is not None:
            self._signer = Signer(genesis.cluster_id, self._key_for, _now_us)
            self.pins = MemberPins(genesis)
        # TLS pinned to the members' certificates (SPEC §8); without a genesis: plain text
        rpc_class = WsPeerRPCClient if self.transport == "ws" else PeerRPCClient
        self._rpc: PeerRPCClient | WsPeerRPCClient = rpc_class(
            self.link,
            request_timeout_ms=int(attempt_timeout * 1000),
            ssl_for=self.pins.ssl_for if self.pins is not None else None,
        )
        # commands without a chosen node go to a voter only (a learner is anyone's node)
        self._cmd_rpc = self._rpc
        if self.pins is not None and node is None:
            self._cmd_rpc = rpc_class(
                self.link,
                request_timeout_ms=int(attempt_timeout * 1000),
                ssl_for=self.pins.ssl_for_voters,
            )
        self._streams: set[EventStream] = set()
        # How long Grape lookups may take in one attempt (a lookup, and a fresh one when every
        # listed peer is dead), each Grape of the list tried once.
        self._lookup_budget = 2 * self.link.lookup_timeout_ms / 1000 * len(self.link.grapes) + 0.5

    @property
    def service(self) -> str:
        """The Grenache name requests go to."""
        names = wire.service_names(self.cluster, self.node or "")
        return names["node"] if self.node is not None else names["nodes"]

    @property
    def events_topic(self) -> str:
        """This client's node's own stream when a node is chosen (what it applied, in its
        order), else the cluster's shared topic (any node's publisher)."""
        names = wire.service_names(self.cluster, self.node or "")
        return names["node_events"] if self.node is not None else names["events"]

    async def __aenter__(self) -> Self:
        await self.link.start()
        # this client's node (or the nodes) looked up in the background from now on, so a
        # command never waits on the DHT (seconds while any of its hosts is unreachable)
        self.link.keep_fresh(self.service)
        if self.pins is not None:
            # members beyond the genesis (learners) are learned from a voter, pinned to it
            try:
                await self.learn_members()
            except BaseException:
                await self.close()  # no connection left open by a failed start
                raise
        return self

    async def learn_members(self, *, timeout: float | None = None) -> int:
        """Learn the members' certificates from a genesis voter's ``members`` reply (over a
        connection pinned to that voter); returns how many members are known."""
        if self.pins is None:
            return 0
        last: Exception | None = None
        for voter in self.pins.voters:
            name = wire.service_names(self.cluster, voter)["node"]
            try:
                reply = await self._rpc.request(
                    name,
                    {"action": "members", "args": [{}]},
                    timeout_ms=int((timeout or self.read_timeout) * 1000),
                )
            except GrenacheError as e:
                last = e
                continue
            return self.pins.learn(reply)
        if last is not None and self.node is not None and not self.pins.knows(self.node):
            raise Unavailable(f"no voter told this client the members: {last}")
        return len(self.pins.members)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop every event stream, close connections. Idempotent."""
        for s in list(self._streams):
            await s.close()
        await self._rpc.close()
        if self._cmd_rpc is not self._rpc:
            await self._cmd_rpc.close()
        await self.link.stop()

    # ------------------------------------------------------------------ the retry loop

    async def _call(
        self,
        action: str,
        args: dict[str, Any],
        *,
        attempt_timeout: float,
        timeout: float | None,
        command: bool,
    ) -> Any:
        """Send ``{"action", "args": [args]}`` until an answer, a final error or the deadline.

        The payload is built once, so every attempt carries the same id/req.
        """
        payload = {"action": action, "args": [args]}
        total = timeout if timeout is not None else self.timeout
        deadline = time.monotonic() + total
        backoff = self.backoff_min
        attempt = 0
        earlier: GrenexClientError | None = None
        while True:
            attempt += 1
            left = deadline - time.monotonic()
            try:
                # Each exchange is bounded by ``left``; the Grape lookups before it by the
                # Link's own timeout.  The outer timeout is only a safety net: cancelling a
                # lookup half-way would leave the Link's shared lookup task running.
                rpc = self._cmd_rpc if command else self._rpc
                async with asyncio.timeout(left + self._lookup_budget):
                    return await rpc.request(
                        self.service,
                        payload,
                        timeout_ms=max(1, int(min(attempt_timeout, left) * 1000)),
                    )
            except GrenacheError as exc:
                err, retry = _translate(exc)
                # Before anything was delivered, a missing node or Grape is a setup error.
                if attempt == 1 and isinstance(err, NotFound | GrapeUnavailable):
                    retry = False
            except TimeoutError:
                msg = f"ERR_TIMEOUT: no answer from {self.service} within {total:g}s"
                err, retry = Unavailable(msg, code="ERR_TIMEOUT"), True
            if isinstance(err, NotFound) and earlier is not None:
                err = earlier  # it was announced a moment ago: the earlier error says more
            earlier = err
            err.attempts = attempt
            if command:
                err.command = args
            left = deadline - time.monotonic()
            if not retry or left < _ATTEMPT_MIN_S:
                if retry:
                    plural = "s" if attempt != 1 else ""
                    err.args = (
                        f"{err.message} (gave up after {attempt} attempt{plural} in {total:g}s)",
                    )
                raise err from None
            pause = min(backoff * (0.5 + self._rng.random() / 2), left - _ATTEMPT_MIN_S)
            backoff = min(backoff * 2, self.backoff_max)
            await asyncio.sleep(pause)

    async def _command(self, action: str, args: dict[str, Any], timeout: float | None) -> Any:
        reply = await self._call(
            action, args, attempt_timeout=self.attempt_timeout, timeout=timeout, command=True
        )
        if not isinstance(reply, dict) or ("events" not in reply and "results" not in reply):
            raise GrenexClientError(f"unexpected reply to {action}: {str(reply)[:200]}")
        return reply

    async def _read(self, action: str, args: dict[str, Any], timeout: float | None) -> Any:
        reply = await self._call(
            action, args, attempt_timeout=self.read_timeout, timeout=timeout, command=False
        )
        if not isinstance(reply, dict):
            raise GrenexClientError(f"unexpected reply to {action}: {str(reply)[:200]}")
        return reply

    def _key_for(self, client: str) -> SecretKey:
        if self._keys is not None:
            try:
                return self._keys[client] if isinstance(self._keys, Mapping) else self._keys(client)
            except KeyError:
                pass
        if self.key is not None:
            return self.key
        raise ValueError(f"no key for account {client!r} (give key= or keys=)")

    @property
    def signer(self) -> Signer:
        if self._signer is None:
            raise ValueError("signing needs the cluster's genesis (genesis= or $GRENEX_GENESIS)")
        return self._signer

    def envelope(self, cmd: Mapping[str, Any]) -> dict[str, str]:
        """One command (with ``client``) signed: ``{"cmd": TEXT, "sig": SIG}``."""
        return _as_args(self.signer.command(cmd))

    async def _signed(self, action: str, client: str, make: Any, timeout: float | None) -> Any:
        """Send a freshly signed envelope (``make()`` signs it once; every retry of the
        request carries the same bytes).  With ``register=True`` an account the node does not
        know is registered first, once."""
        args = make()
        try:
            return await self._command(action, args, timeout)
        except BadRequest as e:
            if not (self.register_accounts and e.message.endswith("unknown_client")):
                raise
            if client in self._registered:
                # registered through another node that has not applied it yet
                return await self._after_register(action, args, timeout)
        try:
            await self.register(client, timeout=timeout)
        except BadRequest as e:  # registered meanwhile (a concurrent first use): go on
            if not e.message.endswith("client_taken"):
                raise
        return await self._after_register(action, make(), timeout)

    async def _after_register(
        self, action: str, args: dict[str, str], timeout: float | None
    ) -> Any:
        """Send a command right after its account's ``register``: a node that has not applied
        the register yet answers ``unknown_client`` (nothing logged), so try again briefly."""
        deadline = time.monotonic() + min(timeout or self.timeout, _REGISTER_WAIT_S)
        pause = self.backoff_min
        while True:
            try:
                return await self._command(action, args, timeout)
            except BadRequest as e:
                if not e.message.endswith("unknown_client") or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, self.backoff_max)

    async def submit(
        self, envelope: Mapping[str, str], action: str = "submit", *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send an envelope signed elsewhere (``{"cmd": TEXT, "sig": SIG}``) as is, with the
        same retries as every command (the same bytes each time); the node's reply."""
        reply: dict[str, Any] = await self._command(action, dict(envelope), timeout)
        return reply

    def _client(self, client: str | None) -> str:
        c = client or self.client_id
        if c is None:
            raise ValueError("client is needed (or construct GrenexClient with node/client_id)")
        return c

    # ------------------------------------------------------------------ commands

    async def place(
        self,
        market: str,
        side: str,
        qty: DecimalLike,
        price: DecimalLike | None = None,
        *,
        client: str | None = None,
        id: str | None = None,
        tif: str | None = None,
        post_only: bool | None = None,
        stp: str | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """Place an order (a market order without ``price``), signed for the account
        ``client``; retried with the same signed envelope (exactly once, SPEC §6)."""
        args = self._place_args(market, side, qty, price, client, id, tif, post_only, stp)
        cmd = {"type": "place", **args}
        reply = await self._signed("place", args["client"], lambda: self.envelope(cmd), timeout)
        return CommandResult.from_reply(reply, args["client"], args["id"])

    def _place_args(
        self,
        market: str,
        side: str,
        qty: DecimalLike,
        price: DecimalLike | None = None,
        client: str | None = None,
        id: str | None = None,
        tif: str | None = None,
        post_only: bool | None = None,
        stp: str | None = None,
    ) -> dict[str, Any]:
        args: dict[str, Any] = {
            "client": self._client(client),
            "id": id if id is not None else new_order_id(),
            "market": market,
            "side": side,
            "qty": _decimal("qty", qty),
        }
        p = _decimal("price", price)
        if p is not None:
            args["price"] = p
        if tif is not None:
            args["tif"] = tif
        if post_only is not None:
            args["post_only"] = post_only
        if stp is not None:
            args["stp"] = stp
        return args

    async def place_many(
        self,
        orders: Sequence[Mapping[str, Any]],
        *,
        timeout: float | None = None,
    ) -> list[CommandResult | GrenexClientError]:
        """Place many orders: one signed batch envelope (one log entry) per account and 256
        orders (SPEC §8), each order with its own outcome, in order.

        Each order is a mapping of :meth:`place`'s arguments (``market``, ``side``, ``qty``,
        and optionally ``price``, ``client``, ``id``, ``tif``, ``post_only``, ``stp``); every
        order gets its id here and the envelope is signed once, so retrying it (as this
        method does on a lost reply) never places one twice.  The result list holds, in order,
        a :class:`CommandResult` or the error for that order's envelope."""
        placed = [self._place_args(**order) for order in orders]
        return await self._batches([{"type": "place", **args} for args in placed], timeout)

    async def _batches(
        self, commands: list[dict[str, Any]], timeout: float | None
    ) -> list[CommandResult | GrenexClientError]:
        """Commands (each with ``client``) as signed batches: consecutive commands of one
        account, at most 256 a batch; results in the commands' order."""
        out: list[CommandResult | GrenexClientError] = []
        i = 0
        while i < len(commands):
            client = commands[i]["client"]
            j = i
            while j < len(commands) and j - i < BATCH_MAX and commands[j]["client"] == client:
                j += 1
            chunk = commands[i:j]
            out.extend(await self._batch(client, chunk, timeout))
            i = j
        return out

    async def _batch(
        self, client: str, commands: list[dict[str, Any]], timeout: float | None
    ) -> list[CommandResult | GrenexClientError]:
        items = [{k: v for k, v in c.items() if k != "client"} for c in commands]

        def make() -> dict[str, str]:
            return _as_args(self.signer.batch(client, items))

        try:
            reply = await self._signed("submit", client, make, timeout)
        except GrenexClientError as e:
            return [e for _ in commands]
        results = reply.get("results")
        if results is None:  # a duplicate whose events were dropped: outcomes unknown here
            results = [{"events": reply.get("events")} for _ in commands]
        if not isinstance(results, list) or len(results) != len(commands):
            raise GrenexClientError(f"unexpected reply to a batch: {str(reply)[:200]}")
        out: list[CommandResult | GrenexClientError] = []
        for cmd, r in zip(commands, results, strict=True):
            item = dict(r) if isinstance(r, dict) else {"events": None}
            item["seq"] = reply.get("seq")
            if "time" in reply:
                item["time"] = reply["time"]
            if reply.get("duplicate"):
                item["duplicate"] = True
            out.append(CommandResult.from_reply(item, client, cmd.get("id")))
        return out

    async def cancel(
        self,
        client: str | None,
        id: str,
        *,
        timeout: float | None = None,
    ) -> CommandResult:
        """Cancel a resting order of the account; a retry carries the same signed envelope
        and is answered with the first outcome."""
        c = self._client(client)
        cmd = {"type": "cancel", "client": c, "id": id}
        reply = await self._signed("cancel", c, lambda: self.envelope(cmd), timeout)
        return CommandResult.from_reply(reply, c, id)

    async def cancel_many(
        self,
        client: str | None,
        ids: Sequence[str],
        *,
        timeout: float | None = None,
    ) -> list[CommandResult | GrenexClientError]:
        """Cancel several orders: one signed batch per 256 ids (each cancel with its own
        outcome; retrying a batch never cancels twice).  Results in order."""
        c = self._client(client)
        return await self._batches([{"type": "cancel", "client": c, "id": i} for i in ids], timeout)

    async def cancel_all(
        self,
        client: str | None = None,
        market: str | None = None,
        *,
        timeout: float | None = None,
    ) -> list[CommandResult | GrenexClientError]:
        """Cancel every resting order of the account (in one market, or all): lists them with
        :meth:`orders`, then :meth:`cancel_many`.  Orders placed after the listing are not
        cancelled; an order that filled meanwhile comes back ``unknown_order``."""
        listed = await self.orders(client, market, timeout=timeout)
        return await self.cancel_many(client, [o.id for o in listed], timeout=timeout)

    async def amend(
        self,
        client: str | None,
        id: str,
        qty: DecimalLike | None = None,
        price: DecimalLike | None = None,
        *,
        timeout: float | None = None,
    ) -> CommandResult:
        """Amend a resting order: ``qty`` is the new remaining quantity."""
        c = self._client(client)
        cmd: dict[str, Any] = {"type": "amend", "client": c, "id": id}
        q, p = _decimal("qty", qty), _decimal("price", price)
        if q is not None:
            cmd["qty"] = q
        if p is not None:
            cmd["price"] = p
        reply = await self._signed("amend", c, lambda: self.envelope(cmd), timeout)
        return CommandResult.from_reply(reply, c, id)

    def _operator(self) -> str:
        if self.genesis is None:
            raise ValueError("operator commands need the cluster's genesis")
        return self.genesis.operator.client

    async def _operator_command(
        self, action: str, fields: dict[str, Any], timeout: float | None
    ) -> CommandResult:
        op = self._operator()
        cmd = {"type": action, "client": op, **fields}
        reply = await self._command(action, self.envelope(cmd), timeout)
        return CommandResult.from_reply(reply, None, None)

    async def add_market(
        self,
        market: str,
        tick: DecimalLike,
        lot: DecimalLike,
        *,
        timeout: float | None = None,
    ) -> CommandResult:
        """Open a market through the log: an operator command, signed with the operator's
        key (SPEC §8; anyone else is rejected ``not_operator``)."""
        fields = {"market": market, "tick": _decimal("tick", tick), "lot": _decimal("lot", lot)}
        return await self._operator_command("add_market", fields, timeout)

    async def admit(
        self, node: str, key: str, cert: str, *, timeout: float | None = None
    ) -> CommandResult:
        """Operator: admit node ``node`` (its key and certificate) as a learner."""
        return await self._operator_command(
            "admit", {"node": node, "key": key, "cert": cert}, timeout
        )

    async def promote(self, node: str, *, timeout: float | None = None) -> CommandResult:
        """Operator: a learner becomes a voter (once it caught up)."""
        return await self._operator_command("promote", {"node": node}, timeout)

    async def remove(self, node: str, *, timeout: float | None = None) -> CommandResult:
        """Operator: node ``node`` leaves the cluster (its id is never used again)."""
        return await self._operator_command("remove", {"node": node}, timeout)

    async def register(
        self, client: str | None = None, *, timeout: float | None = None
    ) -> CommandResult:
        """Claim the account ``client`` for its key (SPEC §8 ``register``); succeeds, as a
        duplicate, when the name is already bound to this key by the same register."""
        c = self._client(client)
        k = self._key_for(c)
        reply = await self._command("register", _as_args(self.signer.register(c, k)), timeout)
        res = CommandResult.from_reply(reply, c, None)
        if not res.rejected or res.reason == "client_taken":
            self._registered.add(c)
        return res

    async def rotate_key(
        self, new_key: SecretKey, client: str | None = None, *, timeout: float | None = None
    ) -> CommandResult:
        """Bind the account to ``new_key`` (signed with the current key); later commands of
        this client are signed with the new one when it was the client's ``key``."""
        c = self._client(client)
        cmd = {"type": "rotate_key", "client": c, "key": new_key.public_key}
        reply = await self._command("rotate_key", self.envelope(cmd), timeout)
        res = CommandResult.from_reply(reply, c, None)
        if not res.rejected and self.key is not None and self._keys is None:
            self.key = new_key
        return res

    # ------------------------------------------------------------------ reads

    async def account(
        self, client: str | None = None, key: str | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """SPEC §7 ``account``: ``{"client", "key"}`` or ``{"state": "unknown"}``."""
        args: dict[str, Any] = {"client": client} if client is not None else {"key": key}
        out: dict[str, Any] = await self._read("account", args, timeout)
        return out

    async def members(self, *, timeout: float | None = None) -> dict[str, Any]:
        """SPEC §7 ``members``: ``{"index", "members": [{"id", "key", "cert", "role"}…]}``
        (believe it from a voter)."""
        out: dict[str, Any] = await self._read("members", {}, timeout)
        return out

    async def book(
        self, market: str | None = None, *, timeout: float | None = None
    ) -> BookSnapshot:
        """The node's books (one market, or all), at its applied index."""
        reply = await self._read("book", {} if market is None else {"market": market}, timeout)
        try:
            books = {
                b["market"]: Book(
                    b["market"],
                    tuple(BookOrder(o["client"], o["id"], o["price"], o["qty"]) for o in b["bids"]),
                    tuple(BookOrder(o["client"], o["id"], o["price"], o["qty"]) for o in b["asks"]),
                )
                for b in reply["books"]
            }
            return BookSnapshot(int(reply["applied"]), books)
        except (KeyError, TypeError, ValueError) as e:
            raise GrenexClientError(f"the node sent a book this client cannot read: {e}") from None

    async def trades(
        self,
        market: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        *,
        client: str | None = None,
        timeout: float | None = None,
    ) -> list[Trade]:
        """Recent trades (oldest first): after log position ``since``, at most ``limit``;
        ``client``: only that account's (as maker or taker)."""
        got = await self.trades_timed(market, since, limit, client=client, timeout=timeout)
        return [t for t, _ in got]

    async def trades_timed(
        self,
        market: str | None = None,
        since: int | None = None,
        limit: int | None = None,
        *,
        client: str | None = None,
        timeout: float | None = None,
    ) -> list[tuple[Trade, int | None]]:
        """As :meth:`trades`, each with its entry's time (ms since the epoch, SPEC §6)."""
        args: dict[str, Any] = {}
        if client is not None:
            args["client"] = client
        if market is not None:
            args["market"] = market
        if since is not None:
            args["since"] = since
        if limit is not None:
            args["limit"] = limit
        reply = await self._read("trades", args, timeout)
        try:
            raw = reply["trades"]
            trades = msgspec.convert(raw, list[Trade])
            times = [t.get("time") if isinstance(t, dict) else None for t in raw]
        except (KeyError, msgspec.ValidationError) as e:
            raise GrenexClientError(f"the node sent trades this client cannot read: {e}") from None
        return [
            (t, at if isinstance(at, int) else None) for t, at in zip(trades, times, strict=True)
        ]

    async def log(
        self, since: int = 0, limit: int | None = None, *, timeout: float | None = None
    ) -> wire.LogReply:
        """One page of the node's committed log after index ``since`` (``log`` action): command
        entries ``{seq, time, cmd}``, ``through`` (page on from there) and ``applied``.
        Raises :class:`Compacted` when entries after ``since`` were compacted."""
        args: dict[str, Any] = {"since": since}
        if limit is not None:
            args["limit"] = limit
        try:
            reply = await self._read("log", args, timeout)
        except GrenexClientError as e:
            raise Compacted.of(e) or e from None
        try:
            return msgspec.convert(reply, wire.LogReply)
        except msgspec.ValidationError as e:
            raise GrenexClientError(f"the node sent a log this client cannot read: {e}") from None

    def export_lines(self, genesis: bytes | None = None) -> AsyncIterator[bytes]:
        """The chosen node's committed log as ``grenex export`` lines (a header, then one line
        per command entry), fetched page by page as they are consumed; see
        :mod:`grenex.client.export`."""
        from grenex.client.export import export_lines

        return export_lines(self, genesis)

    async def events_after(
        self, since: int = 0, limit: int | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """One page of the node's ``events`` action after log index ``since``: the raw reply
        ``{"events": [...], "through", "first", "applied"}`` (see docs/api.md)."""
        args: dict[str, Any] = {"since": since}
        if limit is not None:
            args["limit"] = limit
        reply: dict[str, Any] = await self._read("events", args, timeout)
        return reply

    async def markets(self, *, timeout: float | None = None) -> list[MarketInfo]:
        """Every open market with its tick and lot, by name."""
        reply = await self._read("markets", {}, timeout)
        try:
            return [MarketInfo(m["market"], m["tick"], m["lot"]) for m in reply["markets"]]
        except (KeyError, TypeError) as e:
            raise GrenexClientError(f"the node sent markets this client cannot read: {e}") from None

    async def orders(
        self, client: str | None = None, market: str | None = None, *, timeout: float | None = None
    ) -> list[OpenOrder]:
        """An account's resting orders (this client's by default), in one market or all."""
        args: dict[str, Any] = {"client": self._client(client)}
        if market is not None:
            args["market"] = market
        reply = await self._read("orders", args, timeout)
        try:
            return [
                OpenOrder(o["id"], o["market"], o["side"], o["price"], o["qty"], o["remaining"])
                for o in reply["orders"]
            ]
        except (KeyError, TypeError) as e:
            raise GrenexClientError(f"the node sent orders this client cannot read: {e}") from None

    async def order(
        self, client: str | None, id: str, *, timeout: float | None = None
    ) -> OrderState:
        """One order's state (``client`` None: this client's)."""
        reply = await self._read("order", {"client": self._client(client), "id": id}, timeout)
        state = reply.get("state")
        if not isinstance(state, str):
            raise GrenexClientError(f"unexpected reply to order: {str(reply)[:200]}")
        seq = reply.get("seq")
        return OrderState(
            state,
            seq if isinstance(seq, int) else None,
            market=_str_or_none(reply.get("market")),
            side=_str_or_none(reply.get("side")),
            price=_str_or_none(reply.get("price")),
            qty=_str_or_none(reply.get("qty")),
            remaining=_str_or_none(reply.get("remaining")),
            reason=_str_or_none(reply.get("reason")),
            fills=tuple(f for f in reply.get("fills") or () if isinstance(f, dict)),
            raw=dict(reply),
        )

    async def status(self, *, timeout: float | None = None, fresh_hash: bool = False) -> NodeStatus:
        """The node's role, term, leader, commit/applied indexes and state hash (that of
        ``raw["state_hash_index"]``); ``fresh_hash`` asks for a fresh one (a later status
        carries it)."""
        args = dict(wire.STATUS_WITH_HASH) if fresh_hash else {}
        return NodeStatus.from_json(await self._read("status", args, timeout))

    async def statuses(
        self, *, timeout: float | None = None, fresh_hash: bool = False
    ) -> list[StatusReply]:
        """Every node announced under ``grenex:<cluster>:nodes``, asked at once
        (``fresh_hash``: as :meth:`status`).

        Entries the DHT still lists for a stopped node come back with an ``error``.
        """
        t = timeout if timeout is not None else self.read_timeout
        try:
            async with asyncio.timeout(t + self._lookup_budget):
                replies = await self._rpc.map(
                    f"grenex:{self.cluster}:nodes",
                    {
                        "action": "status",
                        "args": [dict(wire.STATUS_WITH_HASH) if fresh_hash else {}],
                    },
                    timeout_ms=max(1, int(t * 1000)),
                )
        except GrenacheError as exc:
            raise _translate(exc)[0] from None
        except TimeoutError:
            raise Unavailable(f"no status within {t:.3g}s", code="ERR_TIMEOUT") from None
        out: list[StatusReply] = []
        for r in replies:
            if r.error is not None:
                out.append(StatusReply(r.peer, None, _translate(r.error)[0]))
            else:
                try:
                    out.append(StatusReply(r.peer, NodeStatus.from_json(r.result)))
                except GrenexClientError as e:
                    out.append(StatusReply(r.peer, None, e))
        return out

    # ------------------------------------------------------------------ events

    def events(self, market: str | None = None, *, queue_max: int = 8192) -> EventStream:
        """The cluster's applied events, in log order, from one node's publisher (the chosen
        node's, when the client has one).

        ``async with client.events() as stream: async for event in stream: ...``; the stream
        reconnects (without a chosen node, to another node when its publisher goes away), and
        drops events it has already delivered.  Events published while it reconnects are
        missed: read :meth:`book` / :meth:`trades` after ``stream.reconnects`` changes if that
        matters.
        """
        s = EventStream(self, market, queue_max)
        self._streams.add(s)
        return s


class EventStream:
    """Typed events from ``grenex:<cluster>:events``; see :meth:`GrenexClient.events`."""

    def __init__(self, owner: GrenexClient, market: str | None, queue_max: int) -> None:
        self._owner = owner
        self.market = market
        pins = owner.pins
        self._sub = PeerSub(
            owner.link,
            owner.events_topic,
            queue_max=queue_max,
            backoff_max_ms=2_000,
            # without a chosen node: events only from a voter
            ssl_context=pins.ssl_for_voters(owner.events_topic) if pins is not None else None,
        )
        self._started = False
        self._closed = False
        self._last_seq = 0
        self._seen_connects = 0
        self.skipped = 0  # frames that were not events this client knows
        self._buffered: deque[Event] = deque()  # the rest of the last frame's events

    @property
    def publisher(self) -> str | None:
        """``ip:port`` of the publisher currently connected, if any."""
        return self._sub.publisher

    @property
    def reconnects(self) -> int:
        return max(self._sub.connects - 1, 0)

    @property
    def last_seq(self) -> int:
        return self._last_seq

    async def start(self) -> None:
        if not self._started:
            self._started = True
            await self._sub.start()

    async def wait_connected(self, timeout: float = 5.0) -> str:
        """Wait until subscribed to a publisher; raise :class:`Unavailable` after ``timeout``."""
        await self.start()
        try:
            return await self._sub.wait_connected(timeout_ms=max(1, int(timeout * 1000)))
        except GrenacheError as exc:
            raise _translate(exc)[0] from None

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._sub.stop()
        self._owner._streams.discard(self)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            ev = await self.next()
            if ev is None:
                return
            yield ev

    async def next(self, timeout: float | None = None) -> Event | None:
        """The next event (None once closed); :class:`Unavailable` after ``timeout`` seconds."""
        await self.start()
        decoder = _FRAME_DECODER
        while True:
            if self._buffered:
                ev = self._buffered.popleft()
            else:
                try:
                    frame = await self._sub.recv(
                        timeout_ms=None if timeout is None else max(1, int(timeout * 1000))
                    )
                except TransportError as exc:
                    if exc.code == "ERR_TIMEOUT":
                        raise _translate(exc)[0] from None
                    return None  # stopped
                try:
                    entry = decoder.decode(frame)  # one frame per log entry (SPEC §7)
                except msgspec.DecodeError:
                    self.skipped += 1
                    continue
                if not entry.events:
                    continue
                self._buffered.extend(entry.events[1:])
                ev = entry.events[0]
            connects = self._sub.connects
            if connects != self._seen_connects:
                # A new publisher: it starts at a command boundary, and may be behind the
                # last one; anything up to what we delivered is a repeat.
                if self._seen_connects and ev.seq <= self._last_seq:
                    continue
                self._seen_connects = connects
            if ev.seq < self._last_seq:
                continue
            self._last_seq = ev.seq
            if self.market is not None and getattr(ev, "market", None) != self.market:
                continue
            return ev


class _EntryFrame(msgspec.Struct):
    """One frame of the events stream: an applied log entry's events."""

    seq: int
    events: list[Event]


_FRAME_DECODER: Final[msgspec.json.Decoder[_EntryFrame]] = msgspec.json.Decoder(_EntryFrame)
