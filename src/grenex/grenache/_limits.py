"""Connection limits for the library's aiohttp servers: caps and a request-read deadline.

Theory of operation
-------------------
aiohttp creates one protocol object (a ``RequestHandler``) per accepted connection.
:class:`LimitedServer` is the ``web.Server`` that hands out :class:`_LimitedHandler` instead,
which adds two things at the connection level, where a slow or hostile peer can be stopped
before it costs anything:

*Caps.* When the connection is made (after the TLS handshake, which ``ServerTLS`` bounds on its
own), it is counted against ``connections_max`` and against ``connections_per_address_max`` for
its peer IP. Beyond either, the connection is refused at once: a canned
``503 ERR_SERVICE_BUSY: too many connections…`` is written, the connection is closed, and
nothing it sends is read or parsed. Connections already open keep working.

*Deadline.* A request's head and body must arrive within ``body_read_timeout_ms``. The clock
starts when the connection is made, and again on the first byte after the previous request's
body was read (an idle keep-alive connection is aiohttp's ``keepalive_timeout``'s business).
The server's request handler calls :func:`body_read` once it holds the whole body, which stops
the clock; a WebSocket upgrade calls :func:`upgraded`, which stops it for good (frames are
bounded by their size and the connection caps). A request still incomplete at the deadline has
its connection closed: a slow-headers or slow-body sender holds a connection for at most the
deadline.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

__all__ = ["ConnectionLimits", "LimitedServer", "body_read", "upgraded"]

ERR_SERVICE_BUSY: Final = "ERR_SERVICE_BUSY"


class ConnectionLimits:
    """The caps and the deadline of one server, with what they refused or closed."""

    def __init__(
        self,
        *,
        connections_max: int,
        connections_per_address_max: int,
        body_read_timeout_ms: int,
    ) -> None:
        if connections_max < 1 or connections_per_address_max < 1 or body_read_timeout_ms <= 0:
            raise ValueError(
                "connections_max >= 1, connections_per_address_max >= 1, body_read_timeout_ms > 0"
            )
        self.connections_max = connections_max
        self.connections_per_address_max = connections_per_address_max
        self.body_read_timeout_ms = body_read_timeout_ms
        self.open = 0  # connections admitted and not yet lost
        self._by_address: dict[str, int] = {}
        self.refused = 0  # connections refused by connections_max
        self.refused_address = 0  # connections refused by connections_per_address_max
        self.expired = 0  # connections closed by the deadline

    def of_address(self, address: str) -> int:
        """Open connections from ``address`` (an IP)."""
        return self._by_address.get(address, 0)

    def admit(self, address: str) -> bytes | None:
        """Count a new connection in; or the bytes of the answer that refuses it."""
        if self.open >= self.connections_max:
            self.refused += 1
            return _busy(f"too many connections ({self.connections_max})")
        n = self._by_address.get(address, 0)
        if n >= self.connections_per_address_max:
            self.refused_address += 1
            return _busy(
                f"too many connections from this address ({self.connections_per_address_max})"
            )
        self.open += 1
        self._by_address[address] = n + 1
        return None

    def release(self, address: str) -> None:
        self.open -= 1
        n = self._by_address.get(address, 0) - 1
        if n > 0:
            self._by_address[address] = n
        else:
            self._by_address.pop(address, None)


def _busy(what: str) -> bytes:
    text = f"{ERR_SERVICE_BUSY}: {what}".encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(text)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + text


class _LimitedHandler(RequestHandler):
    """aiohttp's connection protocol, counted against the caps and held to the deadline."""

    def __init__(self, manager: LimitedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = manager.limits
        self._address: str | None = None  # set once admitted
        self._refused = False
        self._deadline: asyncio.TimerHandle | None = None
        self._unlimited = False  # upgraded: no more deadlines

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        refusal = self._limits.admit(address)
        if refusal is not None:
            self._refused = True
            assert isinstance(transport, asyncio.Transport)
            transport.write(refusal)
            transport.close()
            return
        self._address = address
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        self._disarm()
        if self._address is not None:
            self._limits.release(self._address)
            self._address = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._deadline is None and not self._unlimited and data:
            self._arm()
        super().data_received(data)

    def _arm(self) -> None:
        self._deadline = self._loop.call_later(
            self._limits.body_read_timeout_ms / 1000, self._expire
        )

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport is None:
            return
        self._limits.expired += 1
        self.force_close()

    def request_read(self, *, upgraded: bool) -> None:
        self._disarm()
        if upgraded:
            self._unlimited = True


def body_read(request: web.BaseRequest) -> None:
    """The request's head and body are in: stop its connection's deadline."""
    proto = request.protocol
    if isinstance(proto, _LimitedHandler):
        proto.request_read(upgraded=False)


def upgraded(request: web.BaseRequest) -> None:
    """The request upgrades its connection (WebSocket): no more deadlines on it."""
    proto = request.protocol
    if isinstance(proto, _LimitedHandler):
        proto.request_read(upgraded=True)


class LimitedServer(web.Server):
    """``web.Server`` whose connections obey ``limits``."""

    def __init__(self, handler: Any, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.limits = limits

    def __call__(self) -> RequestHandler:
        return _LimitedHandler(self, loop=self._loop, **self._kwargs)
