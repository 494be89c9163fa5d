"""What a node is built from: its I/O, injected (``NodeIO``), so that the same node code runs on
real sockets and Grapes, or in one process on ``grenex.grenache.fakes`` with a manual clock.

:class:`RealIO` — real Grapes, HTTP peer RPC, WebSocket publisher, the monotonic clock.
:class:`FakeIO` — one :class:`~grenex.grenache.fakes.FakeGrape` and
:class:`~grenex.grenache.fakes.FakeNetwork` shared by every node of a test, an in-memory
publisher, and a :class:`ManualClock` that the test advances (every tick of every node's
consensus clock comes from ``io.sleep``).  Five nodes run in one process, in milliseconds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from grenex.grenache import Link, PeerPub, PeerRPCClient, PeerRPCServer
from grenex.grenache._core import Handler, PeerHandler
from grenex.grenache.fakes import FakeGrape, FakeNetwork
from grenex.grenache.stream import StreamOpen, StreamSender
from grenex.grenache.tls import ServerTLS

__all__ = [
    "Endpoint",
    "FakeIO",
    "FakePublisher",
    "ManualClock",
    "NodeIO",
    "Publisher",
    "PublisherOptions",
    "RealIO",
    "ServeOptions",
]


@dataclass(frozen=True, slots=True)
class ServeOptions:
    host: str
    port: int
    body_bytes_max: int
    concurrency_max: int
    handler_timeout_ms: int
    float_hook: Callable[[str], Any] | None = None
    websocket: bool = True
    connections_max: int = 2_048
    connections_per_address_max: int = 512
    body_read_timeout_ms: int = 5_000
    tls: ServerTLS | None = None  # TLS 1.3 (mutual when it has anchors); None: plain
    with_peer_cert: bool = False  # the handler gets the peer's certificate (mutual TLS)
    # WebSocket upgrades on these paths go to their handler (real sockets only)
    upgrades: Mapping[str, StreamOpen] | None = None


@dataclass(frozen=True, slots=True)
class PublisherOptions:
    host: str
    port: int
    ring_frames_max: int
    subscribers_max: int = 1_024
    subscribers_per_address_max: int = 256
    body_read_timeout_ms: int = 5_000
    tls: ServerTLS | None = None


class Endpoint(Protocol):
    """A listening RPC service."""

    @property
    def port(self) -> int: ...

    async def stop(self) -> None: ...


class Publisher(Protocol):
    """The events stream: frames to every subscriber."""

    @property
    def port(self) -> int: ...

    @property
    def subscribers(self) -> int: ...

    def pub(self, msg: str) -> int: ...

    async def stop(self) -> None: ...


class NodeIO(Protocol):
    # whether connections carry TLS (False only for the in-process fake network, which has no
    # sockets: there the node serves without certificates and cannot bind senders to them)
    secure: bool

    def link(self, grapes: list[str], request_timeout_ms: int) -> Link: ...

    def rpc_client(
        self,
        link: Link,
        request_timeout_ms: int,
        ssl_for: Callable[[str], ssl.SSLContext | None] | None = None,
    ) -> PeerRPCClient: ...

    def stream_sender(
        self,
        link: Link,
        name: str,
        path: str,
        ssl_for: Callable[[str], ssl.SSLContext | None],
        timeout_ms: int,
    ) -> StreamSender | None:
        """A one-way stream to ``name``'s server on ``path`` (None: this I/O has none, the
        messages go as requests)."""
        ...

    async def serve(self, handler: Handler | PeerHandler, opts: ServeOptions) -> Endpoint: ...

    async def publisher(self, opts: PublisherOptions) -> Publisher: ...

    def clock(self) -> float:
        """Seconds, monotonic."""
        ...

    def wall_ms(self) -> int:
        """Milliseconds since the epoch: only for the time stamps a leader puts on entries."""
        ...

    async def sleep(self, seconds: float) -> None: ...


# -- real ----------------------------------------------------------------------------------------


class _RealEndpoint:
    def __init__(self, server: PeerRPCServer) -> None:
        self.server = server

    @property
    def port(self) -> int:
        return self.server.port

    async def stop(self) -> None:
        await self.server.stop()


class RealIO:
    """Sockets, Grapes and the monotonic clock."""

    secure = True  # real TLS: certificates, pinning, mutual TLS on the peer service

    def link(self, grapes: list[str], request_timeout_ms: int) -> Link:
        return Link(grapes, request_timeout_ms=request_timeout_ms)

    def rpc_client(
        self,
        link: Link,
        request_timeout_ms: int,
        ssl_for: Callable[[str], ssl.SSLContext | None] | None = None,
    ) -> PeerRPCClient:
        return PeerRPCClient(link, request_timeout_ms=request_timeout_ms, ssl_for=ssl_for)

    def stream_sender(
        self,
        link: Link,
        name: str,
        path: str,
        ssl_for: Callable[[str], ssl.SSLContext | None],
        timeout_ms: int,
    ) -> StreamSender | None:
        return StreamSender(
            link,
            name,
            path,
            ssl_for,
            connect_timeout_ms=timeout_ms,
            heartbeat_ms=min(timeout_ms, 2_000),
        )

    async def serve(self, handler: Handler | PeerHandler, opts: ServeOptions) -> Endpoint:
        server = PeerRPCServer(
            handler,
            ssl_context=opts.tls,
            with_peer_cert=opts.with_peer_cert,
            host=opts.host,
            port=opts.port,
            body_bytes_max=opts.body_bytes_max,
            concurrency_max=opts.concurrency_max,
            handler_timeout_ms=opts.handler_timeout_ms,
            float_hook=opts.float_hook,
            websocket=opts.websocket,
            connections_max=opts.connections_max,
            connections_per_address_max=opts.connections_per_address_max,
            body_read_timeout_ms=opts.body_read_timeout_ms,
            upgrades=opts.upgrades,
        )
        await server.start()
        return _RealEndpoint(server)

    async def publisher(self, opts: PublisherOptions) -> Publisher:
        pub = PeerPub(
            None,
            None,
            ssl_context=opts.tls,
            host=opts.host,
            port=opts.port,
            ring_frames_max=opts.ring_frames_max,
            subscribers_max=opts.subscribers_max,
            subscribers_per_address_max=opts.subscribers_per_address_max,
            body_read_timeout_ms=opts.body_read_timeout_ms,
        )
        await pub.start()
        return pub

    def clock(self) -> float:
        return time.monotonic()

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


# -- fake ----------------------------------------------------------------------------------------

# the fake world's wall clock starts here (2026-01-01T00:00:00Z) and moves with the manual clock
EPOCH_MS = 1_767_225_600_000


class ManualClock:
    """A clock that moves only when told: ``await clock.advance(seconds)`` wakes every sleeper
    due by then, in time order, letting the event loop run between wake-ups."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), next(self._seq), fut))
        await fut

    async def advance(self, seconds: float, settle_rounds: int = 30) -> None:
        target = self.now + seconds
        while True:
            while self._sleepers and self._sleepers[0][2].done():
                heapq.heappop(self._sleepers)  # cancelled sleepers
            if not self._sleepers or self._sleepers[0][0] > target:
                break
            at, _, fut = heapq.heappop(self._sleepers)
            self.now = max(self.now, at)
            fut.set_result(None)
            await settle(settle_rounds)
        self.now = target
        await settle(settle_rounds)


