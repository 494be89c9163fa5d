"""TLS for Grenache peers: self-signed Ed25519 certificates, pinning, mutual TLS.

Grenache finds peers by name on a DHT where anyone may announce any name, and dials them by
``ip:port``. A name therefore proves nothing, and no host name or CA can be checked. What can
be checked is *who holds which key*: each peer has a self-signed X.509 certificate on its
Ed25519 key (RFC 8410), and whoever dials it pins the certificate (or its key, or its SHA-256
fingerprint) it expects for that name.

Pieces
------
* Certificates: :func:`make_self_signed`, :func:`cert_public_key`, :func:`check_self_signed`,
  :func:`fingerprint`, base64url (:func:`b64url`, :func:`unb64url`) and PEM helpers.
* Server: :func:`server_context` returns a :class:`ServerTLS` (TLS 1.3 only), optionally with
  mutual TLS against a :class:`TrustAnchors` set that can be replaced while the server runs.
  ``PeerRPCServer`` and ``PeerPub`` accept it as ``ssl_context``; handlers learn the peer's
  certificate as a :class:`PeerCert` (``with_peer_cert=True`` or :func:`current_peer`).
* Client: :func:`pinned_client_context` returns a :class:`PinnedContext` (an
  :class:`ssl.SSLContext`) that accepts a server only if it presents a pinned certificate.
  ``PeerRPCClient``/``WsPeerRPCClient`` take ``ssl_for(name)`` to pin per service name;
  ``PeerSub`` takes a pinned ``ssl_context``.

Theory of operation
-------------------
*Certificates are deterministic.* Ed25519 signatures are deterministic, the serial number is
derived from the key, and the validity window is fixed (1970-01-01 to 9999-12-31, RFC 5280's
"no well-defined expiration"): the same seed and name always give the same bytes, so a
certificate can be recomputed from a key file and compared. The window is wide on purpose:
nodes may have skewed clocks, and the identity is the pinned key, not the dates; a member is
revoked by removing its certificate from the pins and trust anchors, not by expiry. The
certificate is not a CA (``basicConstraints CA:FALSE``, key usage ``digitalSignature`` only),
so pinning it as a trust anchor never admits another certificate "issued" by its key.

*Client pinning.* When the pins are certificates, OpenSSL verifies the server's certificate
against exactly those certificates as trust anchors, so an impostor fails inside the
handshake. After every handshake the transport checks again that the presented certificate is
exactly a pinned one (or carries a pinned key, or has a pinned fingerprint): key and
fingerprint pins are only checked there (OpenSSL cannot; the handshake still proves the server
holds the certificate's key, TLS 1.3's CertificateVerify). Nothing is sent before that check.
A failure raises :class:`PeerAuthError` (a :class:`TransportError` with ``delivered=False``):
the client remembers the peer as untrusted *for that name* and tries the next announced one,
so an impostor costs one failed handshake per ``untrusted_peer_ms``, not one per request.

*Server mutual TLS.* The server builds its :class:`ssl.SSLContext` from the current trust
anchors and keeps it until they change. Each accepted TCP connection is upgraded with the
context current *at accept time* (``loop.start_tls``), the peer's exact certificate is checked
against the anchors once more, and only then is the HTTP/WebSocket protocol attached: no byte
from a connection that did not authenticate reaches the application. Session tickets are off
(a resumed session would skip the client-certificate check against the *current* anchors).
Replacing the anchors also closes open connections whose certificate is no longer admitted.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import datetime
import functools
import hashlib
import logging
import os
import ssl
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from grenex.grenache.errors import TransportError

__all__ = [
    "CertificateError",
    "PeerAuthError",
    "PeerCert",
    "PinnedContext",
    "Pins",
    "ServerTLS",
    "TrustAnchors",
    "b64url",
    "cert_pem",
    "cert_public_key",
    "check_self_signed",
    "current_peer",
    "fingerprint",
    "make_self_signed",
    "peer_cert",
    "pinned_client_context",
    "private_key_pem",
    "server_context",
    "unb64url",
]

log = logging.getLogger("grenex.grenache.tls")

NOT_BEFORE: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
NOT_AFTER: Final = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
HANDSHAKE_TIMEOUT_MS: Final = 10_000
_EARLY_BYTES_MAX: Final = 1024 * 1024  # bytes decrypted before the app protocol is attached


class CertificateError(ValueError):
    """Not a usable certificate (not DER X.509, not Ed25519, not validly self-signed)."""


class PeerAuthError(TransportError):
    """The peer did not prove it is the one pinned for this name (``ERR_PEER_AUTH``).

    The TLS handshake failed or the peer presented a certificate that is not pinned. The
    request was not sent (``delivered`` is False), so trying another peer is safe.
    """

    code = "ERR_PEER_AUTH"

    def __init__(self, message: str, *, peer: str = "") -> None:
        super().__init__(message, code="ERR_PEER_AUTH", peer=peer, delivered=False)


# ---------------------------------------------------------------------------- encodings


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 4648 §5)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    """Decode canonical unpadded base64url; ``ValueError`` for anything else."""
    if not isinstance(text, str) or "=" in text or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not unpadded base64url: {exc}") from None
    if b64url(data) != text:
        raise ValueError("not canonical base64url")
    return data


def cert_pem(der: bytes) -> str:
    """PEM text of a DER certificate (for Node's ``ca`` / ``cert`` options)."""
    return ssl.DER_cert_to_PEM_cert(der)


def _private_key(seed32: bytes) -> ed25519.Ed25519PrivateKey:
    if not isinstance(seed32, bytes) or len(seed32) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed32)


