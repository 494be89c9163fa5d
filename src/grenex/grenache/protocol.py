"""Sans-IO Grenache protocol: bytes in, values or errors out; no sockets, no clocks.

Theory of operation
-------------------
Grenache peer RPC has one frame shape in each direction, on both transports:

* request ``[rid, key, payload]``: ``rid`` a uuid4 string chosen by the client, ``key`` the
  service name the client looked up, ``payload`` any JSON value;
* reply ``[rid, err, result]``: ``err`` is null or the error *message* (a string).

Over HTTP the body may be gzip-compressed; the header ``grc-compress`` says so (``gzip`` or
``none``) and a server compresses its reply whenever the request header contains ``gzip``.

The Grape HTTP API wraps every call as ``{"rid": uuid4, "data": ...}`` and answers HTTP 200
even for errors, so a reply is classified *by its JSON type*: lookup → list, announce → int,
put → 40-hex string, get → object or empty body; any other string is an error
(:class:`~grenex.grenache.errors.GrapeError`).

Everything a peer sends is untrusted: decoding is bounded (decompressed size, JSON nesting via
msgspec's recursion limit) and every failure becomes a :class:`GrenacheError`, never a crash.
"""

from __future__ import annotations

import re
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from grenex.grenache.errors import GrapeError, ProtocolError, RemoteError, ReplyError

__all__ = [
    "GRAPE_ENDPOINTS",
    "HEADER_COMPRESS",
    "GetResult",
    "Request",
    "check_reply",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
    "grape_body",
    "gunzip_bounded",
    "gzip",
    "new_rid",
    "parse_announce",
    "parse_get",
    "parse_lookup",
    "parse_put",
    "parse_reply",
    "split_dest",
    "validate_port",
    "wants_gzip",
]

Json = Any
"""Any value that msgspec can encode as JSON (decoded values are dict/list/str/int/float/...)."""

HEADER_COMPRESS: Final = "grc-compress"
GRAPE_ENDPOINTS: Final = ("announce", "lookup", "put", "get")

# A fixed, stateless encoder/decoder pair: msgspec is several times faster than the stdlib and
# its decoder bounds nesting depth (deep input raises RecursionError, which we translate).
_encode = msgspec.json.encode
_decode = msgspec.json.decode
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_GZIP_LEVEL: Final = 6  # zlib's default, as Node's zlib.gzip uses


def new_rid() -> str:
    """A fresh request id: a uuid4 string, as the Node.js peers use."""
    return str(uuid.uuid4())


# --------------------------------------------------------------------------------- compression


def wants_gzip(header_value: str | None) -> bool:
    """Node's rule: compressed when the ``grc-compress`` header *contains* ``gzip``."""
    return header_value is not None and "gzip" in header_value


def gzip(data: bytes) -> bytes:
    """gzip-compress ``data`` (a gzip member, readable by Node's ``zlib.gunzip``)."""
    c = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def gunzip_bounded(data: bytes, bytes_max: int) -> bytes:
    """Decompress a gzip body, refusing to produce more than ``bytes_max`` (gzip bombs).

    Raises ValueError on corrupt, truncated or oversize input.
    """
    d = zlib.decompressobj(31)
    try:
        out = d.decompress(data, bytes_max + 1)
    except zlib.error as exc:
        raise ValueError(f"corrupt gzip body: {exc}") from None
    if len(out) > bytes_max:
        raise ValueError(f"decompressed body exceeds {bytes_max} bytes")
    if not d.eof:
        raise ValueError("truncated gzip body")
    return out


# ------------------------------------------------------------------------------- RPC framing


@dataclass(frozen=True, slots=True)
class Request:
    """One decoded RPC request. ``rid`` is echoed back as received (usually a str)."""

    rid: Json
    key: str
    payload: Json


def encode_request(rid: str, key: str, payload: Json) -> bytes:
    """The request frame ``[rid, key, payload]`` as JSON bytes.

    Raises TypeError if the payload is not JSON-encodable.
    """
    try:
        return _encode([rid, key, payload])
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"payload is not JSON-encodable: {exc}") from None


def decode_request(body: bytes | str, *, decode: Callable[[bytes | str], Any] = _decode) -> Request:
    """Parse a request frame.

    ``decode`` is the JSON decoder (a server may pass one that keeps numbers exact, e.g.
    ``msgspec.json.Decoder(float_hook=...).decode``).
    Raises :class:`ProtocolError`. Its ``rid`` attribute is the request id when one could be
    read (so the server can still answer that request with an error), else None.
    """
    try:
        data = decode(body)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"ERR_REQUEST_INVALID: body is not JSON ({exc})") from None
    if not isinstance(data, list) or not data:
        raise ProtocolError("ERR_REQUEST_INVALID: body is not a [rid,key,payload] array")
    rid = data[0]
    if not isinstance(rid, str) or not rid:
        raise ProtocolError("ERR_REQUEST_INVALID: rid is not a non-empty string")
    key = data[1] if len(data) > 1 else None
    if not isinstance(key, str):
        raise ProtocolError("ERR_REQUEST_INVALID: key is not a string", rid=rid)
    return Request(rid, key, data[2] if len(data) > 2 else None)