async def settle(rounds: int = 30) -> None:
    """Let every ready task run (a few passes of the event loop)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class _FakeEndpoint:
    def __init__(self, net: FakeNetwork, dest: str) -> None:
        self.net = net
        self.dest = dest

    @property
    def port(self) -> int:
        return FakeNetwork.port_of(self.dest)

    async def stop(self) -> None:
        self.net.kill(self.dest)


@dataclass
class FakePublisher:
    """An in-memory publisher: every frame is kept (bounded) for the test to read."""

    port: int
    frames_max: int = 100_000
    frames: list[str] = field(default_factory=list)
    subscribers: int = 1
    stopped: bool = False

    def pub(self, msg: str) -> int:
        if not self.stopped and len(self.frames) < self.frames_max:
            self.frames.append(msg)
        return self.subscribers

    async def stop(self) -> None:
        self.stopped = True


class FakeIO:
    """One in-process world: a fake Grape (DHT), a fake network, a manual clock.  Give every
    node of a test the same ``FakeIO``."""

    secure = False  # no sockets, no TLS (see NodeIO.secure)

    def __init__(self, clock: ManualClock | None = None) -> None:
        self.manual = clock or ManualClock()
        self.grape = FakeGrape(clock=self.manual.time)
        self.net = FakeNetwork()
        self.publishers: list[FakePublisher] = []
        self._next_pub_port = 50001

    def link(self, grapes: list[str], request_timeout_ms: int) -> Link:
        return Link(
            grapes,
            request_timeout_ms=request_timeout_ms,
            transport=self.grape.transport(),
            clock=self.manual.time,
        )

    def rpc_client(
        self,
        link: Link,
        request_timeout_ms: int,
        ssl_for: Callable[[str], ssl.SSLContext | None] | None = None,
    ) -> PeerRPCClient:
        return PeerRPCClient(
            link,
            request_timeout_ms=request_timeout_ms,
            transport=self.net.transport(),
            clock=self.manual.time,
        )

    def stream_sender(
        self,
        link: Link,
        name: str,
        path: str,
        ssl_for: Callable[[str], ssl.SSLContext | None],
        timeout_ms: int,
    ) -> StreamSender | None:
        return None  # the fake network has requests only: consensus messages go as requests

    async def serve(self, handler: Handler | PeerHandler, opts: ServeOptions) -> Endpoint:
        h: Handler
        if opts.with_peer_cert:
            peer_handler = cast(PeerHandler, handler)

            def h(key: str, payload: Any) -> Any:
                return peer_handler(key, payload, None)  # no TLS in the fake network
        else:
            h = cast(Handler, handler)
        dest = self.net.serve(
            h,
            body_bytes_max=opts.body_bytes_max,
            concurrency_max=opts.concurrency_max,
            handler_timeout_ms=opts.handler_timeout_ms,
            float_hook=opts.float_hook,
        )
        return _FakeEndpoint(self.net, dest)

    async def publisher(self, opts: PublisherOptions) -> Publisher:
        pub = FakePublisher(self._next_pub_port)
        self._next_pub_port += 1
        self.publishers.append(pub)
        return pub

    def clock(self) -> float:
        return self.manual.time()

    def wall_ms(self) -> int:
        return EPOCH_MS + int(self.manual.time() * 1000)

    async def sleep(self, seconds: float) -> None:
        await self.manual.sleep(seconds)
