"""grenex.grenache.tls: pinned TLS 1.3 over real sockets on loopback, with real Grapes.

Proves: certificates are deterministic self-signed Ed25519 (RFC 8410) and only Ed25519 is
accepted; a pinned client reaches its server and refuses any other certificate with a clear
``PeerAuthError`` before sending anything (also for key and fingerprint pins, and never by
reusing a connection made under another pin); an impostor announcing a node's name is skipped
and costs one handshake per window; mutual TLS refuses a stranger before its request is read,
follows trust anchors replaced at run time (and drops connections of removed members); the
handler learns the peer's key; TLS 1.2 is refused; WSS RPC and pub/sub pin the same way; and a
Node.js grenache-nodejs-http client with SPEC §8's ``secure`` options (and a ``ws`` subscriber)
talks to a Python TLS server.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from grenex.grenache import (
    Link,
    PeerAuthError,
    PeerCert,
    PeerPub,
    PeerRPCClient,
    PeerRPCServer,
    PeerSub,
    ServerTLS,
    TransportError,
    TrustAnchors,
    WsPeerRPCClient,
    current_peer,
    make_self_signed,
    pinned_client_context,
    server_context,
)
from grenex.grenache.testing import GrapeCluster, async_wait_for
from grenex.grenache.tls import (
    CertificateError,
    Pins,
    b64url,
    cert_pem,
    cert_public_key,
    check_self_signed,
    fingerprint,
    private_key_pem,
    unb64url,
)

from .helpers import NODE, REPO_ROOT

pytestmark = pytest.mark.timeout(120)

TLS_JS = Path(__file__).resolve().parent / "js" / "tls_peer.js"


def ident(n: int) -> tuple[bytes, bytes]:
    """(seed, certificate) of test identity ``n``."""
    seed = hashlib.sha256(f"grenache-tls-test-{n}".encode()).digest()
    return seed, make_self_signed(seed, f"n{n}")


def unique(name: str) -> str:
    return f"tls:{name}:{time.monotonic_ns()}"


class Recorder:
    """A handler that records each request's peer certificate and answers who it is."""

    def __init__(self, who: str) -> None:
        self.who = who
        self.peers: list[PeerCert | None] = []

    def __call__(self, key: str, payload: Any, peer: PeerCert | None) -> Any:
        self.peers.append(peer)
        if payload == "whoami":
            seen = current_peer()
            return {"server": self.who, "peer": seen.key_b64 if seen is not None else None}
        return {"server": self.who, "echo": payload}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def listed(link: Link, name: str, count: int) -> bool:
    return len(await link.lookup(name, use_cache=False)) >= count


# --------------------------------------------------------------------------- certificates

RFC8032_SEED = unb64url("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
RFC8032_KEY = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"


def test_certificate_is_deterministic_self_signed_ed25519_on_the_seeds_key() -> None:
    der = make_self_signed(RFC8032_SEED, "n1")
    assert der == make_self_signed(RFC8032_SEED, "n1")  # same seed and name, same bytes
    assert b64url(cert_public_key(der)) == RFC8032_KEY  # SPEC §8's test-vector key
    assert check_self_signed(der) == cert_public_key(der)
    assert fingerprint(der) == hashlib.sha256(der).digest()
    cert = x509.load_der_x509_certificate(der)
    assert cert.not_valid_before_utc.year == 1970 and cert.not_valid_after_utc.year == 9999
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca is False  # pinning it never admits a certificate "issued" by its key
    other = x509.load_der_x509_certificate(make_self_signed(RFC8032_SEED, "other"))
    assert cert.serial_number == other.serial_number  # the serial comes from the key alone
    assert make_self_signed(RFC8032_SEED, "n2") != der
    assert unb64url(b64url(der)) == der and "=" not in b64url(der)
    assert private_key_pem(RFC8032_SEED).startswith(b"-----BEGIN PRIVATE KEY-----")
    assert cert_pem(der).startswith("-----BEGIN CERTIFICATE-----")


def test_only_ed25519_certificates_are_accepted() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "ec")])
    ec_cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(x509.load_der_x509_certificate(ident(1)[1]).not_valid_before_utc)
        .not_valid_after(x509.load_der_x509_certificate(ident(1)[1]).not_valid_after_utc)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    with pytest.raises(CertificateError, match="not Ed25519"):
        cert_public_key(ec_cert)
    with pytest.raises(CertificateError, match="not a DER"):
        cert_public_key(b"\x30\x03junk")
    with pytest.raises(CertificateError):
        pinned_client_context([ec_cert])
    with pytest.raises(CertificateError):
        TrustAnchors([ec_cert])
    # A certificate whose signature does not verify under its own key is not self-signed.
    der = bytearray(ident(1)[1])
    der[-1] ^= 1
    with pytest.raises(CertificateError, match="self-signed"):
        check_self_signed(bytes(der))
    # A certificate and a seed that do not belong together cannot serve.
    with pytest.raises(CertificateError, match="not on this seed"):
        server_context(ident(1)[1], ident(2)[0])


