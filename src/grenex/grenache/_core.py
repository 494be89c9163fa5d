"""Transport-independent halves of peer RPC: serving a frame, and choosing peers.

Theory of operation
-------------------
*Server side.* :class:`ServiceCore` turns one request frame into exactly one reply frame. It
decodes ``[rid, key, payload]``, runs the handler under a concurrency limit and a timeout, and
encodes ``[rid, err, result]``. Whatever the handler raises becomes the error string; whatever
the peer sent (garbage, a wrong shape, a bomb) becomes an ``ERR_REQUEST_INVALID`` answer, never
an exception that escapes. When no rid can be read there is no frame to answer with, so the
caller (HTTP) answers with a 4xx status instead: Node's client maps it to
``ERR_REQUEST_GENERIC: <text>`` at once, where an unmatched ``[null, ...]`` frame would leave it
waiting for its timeout. :func:`http_exchange` is that HTTP mapping, shared by the real server
and the in-memory fake network.

*Client side.* :class:`PeerClientBase` looks the service up through the Link and sends to a
uniformly random peer. A peer whose connection was refused is remembered as dead for
``dead_peer_ms`` and skipped while others remain; since a refused connection means the request
was never delivered, the same request (same rid) is retried on another peer, up to
``attempts_max`` peers. Any other failure (timeout, reset, bad reply, an error answer) may
have reached the peer and is raised, not retried: the caller knows whether its request is safe
to repeat. When every known peer is dead the lookup is refreshed once, bypassing the cache.
``map`` sends to every peer at once and returns each one's result or error.

*TLS.* A peer that fails authentication (:class:`~grenex.grenache.tls.PeerAuthError`: the
handshake failed, or its certificate is not the one pinned for the name) is remembered as
untrusted *for that name* for ``untrusted_peer_ms`` and not dialled again for it meanwhile;
the request goes on to the next announced peer. So an impostor announcing a name costs one
failed handshake per window. Server side, a handler built with ``with_peer=True`` receives the
certificate the peer presented (a :class:`~grenex.grenache.tls.PeerCert`, or None) as a third
argument; any handler can read it with :func:`grenex.grenache.tls.current_peer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Self, TypeAlias, cast

import msgspec

from grenex.grenache.errors import (
    GrenacheError,
    LookupEmptyError,
    ProtocolError,
    RemoteError,
    TransportError,
)
from grenex.grenache.link import Link
from grenex.grenache.protocol import (
    Json,
    Request,
    decode_request,
    encode_reply,
    gunzip_bounded,
    gzip,
    new_rid,
)
from grenex.grenache.tls import (
    PeerAuthError,
    PeerCert,
    _reset_current_peer,
    _set_current_peer,
)

log = logging.getLogger("grenex.grenache")

Handler: TypeAlias = Callable[[str, Json], Awaitable[Json] | Json]
"""A service handler: ``handler(key, payload)`` returns (or is a coroutine returning) the
result; raising an exception sends its message as the error string."""

PeerHandler: TypeAlias = Callable[[str, Json, PeerCert | None], Awaitable[Json] | Json]
"""A handler that also learns the peer's TLS certificate: ``handler(key, payload, peer)``."""

ERR_BUSY: Final = "ERR_SERVICE_BUSY"
ERR_HANDLER_TIMEOUT: Final = "ERR_TIMEOUT"


def error_message(exc: BaseException) -> str:
    """The string sent for an exception raised by a handler (Node sends ``err.message``)."""
    if isinstance(exc, GrenacheError):
        return exc.message or exc.code
    text = str(exc)
    return text if text else type(exc).__name__


