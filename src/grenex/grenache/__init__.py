"""grenex.grenache: a standalone asyncio Grenache library, wire-compatible with Node.js Grenache.

* :class:`Link` — the Grape HTTP API (announce, lookup, put, get), several Grapes with
  fail-over, background re-announce, a lookup cache that never caches empty results.
* :class:`PeerRPCServer` / :class:`PeerRPCClient` — peer RPC over HTTP (grenache-nodejs-http);
  the server also accepts WebSocket RPC on the same port.
* :class:`WsPeerRPCClient`, :class:`PeerPub`, :class:`PeerSub` — the WebSocket transport
  (grenache-nodejs-ws); our subscriber reconnects to another publisher.
* :mod:`grenex.grenache.tls` — TLS 1.3 with self-signed Ed25519 certificates: pinned
  clients (per service name), mutual TLS with trust anchors replaced at run time.
* :mod:`grenex.grenache.fakes` — in-memory Grape and network for tests;
  :mod:`grenex.grenache.testing` — real Grape processes for tests.

It imports nothing else from grenex. See docs/grenache.md.
"""

from grenex.grenache._core import Handler, PeerHandler, PeerReply
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
from grenex.grenache.tls import (
    PeerAuthError,
    PeerCert,
    PinnedContext,
    Pins,
    ServerTLS,
    TrustAnchors,
    current_peer,
    make_self_signed,
    pinned_client_context,
    server_context,
)
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
    "PeerAuthError",
    "PeerCert",
    "PeerHandler",
    "PeerPub",
    "PeerRPCClient",
    "PeerRPCServer",
    "PeerReply",
    "PeerSub",
    "PinnedContext",
    "Pins",
    "ProtocolError",
    "RemoteError",
    "ReplyError",
    "RequestTimeoutError",
    "ServerTLS",
    "TransportError",
    "TrustAnchors",
    "WsPeerRPCClient",
    "client_ssl_context",
    "current_peer",
    "default_grapes",
    "make_self_signed",
    "pinned_client_context",
    "server_context",
    "server_ssl_context",
]