def test_base64url_is_canonical_and_unpadded() -> None:
    assert b64url(b"\xff\xfe") == "__4"
    assert unb64url("__4") == b"\xff\xfe"
    for bad in ("__4=", "__5", "a", "+/8", "__4 "):
        with pytest.raises(ValueError):
            unb64url(bad)


# ------------------------------------------------------------------------------- HTTP RPC


@pytest.fixture
async def n1_server() -> AsyncIterator[tuple[PeerRPCServer, Recorder]]:
    seed, cert = ident(1)
    rec = Recorder("n1")
    async with PeerRPCServer(rec, ssl_context=server_context(cert, seed), with_peer_cert=True) as s:
        yield s, rec


async def test_pinned_client_reaches_its_server(
    n1_server: tuple[PeerRPCServer, Recorder], link: Link
) -> None:
    server, rec = n1_server
    _, cert = ident(1)
    async with PeerRPCClient(link, ssl_context=pinned_client_context([cert])) as client:
        assert await client.request_peer(server.dest, "k", 7) == {"server": "n1", "echo": 7}
        assert await client.request_peer(server.dest, "k", "whoami") == {
            "server": "n1",
            "peer": None,  # no client certificate: the handler is told so
        }
    assert rec.peers == [None, None]
    # Key pins and fingerprint pins (checked after the handshake) work the same.
    for pins in (Pins.of(keys=[cert_public_key(cert)]), Pins.of(fingerprints=[fingerprint(cert)])):
        async with PeerRPCClient(link, ssl_context=pinned_client_context(pins)) as client:
            assert await client.request_peer(server.dest, "k", 8) == {"server": "n1", "echo": 8}


@pytest.mark.parametrize("pin", ["cert", "key", "fingerprint"])
async def test_wrong_pin_fails_before_anything_is_sent(
    n1_server: tuple[PeerRPCServer, Recorder], link: Link, pin: str
) -> None:
    server, rec = n1_server
    _, other = ident(2)
    pins = {
        "cert": Pins.of([other]),
        "key": Pins.of(keys=[cert_public_key(other)]),
        "fingerprint": Pins.of(fingerprints=[fingerprint(other)]),
    }[pin]
    async with PeerRPCClient(link, ssl_context=pinned_client_context(pins)) as client:
        with pytest.raises(PeerAuthError) as info:
            await client.request_peer(server.dest, "grenex:main:node:n2", 1)
    err = info.value
    assert isinstance(err, TransportError) and err.delivered is False
    assert err.code == "ERR_PEER_AUTH" and err.peer == server.dest
    assert "not pinned" in err.message and server.dest in err.message
    assert rec.peers == []  # the handler never ran


async def test_a_connection_is_never_reused_under_another_pin(
    n1_server: tuple[PeerRPCServer, Recorder], link: Link
) -> None:
    server, _ = n1_server
    _, cert = ident(1)
    _, other = ident(2)
    good = pinned_client_context([cert])
    bad = pinned_client_context([other])
    pins = {"a": good, "b": bad}
    async with PeerRPCClient(link, ssl_for=lambda name: pins[name]) as client:
        assert await client.request_peer(server.dest, "a", 1) == {"server": "n1", "echo": 1}
        with pytest.raises(PeerAuthError):  # the idle keep-alive connection of "a" is not used
            await client.request_peer(server.dest, "b", 2)
        assert await client.request_peer(server.dest, "a", 3) == {"server": "n1", "echo": 3}