def private_key_pem(seed32: bytes) -> bytes:
    """The PKCS#8 PEM private key of an Ed25519 seed (for Node's ``key`` option)."""
    return _private_key(seed32).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# ------------------------------------------------------------------------- certificates


def make_self_signed(seed32: bytes, common_name: str) -> bytes:
    """A self-signed X.509 certificate (DER) on the Ed25519 key of ``seed32``.

    Deterministic: same seed and name, same bytes (see the module notes for the serial and
    the 1970–9999 validity window). ``common_name`` is 1–64 characters, for humans only.
    """
    if not 1 <= len(common_name) <= 64:
        raise ValueError("common_name is 1 to 64 characters")
    key = _private_key(seed32)
    pub = key.public_key()
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    # A positive serial of at most 127 bits from the key (RFC 5280: ≤ 20 octets, positive).
    serial = (int.from_bytes(hashlib.sha256(raw).digest()[:16], "big") >> 1) | 1
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pub)
        .serial_number(serial)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
    )
    cert = builder.sign(key, None)
    return cert.public_bytes(serialization.Encoding.DER)


def _load(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"not a DER X.509 certificate: {exc}") from None


def cert_public_key(der: bytes) -> bytes:
    """The raw 32-byte Ed25519 key of a DER certificate; :class:`CertificateError` if the
    bytes are not a certificate or its key is not Ed25519."""
    return _peer_cert_cached(bytes(der)).key


def check_self_signed(der: bytes) -> bytes:
    """Check that ``der`` is an Ed25519 certificate signed by its own key; return the key.

    Use it when a certificate arrives from outside (a genesis file, a membership reply).
    """
    cert = _load(der)
    pub = cert.public_key()
    if not isinstance(pub, ed25519.Ed25519PublicKey):
        raise CertificateError("the certificate's key is not Ed25519")
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertificateError(f"not validly self-signed: {exc or type(exc).__name__}") from None
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(der: bytes) -> bytes:
    """The SHA-256 of the certificate's DER bytes (32 bytes; ``.hex()`` for display)."""
    return hashlib.sha256(der).digest()


@dataclass(frozen=True, slots=True)
class PeerCert:
    """The certificate a peer presented: its DER, its raw Ed25519 ``key``, its fingerprint."""

    der: bytes
    key: bytes
    fingerprint: bytes

    @property
    def key_b64(self) -> str:
        """The key as canonical unpadded base64url (43 characters)."""
        return b64url(self.key)


