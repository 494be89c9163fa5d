"""Peer RPC over HTTP, wire-compatible with grenache-nodejs-http (and WebSocket on one port).

Server: ``PeerRPCServer(handler)`` answers ``POST`` (or any method) on any path with
``[rid, err, result]`` for a body ``[rid, key, payload]``, gzip both ways when the request has
``grc-compress: gzip``. Bodies are read up to ``body_bytes_max`` (413 beyond: at once from the
``Content-Length``, or as soon as a chunked body passes it; nothing beyond is buffered), a body
without a readable rid gets a 400 (see :mod:`grenex.grenache._core`), and the same port also accepts
WebSocket upgrades on any path for Grenache WS RPC, so one Python service serves both Node
transports. It binds ``127.0.0.1`` unless told otherwise (Node binds every interface); a
service must be reachable at its Grape's IP, so pass ``host="0.0.0.0"`` for multi-host use.

The server's own front (:mod:`grenex.grenache._fastserve`, an asyncio Protocol) reads every
connection first: it answers RPC requests with a ``Content-Length`` body, WebSocket RPC and
streams (``upgrades``) itself, and hands anything else (chunked bodies, ``Expect``) to
aiohttp's low-level server with the bytes read so far; ``front=False`` leaves everything to
aiohttp, as before the front (same answers, ~2–3× the CPU per request).

Limits (see :mod:`grenex.grenache._limits`): a request's head and body must arrive within
``body_read_timeout_ms`` or the connection is closed; beyond ``connections_max`` open
connections, or ``connections_per_address_max`` from one IP, a new connection is answered
``503 ERR_SERVICE_BUSY: too many connections…`` at once and closed, unread.

Client: ``PeerRPCClient(link)`` sends ``POST http(s)://ip:port/`` with a uuid4 rid over
keep-alive connections, checks the reply's rid, maps a non-2xx status to
``ERR_REQUEST_GENERIC: <body>`` as Node does, and picks/retries peers as described in
:class:`grenex.grenache._core.PeerClientBase`.

TLS: pass an :class:`ssl.SSLContext` to either side; :func:`server_ssl_context` and
:func:`client_ssl_context` build mutual-TLS contexts from PEM files as grenache-nodejs-http's
``secure`` option does (client certificates required and checked against the CA). For pinned
self-signed Ed25519 certificates see :mod:`grenex.grenache.tls`: the server takes a
:class:`~grenex.grenache.tls.ServerTLS` (mutual TLS with replaceable trust anchors; with
``with_peer_cert=True`` the handler is called ``handler(key, payload, peer_cert)``), and the
client takes ``ssl_for(name)``, a context per service name.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, Self

from aiohttp import web

from grenex.grenache._core import (
    Handler,
    PeerClientBase,
    PeerHandler,
    ServiceCore,
    http_exchange,
)
from grenex.grenache._fasthttp import FastHttpTransport
from grenex.grenache._fastserve import Front, FrontConfig, stop_fronts
from grenex.grenache._limits import ConnectionLimits, LimitedServer, body_read, upgraded
from grenex.grenache._tlslayer import TLSLayer
from grenex.grenache.errors import ReplyError, TransportError
from grenex.grenache.link import Link
from grenex.grenache.protocol import (
    HEADER_COMPRESS,
    Json,
    decode_reply,
    encode_request,
    gunzip_bounded,
    gzip,
    wants_gzip,
)
from grenex.grenache.tls import (
    HANDSHAKE_TIMEOUT_MS,
    PeerCert,
    ServerTLS,
    make_site,
    peer_cert,
    refuse_unadmitted,
)

if TYPE_CHECKING:
    from grenex.grenache.stream import StreamOpen

__all__ = [
    "PeerRPCClient",
    "PeerRPCServer",
    "RPCTransport",
    "client_ssl_context",
    "server_ssl_context",
]

_NO_GZIP: Final = {HEADER_COMPRESS: "none"}
_GZIP: Final = {HEADER_COMPRESS: "gzip"}


class PeerRPCServer:
    """An RPC service: ``handler(key, payload) -> result`` behind HTTP (and WS) on one port.

    ``await server.start()`` binds (``port=0`` picks a free port, see :attr:`port`), then
    announce it: ``await link.start_announcing(name, server.port)``.

    ``ssl_context``: an :class:`ssl.SSLContext`, or a :class:`~grenex.grenache.tls.ServerTLS`
    (pinned Ed25519 certificates, mutual TLS with replaceable anchors). ``with_peer_cert``:
    call ``handler(key, payload, peer)`` with the peer's
    :class:`~grenex.grenache.tls.PeerCert` (None without a client certificate).

    ``connections_max``, ``connections_per_address_max``: open connections in all and from one
    IP; beyond them a new connection gets ``503 ERR_SERVICE_BUSY`` at once and is closed.
    ``body_read_timeout_ms``: a request's head and body must arrive within it, or the
    connection is closed. Counters: ``server.limits.refused``, ``.refused_address``,
    ``.expired``, ``.open``.

    ``upgrades``: WebSocket upgrades on these exact paths are one-way streams
    (:mod:`grenex.grenache.stream`): ``open(peer)`` returns the frame handler or None to
    refuse; after the same TLS admission, within the same connection limits.

    ``front``: serve plain requests, WebSocket RPC and streams with the front (default), or
    everything with aiohttp (``False``: for comparison, ``benchmarks/http_server_bench.py``).
    """

    def __init__(
        self,
        handler: Handler | PeerHandler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | ServerTLS | None = None,
        with_peer_cert: bool = False,
        body_bytes_max: int = 1024 * 1024,
        concurrency_max: int = 256,
        backlog_max: int = 4096,
        handler_timeout_ms: int = 30_000,
        keepalive_timeout_ms: int = 5_000,
        websocket: bool = True,
        ws_inflight_max: int = 256,
        shutdown_timeout_ms: int = 1_000,
        float_hook: Callable[[str], Any] | None = None,
        connections_max: int = 2048,
        connections_per_address_max: int = 512,
        body_read_timeout_ms: int = 5_000,
        upgrades: Mapping[str, StreamOpen] | None = None,
        stream_heartbeat_ms: int = 2_000,
        front: bool = True,
    ) -> None:
        self.front = front
        self._front_cfg: FrontConfig | None = None
        self._listener: asyncio.Server | None = None
        self.upgrades = dict(upgrades or {})
        self.stream_heartbeat_ms = stream_heartbeat_ms
        self.limits = ConnectionLimits(
            connections_max=connections_max,
            connections_per_address_max=connections_per_address_max,
            body_read_timeout_ms=body_read_timeout_ms,
        )
        self.core = ServiceCore(
            handler,
            concurrency_max=concurrency_max,
            backlog_max=backlog_max,
            handler_timeout_ms=handler_timeout_ms,
            float_hook=float_hook,
            with_peer=with_peer_cert,
        )
        self.host = host
        self._port = port
        self.ssl_context = ssl_context
        self.body_bytes_max = body_bytes_max
        self.keepalive_timeout_ms = keepalive_timeout_ms
        self.websocket = websocket
        self.ws_inflight_max = ws_inflight_max
        self.shutdown_timeout_ms = shutdown_timeout_ms
        self._runner: web.ServerRunner | None = None

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        return self._port

    @property
    def dest(self) -> str:
        """``"host:port"`` as a client would reach it."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"{host}:{self._port}"

    async def start(self) -> None:
        if self._runner is not None:
            return
        server = LimitedServer(
            self._handle,
            limits=self.limits,
            access_log=None,  # per-request logging costs more than the request itself
            # After a 413 the unread rest of a body is read and discarded for at most this long
            # (so the client sees the answer), then the connection is closed (aiohttp: 10 s).
            lingering_time=min(1.0, self.limits.body_read_timeout_ms / 1000),
            keepalive_timeout=self.keepalive_timeout_ms / 1000,
            max_line_size=8190,
            max_field_size=8190,
        )
        # stop() lets running handlers finish for at most shutdown_timeout_ms.
        runner = web.ServerRunner(
            server, handle_signals=False, shutdown_timeout=self.shutdown_timeout_ms / 1000
        )
        await runner.setup()
        if self.front:
            # the front serves plain requests, WS RPC and streams; aiohttp what it hands off
            await self._start_front(runner, server)
            return
        site = make_site(runner, self.host, self._port, self.ssl_context, backlog=1024)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        for addr in runner.addresses:
            if isinstance(addr, tuple):
                self._port = int(addr[1])
                break

    async def _start_front(self, runner: web.ServerRunner, server: LimitedServer) -> None:
        given = self.ssl_context
        tls: ServerTLS | None = None
        ssl_ctx: ssl.SSLContext | None
        if isinstance(given, ServerTLS):
            tls, ssl_ctx = given, given.ssl_context()
            handshake_s = given.handshake_timeout_ms / 1000
        else:
            ssl_ctx, handshake_s = given, HANDSHAKE_TIMEOUT_MS / 1000
        cfg = FrontConfig(
            core=self.core,
            limits=self.limits,
            body_bytes_max=self.body_bytes_max,
            keepalive_s=self.keepalive_timeout_ms / 1000,
            heartbeat_s=self.stream_heartbeat_ms / 1000,
            tls=tls,
            upgrades=self.upgrades,
            fallback=server,
            ws_rpc=self.websocket,
            ws_inflight_max=self.ws_inflight_max,
        )

        def connection() -> asyncio.Protocol:
            if ssl_ctx is None:
                return Front(cfg)
            # TLS in the protocol (_tlslayer): the loop's own TLS costs more per record
            return TLSLayer(ssl_ctx, Front(cfg), server_side=True, handshake_timeout_s=handshake_s)

        try:
            self._listener = await asyncio.get_running_loop().create_server(
                connection,
                self.host,
                self._port,
                backlog=1024,
                reuse_address=True,
            )
        except BaseException:
            await runner.cleanup()
            raise
        self._front_cfg = cfg
        self._runner = runner
        sockets = self._listener.sockets
        if sockets:
            self._port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        listener, self._listener = self._listener, None
        cfg, self._front_cfg = self._front_cfg, None
        if listener is not None:
            listener.close()
        if cfg is not None:
            await stop_fronts(cfg, self.shutdown_timeout_ms / 1000)
        if runner is not None:
            await runner.cleanup()
        if listener is not None:
            await listener.wait_closed()

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

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        peer: PeerCert | None = None
        if self.ssl_context is not None and request.transport is not None:
            peer = peer_cert(request.transport.get_extra_info("ssl_object"))
            refused = refuse_unadmitted(self.ssl_context, peer)
            if refused is not None:
                return refused
        if self.upgrades and request.headers.get("Upgrade", "").lower() == "websocket":
            on_open = self.upgrades.get(request.path)
            if on_open is not None:
                from grenex.grenache.stream import serve_stream

                upgraded(request)
                return await serve_stream(
                    request,
                    on_open(peer),
                    frame_bytes_max=self.body_bytes_max,
                    heartbeat_ms=self.stream_heartbeat_ms,
                )
        if self.websocket and request.headers.get("Upgrade", "").lower() == "websocket":
            from grenex.grenache.ws import serve_ws_rpc

            upgraded(request)
            return await serve_ws_rpc(
                request,
                self.core,
                frame_bytes_max=self.body_bytes_max,
                inflight_max=self.ws_inflight_max,
                peer=peer,
            )
        compress = wants_gzip(request.headers.get(HEADER_COMPRESS))
        length = request.content_length
        if length is not None and length > self.body_bytes_max:
            return _too_large(length)
        try:
            body = await _read_bounded(request, self.body_bytes_max)
        except (ConnectionError, asyncio.IncompleteReadError):
            # The client hung up mid-body, or the deadline closed its connection: nobody
            # reads an answer.
            return _gone()
        if body is None:
            return _too_large(None)
        body_read(request)
        status, reply = await http_exchange(self.core, body, compress, self.body_bytes_max, peer)
        if status != 200:
            resp = web.Response(status=status, body=reply, content_type="text/plain")
            if status == 413:
                resp.force_close()
            return resp
        return web.Response(body=reply)