async def test_impostor_announcing_the_name_is_skipped_once_per_window(
    link: Link, grapes: GrapeCluster
) -> None:
    seed1, cert1 = ident(1)
    seed9, cert9 = ident(9)
    name = unique("grenex:main:node:n1")
    real_tls = server_context(cert1, seed1)
    fake_tls = server_context(cert9, seed9)
    real, fake = Recorder("n1"), Recorder("impostor")
    clock = Clock()
    async with (
        PeerRPCServer(real, ssl_context=real_tls, with_peer_cert=True) as real_srv,
        PeerRPCServer(fake, ssl_context=fake_tls, with_peer_cert=True) as fake_srv,
    ):
        await link.start_announcing(name, real_srv.port)
        await link.start_announcing(name, fake_srv.port)
        await async_wait_for(lambda: listed(link, name, 2), 10.0, message="both announced")
        pinned = pinned_client_context([cert1])

        def ssl_for(service: str) -> ssl.SSLContext | None:
            return pinned if service == name else None

        async with PeerRPCClient(link, ssl_for=ssl_for, clock=clock) as client:

            def impostor_dials() -> int:
                return fake_tls.hellos  # TLS handshakes started with the impostor

            for i in range(30):
                assert await client.request(name, i) == {"server": "n1", "echo": i}
                if impostor_dials():
                    break
            await async_wait_for(lambda: impostor_dials() == 1, 5.0, message="impostor tried")
            for i in range(30):
                assert await client.request(name, i) == {"server": "n1", "echo": i}
            assert impostor_dials() == 1  # remembered: one failed handshake, not one per request
            assert client.is_untrusted(name, fake_srv.dest)
            assert not client.is_dead(fake_srv.dest)  # untrusted for this name only
            # After the window it is tried (and refused) once more.
            clock.now += client.untrusted_peer_ms / 1000 + 1
            for i in range(30):
                assert await client.request(name, i) == {"server": "n1", "echo": i}
                if impostor_dials() == 2:
                    break
            await async_wait_for(lambda: impostor_dials() == 2, 5.0, message="tried again")
        assert fake.peers == []
        await link.stop_announcing(name, real_srv.port)
        await link.stop_announcing(name, fake_srv.port)


async def test_a_burst_of_requests_costs_one_failed_handshake_not_one_each(
    link: Link, grapes: GrapeCluster
) -> None:
    """64 requests at once from a fresh client, an impostor announcing the same name: the
    first request to each peer authenticates it and the others wait for that verdict, so the
    impostor sees one handshake, not one per request that happened to pick it."""
    seed1, cert1 = ident(1)
    seed9, cert9 = ident(9)
    name = unique("grenex:main:node:n1")
    real_tls = server_context(cert1, seed1)
    fake_tls = server_context(cert9, seed9)
    async with (
        PeerRPCServer(Recorder("n1"), ssl_context=real_tls, with_peer_cert=True) as real_srv,
        PeerRPCServer(Recorder("impostor"), ssl_context=fake_tls, with_peer_cert=True) as fake_srv,
    ):
        await link.start_announcing(name, real_srv.port)
        await link.start_announcing(name, fake_srv.port)
        await async_wait_for(lambda: listed(link, name, 2), 10.0, message="both announced")
        pinned = pinned_client_context([cert1])
        async with PeerRPCClient(link, ssl_for=lambda s: pinned if s == name else None) as client:
            for _round in range(5):  # until the random picks sent someone to the impostor
                replies = await asyncio.gather(*(client.request(name, i) for i in range(64)))
                assert all(r["server"] == "n1" for r in replies)
                if fake_tls.hellos:
                    break
            assert fake_tls.hellos == 1
        await link.stop_announcing(name, real_srv.port)
        await link.stop_announcing(name, fake_srv.port)