@functools.lru_cache(maxsize=1024)
def _peer_cert_cached(der: bytes) -> PeerCert:
    pub = _load(der).public_key()
    if not isinstance(pub, ed25519.Ed25519PublicKey):
        raise CertificateError("the certificate's key is not Ed25519")
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PeerCert(der, raw, fingerprint(der))


def peer_cert(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> PeerCert | None:
    """The peer's certificate on a TLS connection, or None (no TLS, no certificate, or a
    certificate whose key is not Ed25519)."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    try:
        return _peer_cert_cached(der)
    except CertificateError:
        return None


_CURRENT_PEER: contextvars.ContextVar[PeerCert | None] = contextvars.ContextVar(
    "grenache_peer_cert", default=None
)


def current_peer() -> PeerCert | None:
    """Inside a service handler: the certificate the requesting peer presented, if any."""
    return _CURRENT_PEER.get()


def _set_current_peer(peer: PeerCert | None) -> contextvars.Token[PeerCert | None]:
    return _CURRENT_PEER.set(peer)


def _reset_current_peer(token: contextvars.Token[PeerCert | None]) -> None:
    _CURRENT_PEER.reset(token)


# ------------------------------------------------------------------------- key material


def _load_chain(ctx: ssl.SSLContext, cert_der: bytes, seed32: bytes) -> None:
    """Load certificate and key into ``ctx`` without writing the key to a disk.

    :mod:`ssl` loads key material only from files: on Linux an anonymous memory file
    (``memfd_create``) serves; elsewhere a private temporary file, removed at once.
    """
    key = _private_key(seed32)
    want = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if cert_public_key(cert_der) != want:
        raise CertificateError("the certificate is not on this seed's key")
    pem = cert_pem(cert_der).encode("ascii") + private_key_pem(seed32)
    memfd = getattr(os, "memfd_create", None)
    if memfd is not None:
        fd = memfd("grenache-tls", 0)
        try:
            os.write(fd, pem)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory() as tmp:  # pragma: no cover - non-Linux
        path = Path(tmp) / "chain.pem"
        path.touch(mode=0o600)
        path.write_bytes(pem)
        try:
            ctx.load_cert_chain(str(path))
        finally:
            path.unlink()


def _tls13(ctx: ssl.SSLContext) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3


# ------------------------------------------------------------------------------- server


class TrustAnchors:
    """The client certificates a mutual-TLS server admits: a set replaced as a whole.

    ``replace(certs)`` takes effect for every connection accepted afterwards (and closes open
    connections whose certificate is no longer admitted). One object may be shared by
    several servers.
    """

    def __init__(self, certs: Iterable[bytes] = ()) -> None:
        self._certs: frozenset[bytes] = frozenset()
        self.version = 0
        self._listeners: list[Callable[[], None]] = []
        self.replace(certs)

    @property
    def certs(self) -> frozenset[bytes]:
        return self._certs

    def replace(self, certs: Iterable[bytes]) -> None:
        new = frozenset(bytes(c) for c in certs)
        for der in new:
            cert_public_key(der)  # Ed25519 certificates only
        self._certs = new
        self.version += 1
        for listener in list(self._listeners):
            listener()

    def admits(self, der: bytes | None) -> bool:
        return der is not None and der in self._certs

    def __len__(self) -> int:
        return len(self._certs)

    def _subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)


class ServerTLS:
    """A server's TLS: its certificate and key, and optional mutual-TLS trust anchors.

    Pass it as ``ssl_context`` to ``PeerRPCServer`` or ``PeerPub``. :meth:`ssl_context`
    gives the :class:`ssl.SSLContext` for the current anchors (cached until they change),
    for any other server.
    """

    def __init__(
        self,
        cert_der: bytes,
        seed32: bytes,
        anchors: TrustAnchors | None = None,
        *,
        handshake_timeout_ms: int = HANDSHAKE_TIMEOUT_MS,
    ) -> None:
        if handshake_timeout_ms <= 0:
            raise ValueError("handshake_timeout_ms > 0")
        self.cert_der = bytes(cert_der)
        self._seed = bytes(seed32)
        self.anchors = anchors
        self.handshake_timeout_ms = handshake_timeout_ms
        self._ctx: ssl.SSLContext | None = None
        self._ctx_version = -1
        self._live: dict[asyncio.BaseTransport, bytes | None] = {}
        self.handshakes = 0  # completed and admitted
        self.refused = 0  # failed handshakes and certificates not admitted
        self._build()  # fail now on a bad certificate or seed, not at the first connection
        if anchors is not None:
            anchors._subscribe(self._anchors_changed)

    @property
    def mutual(self) -> bool:
        return self.anchors is not None

    def _build(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _tls13(ctx)
        _load_chain(ctx, self.cert_der, self._seed)
        # No session tickets: a resumed session would skip the certificate check against the
        # current anchors (and there is nothing worth resuming on a keep-alive connection).
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0
        if self.anchors is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            certs = self.anchors.certs
            if certs:
                ctx.load_verify_locations(cadata=b"".join(sorted(certs)))
            self._ctx_version = self.anchors.version
        self._ctx = ctx
        return ctx

    def ssl_context(self) -> ssl.SSLContext:
        """The context for a connection accepted now."""
        if self._ctx is None or (
            self.anchors is not None and self._ctx_version != self.anchors.version
        ):
            return self._build()
        return self._ctx

    def admits(self, der: bytes | None) -> bool:
        return self.anchors is None or self.anchors.admits(der)

    def _anchors_changed(self) -> None:
        self._ctx = None
        for transport, der in list(self._live.items()):
            if transport.is_closing():
                del self._live[transport]
            elif not self.admits(der):
                del self._live[transport]
                transport.close()

    def _track(self, transport: asyncio.BaseTransport, der: bytes | None) -> None:
        if self.anchors is None:
            return
        if len(self._live) >= 1024:
            for t in [t for t in self._live if t.is_closing()]:
                del self._live[t]
        self._live[transport] = der


def server_context(
    cert_der: bytes,
    seed32: bytes,
    *,
    client_certs: Iterable[bytes] | TrustAnchors | None = None,
    handshake_timeout_ms: int = HANDSHAKE_TIMEOUT_MS,
) -> ServerTLS:
    """TLS 1.3 with ``cert_der`` (made by :func:`make_self_signed` from ``seed32``).

    With ``client_certs`` (certificates, or a :class:`TrustAnchors` to replace later), mutual
    TLS: a client must present exactly one of those certificates, or the handshake fails
    before anything it sends is read. ``server.anchors.replace(...)`` changes the set.
    """
    anchors: TrustAnchors | None
    if client_certs is None or isinstance(client_certs, TrustAnchors):
        anchors = client_certs
    else:
        anchors = TrustAnchors(client_certs)
    return ServerTLS(cert_der, seed32, anchors, handshake_timeout_ms=handshake_timeout_ms)


class _TlsAcceptor(asyncio.Protocol):
    """Upgrades one accepted TCP connection with the context current now, checks the peer's
    certificate, then hands the TLS transport to the application protocol."""

    def __init__(
        self, tls: ServerTLS, app_factory: Callable[[], asyncio.BaseProtocol], site: _TlsSite
    ) -> None:
        self._tls = tls
        self._app_factory = app_factory
        self._site = site
        self._early = bytearray()
        self._eof = False
        self._lost = False
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # start_tls resumes it once its own protocol is in place
        self._site._pending.add(self)
        self._task = asyncio.get_running_loop().create_task(self._upgrade(transport))

    async def _upgrade(self, transport: asyncio.Transport) -> None:
        tls = self._tls
        try:
            try:
                tls_transport = await asyncio.get_running_loop().start_tls(
                    transport,
                    self,
                    tls.ssl_context(),
                    server_side=True,
                    ssl_handshake_timeout=tls.handshake_timeout_ms / 1000,
                )
            except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
                tls.refused += 1
                log.debug("TLS handshake failed: %s", exc)
                transport.abort()
                return
            if tls_transport is None or self._lost:  # pragma: no cover - closed meanwhile
                transport.abort()
                return
            ssl_object = tls_transport.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            if not tls.admits(der):
                # OpenSSL checked the chain; this is the exact-certificate check (and it
                # catches anchors replaced during the handshake).
                tls.refused += 1
                tls_transport.abort()
                return
            tls.handshakes += 1
            tls._track(tls_transport, der)
            app = self._app_factory()
            tls_transport.set_protocol(app)
            app.connection_made(tls_transport)
            if self._early:
                assert isinstance(app, asyncio.Protocol)
                early, self._early = bytes(self._early), bytearray()
                app.data_received(early)
            if self._eof:
                assert isinstance(app, asyncio.Protocol)
                if not app.eof_received():
                    tls_transport.close()
        finally:
            self._site._pending.discard(self)

    # Application bytes decrypted between the end of the handshake and the moment the app
    # protocol is attached (same loop iteration) land here and are handed over afterwards.
    def data_received(self, data: bytes) -> None:
        self._early += data
        if len(self._early) > _EARLY_BYTES_MAX:  # pragma: no cover - defensive bound
            self._lost = True

    def eof_received(self) -> bool:
        self._eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True

    def abort(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


class _TlsSite(web.TCPSite):
    """An aiohttp TCP site whose connections are upgraded per connection by a ServerTLS."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, tls: ServerTLS, *, backlog: int
    ) -> None:
        super().__init__(runner, host, port, backlog=backlog)
        self._tls = tls
        self._pending: set[_TlsAcceptor] = set()

    @property
    def name(self) -> str:
        return super().name.replace("http://", "https://", 1)

    async def start(self) -> None:
        # BaseSite.start registers the site; TCPSite.start would create a plain server.
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        app_factory = self._runner.server
        assert app_factory is not None
        self._server = await loop.create_server(
            lambda: _TlsAcceptor(self._tls, app_factory, self),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else 0

    async def stop(self) -> None:
        for acceptor in list(self._pending):
            acceptor.abort()
        await super().stop()


def make_site(
    runner: web.BaseRunner,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | ServerTLS | None,
    *,
    backlog: int = 128,
) -> web.TCPSite:
    """The aiohttp site for a server: plain, a fixed :class:`ssl.SSLContext`, or a
    :class:`ServerTLS` (context chosen per connection, exact peer check)."""
    if isinstance(ssl_context, ServerTLS):
        return _TlsSite(runner, host, port, ssl_context, backlog=backlog)
    return web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=backlog)


