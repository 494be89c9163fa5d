"""One-way binary channels to an announced service: a WebSocket on a path of its RPC server.

Grenache RPC answers every request, and every request is a JSON array with a fresh id; for
traffic that needs no answer (grenex: consensus messages, which Raft may lose, duplicate or
reorder) that costs more than the message.  A *stream* is a long-lived WebSocket, opened with
an upgrade on a path the server routes to an application handler
(``PeerRPCServer(upgrades={path: open})``), over the same port, the same TLS (mutual, pinned)
and the same connection limits as the service's RPC; each binary frame is one application
message, nothing comes back.

Sender: :class:`StreamSender` (one destination name).  ``ready()`` says whether a connection
is up and, when it is not, starts one attempt in the background (after a back-off that grows
while attempts fail); ``send(frame)`` writes one frame within ``send_timeout_ms`` or raises
:class:`~grenex.grenache.errors.TransportError` and drops the connection.  Pings every
``heartbeat_ms`` find a peer that went silent: the connection is dropped when no pong comes
back within half of it.

Receiver: :func:`serve_stream`: ``open(peer_cert)`` returns the frame handler, or None to
refuse (403 before the upgrade).  A handler that raises closes the socket (1008): bad input
never stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Callable
from typing import Final

import aiohttp
from aiohttp import WSMsgType, web

from grenex.grenache.errors import GrenacheError, TransportError
from grenex.grenache.link import Link
from grenex.grenache.tls import PeerAuthError, PeerCert, check_pinned, handshake_error

__all__ = ["FrameHandler", "StreamOpen", "StreamRefusedError", "StreamSender", "serve_stream"]

log = logging.getLogger("grenex.grenache.stream")

FrameHandler = Callable[[bytes], None]
StreamOpen = Callable[[PeerCert | None], FrameHandler | None]

_CLOSE_POLICY: Final = 1008


class StreamRefusedError(Exception):
    """Raised by a frame handler: close the stream (the sender broke the rules)."""


async def serve_stream(
    request: web.BaseRequest,
    on_frame: FrameHandler | None,
    *,
    frame_bytes_max: int,
    heartbeat_ms: int,
) -> web.StreamResponse:
    """Serve one upgraded stream until it closes; ``on_frame`` None refuses it (403)."""
    if on_frame is None:
        return web.Response(status=403, text="ERR_GRENEX_NOT_ALLOWED: not a member's stream")
    ws = web.WebSocketResponse(
        max_msg_size=frame_bytes_max,
        autoping=True,
        compress=False,
        heartbeat=heartbeat_ms / 1000,
    )
    await ws.prepare(request)
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.BINARY:
                break  # text, or an error frame (over max size): the stream is done
            try:
                on_frame(msg.data)
            except Exception as exc:  # bad input closes the stream, nothing else
                log.debug("closing a stream: %s", exc)
                await ws.close(code=_CLOSE_POLICY, message=str(exc)[:120].encode())
                break
    except (ConnectionError, aiohttp.ClientError):
        pass
    return ws


class StreamSender:
    """A one-way stream to the service ``name`` (see the module docstring)."""

    def __init__(
        self,
        link: Link,
        name: str,
        path: str,
        ssl_for: Callable[[str], ssl.SSLContext | None],
        *,
        connect_timeout_ms: int = 2_000,
        send_timeout_ms: int = 2_000,
        heartbeat_ms: int = 2_000,
        backoff_min_ms: int = 100,
        backoff_max_ms: int = 5_000,
        frame_bytes_max: int = 8 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.link = link
        self.name = name
        self.path = path
        self.ssl_for = ssl_for
        self.connect_timeout_ms = connect_timeout_ms
        self.send_timeout_ms = send_timeout_ms
        self.heartbeat_ms = heartbeat_ms
        self.backoff_min_ms = backoff_min_ms
        self.backoff_max_ms = backoff_max_ms
        self.frame_bytes_max = frame_bytes_max
        self.clock = clock
        self._rng = rng or random.Random()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._backoff_ms = 0
        self._next_try = 0.0
        self._closed = False
        self.dest: str | None = None
        self.connects = 0  # connections made so far
        self.failures = 0  # attempts or connections that failed

    @property
    def connected(self) -> bool:
        ws = self._ws
        return ws is not None and not ws.closed

    def ready(self) -> bool:
        """True when a connection is up; otherwise start an attempt (unless one runs or the
        back-off has not elapsed) and return False."""
        if self.connected:
            return True
        if self._closed or self._connecting is not None or self.clock() < self._next_try:
            return False
        self._connecting = asyncio.get_running_loop().create_task(self._connect())
        return False

    async def send(self, frame: bytes) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            raise TransportError("ERR_TRANSPORT_CLOSE: the stream is down", delivered=False)
        try:
            async with asyncio.timeout(self.send_timeout_ms / 1000):
                await ws.send_bytes(frame)
        except (TimeoutError, ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            await self._drop(f"send failed: {type(exc).__name__}")
            raise TransportError(
                f"ERR_TRANSPORT_CLOSE: stream to {self.name}: {type(exc).__name__}",
                peer=self.dest or "",
                delivered=False,
            ) from None

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        with contextlib.suppress(Exception):
            async for _msg in ws:
                pass  # a data frame from the receiver: ignored (it sends none)
        if self._ws is ws:
            self._ws = None
            self.failures += 1
            self._grow_backoff()
            log.debug("stream to %s closed by the other side", self.name)

    async def _drop(self, why: str) -> None:
        ws, self._ws = self._ws, None
        self.failures += 1
        self._grow_backoff()
        log.debug("stream to %s dropped: %s", self.name, why)
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    def _grow_backoff(self) -> None:
        b = min(self.backoff_max_ms, max(self.backoff_min_ms, self._backoff_ms * 2))
        self._backoff_ms = b
        self._next_try = self.clock() + b * (0.5 + self._rng.random() / 2) / 1000

    async def _connect(self) -> None:
        try:
            async with asyncio.timeout(self.connect_timeout_ms / 1000):
                dests = await self.link.lookup(self.name)
                ctx = self.ssl_for(self.name)
                for dest in dests:
                    ws = await self._open(dest, ctx)
                    if ws is not None:
                        self._ws, self.dest = ws, dest
                        self.connects += 1
                        self._backoff_ms = 0
                        # read what comes back (pongs, a close): nothing else is sent to us
                        self._reader = asyncio.get_running_loop().create_task(self._read(ws))
                        return
        except (TimeoutError, GrenacheError, OSError) as exc:
            log.debug("stream to %s: %s", self.name, exc)
        except asyncio.CancelledError:
            raise
        finally:
            self._connecting = None
        self.failures += 1
        self._grow_backoff()

    async def _open(
        self, dest: str, ctx: ssl.SSLContext | None
    ) -> aiohttp.ClientWebSocketResponse | None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ssl=False),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        url = f"{'wss' if ctx is not None else 'ws'}://{dest}{self.path}"
        try:
            ws = await self._session.ws_connect(
                url,
                autoping=True,
                compress=0,
                heartbeat=self.heartbeat_ms / 1000,
                max_msg_size=self.frame_bytes_max,
                ssl=ctx if ctx is not None else False,
            )
        except (aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            if isinstance(exc, ssl.SSLError | aiohttp.ClientSSLError):
                log.debug("%s", handshake_error(exc, dest, self.name))
            else:
                log.debug("stream to %s at %s: %s", self.name, dest, exc)
            return None
        try:
            check_pinned(ctx, ws.get_extra_info("ssl_object"), dest, self.name)
        except PeerAuthError as exc:  # an impostor announcing the name: never believed
            log.debug("%s", exc)
            await ws.close()
            return None
        return ws

    async def close(self) -> None:
        self._closed = True
        task, self._connecting = self._connecting, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        if self._session is not None:
            await self._session.close()
            self._session = None