async def test_only_impostors_announce_the_name(link: Link, grapes: GrapeCluster) -> None:
    seed9, cert9 = ident(9)
    _, cert1 = ident(1)
    name = unique("grenex:main:node:n1")
    fake_tls = server_context(cert9, seed9)
    async with PeerRPCServer(Recorder("impostor"), ssl_context=fake_tls, with_peer_cert=True) as s:
        await link.start_announcing(name, s.port)
        await async_wait_for(lambda: listed(link, name, 1), 10.0, message="announced")
        pinned = pinned_client_context([cert1])
        async with PeerRPCClient(link, ssl_for=lambda _: pinned) as client:
            with pytest.raises(PeerAuthError, match="not pinned"):
                await client.request(name, 1)
            with pytest.raises(PeerAuthError, match="failed authentication"):
                await client.request(name, 2)  # not dialled again
            replies = await client.map(name, 3)
            assert [r.error.code for r in replies if r.error is not None] == ["ERR_PEER_AUTH"]
        assert fake_tls.hellos == 1  # one handshake for three calls
        await link.stop_announcing(name, s.port)


# ------------------------------------------------------------------------------ mutual TLS


async def test_mutual_tls_refuses_a_stranger_before_reading_and_tells_the_handler_who(
    link: Link,
) -> None:
    (seed1, cert1), (seed2, cert2), (seed3, cert3) = ident(1), ident(2), ident(3)
    tls = server_context(cert1, seed1, client_certs=[cert2])
    rec = Recorder("n1")
    async with PeerRPCServer(rec, ssl_context=tls, with_peer_cert=True) as server:
        member = pinned_client_context([cert1], client_cert=cert2, client_seed=seed2)
        async with PeerRPCClient(link, ssl_context=member) as client:
            assert await client.request_peer(server.dest, "peer", "whoami") == {
                "server": "n1",
                "peer": b64url(cert_public_key(cert2)),
            }
        assert [p.key for p in rec.peers if p is not None] == [cert_public_key(cert2)]
        assert rec.peers[0] is not None and rec.peers[0].der == cert2
        for ctx in (
            pinned_client_context([cert1], client_cert=cert3, client_seed=seed3),  # stranger
            pinned_client_context([cert1]),  # no certificate at all
        ):
            async with PeerRPCClient(link, ssl_context=ctx) as client:
                with pytest.raises(TransportError, match="mutual-TLS server"):
                    await client.request_peer(server.dest, "peer", "x" * 100_000)
        assert len(rec.peers) == 1  # nothing from the strangers reached the handler
        assert tls.hellos == 3


async def test_replaced_trust_anchors_admit_new_members_and_drop_old_ones(link: Link) -> None:
    (seed1, cert1), (seed2, cert2), (seed3, cert3) = ident(1), ident(2), ident(3)
    anchors = TrustAnchors([cert2])
    tls = server_context(cert1, seed1, client_certs=anchors)
    rec = Recorder("n1")
    old_ctx = pinned_client_context([cert1], client_cert=cert2, client_seed=seed2)
    new_ctx = pinned_client_context([cert1], client_cert=cert3, client_seed=seed3)
    async with (
        PeerRPCServer(rec, ssl_context=tls, with_peer_cert=True) as server,
        PeerRPCClient(link, ssl_context=old_ctx) as old,
        PeerRPCClient(link, ssl_context=new_ctx) as new,
    ):
        assert await old.request_peer(server.dest, "p", 1) == {"server": "n1", "echo": 1}
        with pytest.raises(TransportError):
            await new.request_peer(server.dest, "p", 2)
        anchors.replace([cert3])  # a membership change: n3 in, n2 out
        assert await new.request_peer(server.dest, "p", 3) == {"server": "n1", "echo": 3}
        # n2's open keep-alive connection is refused at its next request (body unread)...
        with pytest.raises(TransportError, match="ERR_PEER_AUTH") as info:
            await old.request_peer(server.dest, "p", 4)
        assert info.value.status == 403 and tls.refused == 1
        # ... and so is a new connection, in the handshake.
        with pytest.raises(TransportError, match="mutual-TLS server"):
            await old.request_peer(server.dest, "p", 4)
        assert [p.der for p in rec.peers if p is not None] == [cert2, cert3]
        anchors.replace([cert2, cert3])
        assert await old.request_peer(server.dest, "p", 5) == {"server": "n1", "echo": 5}