# ------------------------------------------------------------------------------- client


@dataclass(frozen=True, slots=True)
class Pins:
    """What a client accepts from a server: exact certificates, raw Ed25519 keys, or SHA-256
    fingerprints of certificates (any one matching is enough)."""

    certs: frozenset[bytes] = frozenset()
    keys: frozenset[bytes] = frozenset()
    fingerprints: frozenset[bytes] = frozenset()

    @classmethod
    def of(
        cls,
        certs: Iterable[bytes] = (),
        *,
        keys: Iterable[bytes] = (),
        fingerprints: Iterable[bytes] = (),
    ) -> Pins:
        pins = cls(
            frozenset(bytes(c) for c in certs),
            frozenset(bytes(k) for k in keys),
            frozenset(bytes(f) for f in fingerprints),
        )
        for der in pins.certs:
            cert_public_key(der)
        if any(len(k) != 32 for k in pins.keys) or any(len(f) != 32 for f in pins.fingerprints):
            raise ValueError("keys and fingerprints are 32 bytes")
        return pins

    def __bool__(self) -> bool:
        return bool(self.certs or self.keys or self.fingerprints)

    def matches(self, der: bytes | None) -> bool:
        if not der:
            return False
        if der in self.certs:
            return True
        if self.fingerprints and fingerprint(der) in self.fingerprints:
            return True
        if self.keys:
            try:
                return cert_public_key(der) in self.keys
            except CertificateError:
                return False
        return False


