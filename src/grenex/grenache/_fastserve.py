"""The server side of Grenache HTTP RPC and of streams, on a plain asyncio Protocol.

Why: a client API answers one small POST per order, and the consensus streams deliver a frame
per message; aiohttp's server spends ~50 µs of interpreter time per request here (its request,
response, header and stream objects, a deadline timer armed and cancelled per request) and a
task switch per WebSocket frame. This front serves the common case itself (~15 µs per request,
measured by ``benchmarks/http_server_bench.py``) and hands everything else to aiohttp.

Theory of operation
-------------------
One :class:`Front` per accepted connection (after the TLS handshake, which the listening
server bounds). It is counted against the server's :class:`~grenex.grenache._limits.
ConnectionLimits` as aiohttp's connections are (refused at once with ``503 ERR_SERVICE_BUSY``
beyond a cap), and reads request heads itself:

* **RPC request** (any method, any path, ``Content-Length`` or no body, HTTP/1.0 or 1.1, no
  ``Transfer-Encoding``, ``Upgrade`` or ``Expect``): the body is read up to ``body_bytes_max``
  (a larger ``Content-Length`` gets ``413`` at once, the rest of the body is read and thrown
  away for at most a second so that the client sees the answer, and the connection is
  closed), the request goes to :func:`~grenex.grenache._core.http_exchange` in a task of its
  own, and the reply is written with ``Content-Length``. One request at a time per connection,
  as aiohttp does: bytes of the next (pipelined) request wait in the buffer, and reading pauses
  while they pass a bound; while the socket's write buffer is above its high-water mark (a
  client that does not read its replies) no further request is answered. HTTP/1.0 without
  ``keep-alive`` and ``Connection: close`` close the connection after the reply.
* **Stream upgrade** (a WebSocket upgrade on a path in ``upgrades``): the handshake is answered
  here and every binary frame is handed to the stream's handler from ``data_received``, with
  no task and no copy beyond the unmasking (RFC 6455: frames from a client must be masked;
  fragmented, text and oversized frames close the stream; pings are answered; a ping goes
  out every ``heartbeat_ms`` and a stream that sent nothing in the period after a ping is
  closed; a handler that raises closes it with 1008, as before; a close frame is answered
  and, after ours, the client's answer awaited for at most a second).
* **WS RPC upgrade** (a WebSocket upgrade on any other path, when the server takes WS RPC):
  answered here too; each text or binary frame (fragments reassembled, at most
  ``body_bytes_max`` in all) is one Grenache request ``[rid, key, payload]`` answered by its
  own task with one text frame ``[rid, err, result]``, in any order, as
  :func:`~grenex.grenache.ws.serve_ws_rpc` answers them. At most ``ws_inflight_max`` are
  answered at once per socket; beyond that, and while the client does not read its replies,
  the front stops reading the socket (backpressure, not a queue). Replies finished in the same
  turn of the loop go out in one write. Pings, the heartbeat and closing as for streams.
* **Anything else** (a chunked body, ``Expect``, an upgrade nothing here takes): the
  connection is handed, with the bytes read so far, to aiohttp's connection protocol
  (:class:`~grenex.grenache._limits.LimitedServer`), which serves it from then on exactly as
  it served every connection before.

A malformed head gets ``400`` and the connection is closed; a head larger than
:data:`HEAD_BYTES_MAX` too. Deadlines, as with aiohttp: a request's head and body must arrive
within ``body_read_timeout_ms`` of its first byte (else the connection is closed and
``limits.expired`` counts it); an idle keep-alive connection is closed after
``keepalive_timeout_ms``. One timer per connection serves both (re-armed for what remains,
never armed and cancelled per request).

TLS: with a :class:`~grenex.grenache.tls.ServerTLS` the peer's certificate is read once per
connection and checked against the *current* anchors on every request (``403``, closed, when
they no longer admit it), as aiohttp's handler did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final, cast

from grenex.grenache._core import ServiceCore, http_exchange
from grenex.grenache._limits import ConnectionLimits
from grenex.grenache.errors import ProtocolError
from grenex.grenache.protocol import encode_reply, wants_gzip
from grenex.grenache.stream import CLOSE_POLICY, accept_key, frame_length, mask, server_frame
from grenex.grenache.tls import PeerCert, ServerTLS, peer_cert

if TYPE_CHECKING:
    from grenex.grenache.stream import FrameHandler, StreamOpen

__all__ = ["HEAD_BYTES_MAX", "Front", "FrontConfig"]

log = logging.getLogger("grenex.grenache.fastserve")

HEAD_BYTES_MAX: Final = 32 * 1024  # a request's line and headers
LINE_BYTES_MAX: Final = 8190  # one line of them (aiohttp's limit)
LINGER_S: Final = 1.0  # reading the unread rest of a refused body, at most
_CLOSE_PROTOCOL: Final = 1002
_CLOSE_UNSUPPORTED: Final = 1003
_CLOSE_TOO_BIG: Final = 1009

_REASONS: Final = {
    200: b"OK",
    400: b"Bad Request",
    403: b"Forbidden",
    413: b"Request Entity Too Large",
    503: b"Service Unavailable",
}


class FrontConfig:
    """What every connection of one server shares."""

    __slots__ = (
        "body_bytes_max",
        "connections",
        "core",
        "fallback",
        "heartbeat_s",
        "keepalive_s",
        "limits",
        "loop",
        "read_timeout_s",
        "stopped",
        "tasks",
        "tls",
        "upgrades",
        "ws_inflight_max",
        "ws_rpc",
    )

    def __init__(
        self,
        *,
        core: ServiceCore,
        limits: ConnectionLimits,
        body_bytes_max: int,
        keepalive_s: float,
        heartbeat_s: float,
        tls: ServerTLS | None,
        upgrades: Mapping[str, StreamOpen],
        fallback: Callable[[], asyncio.Protocol],
        ws_rpc: bool = False,
        ws_inflight_max: int = 256,
    ) -> None:
        self.core = core
        self.ws_rpc = ws_rpc  # answer WS RPC upgrades (on any path no stream takes)
        self.ws_inflight_max = ws_inflight_max
        self.limits = limits
        self.body_bytes_max = body_bytes_max
        self.keepalive_s = keepalive_s
        self.read_timeout_s = limits.body_read_timeout_ms / 1000
        self.heartbeat_s = heartbeat_s
        self.tls = tls
        self.upgrades = upgrades
        self.fallback = fallback  # aiohttp's connection protocol, for what the front hands off
        self.loop = asyncio.get_running_loop()
        self.connections: set[Front] = set()  # open and served here (not handed off)
        self.tasks: set[asyncio.Task[None]] = set()  # requests being answered
        self.stopped = False  # the server stopped: a connection made now is closed at once


def _response(status: int, body: bytes, *, close: bool, ctype: bytes = b"text/plain") -> bytes:
    head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (
        status,
        _REASONS.get(status, b"Error"),
        ctype,
        len(body),
    )
    if close:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + body


class _BadHeadError(Exception):
    pass


class Front(asyncio.Protocol):
    """One connection (see the module docstring)."""

    def __init__(self, cfg: FrontConfig) -> None:
        self.cfg = cfg
        self.transport: asyncio.Transport | None = None
        self.address: str | None = None  # set once admitted
        self.buf = bytearray()
        self.peer: PeerCert | None = None
        self.busy = False  # a request is being answered
        self.closing = False  # close once the current reply is written
        self.paused = False  # reading paused: the buffer holds a request and more
        self.write_paused = False  # the client does not read: its replies fill our buffer
        self.started: float | None = None  # when the pending request's first byte came
        self.idle_since = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0  # when it fires
        self.discard = 0  # bytes of a refused body still to read and throw away
        self.on_frame: FrameHandler | None = None  # set once upgraded to a stream
        self.ws_closing = False  # a close frame sent: waiting for the client's own
        self.heard = 0  # data_received calls (a stream's evidence of life)
        self.heard_at_beat = -1
        # WS RPC (upgraded; on_frame is then self._rpc_frame)
        self.rpc = False
        self.inflight = 0  # requests of this socket being answered
        self.frag: bytearray | None = None  # a fragmented message being reassembled
        self.frag_op = 0
        self.out: list[bytes] = []  # replies waiting for the end of this turn of the loop

    # ------------------------------------------------------------------------------ protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t = cast(asyncio.Transport, transport)  # uvloop's transports have the interface
        if self.cfg.stopped:  # a TLS handshake that finished after stop()
            t.abort()
            return
        name = t.get_extra_info("peername")
        address = str(name[0]) if isinstance(name, tuple) and name else ""
        refusal = self.cfg.limits.admit(address)
        if refusal is not None:
            t.write(refusal)
            t.close()
            return
        self.transport = t
        self.address = address
        if self.cfg.tls is not None:
            self.peer = peer_cert(t.get_extra_info("ssl_object"))
        self.cfg.connections.add(self)
        now = self.cfg.loop.time()
        self.started = now  # the first request's deadline runs from the connection
        self.idle_since = now
        self._arm(self.cfg.read_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        self.heard += 1
        if self.on_frame is not None or self.ws_closing:
            self.buf += data
            self._frames()
            return
        if self.discard:
            n = min(self.discard, len(data))
            self.discard -= n
            if not self.discard:
                self._close()
            return
        if self.closing:
            return
        if not self.buf and self.started is None:
            self.started = self.cfg.loop.time()
        self.buf += data
        if not self.busy and not self.write_paused:
            self._next()
        elif len(self.buf) > HEAD_BYTES_MAX + self.cfg.body_bytes_max and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def pause_writing(self) -> None:
        # The client does not read its replies: answer nothing more until it does (the
        # requests it goes on sending wait in the buffer, and reading pauses at its bound).
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        t = self.transport
        if t is not None and self.rpc:
            self._rpc_resume()
            return
        if t is None or self.on_frame is not None or self.closing or self.busy:
            return
        if self.paused:
            self.paused = False
            t.resume_reading()
        if self.buf:
            self._next()

    # ------------------------------------------------------------------------------- helpers

    def _release(self) -> None:
        if self.address is not None:
            self.cfg.limits.release(self.address)
            self.address = None
        self.cfg.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.transport = None
        self.on_frame = None

    def _arm(self, after_s: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        after_s = max(0.01, after_s)
        self.timer_at = self.cfg.loop.time() + after_s
        self.timer = self.cfg.loop.call_later(after_s, self._tick)

    def _tick(self) -> None:
        self.timer = None
        if self.transport is None:
            return
        cfg = self.cfg
        if self.on_frame is not None:
            self._beat()
            return
        now = cfg.loop.time()
        if self.discard or self.ws_closing:  # lingering after a 413 or a close: LINGER_S
            self._abort()
            return
        if self.started is not None and not self.busy:
            left = self.started + cfg.read_timeout_s - now
            if left <= 0:
                cfg.limits.expired += 1
                self._abort()
                return
            self._arm(left)
            return
        if self.busy:
            self._arm(cfg.read_timeout_s)
            return
        left = self.idle_since + cfg.keepalive_s - now
        if left <= 0:
            self._close()
            return
        self._arm(left)

    def _write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(data)

    def _close(self) -> None:
        t = self.transport
        if t is not None:
            t.close()

    def _abort(self) -> None:
        t = self.transport
        if t is not None:
            with contextlib.suppress(AttributeError, RuntimeError):
                t.abort()
            self._release()

    def _refuse(self, status: int, text: str) -> None:
        """Answer ``status`` and close: nothing more is read from this connection."""
        self._write(_response(status, text.encode(), close=True))
        self.closing = True
        self.buf.clear()
        self._close()

    # ------------------------------------------------------------------------------ requests

    def _next(self) -> None:
        """Start the next complete request in the buffer, if there is one."""
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0 and len(buf) <= HEAD_BYTES_MAX:
            return  # the head is on its way
        if end < 0 or end > HEAD_BYTES_MAX:
            self._refuse(400, "ERR_REQUEST_INVALID: request head too large")
            return
        try:
            lines = bytes(buf[:end]).split(b"\r\n")
            parts = lines[0].split(b" ")
            if len(parts) != 3 or not parts[0] or not parts[1]:
                raise _BadHeadError("bad request line")
            version = parts[2]
            if version == b"HTTP/1.1":
                keep_alive = True
            elif version == b"HTTP/1.0":
                keep_alive = False
            else:
                raise _BadHeadError("unsupported HTTP version")
            length = 0
            seen_length = False
            compress = False
            hand_off = False
            upgrade = connection = ws_key = ws_version = b""
            for line in lines[1:]:
                if len(line) > LINE_BYTES_MAX:
                    raise _BadHeadError("header line too long")
                name, sep, value = line.partition(b":")
                if not sep or not name or name[-1:] in b" \t" or name[0:1] in b" \t":
                    raise _BadHeadError("malformed header")
                name = name.lower()
                if name == b"content-length":
                    value = value.strip()
                    if not value.isdigit() or len(value) > 18:
                        raise _BadHeadError("bad Content-Length")
                    n = int(value)
                    if seen_length and n != length:
                        raise _BadHeadError("conflicting Content-Length")
                    length, seen_length = n, True
                elif name == b"connection":
                    connection = value.lower()
                    if b"close" in connection:
                        keep_alive = False
                    elif b"keep-alive" in connection:
                        keep_alive = True
                elif name == b"grc-compress":
                    compress = wants_gzip(value.decode("latin-1"))
                elif name == b"upgrade":
                    upgrade = value.strip().lower()
                    hand_off = True
                elif name in (b"transfer-encoding", b"expect"):
                    hand_off = True
                elif name == b"sec-websocket-key":
                    ws_key = value.strip()
                elif name == b"sec-websocket-version":
                    ws_version = value.strip()
        except _BadHeadError as exc:
            self._refuse(400, f"ERR_REQUEST_INVALID: {exc}")
            return
        if upgrade == b"websocket":
            on_open = self.cfg.upgrades.get(parts[1].decode("latin-1"))
            if on_open is not None:
                self._upgrade_stream(on_open, ws_key, ws_version, connection, end)
                return
            if self.cfg.ws_rpc:
                self._upgrade_rpc(ws_key, ws_version, connection, end)
                return
        if hand_off:
            self._hand_off()
            return
        if not self._admitted():
            return
        if length > self.cfg.body_bytes_max:
            self._write(_response(413, b"ERR_REQUEST_TOO_LARGE: %d bytes" % length, close=True))
            self.closing = True
            have = len(buf) - end - 4
            self.buf.clear()
            self.discard = length - have
            if self.discard <= 0:
                self.discard = 0
                self._close()
            else:
                self._arm(LINGER_S)
            return
        total = end + 4 + length
        if len(buf) < total:
            return  # the body is on its way
        body = bytes(buf[end + 4 : total])
        del buf[:total]
        self.started = self.cfg.loop.time() if buf else None  # the next request's clock
        self.busy = True
        cfg = self.cfg
        task = cfg.loop.create_task(self._answer(body, compress, keep_alive))
        cfg.tasks.add(task)
        task.add_done_callback(cfg.tasks.discard)

    def _admitted(self) -> bool:
        tls = self.cfg.tls
        if tls is None or tls.anchors is None:
            return True
        if tls.admits(self.peer.der if self.peer is not None else None):
            return True
        tls.refused += 1
        self._refuse(403, "ERR_PEER_AUTH: certificate not admitted")
        return False

    async def _answer(self, body: bytes, compress: bool, keep_alive: bool) -> None:
        cfg = self.cfg
        try:
            status, reply = await http_exchange(
                cfg.core, body, compress, cfg.body_bytes_max, self.peer
            )
        except Exception:  # never expected: http_exchange answers every failure itself
            log.exception("an RPC request failed unanswered")
            status, reply = 500, b"ERR_REQUEST_GENERIC: internal error"
        close = not keep_alive or status == 413
        if status == 200:
            self._write(_response(200, reply, close=close, ctype=b"application/json"))
        else:
            self._write(_response(status, reply, close=close))
        self.busy = False
        if self.transport is None:
            return
        if close:
            self.closing = True
            self._close()
            return
        now = cfg.loop.time()
        self.idle_since = now
        if now + cfg.keepalive_s < self.timer_at:  # a keep-alive shorter than the deadline
            self._arm(cfg.keepalive_s)
        if self.write_paused:
            return  # resume_writing goes on
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        if self.buf:
            self._next()

    # ----------------------------------------------------------------------------- hand-off

    def _hand_off(self) -> None:
        """From now on aiohttp serves this connection, starting with the bytes read so far."""
        t = self.transport
        if t is None:
            return
        data = bytes(self.buf)
        self.buf.clear()
        self._release()  # the handler counts the connection in again
        proto = self.cfg.fallback()
        t.set_protocol(proto)
        proto.connection_made(t)
        if data and not t.is_closing():
            proto.data_received(data)

    # ------------------------------------------------------------------------------- streams

    def _upgrade_stream(
        self, on_open: StreamOpen, key: bytes, version: bytes, connection: bytes, end: int
    ) -> None:
        if not self._upgradable(key, version, connection):
            return
        on_frame = on_open(self.peer)
        if on_frame is None:
            self._refuse(403, "ERR_GRENEX_NOT_ALLOWED: not a member's stream")
            return
        self._switch(on_frame, key, end)

    def _upgrade_rpc(self, key: bytes, version: bytes, connection: bytes, end: int) -> None:
        if self._upgradable(key, version, connection):
            self.rpc = True
            self._switch(self._rpc_frame, key, end)

    def _upgradable(self, key: bytes, version: bytes, connection: bytes) -> bool:
        if not self._admitted():
            return False
        if not key or version != b"13" or b"upgrade" not in connection:
            self._refuse(400, "ERR_REQUEST_INVALID: not a WebSocket upgrade")
            return False
        return True

    def _switch(self, on_frame: FrameHandler, key: bytes, end: int) -> None:
        """Answer the upgrade; frames from now on (those read already are handled now)."""
        del self.buf[: end + 4]
        self._write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept_key(key)
        )
        self.on_frame = on_frame
        self.started = None
        self.heard_at_beat = -1  # the first beat only pings
        self._arm(self.cfg.heartbeat_s)
        if self.buf:
            self._frames()

    def _close_stream(self, code: int, why: str) -> None:
        """Send a close frame; the connection ends when the client answers it, or after
        :data:`LINGER_S` (closing at once would lose the code on the client's side)."""
        self._flush()
        self._write(server_frame(0x8, struct.pack("!H", code) + why.encode()[:120]))
        self.on_frame = None
        self.ws_closing = True
        self.frag = None
        self.buf.clear()
        self._arm(LINGER_S)

    def _frames(self) -> None:
        buf = self.buf
        limit = self.cfg.body_bytes_max
        pos = 0  # frames before it are handled; cut from the buffer once, at the end
        while self.on_frame is not None or self.ws_closing:
            head = frame_length(buf, pos)
            if head is None:
                break
            if self.rpc and not self.ws_closing and self._rpc_full():
                break  # answering as many as allowed, or the client does not read
            b0, b1 = buf[pos], buf[pos + 1]
            n, off = head
            have = len(buf) - pos
            if self.ws_closing and (not b1 & 0x80 or n > limit):
                self._abort()
                return
            if not b1 & 0x80:
                self._close_stream(_CLOSE_PROTOCOL, "frames from a client must be masked")
                return
            if n > limit:
                self._close_stream(_CLOSE_TOO_BIG, f"frame over {limit} bytes")
                return
            start = pos + off + 4
            if have < off + 4 + n:
                break
            key = bytes(buf[pos + off : start])
            payload = buf[start : start + n]
            pos = start + n
            mask(key, payload)
            op = b0 & 0x0F
            if self.ws_closing:  # only the answer to our close matters now
                if op == 0x8:
                    buf.clear()
                    self._close()
                    return
                continue
            if self.rpc and (op < 0x3 or (self.frag is not None and op < 0x8)):
                # WS RPC takes text and binary messages, fragmented or not
                whole = self._rpc_fragment(b0, op, payload)
                if whole is None:
                    if self.on_frame is None:
                        return  # closed for a protocol error
                    continue
                payload, op = whole, 0x2
            elif not b0 & 0x80 or op == 0x0:
                self._close_stream(_CLOSE_UNSUPPORTED, "fragmented frames are not accepted")
                return
            on_frame = self.on_frame
            if op == 0x2 and on_frame is not None:
                try:
                    on_frame(bytes(payload))
                except Exception as exc:  # bad input closes the stream, nothing else
                    log.debug("closing a stream: %s", exc)
                    self._close_stream(CLOSE_POLICY, str(exc))
                    return
            elif op == 0x9:  # ping
                self._write(server_frame(0xA, bytes(payload)))
            elif op == 0x8:  # close: answer it and end
                self._write(server_frame(0x8, bytes(payload[:2])))
                self.on_frame = None
                buf.clear()
                self._close()
                return
            elif op != 0xA:  # text and unknown opcodes end the stream
                self._close_stream(_CLOSE_UNSUPPORTED, "only binary frames")
                return
        if pos:
            del buf[:pos]

    # ------------------------------------------------------------------------------- WS RPC

    def _rpc_fragment(self, b0: int, op: int, payload: bytearray) -> bytearray | None:
        """A data frame of a WS RPC socket: the whole message when it is complete, else None
        (a fragment kept, or the socket closed for a protocol error)."""
        fin = b0 & 0x80
        if op != 0x0:  # text or binary: a message starts
            if self.frag is not None:
                self._close_stream(_CLOSE_PROTOCOL, "a new message inside a fragmented one")
                return None
            if fin:
                return payload
            self.frag = bytearray(payload)
            self.frag_op = op
            return None
        frag = self.frag
        if frag is None:
            self._close_stream(_CLOSE_PROTOCOL, "a continuation frame with nothing to continue")
            return None
        frag += payload
        limit = self.cfg.body_bytes_max
        if len(frag) > limit:
            self._close_stream(_CLOSE_TOO_BIG, f"message over {limit} bytes")
            return None
        if not fin:
            return None
        self.frag = None
        return frag

    def _rpc_full(self) -> bool:
        """True when no further request may start now (stop reading until one may)."""
        full = self.inflight >= self.cfg.ws_inflight_max or self.write_paused or self.closing
        if full and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        return full

    def _rpc_resume(self) -> None:
        if self.transport is None or self.on_frame is None or self._rpc_full():
            return
        if self.paused:
            self.paused = False
            self.transport.resume_reading()
        if self.buf:
            self._frames()

    def _rpc_frame(self, frame: bytes) -> None:
        cfg = self.cfg
        self.inflight += 1
        self.busy = True
        task = cfg.loop.create_task(self._rpc_answer(frame))
        cfg.tasks.add(task)
        task.add_done_callback(cfg.tasks.discard)

    async def _rpc_answer(self, frame: bytes) -> None:
        try:
            reply = await self.cfg.core.reply_to(frame, self.peer)
        except ProtocolError as exc:
            reply = encode_reply(None, exc.message, None)
        except Exception:  # never expected: reply_to answers every failure itself
            log.exception("a WS RPC request failed unanswered")
            reply = encode_reply(None, "ERR_REQUEST_GENERIC: internal error", None)
        finally:
            self.inflight -= 1
            self.busy = self.inflight > 0
        if self.on_frame is None or self.transport is None:
            return  # the socket closed: nobody reads the reply
        if not self.out:
            self.cfg.loop.call_soon(self._flush)
        self.out.append(server_frame(0x1, reply))
        if self.closing:  # the server stops: close once the last answer is out
            if not self.busy:
                self._flush()
                self._close()
            return
        self._rpc_resume()

    def _flush(self) -> None:
        """Write the replies of this turn of the loop in one write."""
        out = self.out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self._write(data)

    def _beat(self) -> None:
        if self.heard == self.heard_at_beat and not self.paused:  # silent for a whole period
            log.debug("closing a silent stream")
            self._abort()
            return
        self.heard_at_beat = self.heard
        self._write(server_frame(0x9, b""))
        self._arm(self.cfg.heartbeat_s)


async def stop_fronts(cfg: FrontConfig, timeout_s: float) -> None:
    """Let requests being answered finish for at most ``timeout_s``, then close everything;
    a connection whose TLS handshake finishes later is closed at once."""
    cfg.stopped = True
    for c in list(cfg.connections):
        if not c.busy:
            c._close()
        c.closing = True
    tasks = list(cfg.tasks)
    if tasks:
        _done, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
    for c in list(cfg.connections):
        c._abort()
