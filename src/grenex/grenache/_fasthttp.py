"""A small keep-alive HTTP/1.1 client for Grenache RPC, on a plain asyncio Protocol.

Why: the RPC client sends one small POST and reads one small reply, millions of times. A
general client (aiohttp) spends about as much CPU per request as the whole rest of the round
trip; profiling showed that this client needs about a third less per request, which is most
of what makes the Python client faster than Node's. It does only what a Grenache peer needs
and refuses the rest.

Theory of operation
-------------------
One :class:`_Conn` per TCP (or TLS) connection, one request at a time on it (no pipelining).
Idle connections wait in a per-peer LIFO pool and are dropped after :data:`IDLE_S`, shorter
than Node's 5 s server keep-alive, so we do not write into a socket the server is closing. A
reply is framed by ``Content-Length``, by chunked encoding (what Node sends), or by the end of
the connection; anything else — an oversize head or body, a malformed status line or chunk —
fails the request and closes the connection. The caller gets ``(status, body)`` or a
:class:`TransportError` whose ``delivered`` is False only when the connection could not be
made. ``connections_max`` bounds the open connections: at the limit an idle connection to
another peer is closed to make room, and when all are busy a request waits (within its
timeout) for one to be released.

TLS: ``post(..., ssl_context=ctx)`` overrides the transport's context for one request, so
one client can pin a different certificate per service name. Connections are pooled per
``(dest, context)``: a connection authenticated under one context is never reused for a
request that asked for another. With a :class:`~grenex.grenache.tls.PinnedContext` the peer's
certificate is checked after the handshake and before the request is written; a failed
handshake or an unpinned certificate raises :class:`~grenex.grenache.tls.PeerAuthError`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Mapping
from typing import Final, cast

from grenex.grenache._tlslayer import connect
from grenex.grenache.errors import RequestTimeoutError, TransportError
from grenex.grenache.tls import (
    HANDSHAKE_TIMEOUT_MS,
    PeerAuthError,
    check_pinned,
    handshake_error,
)

IDLE_S: Final = 4.0
HEAD_MAX_BYTES: Final = 64 * 1024
IDLE_PER_PEER_MAX: Final = 128

_Pool = tuple[str, ssl.SSLContext | None]  # (dest, TLS context or None): one idle pool each
_DEFAULT: Final = object()


class _BadReplyError(Exception):
    pass


class _Conn(asyncio.Protocol):
    """One connection; parses one reply at a time from ``data_received``."""

    def __init__(self, reply_bytes_max: int) -> None:
        self.reply_bytes_max = reply_bytes_max
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.buf = bytearray()
        self.closed = False
        self.idle_since = 0.0
        self.replies = 0  # complete replies read on this connection
        self.got_bytes = False  # any byte of the current reply seen
        self._reset()

    def _reset(self) -> None:
        self.status = -1  # -1: the head is not parsed yet
        self.length: int | None = None
        self.chunked = False
        self.keep_alive = True
        self.body = bytearray()

    # ---------------------------------------------------------------------------- protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport of whatever loop runs us (uvloop's are not asyncio.Transport
        # subclasses, but have the same interface)
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self.status >= 0 and self.length is None and not self.chunked:
                self.waiter.set_result((self.status, bytes(self.body)))  # read-until-close
            elif isinstance(exc, ssl.SSLError):
                # e.g. a mutual-TLS server refusing our certificate (TLS 1.3 reports it after
                # the client's side of the handshake): say so rather than "closed".
                self.waiter.set_exception(exc)
            else:
                self.waiter.set_exception(ConnectionResetError("connection closed by peer"))

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost then completes or fails the reply

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            # Bytes nobody asked for: the connection is out of step; never reuse it.
            self.close()
            return
        self.buf += data
        self.got_bytes = True
        try:
            done = self._parse()
        except _BadReplyError as exc:
            waiter.set_exception(exc)
            self.close()
            return
        if done:
            result = (self.status, bytes(self.body))
            keep = self.keep_alive and not self.buf
            self._reset()
            self.replies += 1
            if not keep:
                self.close()
            waiter.set_result(result)

    # ----------------------------------------------------------------------------- parsing

    def _parse(self) -> bool:
        if self.status < 0 and not self._parse_head():
            return False
        if self.chunked:
            return self._parse_chunks()
        if self.length is not None:
            if len(self.buf) < self.length:
                return False
            self.body = self.buf[: self.length]
            del self.buf[: self.length]
            return True
        # Neither length nor chunked: the body ends with the connection.
        self.body += self.buf
        self.buf.clear()
        self.keep_alive = False
        if len(self.body) > self.reply_bytes_max:
            raise _BadReplyError(f"ERR_REPLY_TOO_LARGE: more than {self.reply_bytes_max} bytes")
        return False

    def _parse_head(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > HEAD_MAX_BYTES:
                raise _BadReplyError("reply head too large")
            return False
        lines = bytes(self.buf[:end]).split(b"\r\n")
        del self.buf[: end + 4]
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise _BadReplyError(f"malformed status line {lines[0][:80]!r}")
        status = int(parts[1])
        if 100 <= status < 200:  # an interim reply (e.g. 100 Continue): wait for the real one
            return self._parse_head() if self.buf else False
        self.keep_alive = parts[0] == b"HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            value = value.strip()
            if name == b"content-length":
                if not value.isdigit():
                    raise _BadReplyError("malformed Content-Length")
                self.length = int(value)
                if self.length > self.reply_bytes_max:
                    raise _BadReplyError(f"ERR_REPLY_TOO_LARGE: {self.length} bytes")
            elif name == b"transfer-encoding":
                self.chunked = b"chunked" in value.lower()
            elif name == b"connection":
                token = value.lower()
                if b"close" in token:
                    self.keep_alive = False
                elif b"keep-alive" in token:
                    self.keep_alive = True
        if status in (204, 304):
            self.length = 0
        self.status = status
        return True

    def _parse_chunks(self) -> bool:
        buf = self.buf
        while True:
            if self.length is None or self.length < 0:
                # Expecting a chunk-size line (length None) or the trailer section (-1).
                eol = buf.find(b"\r\n")
                if eol < 0:
                    if len(buf) > HEAD_MAX_BYTES:
                        raise _BadReplyError("chunk header too large")
                    return False
                line = bytes(buf[:eol])
                del buf[: eol + 2]
                if self.length == -1:
                    if not line:
                        self.length = None
                        return True  # end of trailers: the reply is complete
                    continue  # a trailer field: ignored
                size_text = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise _BadReplyError("malformed chunk size") from None
                if size == 0:
                    self.length = -1
                    continue
                if len(self.body) + size > self.reply_bytes_max:
                    raise _BadReplyError(f"ERR_REPLY_TOO_LARGE: more than {self.reply_bytes_max}")
                self.length = size
            if len(buf) < self.length + 2:
                return False
            self.body += buf[: self.length]
            if buf[self.length : self.length + 2] != b"\r\n":
                raise _BadReplyError("malformed chunk")
            del buf[: self.length + 2]
            self.length = None

    # ----------------------------------------------------------------------------- request

    def send(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None and self.waiter is None, "one request at a time"
        self.got_bytes = False
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class FastHttpTransport:
    """An :class:`~grenex.grenache.http.RPCTransport` on :class:`_Conn` pools."""

    def __init__(
        self,
        *,
        connections_max: int = 256,
        ssl_context: ssl.SSLContext | None = None,
        reply_bytes_max: int = 16 * 1024 * 1024,
    ) -> None:
        self._ssl = ssl_context
        self.reply_bytes_max = reply_bytes_max
        self.connections_max = connections_max
        self._idle: dict[_Pool, deque[_Conn]] = {}
        self._all: set[_Conn] = set()  # open connections, busy or idle
        self._connecting = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def _acquire(
        self, dest: str, ctx: ssl.SSLContext | None, *, fresh: bool = False, name: str = ""
    ) -> _Conn:
        loop = asyncio.get_running_loop()
        while True:
            now = time.monotonic()
            pool = self._idle.get((dest, ctx))
            while pool and not fresh:
                conn = pool.pop()
                if not conn.closed and now - conn.idle_since < IDLE_S:
                    return conn
                self._discard(conn)
            if len(self._all) + self._connecting >= self.connections_max:
                self._sweep(now)
            if len(self._all) + self._connecting < self.connections_max:
                break
            # At the limit with every connection busy: wait until one is released or closed.
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        host, _, port = dest.rpartition(":")
        self._connecting += 1
        try:
            try:
                # TLS in the protocol (_tlslayer): the loop's own costs more per record
                _, conn = await connect(
                    lambda: _Conn(self.reply_bytes_max),
                    host,
                    int(port),
                    ctx,
                    handshake_timeout_s=HANDSHAKE_TIMEOUT_MS / 1000,
                )
            except ssl.SSLError as exc:
                raise handshake_error(exc, dest, name) from None
            if ctx is not None:
                assert conn.transport is not None
                try:
                    check_pinned(ctx, conn.transport.get_extra_info("ssl_object"), dest, name)
                except PeerAuthError:
                    conn.transport.abort()
                    raise
        finally:
            self._connecting -= 1
            self._wake()
        self._all.add(conn)
        return conn

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _sweep(self, now: float) -> None:
        """At the connection limit: drop dead and expired idle connections, and if none was,
        the oldest idle one, so idle sockets of other peers never starve a new one."""
        freed = False
        oldest: tuple[float, _Pool] | None = None
        for dest, pool in self._idle.items():
            for conn in [c for c in pool if c.closed or now - c.idle_since >= IDLE_S]:
                pool.remove(conn)
                self._discard(conn)
                freed = True
            if pool and (oldest is None or pool[0].idle_since < oldest[0]):
                oldest = (pool[0].idle_since, dest)
        if not freed and oldest is not None:
            self._discard(self._idle[oldest[1]].popleft())

    def _discard(self, conn: _Conn) -> None:
        conn.close()
        if conn in self._all:
            self._all.discard(conn)
            self._wake()

    def _release(self, dest: _Pool, conn: _Conn) -> None:
        if conn.closed:
            self._discard(conn)
            return
        conn.waiter = None
        conn.idle_since = time.monotonic()
        pool = self._idle.setdefault(dest, deque())
        if len(pool) >= IDLE_PER_PEER_MAX:
            self._discard(pool.popleft())
        pool.append(conn)
        self._wake()

    async def post(
        self,
        url: str,
        body: bytes,
        *,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        peer: str = "",
        ssl_context: ssl.SSLContext | object | None = _DEFAULT,
        name: str = "",
    ) -> tuple[int, bytes]:
        """POST ``body``; ``ssl_context`` (default: the transport's) for this request, and
        ``name`` (the service name, for error messages)."""
        ctx = self._ssl if ssl_context is _DEFAULT else ssl_context
        assert ctx is None or isinstance(ctx, ssl.SSLContext)
        rest = url.partition("://")[2]
        dest, _, path = rest.partition("/")
        head = [f"POST /{path} HTTP/1.1\r\nHost: {dest}\r\n"]
        if headers:
            head.extend(f"{k}: {v}\r\n" for k, v in headers.items())
        head.append(f"Content-Length: {len(body)}\r\n\r\n")
        data = "".join(head).encode("latin-1") + body
        conn: _Conn | None = None
        try:
            async with asyncio.timeout(timeout_s):
                try:
                    conn = await self._acquire(dest, ctx, name=name)
                except PeerAuthError:
                    raise
                except (OSError, ValueError) as exc:
                    raise TransportError(
                        f"ERR_REQUEST_GENERIC: request to {url} failed, reason: {exc}",
                        peer=peer or dest,
                        delivered=False,
                    ) from None
                try:
                    try:
                        result = await conn.send(data)
                    except OSError:
                        if conn.replies == 0 or conn.got_bytes:
                            raise
                        # A reused keep-alive connection closed before any byte of our reply:
                        # the server dropped an idle socket as we wrote to it — or read the
                        # request and died on it: the two look the same. Retry once on a new
                        # connection; if the peer refuses it, the first attempt may still have
                        # been read, so it counts as delivered (its outcome is unknown).
                        self._discard(conn)
                        conn = None
                        try:
                            conn = await self._acquire(dest, ctx, fresh=True, name=name)
                        except PeerAuthError:
                            raise
                        except OSError as exc:
                            raise TransportError(
                                f"ERR_REQUEST_GENERIC: request to {url} failed, reason: {exc}",
                                peer=peer or dest,
                                delivered=True,
                            ) from None
                        result = await conn.send(data)
                except (OSError, _BadReplyError) as exc:
                    hint = ""
                    if ctx is not None and conn is not None and conn.replies == 0:
                        hint = " (on a new TLS connection: a mutual-TLS server that refuses"
                        hint += " our certificate closes like this)"
                    raise TransportError(
                        f"ERR_REQUEST_GENERIC: request to {url} failed, reason: {exc}{hint}",
                        peer=peer or dest,
                    ) from None
        except TimeoutError:
            if conn is not None:
                self._discard(conn)
                conn = None
            raise RequestTimeoutError(
                f"ERR_TIMEOUT: no reply from {url} in {timeout_s:g}s", peer=peer or dest
            ) from None
        except BaseException:
            if conn is not None:
                self._discard(conn)
            raise
        self._release((dest, ctx), conn)
        return result

    async def close(self) -> None:
        for conn in list(self._all):
            self._discard(conn)
        self._idle.clear()