class PinnedContext(ssl.SSLContext):
    """A client :class:`ssl.SSLContext` that also knows its :class:`Pins`; the grenache
    transports call :meth:`check` after each handshake, before sending anything."""

    pins: Pins

    def check(self, ssl_object: ssl.SSLObject | None, dest: str, name: str = "") -> PeerCert:
        """The peer's certificate if it is pinned; :class:`PeerAuthError` otherwise."""
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        for_name = f" for {name!r}" if name else ""
        if not der:
            raise PeerAuthError(
                f"ERR_PEER_AUTH: {dest}{for_name} presented no certificate", peer=dest
            )
        if not self.pins.matches(der):
            raise PeerAuthError(
                f"ERR_PEER_AUTH: {dest}{for_name} presented a certificate that is not pinned "
                f"(sha256 {fingerprint(der).hex()[:16]}…)",
                peer=dest,
            )
        cert = peer_cert(ssl_object)
        if cert is None:  # pragma: no cover - a pinned certificate is Ed25519
            raise PeerAuthError(f"ERR_PEER_AUTH: {dest}{for_name}: not Ed25519", peer=dest)
        return cert


def pinned_client_context(
    pins: Iterable[bytes] | Pins,
    *,
    client_cert: bytes | None = None,
    client_seed: bytes | None = None,
) -> PinnedContext:
    """A TLS 1.3 client context accepting only servers that present a pinned certificate.

    ``pins``: certificate DERs, or a :class:`Pins` (certificates, keys, fingerprints). Host
    names are not checked (Grenache dials ``ip:port``). ``client_cert`` + ``client_seed``: the
    certificate to present to a mutual-TLS server.
    """
    pinned = pins if isinstance(pins, Pins) else Pins.of(pins)
    ctx = PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
    _tls13(ctx)
    ctx.check_hostname = False
    if pinned.certs and not pinned.keys and not pinned.fingerprints:
        # The handshake itself fails on any other certificate: the pins are the only anchors.
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=b"".join(sorted(pinned.certs)))
    else:
        # Key or fingerprint pins: OpenSSL cannot check them; check() does, after the
        # handshake has proved the server holds the certificate's key.
        ctx.verify_mode = ssl.CERT_NONE
    ctx.pins = pinned
    if (client_cert is None) != (client_seed is None):
        raise ValueError("client_cert and client_seed go together")
    if client_cert is not None and client_seed is not None:
        _load_chain(ctx, client_cert, client_seed)
    return ctx