def _too_large(length: int | None) -> web.Response:
    text = "ERR_REQUEST_TOO_LARGE" + (f": {length} bytes" if length is not None else "")
    resp = web.Response(status=413, text=text)
    # The unread rest of the body must not be parsed as the next request.
    resp.force_close()
    return resp


def _gone() -> web.Response:
    resp = web.Response(status=400, text="ERR_REQUEST_INCOMPLETE")
    resp.force_close()
    return resp


async def _read_bounded(request: web.BaseRequest, limit: int) -> bytes | None:
    """The whole body, or None if it exceeds ``limit`` bytes (chunked bodies included: reading
    stops as soon as the total passes ``limit``). The caller has refused a ``Content-Length``
    beyond ``limit`` before calling. Raises ConnectionError or IncompleteReadError when the
    connection goes away first.

    Read from the stream directly: ``request.read()`` has its own 1 MiB cap. aiohttp's stream
    pauses the socket when its buffer is full, so no more than ``limit`` plus one read
    buffer is ever held.
    """
    length = request.content_length
    if length is not None:
        return await request.content.readexactly(length)
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


class RPCTransport(Protocol):
    """How :class:`PeerRPCClient` moves bytes: POST ``body`` to ``url``, get (status, body).

    The default is a small keep-alive HTTP/1.1 client (``_fasthttp``), and
    :class:`grenex.grenache.fakes.FakeNetwork`
    provides an in-memory one. Raise :class:`TransportError` / :class:`RequestTimeoutError`.
    """

    async def post(
        self,
        url: str,
        body: bytes,
        *,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        peer: str = "",
    ) -> tuple[int, bytes]: ...

    async def close(self) -> None: ...


