"""In-memory fakes: a Grape and a network of RPC services, for fast tests without sockets.

::

    grape = FakeGrape()
    net = FakeNetwork()
    link = Link("http://grape-1", transport=grape.transport())
    dest = net.serve(handler)                       # "127.0.0.1:40001"
    await link.announce("svc", net.port_of(dest))
    client = PeerRPCClient(link, transport=net.transport())
    assert await client.request("svc", {"x": 1}) == ...

The fakes speak the same bytes as the real things (the Grape's JSON bodies and its 200-with-an-
error-string replies; the RPC frames, ``grc-compress`` gzip and the 400/413 answers), so the
code under test runs its real encoding, decoding and error paths. Faults are switches:
:meth:`FakeGrapeTransport.down` makes a Grape URL refuse connections; :meth:`FakeNetwork.kill`
makes a service refuse connections while its announcement stays in the fake DHT (a stale
entry), :meth:`FakeNetwork.set_delay` makes it slow.

The fake Grape stores every announcement under its announced port at ``host`` (default
127.0.0.1); announcements expire after ``peer_ttl_ms`` when given, judged by ``clock``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from grenex.grenache._core import Handler, ServiceCore, http_exchange
from grenex.grenache.errors import RequestTimeoutError, TransportError
from grenex.grenache.protocol import HEADER_COMPRESS, wants_gzip

__all__ = ["FakeGrape", "FakeGrapeTransport", "FakeNetwork", "FakeRPCTransport"]


def _json(value: Any) -> bytes:
    return msgspec.json.encode(value)


class FakeGrape:
    """One in-memory Grape (or a whole DHT: every URL routed to it sees the same data)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        peer_ttl_ms: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        values_max: int = 1000,
    ) -> None:
        self.host = host
        self.peer_ttl_ms = peer_ttl_ms
        self.clock = clock
        self.values_max = values_max
        self.peers: dict[str, dict[str, float]] = {}  # name -> {"ip:port": announced at}
        # True: announce and lookup answer "No nodes to query" (the DHT reaches no node)
        self.dht_down = False
        self.values: dict[str, str] = {}  # 40-hex -> value
        self.requests: list[tuple[str, Any]] = []  # (endpoint, data), bounded below
        self.requests_max = 10_000

    def transport(self) -> FakeGrapeTransport:
        return FakeGrapeTransport(self)

    def lookup(self, name: str) -> list[str]:
        entries = self.peers.get(name, {})
        if self.peer_ttl_ms is not None:
            horizon = self.clock() - self.peer_ttl_ms / 1000
            for dest in [d for d, t in entries.items() if t < horizon]:
                del entries[dest]
        return list(entries)[:100]

    def handle(self, endpoint: str, body: bytes) -> tuple[int, bytes]:
        """Answer one API call as grenache-grape 1.0.0 does."""
        try:
            req = msgspec.json.decode(body)
        except (ValueError, RecursionError):
            return 500, b"ERR_GRAPE_PAYLOAD_INVALID"
        data = req.get("data") if isinstance(req, dict) else None
        if len(self.requests) < self.requests_max:
            self.requests.append((endpoint, data))
        if self.dht_down and endpoint in ("announce", "lookup"):
            # as a Grape answers when its DHT reaches no other node (this host cut off)
            return 200, _json("No nodes to query")
        if endpoint == "announce":
            if not isinstance(data, list) or len(data) < 2:
                return 200, _json("ERR_GRAPE_ANNOUNCE")
            name, port = data[0], data[1]
            if not isinstance(port, int) or isinstance(port, bool):
                return 200, _json("ERR_GRAPE_SERVICE_PORT")
            self.peers.setdefault(str(name), {})[f"{self.host}:{port}"] = self.clock()
            return 200, b"1"
        if endpoint == "lookup":
            if not isinstance(data, str) or not data:
                return 200, _json("ERR_GRAPE_LOOKUP")
            return 200, _json(self.lookup(data))
        if endpoint == "put":
            v = data.get("v") if isinstance(data, dict) else None
            if v is None:
                return 200, _json("opts.v not given")
            v = str(v)
            if len(v) >= 1000:
                return 200, _json("v must be less than 1000 bytes in put()")
            raw = v.encode()
            digest = hashlib.sha1(str(len(raw)).encode() + b":" + raw).hexdigest()
            if len(self.values) >= self.values_max:
                self.values.pop(next(iter(self.values)))
            self.values[digest] = v
            return 200, _json(digest)
        if endpoint == "get":
            key = data.get("hash") if isinstance(data, dict) else data
            if isinstance(key, str) and key in self.values:
                return 200, _json({"id": "0" * 40, "token": None, "v": self.values[key]})
            return 200, b""
        return 200, _json("ERR_REQ_NOTFOUND")


