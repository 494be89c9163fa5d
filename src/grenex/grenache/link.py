"""Link: the client of the Grape HTTP API (announce, lookup, put, get).

Theory of operation
-------------------
A Link knows a list of Grapes. Each call is ``POST {grape}/{endpoint}`` with
``{"rid": uuid4, "data": ...}`` (see :mod:`grenex.grenache.protocol`), bounded by
``request_timeout_ms``. The Link sticks to the Grape that answered last; when that one cannot be
reached (refused, reset, timeout) or answers that its DHT has no live node (``"No nodes to
query"``, ``"All queries failed"``), the call moves on to the next Grape of the list, so one dead
Grape costs one failed attempt, not an outage. An error the Grape states about the request
itself (``ERR_GRAPE_LOOKUP`` ...) is final and raised as :class:`GrapeError`.

Lookups go through a bounded LRU cache of ``lookup_cache_ttl_ms``; unlike the Node link, an
empty result is never cached (a client that looks up just before a server announces would
otherwise see nothing for the whole TTL), and concurrent lookups of one name share one request.

A lookup is not a local read: the Grape runs a DHT lookup, and a DHT query to a node that does
not answer waits for k-rpc's 2 s timeout.  While any host of the DHT is unreachable, every
lookup on the others takes 0.6–5 s (measured in the fault lab, docs/lab.md: the Grape also
re-queries its bootstrap nodes, the dead one included, when its table holds fewer nodes than
its bootstrap list).  So lookups get their own timeout, ``lookup_timeout_ms`` (default
:data:`LOOKUP_TIMEOUT_MS_MIN` or ``request_timeout_ms`` if longer): a lookup bounded by a
2 s request timeout fails exactly when a host is down.  And a name the caller will need in a
hurry (a peer it must reach when the leader fails, a client's own node) can be kept warm with
:meth:`Link.keep_fresh`: looked up now and again in the background before its cache entry
expires, so a lookup of it never waits for the DHT.

Services stay visible only while re-announced (a Grape with ``--dpa`` forgets them after about
2 × dpa), so :meth:`Link.start_announcing` registers ``(name, port)`` with a background loop
that announces everything registered every ``announce_interval_ms`` (1 s, as Node services do).
The loop logs failures and never dies of them.

The network side is a :class:`GrapeTransport`; the default speaks HTTP through aiohttp, and
:mod:`grenex.grenache.fakes` provides an in-memory Grape for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Final, Protocol, Self, TypeVar

from grenex.grenache._aio import HttpPoster
from grenex.grenache.errors import (
    GrapeError,
    GrapeUnavailableError,
    GrenacheError,
    TransportError,
)
from grenex.grenache.protocol import (
    GetResult,
    grape_body,
    parse_announce,
    parse_get,
    parse_lookup,
    parse_put,
    validate_port,
)

__all__ = [
    "DEFAULT_GRAPE",
    "DHT_DOWN",
    "GrapeTransport",
    "HttpGrapeTransport",
    "Link",
    "default_grapes",
    "parse_grapes",
]

log = logging.getLogger("grenex.grenache.link")

DEFAULT_GRAPE: Final = "http://127.0.0.1:30001"
# A Grape's lookup while a DHT node is unreachable: k-rpc waits 2 s per unanswered query, and
# the lookup may ask the dead node twice (its routing table, then its bootstrap list).
LOOKUP_TIMEOUT_MS_MIN: Final = 7_000

# Grape replies meaning "my DHT has no live node": another Grape may well do better.
DHT_DOWN: Final = frozenset({"No nodes to query", "All queries failed"})

T = TypeVar("T")


class GrapeTransport(Protocol):
    """How a Link reaches a Grape: POST ``body`` to ``url``, return ``(status, body)``.

    Implementations raise :class:`TransportError` / :class:`RequestTimeoutError` when the
    Grape cannot be reached in ``timeout_s``.
    """

    async def post(self, url: str, body: bytes, timeout_s: float) -> tuple[int, bytes]: ...

    async def close(self) -> None: ...


class HttpGrapeTransport:
    """The real :class:`GrapeTransport`, over aiohttp with keep-alive."""

    def __init__(self, *, reply_bytes_max: int = 1024 * 1024) -> None:
        self._poster = HttpPoster(connections_max=64, reply_bytes_max=reply_bytes_max)

    async def post(self, url: str, body: bytes, timeout_s: float) -> tuple[int, bytes]:
        return await self._poster.post(
            url,
            body,
            timeout_s=timeout_s,
            headers={"content-type": "application/json"},
            peer=url,
        )

    async def close(self) -> None:
        await self._poster.close()


def parse_grapes(grapes: str | Sequence[str]) -> list[str]:
    """``"http://a:1,http://b:2"`` or a list of URLs → a clean list of base URLs."""
    items = grapes.split(",") if isinstance(grapes, str) else list(grapes)
    out = [g.strip().rstrip("/") for g in items if g.strip()]
    if not out:
        raise ValueError("at least one Grape URL is needed")
    for g in out:
        if not g.startswith(("http://", "https://")):
            raise ValueError(f"a Grape URL must start with http:// or https://, got {g!r}")
    return out


class Link:
    """Client of one or more Grapes' HTTP API. Use ``async with Link(...) as link``.

    Limits: ``request_timeout_ms`` bounds each attempt on one Grape (a call tries each Grape
    at most once); ``lookup_cache_entries_max`` bounds the cache; ``announcements_max`` bounds
    what the re-announce loop carries.
    """

    def __init__(
        self,
        grapes: str | Sequence[str] = DEFAULT_GRAPE,
        *,
        request_timeout_ms: int = 4000,
        announce_interval_ms: int = 1000,
        lookup_cache_ttl_ms: int = 5000,
        lookup_stale_ms: int = 60_000,
        lookup_cache_entries_max: int = 1000,
        announcements_max: int = 1000,
        lookup_timeout_ms: int | None = None,
        transport: GrapeTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.grapes = parse_grapes(grapes)
        if request_timeout_ms <= 0 or announce_interval_ms <= 0:
            raise ValueError("timeouts and intervals must be positive")
        self.request_timeout_ms = request_timeout_ms
        if lookup_timeout_ms is None:
            lookup_timeout_ms = max(request_timeout_ms, LOOKUP_TIMEOUT_MS_MIN)
        if lookup_timeout_ms <= 0:
            raise ValueError("timeouts and intervals must be positive")
        self.lookup_timeout_ms = lookup_timeout_ms
        self.announce_interval_ms = announce_interval_ms
        self.lookup_cache_ttl_ms = lookup_cache_ttl_ms
        self.lookup_stale_ms = lookup_stale_ms
        self.lookup_cache_entries_max = lookup_cache_entries_max
        self.announcements_max = announcements_max
        self._transport: GrapeTransport = transport or HttpGrapeTransport()
        self._clock = clock
        self._current = 0  # index of the Grape that answered last
        self._cache: OrderedDict[str, tuple[float, list[str]]] = OrderedDict()
        # the last non-empty answer per name and when it came: served while a Grape fails or
        # answers [] (a Grape whose DHT neighbour died does both for a while)
        self._known: OrderedDict[str, tuple[float, list[str]]] = OrderedDict()
        self._inflight_lookups: dict[str, asyncio.Task[list[str]]] = {}
        self._announcing: dict[tuple[str, int], None] = {}  # insertion-ordered set
        self._announce_task: asyncio.Task[None] | None = None
        self._announce_failing: set[tuple[str, int]] = set()
        self._fresh_names: dict[str, None] = {}  # keep_fresh, insertion-ordered
        self._fresh_task: asyncio.Task[None] | None = None
        self._closed = False

    # ------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Nothing to open eagerly; present for symmetry with :meth:`stop`."""
        self._closed = False

    async def stop(self) -> None:
        """Stop re-announcing, clear the cache, close connections. Idempotent."""
        self._closed = True
        for attr in ("_announce_task", "_fresh_task"):
            task = getattr(self, attr)
            setattr(self, attr, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._announcing.clear()
        self._fresh_names.clear()
        self._cache.clear()
        self._known.clear()
        # shared lookups still running would otherwise reopen the transport after close
        lookups = list(self._inflight_lookups.values())
        self._inflight_lookups.clear()
        for lookup in lookups:
            lookup.cancel()
        await asyncio.gather(*lookups, return_exceptions=True)
        await self._transport.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------------------ the calls

    async def _call(
        self,
        endpoint: str,
        data: object,
        parse: Callable[[int, bytes, str], T],
        timeout_ms: int | None = None,
    ) -> T:
        body = grape_body(data)
        timeout_s = (timeout_ms or self.request_timeout_ms) / 1000
        n = len(self.grapes)
        first = self._current
        last_error: GrenacheError | None = None
        for attempt in range(n):
            index = (first + attempt) % n
            grape = self.grapes[index]
            try:
                status, reply = await self._transport.post(f"{grape}/{endpoint}", body, timeout_s)
            except TransportError as exc:
                log.debug("grape %s unreachable for %s: %s", grape, endpoint, exc)
                last_error = exc
                continue
            try:
                value = parse(status, reply, grape)
            except GrapeError as exc:
                if exc.code in DHT_DOWN and attempt + 1 < n:
                    last_error = exc
                    continue
                self._current = index
                raise
            self._current = index
            return value
        if isinstance(last_error, GrapeError):
            raise last_error
        raise GrapeUnavailableError(
            f"ERR_GRAPE_UNAVAILABLE: no Grape answered {endpoint} "
            f"({', '.join(self.grapes)}): {last_error}"
        )

    async def announce(self, name: str, port: int) -> int:
        """Announce that service ``name`` listens on ``port`` (at this host's Grape IP).

        Returns the number of DHT nodes that stored it. Raises ValueError for a port outside
        1..65535 (such a port crashes a Grape), :class:`GrapeError`, or
        :class:`GrapeUnavailableError`.
        """
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string")
        validate_port(port)
        return await self._call("announce", [name, port], parse_announce)

    async def lookup(self, name: str, *, use_cache: bool = True) -> list[str]:
        """The ``"ip:port"`` entries announced for ``name`` (possibly empty), in random order.

        Non-empty results are cached for ``lookup_cache_ttl_ms``; ``use_cache=False`` forces a
        fresh request (and refreshes the cache).  When the cache has expired but a non-empty
        answer younger than ``lookup_stale_ms`` is known, that answer is returned at once and
        refreshed in the background; and when a fresh lookup fails or comes back empty, that
        answer is returned instead (0 disables both).  A Grape that lost its DHT neighbour
        stalls seconds per lookup and often answers ``[]``: services stay reachable through it.
        """
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string")
        if use_cache:
            hit = self._cache.get(name)
            if hit is not None:
                if hit[0] > self._clock():
                    self._cache.move_to_end(name)
                    return list(hit[1])
                del self._cache[name]
            known = self._recently_known(name)
            if known is not None:
                self._shared_lookup(name)  # refresh in the background
                return known
        return list(await asyncio.shield(self._shared_lookup(name)))

    def _shared_lookup(self, name: str) -> asyncio.Task[list[str]]:
        # Concurrent lookups of one name share one request, run as its own task so that a
        # caller being cancelled does not cancel the others' answer.
        task = self._inflight_lookups.get(name)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fresh_lookup(name))
            self._inflight_lookups[name] = task
            task.add_done_callback(_retrieve)
        return task

    def _recently_known(self, name: str) -> list[str] | None:
        known = self._known.get(name)
        if known is None or self.lookup_stale_ms <= 0:
            return None
        if self._clock() - known[0] > self.lookup_stale_ms / 1000:
            del self._known[name]
            return None
        return list(known[1])

    async def _fresh_lookup(self, name: str) -> list[str]:
        try:
            peers = await self._call("lookup", name, parse_lookup, self.lookup_timeout_ms)
        except GrenacheError:
            known = self._recently_known(name)
            if known is None:
                raise
            return known
        finally:
            self._inflight_lookups.pop(name, None)
        if peers:
            now = self._clock()
            if self.lookup_cache_ttl_ms > 0:
                self._cache[name] = (now + self.lookup_cache_ttl_ms / 1000, peers)
                self._cache.move_to_end(name)
                while len(self._cache) > self.lookup_cache_entries_max:
                    self._cache.popitem(last=False)
            self._known[name] = (now, peers)
            self._known.move_to_end(name)
            while len(self._known) > self.lookup_cache_entries_max:
                self._known.popitem(last=False)
            return peers
        self._cache.pop(name, None)
        known = self._recently_known(name)
        return known if known is not None else peers

    # ------------------------------------------------------------------------ warm names

    @property
    def kept_fresh(self) -> list[str]:
        """The names :meth:`keep_fresh` keeps warm."""
        return list(self._fresh_names)

    def keep_fresh(self, *names: str) -> None:
        """Keep these names' lookups warm until :meth:`stop_keeping_fresh` (or :meth:`stop`).

        Each is looked up now in the background and again whenever its cache entry is about
        to expire (every half ``lookup_cache_ttl_ms``, at least every 0.5 s), so
        :meth:`lookup` answers it from the cache even while a lookup takes the DHT seconds.
        At most ``lookup_cache_entries_max`` names; call from a running event loop.
        """
        if self._closed:
            raise RuntimeError("link is stopped")
        for name in names:
            if not isinstance(name, str) or not name:
                raise ValueError("name must be a non-empty string")
            if name in self._fresh_names:
                continue
            if len(self._fresh_names) >= self.lookup_cache_entries_max:
                raise ValueError(f"more than {self.lookup_cache_entries_max} names kept fresh")
            self._fresh_names[name] = None
            if name not in self._cache:
                self._shared_lookup(name)
        if self._fresh_names and (self._fresh_task is None or self._fresh_task.done()):
            self._fresh_task = asyncio.get_running_loop().create_task(
                self._fresh_loop(), name="grenache-keep-fresh"
            )

    def stop_keeping_fresh(self, *names: str) -> None:
        for name in names:
            self._fresh_names.pop(name, None)

    async def _fresh_loop(self) -> None:
        interval_s = max(0.5, self.lookup_cache_ttl_ms / 2000)
        while self._fresh_names:
            await asyncio.sleep(interval_s)
            soon = self._clock() + interval_s
            for name in list(self._fresh_names):
                hit = self._cache.get(name)
                if hit is None or hit[0] <= soon:
                    self._shared_lookup(name)  # failures are kept by _fresh_lookup's rules

    def invalidate(self, name: str) -> None:
        """Forget the cached lookup of ``name`` (and the last known answer)."""
        self._cache.pop(name, None)
        self._known.pop(name, None)

    async def put(self, value: str) -> str:
        """Store an immutable value in the DHT; return its 40-hex hash (sha1 of its bencoding).

        Values must be at most 999 UTF-8 bytes (the Grape's and the DHT's limits).
        """
        if not isinstance(value, str):
            raise TypeError("value must be a str")
        if len(value.encode()) > 999:
            raise ValueError("value must be at most 999 UTF-8 bytes")
        return await self._call("put", {"v": value}, parse_put)

    async def get(self, hash_hex: str) -> GetResult | None:
        """Fetch an immutable value by its hash; None when nobody has it."""
        if not isinstance(hash_hex, str) or len(hash_hex) != 40:
            raise ValueError("hash must be 40 hex characters")
        try:
            int(hash_hex, 16)
        except ValueError:
            raise ValueError("hash must be 40 hex characters") from None
        return await self._call("get", hash_hex.lower(), parse_get)

    # ---------------------------------------------------------------------------- announcing

    @property
    def announcing(self) -> list[tuple[str, int]]:
        """The ``(name, port)`` pairs the background loop re-announces."""
        return list(self._announcing)

    async def start_announcing(self, name: str, port: int, *, wait: bool = True) -> None:
        """Announce ``(name, port)`` now and then every ``announce_interval_ms`` until stopped.

        With ``wait`` (the default) the first announce is awaited and its error raised, so a
        lookup right after this returns finds the service.
        """
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string")
        validate_port(port)
        if self._closed:
            raise RuntimeError("link is stopped")
        key = (name, port)
        if key not in self._announcing and len(self._announcing) >= self.announcements_max:
            raise ValueError(f"more than {self.announcements_max} announcements")
        if wait:
            await self.announce(name, port)
        self._announcing[key] = None
        if self._announce_task is None or self._announce_task.done():
            self._announce_task = asyncio.get_running_loop().create_task(
                self._announce_loop(), name="grenache-announce"
            )

    async def stop_announcing(self, name: str, port: int) -> None:
        """Stop re-announcing ``(name, port)`` (the Grapes forget it after about 2 × dpa)."""
        self._announcing.pop((name, port), None)
        self._announce_failing.discard((name, port))

    async def _announce_loop(self) -> None:
        interval_s = self.announce_interval_ms / 1000
        while True:
            await asyncio.sleep(interval_s)
            items = list(self._announcing)
            if not items:
                continue
            results = await asyncio.gather(
                *(self.announce(name, port) for name, port in items), return_exceptions=True
            )
            for item, result in zip(items, results, strict=True):
                if isinstance(result, BaseException):
                    if isinstance(result, asyncio.CancelledError):
                        raise result
                    # Log a failure once, and its recovery once, not every second.
                    if item not in self._announce_failing:
                        self._announce_failing.add(item)
                        log.warning("announce %s:%d failed: %s", item[0], item[1], result)
                elif item in self._announce_failing:
                    self._announce_failing.discard(item)
                    log.info("announce %s:%d works again", item[0], item[1])


def _retrieve(task: asyncio.Task[list[str]]) -> None:
    # Every waiter may have been cancelled: read the outcome so asyncio does not warn.
    if not task.cancelled():
        task.exception()


def default_grapes() -> list[str]:
    """``$GRENEX_GRAPE`` (comma-separated) or :data:`DEFAULT_GRAPE`."""
    return parse_grapes(os.environ.get("GRENEX_GRAPE") or DEFAULT_GRAPE)