def check_pinned(
    ctx: ssl.SSLContext | None, ssl_object: ssl.SSLObject | None, dest: str, name: str = ""
) -> None:
    """After a handshake: raise :class:`PeerAuthError` unless ``ctx`` pins nothing or the
    peer's certificate is pinned (used by the transports)."""
    if isinstance(ctx, PinnedContext):
        ctx.check(ssl_object, dest, name)


def handshake_error(exc: BaseException, dest: str, name: str = "") -> PeerAuthError:
    """A :class:`PeerAuthError` for a TLS handshake that failed with ``exc``."""
    for_name = f" for {name!r}" if name else ""
    cause: BaseException = exc
    while not isinstance(cause, ssl.SSLError) and cause.__cause__ is not None:
        cause = cause.__cause__
    inner = getattr(exc, "os_error", None) or getattr(exc, "certificate_error", None)
    if isinstance(inner, ssl.SSLError):
        cause = inner
    if isinstance(cause, ssl.SSLCertVerificationError):
        reason = f"its certificate is not pinned (OpenSSL: {cause.verify_message})"
    elif isinstance(cause, ssl.SSLError):
        reason = f"handshake failed ({cause.reason or cause})"
    else:
        reason = f"handshake failed ({exc})"
    return PeerAuthError(f"ERR_PEER_AUTH: {dest}{for_name}: {reason}", peer=dest)
