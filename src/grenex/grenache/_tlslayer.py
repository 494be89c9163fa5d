"""TLS done in a plain asyncio Protocol, on memory BIOs, under an application protocol.

Why: the event loop's own TLS transport (uvloop's, or asyncio's) costs ~25 µs of interpreter
time per record read on this machine, against ~5 µs for the same read without TLS; the
encryption itself is ~1 µs. Consensus frames and client requests are small and frequent, so
that overhead was a large part of what a message costs. This layer does the same work with
one ``ssl.SSLObject`` per connection and a loop over what arrived (~10 µs per read, measured
by ``benchmarks/http_server_bench.py``).

Theory of operation
-------------------
:class:`TLSLayer` is the protocol of the raw TCP connection. It runs the handshake with
``ssl.SSLContext.wrap_bio`` (the server's context, with its server-name callback that picks the
current trust anchors, or a client's pinning context), bounded by ``handshake_timeout_s``.
Only once the handshake is done does the application protocol see the connection:
``app.connection_made(AppTransport)`` (a server counts its connections then, as with the
loop's TLS). Records that arrive are decrypted in ``data_received`` — every whole record in
the buffer, without raising for the last one — and the plaintext goes to
``app.data_received``; what the application writes is encrypted and written to the socket at
once. A ``close_notify`` from the peer is the end of its data (``eof_received``, then the
connection closes); ``close()`` sends ours and closes; ``abort()`` drops the connection.
Flow control passes through: the socket's ``pause_writing``/``resume_writing`` reach the
application, its ``pause_reading``/``resume_reading`` reach the socket. ``set_protocol``
hands the connection, decrypted, to another application protocol (the server front does
this to give a connection to aiohttp). A failed handshake or a broken record drops the
connection; a client's :meth:`TLSLayer.established` raises the ``ssl.SSLError``.

``get_extra_info`` answers ``ssl_object`` (the ``SSLObject``: ``getpeercert`` works on it),
``sslcontext``, ``peercert`` and ``cipher`` itself, the rest from the socket's transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any, Final, TypeVar, cast

__all__ = ["AppTransport", "TLSLayer", "connect"]

P = TypeVar("P", bound=asyncio.Protocol)

log = logging.getLogger("grenex.grenache.tls")

READ_CHUNK: Final = 16 * 1024  # a TLS record holds at most this (a larger read allocates more)


class AppTransport(asyncio.Transport):
    """What the application protocol writes to: plaintext in, records out."""

    def __init__(self, layer: TLSLayer) -> None:
        super().__init__()
        self._layer = layer

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._layer.send(data)

    def writelines(self, list_of_data: Any) -> None:
        self._layer.send(b"".join(list_of_data))

    def close(self) -> None:
        self._layer.close()

    def abort(self) -> None:
        self._layer.abort()

    def is_closing(self) -> bool:
        return self._layer.closing

    def pause_reading(self) -> None:
        raw = self._layer.raw
        if raw is not None:
            raw.pause_reading()

    def resume_reading(self) -> None:
        raw = self._layer.raw
        if raw is not None:
            raw.resume_reading()

    def is_reading(self) -> bool:
        raw = self._layer.raw
        return raw is not None and raw.is_reading()

    def get_write_buffer_size(self) -> int:
        raw = self._layer.raw
        return raw.get_write_buffer_size() if raw is not None else 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        raw = self._layer.raw
        if raw is not None:
            raw.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("TLS: half-close is not supported")

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._layer.app = cast(asyncio.Protocol, protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._layer.app

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        layer = self._layer
        if name == "ssl_object":
            return layer.obj
        if name == "sslcontext":
            return layer.ctx
        if name == "peercert":
            return layer.obj.getpeercert()
        if name == "cipher":
            return layer.obj.cipher()
        if name == "socket":
            return None  # the socket belongs to the layer (no options set through here)
        raw = layer.raw
        return raw.get_extra_info(name, default) if raw is not None else default


class TLSLayer(asyncio.Protocol):
    """The raw connection's protocol (see the module docstring)."""

    def __init__(
        self,
        ctx: ssl.SSLContext,
        app: asyncio.Protocol,
        *,
        server_side: bool,
        handshake_timeout_s: float,
        server_hostname: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.app = app
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(
            self.incoming,
            self.outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
        )
        self.handshake_timeout_s = handshake_timeout_s
        self.raw: asyncio.Transport | None = None
        self.app_transport = AppTransport(self)
        self.done = False  # handshake finished
        self.closing = False
        self.app_made = False  # app.connection_made was called
        self._timer: asyncio.TimerHandle | None = None
        self._established: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def established(self) -> None:
        """Wait for the handshake (a client's side): raises ``ssl.SSLError`` when it failed,
        ``ConnectionError`` when the connection was lost first."""
        await self._established

    # ---------------------------------------------------------------------------- raw side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = cast(asyncio.Transport, transport)
        self._timer = asyncio.get_running_loop().call_later(
            self.handshake_timeout_s, self._handshake_late
        )
        self._handshake()

    def data_received(self, data: bytes) -> None:
        self.incoming.write(data)
        if not self.done:
            self._handshake()
            if not self.done:
                return
        obj, incoming = self.obj, self.incoming
        chunks: list[bytes] = []
        eof = False
        try:
            while incoming.pending or obj.pending():
                chunk = obj.read(READ_CHUNK)
                if not chunk:  # the peer's close_notify (read returns b"" for it)
                    eof = True
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass  # a record not yet whole, or a post-handshake message
        except ssl.SSLZeroReturnError:
            eof = True  # the same, as some OpenSSL versions say it
        except ssl.SSLError as exc:
            log.debug("TLS record refused: %s", exc)
            self.abort()
            return
        self._flush()
        if chunks and self.app_made:
            self.app.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if eof and self.raw is not None:
            keep = self.app.eof_received() if self.app_made else False
            if not keep:
                self.close()

    def eof_received(self) -> bool | None:
        if self.app_made and not self.closing:
            self.app.eof_received()
        return False  # the raw transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.raw = None
        self.closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._established.done():
            self._established.set_exception(exc or ConnectionError("closed during TLS handshake"))
            self._established.exception()  # retrieved: nobody may be waiting
        if self.app_made:
            self.app_made = False
            self.app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.app_made:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.app_made:
            self.app.resume_writing()

    # ----------------------------------------------------------------------------- internals

    def _handshake(self) -> None:
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except ssl.SSLError as exc:
            self._flush()  # the alert, so that the peer knows why
            log.debug("TLS handshake failed: %s", exc)
            if not self._established.done():
                self._established.set_exception(exc)
                self._established.exception()
            self.abort()
            return
        self.done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flush()
        if self.raw is None or self.closing:
            return
        self.app_made = True
        self.app.connection_made(self.app_transport)
        if not self._established.done():
            self._established.set_result(None)

    def _handshake_late(self) -> None:
        self._timer = None
        if not self.done:
            log.debug("TLS handshake not finished in %.1f s", self.handshake_timeout_s)
            if not self._established.done():
                self._established.set_exception(
                    ConnectionAbortedError("TLS handshake took too long")
                )
                self._established.exception()
            self.abort()

    def _flush(self) -> None:
        out = self.outgoing
        if out.pending and self.raw is not None:
            self.raw.write(out.read())

    def send(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing or self.raw is None or not self.done:
            return
        try:
            self.obj.write(data)
        except ssl.SSLError as exc:
            log.debug("TLS write failed: %s", exc)
            self.abort()
            return
        self.raw.write(self.outgoing.read())

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        raw = self.raw
        if raw is None:
            return
        if self.done:
            with contextlib.suppress(ssl.SSLError):
                self.obj.unwrap()  # our close_notify (the peer's is not awaited)
            self._flush()
        raw.close()

    def abort(self) -> None:
        self.closing = True
        raw = self.raw
        if raw is not None:
            raw.abort()


async def connect(
    factory: Callable[[], P],
    host: str,
    port: int,
    ctx: ssl.SSLContext | None,
    *,
    handshake_timeout_s: float,
) -> tuple[asyncio.Transport, P]:
    """Connect to ``host:port`` and return ``(transport, protocol)`` as
    ``loop.create_connection`` does; with ``ctx``, TLS is done by a :class:`TLSLayer` and
    this returns once its handshake is done (raises ``ssl.SSLError`` when it failed, an
    ``OSError`` when the connection was lost or the handshake took too long)."""
    loop = asyncio.get_running_loop()
    if ctx is None:
        transport, proto = await loop.create_connection(factory, host, port)
        return transport, proto
    app = factory()
    layer = TLSLayer(
        ctx, app, server_side=False, handshake_timeout_s=handshake_timeout_s, server_hostname=host
    )
    raw, _ = await loop.create_connection(lambda: layer, host, port)
    try:
        await layer.established()
    except BaseException:
        raw.abort()
        raise
    return layer.app_transport, app