class PeerRPCClient(PeerClientBase):
    """HTTP RPC client: ``await client.request(name, payload)``, ``await client.map(...)``.

    See :class:`PeerClientBase` for peer choice and retries. ``connections_max`` bounds the
    keep-alive pool; ``reply_bytes_max`` bounds a reply (after gunzip too).

    TLS: ``ssl_context`` for every request, or ``ssl_for(name)`` for a context per service
    name (None: plain HTTP for that name), e.g. a
    :func:`~grenex.grenache.tls.pinned_client_context` pinning the certificate expected for
    the name. A peer that fails authentication is skipped for that name for
    ``untrusted_peer_ms`` and the next announced peer is tried.
    """

    def __init__(
        self,
        link: Link,
        *,
        ssl_context: ssl.SSLContext | None = None,
        ssl_for: Callable[[str], ssl.SSLContext | None] | None = None,
        request_timeout_ms: int = 10_000,
        attempts_max: int = 3,
        dead_peer_ms: int = 5_000,
        untrusted_peer_ms: int = 30_000,
        connections_max: int = 256,
        reply_bytes_max: int = 16 * 1024 * 1024,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        transport: RPCTransport | None = None,
    ) -> None:
        super().__init__(
            link,
            request_timeout_ms=request_timeout_ms,
            attempts_max=attempts_max,
            dead_peer_ms=dead_peer_ms,
            untrusted_peer_ms=untrusted_peer_ms,
            rng=rng,
            clock=clock,
        )
        self.reply_bytes_max = reply_bytes_max
        if transport is not None and ssl_for is not None:
            raise ValueError("ssl_for needs the built-in transport (a custom one does its own TLS)")
        self._fast: FastHttpTransport | None = None
        self._poster: RPCTransport
        if transport is None:
            self._fast = FastHttpTransport(
                connections_max=connections_max,
                ssl_context=ssl_context,
                reply_bytes_max=reply_bytes_max,
            )
            self._poster = self._fast
        else:
            self._poster = transport
        self._ssl_for = ssl_for
        self.gate_first = ssl_for is not None or ssl_context is not None
        self._prefix = "https://" if ssl_context is not None else "http://"

    async def _exchange(
        self, dest: str, rid: str, key: str, payload: Json, *, compress: bool, timeout_s: float
    ) -> Json:
        body = encode_request(rid, key, payload)
        if compress:
            body = gzip(body)
        if self._ssl_for is not None and self._fast is not None:
            ctx = self._ssl_for(key)
            status, data = await self._fast.post(
                ("https://" if ctx is not None else "http://") + dest + "/",
                body,
                timeout_s=timeout_s,
                headers=_GZIP if compress else _NO_GZIP,
                peer=dest,
                ssl_context=ctx,
                name=key,
            )
        else:
            status, data = await self._poster.post(
                self._prefix + dest + "/",
                body,
                timeout_s=timeout_s,
                headers=_GZIP if compress else _NO_GZIP,
                peer=dest,
            )
        if status < 200 or status >= 300:
            text = data[:1000].decode("utf-8", "replace")
            raise TransportError(f"ERR_REQUEST_GENERIC: {text}", peer=dest, status=status)
        if compress:
            try:
                data = gunzip_bounded(data, self.reply_bytes_max)
            except ValueError as exc:
                raise ReplyError(
                    f"ERR_REPLY_ENCODING_COMPRESSION: {exc}",
                    code="ERR_REPLY_ENCODING_COMPRESSION",
                    peer=dest,
                ) from None
        return decode_reply(data, rid, peer=dest)

    async def close(self) -> None:
        await self._poster.close()


def server_ssl_context(
    *,
    cert: str | Path,
    key: str | Path,
    ca: str | Path | None = None,
    require_client_cert: bool = True,
) -> ssl.SSLContext:
    """A server context; with ``ca``, client certificates signed by it are required
    (mutual TLS, as grenache-nodejs-http's ``secure: {requestCert, rejectUnauthorized}``)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    if ca is not None:
        ctx.load_verify_locations(str(ca))
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_ssl_context(
    *,
    ca: str | Path | None = None,
    cert: str | Path | None = None,
    key: str | Path | None = None,
    check_hostname: bool = False,
) -> ssl.SSLContext:
    """A client context that verifies the server against ``ca`` and presents ``cert``.

    Peers are addressed by IP from the DHT, so the host name is not checked by default: the
    CA is the trust anchor, as with Node's ``secure`` option.
    """
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(ca) if ca is not None else None
    )
    ctx.check_hostname = check_hostname
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key is not None else None)
    return ctx