class FakeGrapeTransport:
    """A :class:`~grenex.grenache.link.GrapeTransport` into a :class:`FakeGrape`."""

    def __init__(self, grape: FakeGrape) -> None:
        self.grape = grape
        self._down: set[str] = set()
        self.calls = 0

    def down(self, url: str, is_down: bool = True) -> None:
        """Make the Grape at ``url`` (a base URL) refuse connections, or accept them again."""
        base = url.rstrip("/")
        if is_down:
            self._down.add(base)
        else:
            self._down.discard(base)

    async def post(self, url: str, body: bytes, timeout_s: float) -> tuple[int, bytes]:
        self.calls += 1
        base, _, endpoint = url.rpartition("/")
        if base in self._down:
            raise TransportError(
                f"ERR_REQUEST_GENERIC: connect ECONNREFUSED {base}", peer=base, delivered=False
            )
        await asyncio.sleep(0)  # a real call yields to the loop; so does the fake
        return self.grape.handle(endpoint, body)

    async def close(self) -> None:
        return None


class _FakeService:
    def __init__(self, core: ServiceCore, body_bytes_max: int) -> None:
        self.core = core
        self.body_bytes_max = body_bytes_max
        self.delay_s = 0.0
        self.alive = True


class FakeNetwork:
    """RPC services reachable by ``"ip:port"`` without sockets."""

    def __init__(self, host: str = "127.0.0.1", first_port: int = 40001) -> None:
        self.host = host
        self._next_port = first_port
        self.services: dict[str, _FakeService] = {}

    def serve(
        self,
        handler: Handler,
        *,
        port: int | None = None,
        body_bytes_max: int = 1024 * 1024,
        concurrency_max: int = 256,
        handler_timeout_ms: int = 30_000,
        float_hook: Callable[[str], Any] | None = None,
    ) -> str:
        """Start a fake service; return its ``"ip:port"``."""
        if port is None:
            port = self._next_port
            self._next_port += 1
        dest = f"{self.host}:{port}"
        core = ServiceCore(
            handler,
            concurrency_max=concurrency_max,
            handler_timeout_ms=handler_timeout_ms,
            float_hook=float_hook,
        )
        self.services[dest] = _FakeService(core, body_bytes_max)
        return dest

    @staticmethod
    def port_of(dest: str) -> int:
        return int(dest.rpartition(":")[2])

    def kill(self, dest: str) -> None:
        """The service dies: connections are refused (its DHT entry, if any, stays)."""
        self.services[dest].alive = False

    def revive(self, dest: str) -> None:
        self.services[dest].alive = True

    def set_delay(self, dest: str, seconds: float) -> None:
        """Every answer of the service takes ``seconds`` longer."""
        self.services[dest].delay_s = seconds

    def transport(self) -> FakeRPCTransport:
        return FakeRPCTransport(self)


class FakeRPCTransport:
    """An :class:`~grenex.grenache.http.RPCTransport` into a :class:`FakeNetwork`."""

    def __init__(self, network: FakeNetwork) -> None:
        self.network = network
        self.calls = 0

    async def post(
        self,
        url: str,
        body: bytes,
        *,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        peer: str = "",
    ) -> tuple[int, bytes]:
        self.calls += 1
        dest = url.split("://", 1)[-1].split("/", 1)[0]
        service = self.network.services.get(dest)
        if service is None or not service.alive:
            raise TransportError(
                f"ERR_REQUEST_GENERIC: request to {url} failed, reason: "
                f"connect ECONNREFUSED {dest}",
                peer=dest,
                delivered=False,
            )
        compress = wants_gzip((headers or {}).get(HEADER_COMPRESS))
        try:
            async with asyncio.timeout(timeout_s):
                if service.delay_s:
                    await asyncio.sleep(service.delay_s)
                if len(body) > service.body_bytes_max:
                    return 413, b"ERR_REQUEST_TOO_LARGE"
                return await http_exchange(service.core, body, compress, service.body_bytes_max)
        except TimeoutError:
            raise RequestTimeoutError(
                f"ERR_TIMEOUT: no reply from {url} in {timeout_s:g}s", peer=dest
            ) from None

    async def close(self) -> None:
        return None