async def test_tls12_client_is_refused(n1_server: tuple[PeerRPCServer, Recorder]) -> None:
    server, rec = n1_server
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    host, _, port = server.dest.rpartition(":")
    tls = server.ssl_context
    assert isinstance(tls, ServerTLS)
    # The server aborts the handshake (the client sees an alert or a reset, by timing).
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.wait_for(asyncio.open_connection(host, int(port), ssl=ctx), 5)
    assert rec.peers == []
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3  # the same client on TLS 1.3 gets through
    _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port), ssl=ctx), 5)
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.3"
    writer.close()


async def test_a_stalled_handshake_is_dropped_after_the_handshake_timeout() -> None:
    seed1, cert1 = ident(1)
    tls = server_context(cert1, seed1, handshake_timeout_ms=200)
    async with PeerRPCServer(Recorder("n1"), ssl_context=tls, with_peer_cert=True) as server:
        host, _, port = server.dest.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))  # plain TCP, silent
        t0 = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the server hung up
        assert time.monotonic() - t0 < 3  # after ~0.2 s, not asyncio's default 60 s
        writer.close()


def test_mutual_tls_under_uvloop() -> None:
    """grenex nodes run on uvloop: the per-handshake anchor switch works there too."""
    uvloop = pytest.importorskip("uvloop")
    (seed1, cert1), (seed2, cert2), (seed3, cert3) = ident(1), ident(2), ident(3)

    async def scenario() -> None:
        anchors = TrustAnchors([cert2])
        tls = server_context(cert1, seed1, client_certs=anchors)
        link = Link("http://127.0.0.1:9")  # never used: request_peer dials directly
        c2 = pinned_client_context([cert1], client_cert=cert2, client_seed=seed2)
        c3 = pinned_client_context([cert1], client_cert=cert3, client_seed=seed3)
        async with (
            PeerRPCServer(Recorder("n1"), ssl_context=tls, with_peer_cert=True) as server,
            PeerRPCClient(link, ssl_context=c2) as member,
            PeerRPCClient(link, ssl_context=c3) as stranger,
        ):
            assert (await member.request_peer(server.dest, "k", "whoami"))["peer"] == b64url(
                cert_public_key(cert2)
            )
            with pytest.raises(TransportError):
                await stranger.request_peer(server.dest, "k", 1)
            anchors.replace([cert3])
            assert await stranger.request_peer(server.dest, "k", 2) == {"server": "n1", "echo": 2}
        await link.stop()

    uvloop.run(scenario())


# ---------------------------------------------------------------------------- WebSocket


async def test_wss_rpc_pins_per_name(n1_server: tuple[PeerRPCServer, Recorder], link: Link) -> None:
    server, rec = n1_server
    _, cert1 = ident(1)
    _, cert2 = ident(2)
    ctxs = {
        "good": pinned_client_context([cert1]),
        "bad": pinned_client_context([cert2]),
        "badkey": pinned_client_context(Pins.of(keys=[cert_public_key(cert2)])),
    }
    async with WsPeerRPCClient(link, ssl_for=lambda name: ctxs[name]) as client:
        assert await client.request_peer(server.dest, "good", 1) == {"server": "n1", "echo": 1}
        for name in ("bad", "badkey"):
            with pytest.raises(PeerAuthError, match="not pinned"):
                await client.request_peer(server.dest, name, 2)
    assert len(rec.peers) == 1