def encode_reply(rid: Json, err: str | None, result: Json) -> bytes:
    """The reply frame ``[rid, err, result]``.

    If ``result`` cannot be encoded, the reply carries the error ``ERR_REPLY_ENCODE`` instead,
    so a server always has something to send.
    """
    try:
        return _encode([rid, err, result])
    except (TypeError, ValueError, OverflowError) as exc:
        return _encode([rid, f"ERR_REPLY_ENCODE: {exc}", None])


def parse_reply(body: bytes | str, *, peer: str = "") -> list[Json]:
    """Decode a reply frame into a non-empty list (not yet checked against a rid).

    Raises :class:`ReplyError` ``ERR_REPLY_EMPTY`` for anything that is not a JSON array, as
    Node's client does.
    """
    try:
        data = _decode(body)
    except (ValueError, RecursionError):
        raise ReplyError("ERR_REPLY_EMPTY", peer=peer) from None
    if not isinstance(data, list) or not data:
        raise ReplyError("ERR_REPLY_EMPTY", peer=peer)
    return data


def check_reply(data: list[Json], rid: str, *, peer: str = "") -> Json:
    """Check a parsed reply against our request id; return its result or raise.

    * another rid → :class:`ReplyError` ``ERR_REPLY_RID_MISMATCH`` (Node would wait forever);
    * a non-null error → :class:`RemoteError` with the message and the result.
    """
    if data[0] != rid:
        raise ReplyError(
            f"ERR_REPLY_RID_MISMATCH: expected {rid!r}, got {data[0]!r}"[:300],
            code="ERR_REPLY_RID_MISMATCH",
            peer=peer,
        )
    err = data[1] if len(data) > 1 else None
    result = data[2] if len(data) > 2 else None
    if err is not None and err != "" and err is not False:
        # Node turns a non-string error into "[object Object]"; JSON text is more useful.
        message = err if isinstance(err, str) else _encode(err).decode()
        raise RemoteError(message, result, peer=peer)
    return result


def decode_reply(body: bytes | str, rid: str, *, peer: str = "") -> Json:
    """:func:`parse_reply` then :func:`check_reply`."""
    return check_reply(parse_reply(body, peer=peer), rid, peer=peer)


def split_dest(dest: str) -> tuple[str, int]:
    """Split an ``"ip:port"`` lookup entry. Raises ValueError if it is not one."""
    host, sep, port_text = dest.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"not an ip:port destination: {dest!r}")
    port = int(port_text)
    validate_port(port)
    return host, port


def validate_port(port: int) -> int:
    """Ports outside 1..65535 crash a Grape started with ``-b``: refuse them here."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
    return port


# ---------------------------------------------------------------------------- Grape HTTP API


@dataclass(frozen=True, slots=True)
class GetResult:
    """A value found by ``get``: ``v`` the value, ``id`` the answering DHT node (40-hex),
    ``token`` null when it came from the Grape's own store."""

    v: Json
    id: str | None
    token: str | None


def grape_body(data: Json) -> bytes:
    """The request body of every Grape API call."""
    return _encode({"rid": new_rid(), "data": data})


def _grape_json(status: int, body: bytes, grape: str) -> Json:
    """Decode a Grape answer; non-2xx and non-JSON bodies become :class:`GrapeError`."""
    if not 200 <= status < 300:
        text = body.decode("utf-8", "replace").strip()[:200] or f"HTTP {status}"
        raise GrapeError(text, grape=grape)
    if not body.strip():
        return None
    try:
        return _decode(body)
    except (ValueError, RecursionError):
        text = body.decode("utf-8", "replace").strip()[:200]
        raise GrapeError(
            f"ERR_GRAPE_REPLY_INVALID: {text}", code="ERR_GRAPE_REPLY_INVALID", grape=grape
        ) from None


def _grape_error(value: Json, grape: str, what: str) -> GrapeError:
    if isinstance(value, str):
        return GrapeError(value, grape=grape)
    return GrapeError(
        f"ERR_GRAPE_REPLY_INVALID: unexpected {what} reply {value!r}"[:200],
        code="ERR_GRAPE_REPLY_INVALID",
        grape=grape,
    )


def parse_announce(status: int, body: bytes, grape: str = "") -> int:
    """``/announce`` → the number of DHT nodes that stored the announcement."""
    value = _grape_json(status, body, grape)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _grape_error(value, grape, "announce")


def parse_lookup(status: int, body: bytes, grape: str = "") -> list[str]:
    """``/lookup`` → ``["ip:port", ...]`` (possibly empty); malformed entries are dropped."""
    value = _grape_json(status, body, grape)
    if isinstance(value, list):
        out: list[str] = []
        for entry in value:
            if isinstance(entry, str):
                try:
                    split_dest(entry)
                except ValueError:
                    continue
                out.append(entry)
        return out
    raise _grape_error(value, grape, "lookup")


def parse_put(status: int, body: bytes, grape: str = "") -> str:
    """``/put`` → the 40-hex hash of the stored item."""
    value = _grape_json(status, body, grape)
    if isinstance(value, str) and _HEX40.match(value):
        return value
    raise _grape_error(value, grape, "put")


def parse_get(status: int, body: bytes, grape: str = "") -> GetResult | None:
    """``/get`` → the item, or None for a miss (the Grape sends an empty body)."""
    value = _grape_json(status, body, grape)
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        node = value.get("id")
        token = value.get("token")
        return GetResult(
            v=value.get("v"),
            id=node if isinstance(node, str) else None,
            token=token if isinstance(token, str) else None,
        )
    raise _grape_error(value, grape, "get")