class ServiceCore:
    """One request frame in, one reply frame out; bounded concurrency and handler time."""

    def __init__(
        self,
        handler: Handler | PeerHandler,
        *,
        concurrency_max: int = 256,
        backlog_max: int = 4096,
        handler_timeout_ms: int = 30_000,
        float_hook: Callable[[str], Any] | None = None,
        with_peer: bool = False,
    ) -> None:
        if concurrency_max < 1 or backlog_max < 0 or handler_timeout_ms <= 0:
            raise ValueError("concurrency_max >= 1, backlog_max >= 0, handler_timeout_ms > 0")
        self.handler = handler
        self.with_peer = with_peer
        # JSON numbers with a fraction or exponent go through float_hook (their literal text)
        # instead of becoming floats: for payloads where numbers must stay exact.
        self._decode = msgspec.json.Decoder(float_hook=float_hook).decode
        self.concurrency_max = concurrency_max
        self.backlog_max = backlog_max
        self.handler_timeout_ms = handler_timeout_ms
        self._running = 0
        self._waiting = 0
        self._sem: asyncio.Semaphore | None = None  # created lazily, inside the event loop
        self.requests = 0  # served frames, for metrics and tests
        self.invalid = 0  # frames answered with ERR_REQUEST_INVALID

    def _semaphore(self) -> asyncio.Semaphore:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.concurrency_max)
        return self._sem

    async def reply_to(self, frame: bytes | str, peer: PeerCert | None = None) -> bytes:
        """Answer a raw request frame (from ``peer``, when it presented a TLS certificate).
        Raises :class:`ProtocolError` only when the frame has no readable rid (there is
        nothing to address a reply frame to)."""
        try:
            req = decode_request(frame, decode=self._decode)
        except ProtocolError as exc:
            self.invalid += 1
            if exc.rid is None:
                raise
            return encode_reply(exc.rid, exc.message, None)
        return await self.serve(req, peer)

    async def serve(self, req: Request, peer: PeerCert | None = None) -> bytes:
        self.requests += 1
        sem = self._semaphore()
        if sem.locked():
            if self._waiting >= self.backlog_max:
                return encode_reply(
                    req.rid, f"{ERR_BUSY}: more than {self.backlog_max} requests waiting", None
                )
            self._waiting += 1
            try:
                await sem.acquire()
            finally:
                self._waiting -= 1
        else:
            await sem.acquire()
        try:
            if peer is None:
                return await self._run(req, None)
            token = _set_current_peer(peer)
            try:
                return await self._run(req, peer)
            finally:
                _reset_current_peer(token)
        finally:
            sem.release()

    async def _run(self, req: Request, peer: PeerCert | None) -> bytes:
        try:
            if self.with_peer:
                result = cast(PeerHandler, self.handler)(req.key, req.payload, peer)
            else:
                result = cast(Handler, self.handler)(req.key, req.payload)
            if inspect.isawaitable(result):
                async with asyncio.timeout(self.handler_timeout_ms / 1000):
                    result = await result
        except TimeoutError:
            return encode_reply(
                req.rid,
                f"{ERR_HANDLER_TIMEOUT}: handler took more than {self.handler_timeout_ms} ms",
                None,
            )
        except RemoteError as exc:
            return encode_reply(req.rid, error_message(exc), exc.result)
        except Exception as exc:
            if not isinstance(exc, GrenacheError):
                log.debug("handler for %r raised", req.key, exc_info=True)
            return encode_reply(req.rid, error_message(exc), None)
        return encode_reply(req.rid, None, result)


async def http_exchange(
    core: ServiceCore,
    body: bytes,
    compress: bool,
    body_bytes_max: int,
    peer: PeerCert | None = None,
) -> tuple[int, bytes]:
    """The HTTP mapping of a request body to ``(status, reply body)``.

    200 with a reply frame (gzip when the request asked for it) whenever a rid was readable;
    400 with plain text otherwise. Like Node, a body that fails to gunzip is tried as is.
    """
    if compress:
        try:
            body = gunzip_bounded(body, body_bytes_max)
        except ValueError as exc:
            if "exceeds" in str(exc):
                core.invalid += 1
                return 413, f"ERR_REQUEST_TOO_LARGE: {exc}".encode()
    try:
        reply = await core.reply_to(body, peer)
    except ProtocolError as exc:
        return 400, exc.message.encode()
    return 200, (gzip(reply) if compress else reply)


@dataclass(frozen=True, slots=True)
class PeerReply:
    """One peer's answer in a ``map``: ``result``, or ``error`` when it failed."""

    peer: str
    result: Json = None
    error: GrenacheError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        if self.error is None:
            return {"peer": self.peer, "result": self.result}
        return {"peer": self.peer, "error": self.error.message, "result": self.result}


