"""grenex.grenache: a standalone asyncio Grenache library, wire-compatible with Node.js Grenache.

* :class:`Link` — the Grape HTTP API (announce, lookup, put, get), several Grapes with
  fail-over, background re-announce, a lookup cache that never caches empty results.
* :class:`PeerRPCServer` / :class:`PeerRPCClient` — peer RPC over HTTP (grenache-nodejs-http);
  the server also accepts WebSocket RPC on the same port.
* :class:`WsPeerRPCClient`, :class:`PeerPub`, :class:`PeerSub` — the WebSocket transport
  (grenache-nodejs-ws); our subscriber reconnects to another publisher.
* :mod:`grenex.grenache.fakes` — in-memory Grape and network for tests;
  :mod:`grenex.grenache.testing` — real Grape processes for tests.

It imports nothing else from grenex. See docs/grenache.md.
"""

from grenex.grenache._core import Handler, PeerReply
from grenex.grenache.errors import (
    GrapeError,
    GrapeUnavailableError,
    GrenacheError,
    LookupEmptyError,
    ProtocolError,
    RemoteError,
    ReplyError,
    RequestTimeoutError,
    TransportError,
)
from grenex.grenache.http import (
    PeerRPCClient,
    PeerRPCServer,
    client_ssl_context,
    server_ssl_context,
)
from grenex.grenache.link import DEFAULT_GRAPE, Link, default_grapes
from grenex.grenache.protocol import GetResult, Json
from grenex.grenache.ws import PeerPub, PeerSub, WsPeerRPCClient

__all__ = [
    "DEFAULT_GRAPE",
    "GetResult",
    "GrapeError",
    "GrapeUnavailableError",
    "GrenacheError",
    "Handler",
    "Json",
    "Link",
    "LookupEmptyError",
    "PeerPub",
    "PeerRPCClient",
    "PeerRPCServer",
    "PeerReply",
    "PeerSub",
    "ProtocolError",
    "RemoteError",
    "ReplyError",
    "RequestTimeoutError",
    "TransportError",
    "WsPeerRPCClient",
    "client_ssl_context",
    "default_grapes",
    "server_ssl_context",
]