async def test_wss_pubsub_with_pinning_skips_an_impostor_publisher(
    link: Link, grapes: GrapeCluster
) -> None:
    (seed1, cert1), (seed9, cert9) = ident(1), ident(9)
    topic = unique("grenex:main:events")
    async with (
        PeerPub(link, topic, ssl_context=server_context(cert1, seed1)) as real,
        PeerPub(link, topic, ssl_context=server_context(cert9, seed9)) as fake,
    ):
        await async_wait_for(lambda: listed(link, topic, 2), 10.0, message="both announced")
        sub = PeerSub(link, topic, ssl_context=pinned_client_context([cert1]), backoff_min_ms=20)
        async with sub:
            dest = await sub.wait_connected(10_000)
            assert dest.endswith(f":{real.port}")
            assert fake.subscribers == 0
            await async_wait_for(lambda: real.subscribers == 1, 5.0, message="subscribed")
            real.pub(json.dumps({"from": "real"}))
            fake.pub(json.dumps({"from": "fake"}))
            assert json.loads(await sub.recv(5000)) == {"from": "real"}
            assert sub.auth_failures <= 1


# --------------------------------------------------------------------------------- Node.js


async def run_tls_js(*args: str, env: dict[str, str]) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        NODE,
        str(TLS_JS),
        *args,
        cwd=REPO_ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("node tls_peer.js did not finish in 30 s") from None
    lines = out.decode().strip().splitlines()
    assert lines, err.decode(errors="replace")
    answer: dict[str, Any] = json.loads(lines[-1])
    return answer


def node_env(tmp: Path, pins: list[bytes], seed: bytes, cert: bytes, want: bytes) -> dict[str, str]:
    (tmp / "ca.pem").write_text("".join(cert_pem(c) for c in pins))
    (tmp / "cert.pem").write_text(cert_pem(cert))
    (tmp / "key.pem").write_bytes(private_key_pem(seed))
    return {
        "TLS_CA": str(tmp / "ca.pem"),
        "TLS_CERT": str(tmp / "cert.pem"),
        "TLS_KEY": str(tmp / "key.pem"),
        "TLS_WANT_KEY": b64url(cert_public_key(want)),
    }


async def test_node_client_with_spec_secure_options_calls_python_mutual_tls_server(
    link: Link, grapes: GrapeCluster, tmp_path: Path
) -> None:
    (seed1, cert1), (seed2, cert2), (seed3, cert3) = ident(1), ident(2), ident(3)
    tls = server_context(cert1, seed1, client_certs=[cert2])
    rec = Recorder("python")
    async with PeerRPCServer(rec, ssl_context=tls, with_peer_cert=True) as server:
        name = unique("node-tls")
        await link.start_announcing(name, server.port)
        await async_wait_for(lambda: listed(link, name, 1), 10.0, message="announced")
        grape = grapes.api_urls[0]
        env = node_env(tmp_path, [cert1], seed2, cert2, cert1)
        assert await run_tls_js("request", grape, name, '"whoami"', env=env) == {
            "ok": True,
            "result": {"server": "python", "peer": b64url(cert_public_key(cert2))},
        }
        # checkServerIdentity: a server whose key is not the one wanted is refused.
        env = node_env(tmp_path, [cert1], seed2, cert2, cert3)
        answer = await run_tls_js("request", grape, name, "1", env=env)
        assert answer["ok"] is False and "ERR_GRENEX_NODE_KEY" in answer["error"]
        # A Node client whose certificate is not a trust anchor is refused.
        env = node_env(tmp_path, [cert1], seed3, cert3, cert1)
        answer = await run_tls_js("request", grape, name, "1", env=env)
        assert answer["ok"] is False
        assert len(rec.peers) == 1
        await link.stop_announcing(name, server.port)


async def test_node_ws_subscriber_reads_python_wss_publisher(
    link: Link, grapes: GrapeCluster, tmp_path: Path
) -> None:
    (seed1, cert1), (seed2, cert2) = ident(1), ident(2)
    topic = unique("node-wss")
    async with PeerPub(link, topic, ssl_context=server_context(cert1, seed1)) as pub:
        await async_wait_for(lambda: listed(link, topic, 1), 10.0, message="announced")
        env = node_env(tmp_path, [cert1], seed2, cert2, cert1)
        task = asyncio.create_task(run_tls_js("sub", grapes.api_urls[0], topic, "2", env=env))
        while not task.done():
            pub.pub("hello")
            await asyncio.sleep(0.05)  # a publisher's cadence, not a wait for a condition
        assert task.result() == {"ok": True, "messages": ["hello", "hello"]}
