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

*Server mutual TLS.* The server builds an :class:`ssl.SSLContext` from the current trust
anchors (exactly those certificates; ``CERT_REQUIRED``) and rebuilds it when they change. The
context the listening socket holds has a server-name callback, which OpenSSL runs on every
ClientHello (with or without SNI); it moves the connection onto the current context, so each
handshake verifies the client against the anchors as they are *now*. A client without an
admitted certificate fails the handshake: nothing it sends is read. Since only a non-CA,
self-signed anchor can validate itself, passing means holding an anchor's key; the server
then checks the exact certificate on every request against the current anchors (403 and the
connection closed, before the body is read, when it is no longer admitted), so a member
removed while connected is cut off at its next request. Session tickets are off (a resumed
session would skip the client-certificate check).
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
from collections.abc import Iterable
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
    "check_cert",
    "check_self_signed",
    "current_peer",
    "fingerprint",
    "make_self_signed",
    "peer_cert",
    "pinned_client_context",
    "private_key_pem",
    "refuse_unadmitted",
    "server_context",
    "unb64url",
]

log = logging.getLogger("grenex.grenache.tls")

HANDSHAKE_TIMEOUT_MS: Final = 10_000

NOT_BEFORE: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
NOT_AFTER: Final = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)


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


def check_cert(der: bytes, key: str) -> bool:
    """Whether ``der`` is a valid self-signed Ed25519 certificate on ``key`` (the 32-byte
    public key in canonical base64url): the check a genesis or membership ``cert`` must pass."""
    try:
        return b64url(check_self_signed(der)) == key
    except (CertificateError, ValueError):
        return False


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

    ``replace(certs)`` takes effect for every handshake that starts afterwards, and for every
    later request on connections already open (a certificate no longer admitted gets
    ``403 ERR_PEER_AUTH`` and the connection is closed before the body is read). One object
    may be shared by several servers.
    """

    def __init__(self, certs: Iterable[bytes] = ()) -> None:
        self._certs: frozenset[bytes] = frozenset()
        self.version = 0
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

    def admits(self, der: bytes | None) -> bool:
        return der is not None and der in self._certs

    def __len__(self) -> int:
        return len(self._certs)


class ServerTLS:
    """A server's TLS: its certificate and key, and optional mutual-TLS trust anchors.

    Pass it as ``ssl_context`` to ``PeerRPCServer`` or ``PeerPub`` (which also check each
    request's certificate against the current anchors), or pass :meth:`ssl_context` to any
    asyncio server.
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
        self.handshake_timeout_ms = handshake_timeout_ms
        self.cert_der = bytes(cert_der)
        self._seed = bytes(seed32)
        self.anchors = anchors
        self._current: ssl.SSLContext | None = None
        self._current_version = -1
        self.hellos = 0  # handshakes started (ClientHellos seen)
        self.refused = 0  # requests refused because their certificate is no longer admitted
        # The context given to the server: it selects the current one for each handshake.
        self._base = self._build()
        self._base.sni_callback = self._select

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
        return ctx

    def _context_now(self) -> ssl.SSLContext:
        """The context built from the anchors as they are now (rebuilt when they change)."""
        version = self.anchors.version if self.anchors is not None else 0
        if self._current is None or self._current_version != version:
            self._current = self._build()
            self._current_version = version
        return self._current

    def _select(
        self, ssl_object: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext
    ) -> None:
        # OpenSSL calls the server-name callback for every ClientHello, with or without SNI
        # (Grenache clients dial IPs and send none). Switching the connection's context here
        # switches the trust store its client certificate is verified against.
        self.hellos += 1
        ssl_object.context = self._context_now()

    def ssl_context(self) -> ssl.SSLContext:
        """The :class:`ssl.SSLContext` to serve with; it follows later anchor changes."""
        return self._base

    def admits(self, der: bytes | None) -> bool:
        """Is this exact certificate admitted now (always True without mutual TLS)?"""
        return self.anchors is None or self.anchors.admits(der)


def server_context(
    cert_der: bytes,
    seed32: bytes,
    *,
    client_certs: Iterable[bytes] | TrustAnchors | None = None,
    handshake_timeout_ms: int = HANDSHAKE_TIMEOUT_MS,
) -> ServerTLS:
    """TLS 1.3 with ``cert_der`` (made by :func:`make_self_signed` from ``seed32``).

    With ``client_certs`` (certificates, or a :class:`TrustAnchors` to replace later), mutual
    TLS: a client must present one of those certificates, or the handshake fails before
    anything it sends is read. ``tls.anchors.replace(...)`` changes the set at run time.
    A handshake not finished within ``handshake_timeout_ms`` is dropped (asyncio's default
    is 60 s: a slow-handshake client would hold a connection that long).
    """
    anchors: TrustAnchors | None
    if client_certs is None or isinstance(client_certs, TrustAnchors):
        anchors = client_certs
    else:
        anchors = TrustAnchors(client_certs)
    return ServerTLS(cert_der, seed32, anchors, handshake_timeout_ms=handshake_timeout_ms)


class _TLSSite(web.TCPSite):
    """aiohttp's TCP site with a bounded TLS handshake (TCPSite leaves asyncio's 60 s)."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, tls: ServerTLS, backlog: int
    ) -> None:
        super().__init__(runner, host, port, ssl_context=tls.ssl_context(), backlog=backlog)
        self._handshake_timeout_s = tls.handshake_timeout_ms / 1000

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site; TCPSite.start would bind
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            server,
            self._host,
            self._port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self._handshake_timeout_s,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


def make_site(
    runner: web.BaseRunner,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | ServerTLS | None,
    *,
    backlog: int = 128,
) -> web.TCPSite:
    """The aiohttp site a server binds: plain, a fixed :class:`ssl.SSLContext`, or a
    :class:`ServerTLS` (anchors followed per handshake, handshake time bounded)."""
    if isinstance(ssl_context, ServerTLS):
        return _TLSSite(runner, host, port, ssl_context, backlog)
    return web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=backlog)


def refuse_unadmitted(
    ssl_context: ssl.SSLContext | ServerTLS | None, peer: PeerCert | None
) -> web.Response | None:
    """For a server's request handler: a ``403`` that closes the connection when the peer's
    certificate is not admitted by the *current* anchors (they changed since its handshake,
    or it presented a different certificate on a member's key); None when it may proceed."""
    if not isinstance(ssl_context, ServerTLS) or ssl_context.anchors is None:
        return None
    if ssl_context.admits(peer.der if peer is not None else None):
        return None
    ssl_context.refused += 1
    resp = web.Response(status=403, text="ERR_PEER_AUTH: certificate not admitted")
    resp.force_close()  # the body is never read
    return resp


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
