"""A node's identity (``grenex.node.identity``): whom its peer service admits (mutual TLS
anchors), whom it names as a request's sender, and whom it dials — from the replicated member
list, plus the members a voter told a new node about before its own state knew them."""

from __future__ import annotations

from grenex.codec.genesis import parse_genesis
from grenex.codec.signer import Keyring
from grenex.grenache.tls import b64url, make_self_signed, peer_cert
from grenex.node.identity import NodeIdentity
from grenex.replica.auth import Auth


def _setup() -> tuple[Keyring, Auth, NodeIdentity]:
    kr = Keyring("identity-test")
    g = parse_genesis(
        kr.genesis("main", ["n1", "n2"], cert=lambda k, n: b64url(make_self_signed(k.seed, n)))
    )
    auth = Auth(g)
    return kr, auth, NodeIdentity("n2", "main", kr.node_key("n2"), auth)


def cert(kr: Keyring, node: str) -> bytes:
    return make_self_signed(kr.node_key(node).seed, node)


def test_anchors_are_the_members_and_senders_are_bound_to_their_certificates() -> None:
    kr, auth, ident = _setup()
    assert ident.check_own(auth) is None
    assert ident.anchors.certs == frozenset({cert(kr, "n1"), cert(kr, "n2")})
    assert ident.role("n1") == "voter" and ident.role("n9") is None
    assert ident.ssl_for("grenex:main:peer:n1") is not None
    assert ident.ssl_for("grenex:other:peer:n1") is None  # not this cluster: not pinned here


def test_a_key_that_is_not_the_nodes_is_refused() -> None:
    kr, auth, _ = _setup()
    other = NodeIdentity("n2", "main", kr.node_key("n9"), auth)
    assert other.check_own(auth) is not None


def test_members_learned_from_a_voter_are_admitted_until_the_state_knows_better() -> None:
    kr, _auth, ident = _setup()
    n5 = cert(kr, "n5")
    reply = {
        "index": 40,
        "members": [
            {
                "id": "n1",
                "key": kr.node_key("n1").public_key,
                "cert": b64url(cert(kr, "n1")),
                "role": "voter",
            },
            {"id": "n5", "key": kr.node_key("n5").public_key, "cert": b64url(n5), "role": "voter"},
            {"id": "bad", "key": "x", "cert": "not base64url!", "role": "voter"},
        ],
    }
    assert ident.learn(reply) == 1
    assert n5 in ident.anchors.certs  # a voter admitted after the genesis can reach us
    assert ident.role("n5") == "voter"
    assert ident.learn({"members": "garbage"}) == 0
    assert n5 in ident.anchors.certs  # garbage changes nothing


def test_peer_cert_names_its_sender() -> None:
    kr, _auth, ident = _setup()

    class _Obj:
        def __init__(self, der: bytes) -> None:
            self.der = der

        def getpeercert(self, binary_form: bool = False) -> bytes:
            return self.der

    pc = peer_cert(_Obj(cert(kr, "n1")))  # type: ignore[arg-type]
    assert ident.sender(pc) == "n1"
    stranger = peer_cert(_Obj(make_self_signed(b"\x07" * 32, "n1")))  # type: ignore[arg-type]
    assert ident.sender(stranger) is None  # the name in a certificate proves nothing