class PeerClientBase:
    """Peer choice, retries, dead-peer memory and ``map``; subclasses move the bytes."""

    def __init__(
        self,
        link: Link,
        *,
        request_timeout_ms: int = 10_000,
        attempts_max: int = 3,
        dead_peer_ms: int = 5_000,
        dead_peers_max: int = 1024,
        untrusted_peer_ms: int = 30_000,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if request_timeout_ms <= 0 or attempts_max < 1:
            raise ValueError("request_timeout_ms > 0 and attempts_max >= 1")
        self.untrusted_peer_ms = untrusted_peer_ms
        # (name, dest) -> untrusted until (monotonic): failed TLS authentication for that name
        self._untrusted: OrderedDict[tuple[str, str], float] = OrderedDict()
        self.link = link
        self.request_timeout_ms = request_timeout_ms
        self.attempts_max = attempts_max
        self.dead_peer_ms = dead_peer_ms
        self.dead_peers_max = dead_peers_max
        self._rng = rng or random.Random()
        self._clock = clock
        self._dead: OrderedDict[str, float] = OrderedDict()  # dest -> dead until (monotonic)
        # With TLS (a subclass sets ``gate_first``), the first exchange with a (name, dest)
        # pair is its authentication: requests that pick the same pair meanwhile wait for its
        # outcome instead of each dialling a possible impostor (a burst of concurrent requests
        # would otherwise cost one failed handshake each, not one in all).
        self.gate_first = False
        self._proven: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._first: dict[tuple[str, str], asyncio.Future[None]] = {}

    # ------------------------------------------------------------------------- subclass API

    async def _exchange(
        self, dest: str, rid: str, key: str, payload: Json, *, compress: bool, timeout_s: float
    ) -> Json:
        """Send one request to ``dest``, return its result; raise a GrenacheError."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections (the Link is not closed: it may be shared)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------------ dead peers

    def is_dead(self, dest: str) -> bool:
        until = self._dead.get(dest)
        if until is None:
            return False
        if until <= self._clock():
            del self._dead[dest]
            return False
        return True

    def mark_dead(self, dest: str) -> None:
        self._dead[dest] = self._clock() + self.dead_peer_ms / 1000
        self._dead.move_to_end(dest)
        while len(self._dead) > self.dead_peers_max:
            self._dead.popitem(last=False)

    def _mark_alive(self, dest: str) -> None:
        if self._dead:
            self._dead.pop(dest, None)

    def is_untrusted(self, name: str, dest: str) -> bool:
        """Did ``dest`` fail TLS authentication for ``name`` within ``untrusted_peer_ms``?"""
        if not self._untrusted:
            return False
        until = self._untrusted.get((name, dest))
        if until is None:
            return False
        if until <= self._clock():
            del self._untrusted[(name, dest)]
            return False
        return True

    def mark_untrusted(self, name: str, dest: str) -> None:
        self._proven.pop((name, dest), None)
        self._untrusted[(name, dest)] = self._clock() + self.untrusted_peer_ms / 1000
        self._untrusted.move_to_end((name, dest))
        while len(self._untrusted) > self.dead_peers_max:
            self._untrusted.popitem(last=False)

    def _prove(self, name: str, dest: str) -> None:
        pair = (name, dest)
        self._proven[pair] = None
        self._proven.move_to_end(pair)
        while len(self._proven) > self.dead_peers_max:
            self._proven.popitem(last=False)

    def forget_untrusted(self) -> None:
        """Dial every peer again (e.g. after the pins changed)."""
        self._untrusted.clear()

    def _failed(self, name: str, dest: str, exc: TransportError) -> None:
        if isinstance(exc, PeerAuthError):
            self.mark_untrusted(name, dest)
        elif not exc.delivered:
            self.mark_dead(dest)

    # ---------------------------------------------------------------------------- requests

    def _timeout_s(self, timeout_ms: int | None) -> float:
        return (timeout_ms if timeout_ms is not None else self.request_timeout_ms) / 1000

    async def request_peer(
        self,
        dest: str,
        key: str,
        payload: Json,
        *,
        timeout_ms: int | None = None,
        compress: bool = False,
    ) -> Json:
        """Send to one given ``"ip:port"``, without a lookup or retry."""
        try:
            result = await self._exchange(
                dest,
                new_rid(),
                key,
                payload,
                compress=compress,
                timeout_s=self._timeout_s(timeout_ms),
            )
        except TransportError as exc:
            self._failed(key, dest, exc)
            raise
        self._mark_alive(dest)
        return result

    async def request(
        self,
        key: str,
        payload: Json,
        *,
        timeout_ms: int | None = None,
        compress: bool = False,
        attempts_max: int | None = None,
    ) -> Json:
        """Look ``key`` up and send ``payload`` to a random peer; return its result.

        Raises :class:`LookupEmptyError` when nobody serves ``key``, :class:`RemoteError` when
        the peer's handler answered with an error, and :class:`TransportError` /
        :class:`RequestTimeoutError` / :class:`ReplyError` when no answer could be had.
        ``timeout_ms`` bounds each attempt.
        """
        peers = await self.link.lookup(key)
        if not peers:
            raise LookupEmptyError(key)
        timeout_s = self._timeout_s(timeout_ms)
        attempts = attempts_max if attempts_max is not None else self.attempts_max
        rid = new_rid()
        tried: list[str] = []
        refreshed = False
        last: TransportError | None = None
        while len(tried) < attempts:
            dest = self._pick(key, peers, tried)
            if dest is None or (self.is_dead(dest) and not refreshed):
                # Every remaining peer is known dead: the cached lookup is probably stale.
                refreshed = True
                fresh = await self.link.lookup(key, use_cache=False)
                if fresh:
                    peers = fresh
                dest = self._pick(key, peers, tried)
                if dest is None:
                    break
            tried.append(dest)
            first: asyncio.Future[None] | None = None
            if self.gate_first:
                pair = (key, dest)
                if pair not in self._proven:
                    pending = self._first.get(pair)
                    if pending is not None:
                        # another request is authenticating this peer: wait for its verdict
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(asyncio.shield(pending), timeout_s)
                        if self.is_untrusted(key, dest):
                            continue
                    else:
                        first = self._first[pair] = asyncio.get_running_loop().create_future()
            try:
                result = await self._exchange(
                    dest, rid, key, payload, compress=compress, timeout_s=timeout_s
                )
            except TransportError as exc:
                if exc.delivered:
                    raise
                self._failed(key, dest, exc)
                last = exc
                continue
            finally:
                if first is not None:
                    self._first.pop((key, dest), None)
                    first.set_result(None)
            if self.gate_first:
                self._prove(key, dest)
            self._mark_alive(dest)
            return result
        if last is not None:
            raise last
        if self._untrusted and any(self.is_untrusted(key, p) for p in peers):
            raise PeerAuthError(
                f"ERR_PEER_AUTH: every peer announcing {key!r} failed authentication "
                f"in the last {self.untrusted_peer_ms} ms"
            )
        raise LookupEmptyError(key)

    def _pick(self, name: str, peers: list[str], tried: list[str]) -> str | None:
        """A random untried peer that did not fail authentication for ``name``, preferring
        those not known dead."""
        if not tried and not self._dead and not self._untrusted:
            return peers[0] if len(peers) == 1 else self._rng.choice(peers)
        untried = [p for p in peers if p not in tried and not self.is_untrusted(name, p)]
        if not untried:
            return None
        alive = [p for p in untried if not self.is_dead(p)]
        return self._rng.choice(alive or untried)

    async def map(
        self,
        key: str,
        payload: Json,
        *,
        timeout_ms: int | None = None,
        compress: bool = False,
        limit: int | None = None,
    ) -> list[PeerReply]:
        """Send ``payload`` to every peer of ``key`` (or a random ``limit`` of them) at once.

        Returns one :class:`PeerReply` per peer, in lookup order; one peer failing does not fail
        the others (unlike Node's ``map``). Raises :class:`LookupEmptyError` when nobody
        serves ``key``.
        """
        peers = await self.link.lookup(key)
        if not peers:
            raise LookupEmptyError(key)
        if limit is not None and 0 < limit < len(peers):
            peers = self._rng.sample(peers, limit)
        timeout_s = self._timeout_s(timeout_ms)

        async def one(dest: str) -> PeerReply:
            if self.is_untrusted(key, dest):
                return PeerReply(
                    dest,
                    None,
                    PeerAuthError(
                        f"ERR_PEER_AUTH: {dest} failed authentication for {key!r} recently",
                        peer=dest,
                    ),
                )
            try:
                result = await self._exchange(
                    dest, new_rid(), key, payload, compress=compress, timeout_s=timeout_s
                )
            except RemoteError as exc:
                self._mark_alive(dest)
                return PeerReply(dest, exc.result, exc)
            except GrenacheError as exc:
                if isinstance(exc, TransportError):
                    self._failed(key, dest, exc)
                return PeerReply(dest, None, exc)
            self._mark_alive(dest)
            return PeerReply(dest, result, None)

        return list(await asyncio.gather(*(one(p) for p in peers)))
