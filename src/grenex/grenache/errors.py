"""The one exception tree of grenex.grenache.

Every operational failure the library reports is a :class:`GrenacheError`. Foreign errors
(aiohttp, OS socket errors, zlib, JSON decoding, the Grape's ``200``-with-an-error-string
replies) are translated into this tree at one boundary each, so callers never need to import
aiohttp to handle a failure.

Each error carries a ``code``: the Grenache error string that a Node.js peer would see or send
for the same situation (``ERR_REQUEST_GENERIC``, ``ERR_TIMEOUT``, ``ERR_GRAPE_LOOKUP_EMPTY`` ...),
so logs and CLI output read the same on both sides.

::

    GrenacheError
    ├── GrapeError              a Grape answered with an error string (code = that string)
    ├── GrapeUnavailableError   no Grape of the list could be reached in time
    ├── LookupEmptyError        the name has no announced peer (ERR_GRAPE_LOOKUP_EMPTY)
    ├── TransportError          a peer could not be reached or broke the exchange
    │   │                       (ERR_REQUEST_GENERIC / ERR_TRANSPORT_CLOSE)
    │   └── RequestTimeoutError the reply did not arrive in time (ERR_TIMEOUT)
    ├── ReplyError              a peer answered with something that is not a valid reply
    ├── ProtocolError           a peer sent us a request that is not a valid request
    └── RemoteError             the peer's handler answered with an error message
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "GrapeError",
    "GrapeUnavailableError",
    "GrenacheError",
    "LookupEmptyError",
    "ProtocolError",
    "RemoteError",
    "ReplyError",
    "RequestTimeoutError",
    "TransportError",
]


def _code_of(message: str) -> str:
    """``"ERR_X: details"`` → ``"ERR_X"``."""
    return message.split(":", maxsplit=1)[0].strip()


class GrenacheError(Exception):
    """Base of every error raised by grenex.grenache."""

    code: str = "ERR_GRENACHE"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class GrapeError(GrenacheError):
    """A Grape answered, but with an error string such as ``"ERR_GRAPE_LOOKUP"``.

    The Grape sends these as HTTP 200 bodies; ``code`` is the string itself, so
    ``"No nodes to query"`` and ``"All queries failed"`` (its DHT has no live node) appear here too.
    """

    code = "ERR_GRAPE"

    def __init__(self, message: str, *, code: str | None = None, grape: str = "") -> None:
        super().__init__(message, code=code if code is not None else message)
        self.grape = grape


class GrapeUnavailableError(GrenacheError):
    """None of the configured Grapes answered within the timeout."""

    code = "ERR_GRAPE_UNAVAILABLE"


class LookupEmptyError(GrenacheError):
    """A lookup found no peer for the name (Node.js: ``ERR_GRAPE_LOOKUP_EMPTY``)."""

    code = "ERR_GRAPE_LOOKUP_EMPTY"

    def __init__(self, name: str) -> None:
        super().__init__(f"ERR_GRAPE_LOOKUP_EMPTY: {name}")
        self.name = name


class TransportError(GrenacheError):
    """A peer could not be reached, or the exchange broke before a reply.

    ``delivered`` tells whether the request may have reached the peer: False only when the
    connection itself could not be made, which makes a retry on another peer always safe.
    ``status`` is the HTTP status when the peer answered with a non-2xx response.
    """

    code = "ERR_REQUEST_GENERIC"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        peer: str = "",
        delivered: bool = True,
        status: int | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.peer = peer
        self.delivered = delivered
        self.status = status


class RequestTimeoutError(TransportError):
    """No reply arrived within the request's timeout."""

    code = "ERR_TIMEOUT"

    def __init__(self, message: str = "ERR_TIMEOUT", *, peer: str = "") -> None:
        super().__init__(message, code="ERR_TIMEOUT", peer=peer, delivered=True)


class ReplyError(GrenacheError):
    """A peer answered with bytes that are not a ``[rid, err, result]`` reply to our request.

    Codes: ``ERR_REPLY_EMPTY`` (not JSON / not an array), ``ERR_REPLY_ENCODING_COMPRESSION``
    (bad gzip), ``ERR_REPLY_RID_MISMATCH`` (the reply is for another request),
    ``ERR_REPLY_TOO_LARGE``.
    """

    code = "ERR_REPLY_EMPTY"

    def __init__(self, message: str, *, code: str | None = None, peer: str = "") -> None:
        super().__init__(
            message, code=code if code is not None else message.split(":", maxsplit=1)[0]
        )
        self.peer = peer


class ProtocolError(GrenacheError):
    """A peer sent a request frame that cannot be served (``ERR_REQUEST_INVALID``).

    ``rid`` is the request id when it could still be read, so the server can answer it.
    """

    code = "ERR_REQUEST_INVALID"

    def __init__(self, message: str, *, rid: str | None = None) -> None:
        super().__init__(message)
        self.rid = rid


class RemoteError(GrenacheError):
    """The peer's handler answered with an error message.

    On the client, ``message`` is the error string of the reply and ``result`` the result that
    came with it (usually None). A server handler may also raise it to send an error together
    with a result; any other exception raised by a handler is sent as its message alone.
    """

    code = "ERR_REMOTE"

    def __init__(self, message: str, result: Any = None, *, peer: str = "") -> None:
        super().__init__(
            message, code=message.split(":", maxsplit=1)[0] if message else "ERR_REMOTE"
        )
        self.result = result
        self.peer = peer
