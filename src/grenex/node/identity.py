"""A node's identity on the network (SPEC §8 "Endpoints"): its certificate, the TLS of its three
services, and who the other members are.

Theory of operation
-------------------
A node's certificate is the self-signed X.509 certificate on its Ed25519 key
(:func:`grenex.grenache.tls.make_self_signed`, deterministic), which must be exactly the
``cert`` the genesis or the replicated membership holds for its id.  With it:

* the client API and the events publisher serve TLS 1.3 on that certificate;
* the peer service requires **mutual** TLS: its trust anchors are the current members'
  certificates, replaced whenever the replicated member list changes (:meth:`NodeIdentity.turn`,
  a driver turn hook), so a connection without a member's certificate fails its handshake and
  nothing it sends is read; a removed member is cut off at its next request;
* every outgoing connection is pinned (:meth:`NodeIdentity.ssl_for`): ``peer:<id>`` and
  ``node:<id>`` to exactly that member's certificate (and the peer service is dialled with this
  node's own certificate), ``nodes`` and ``events`` to any current member's.  An impostor
  announcing a member's name fails the handshake, is remembered as untrusted for that name, and
  the next announced peer is tried.

:meth:`NodeIdentity.sender` names the member a peer request came from (by the key in its
certificate): the peer service accepts a message only when the sender it names is that member,
and only the message types the member's role may send.
"""

from __future__ import annotations

import ssl
from typing import Final

from grenex.codec.keys import SecretKey
from grenex.grenache.tls import (
    PeerCert,
    ServerTLS,
    TrustAnchors,
    b64url,
    make_self_signed,
    pinned_client_context,
    server_context,
    unb64url,
)
from grenex.replica import Replica
from grenex.replica.auth import Auth

__all__ = ["NodeIdentity"]

_CONTEXTS_MAX: Final = 4_096  # pinned client contexts kept (one per member and kind)


class NodeIdentity:
    """See the module docstring."""

    def __init__(self, node_id: str, cluster: str, key: SecretKey, auth: Auth) -> None:
        self.node_id = node_id
        self.prefix = f"grenex:{cluster}:"
        self.key = key
        self.cert = make_self_signed(key.seed, node_id)
        self.cert_b64 = b64url(self.cert)
        self.api_tls: ServerTLS = server_context(self.cert, key.seed)
        self.anchors = TrustAnchors()
        self.peer_tls: ServerTLS = server_context(self.cert, key.seed, client_certs=self.anchors)
        self._members: dict[str, bytes] = {}  # id -> certificate DER (current members)
        self._roles: dict[str, str] = {}  # id -> role
        self._by_key: dict[str, str] = {}  # key (base64url) -> id
        self._version = -1
        self._auth = auth
        # members learned from a voter's ``members`` reply while this node's own state is
        # behind (a new node knows only the genesis' voters, and later voters must be able to
        # reach it): used with the replicated list, which wins where both name a member
        self._learned: dict[str, tuple[bytes, str, str]] = {}  # id -> (cert, key, role)
        self._contexts: dict[tuple[str, bytes], ssl.SSLContext] = {}
        self._any: ssl.SSLContext | None = None
        self.refresh(auth)

    def check_own(self, auth: Auth) -> str | None:
        """Why this node's key does not match its id's membership entry, or None."""
        m = auth.member(self.node_id)
        if m is None:
            return None  # not admitted yet: nothing to compare with
        if m.key != self.key.public_key:
            return f"the key given is not {self.node_id}'s key in the membership ({m.key})"
        if m.cert is not None and m.cert != self.cert_b64:
            return f"the certificate made from the key is not {self.node_id}'s in the membership"
        return None

    # -- the member list ----------------------------------------------------------------------

    def learn(self, reply: object) -> int:
        """Take a voter's ``members`` reply (fetched over a connection pinned to that voter):
        members this node's own state does not know yet.  Returns how many were new."""
        members = reply.get("members") if isinstance(reply, dict) else None
        if not isinstance(members, list):
            return 0
        learned: dict[str, tuple[bytes, str, str]] = {}
        for m in members[:4096]:
            if not isinstance(m, dict):
                continue
            mid, cert, key, role = m.get("id"), m.get("cert"), m.get("key"), m.get("role")
            if not (isinstance(mid, str) and isinstance(cert, str) and isinstance(key, str)):
                continue
            try:
                der = unb64url(cert)
            except ValueError:
                continue
            learned[mid] = (der, key, role if role in ("voter", "learner") else "learner")
        new = len(set(learned) - set(self._members))
        self._learned = learned
        self._version = -1  # rebuild with them
        self.refresh(self._auth)
        return new

    def refresh(self, auth: Auth) -> None:
        """Take the replicated member list (current members: voters and learners)."""
        self._auth = auth
        if auth.members_version == self._version:
            return
        self._version = auth.members_version
        members: dict[str, bytes] = {}
        roles: dict[str, str] = {}
        by_key: dict[str, str] = {}
        for mid in sorted(self._learned):
            if auth.member(mid) is None:  # the replicated list wins where it knows the id
                der, key, role = self._learned[mid]
                members[mid], roles[mid], by_key[key] = der, role, mid
        for m in auth.members():
            if m.cert is None:
                continue
            try:
                der = unb64url(m.cert)
            except ValueError:
                continue
            members[m.id] = der
            roles[m.id] = m.role
            by_key[m.key] = m.id
        self._members, self._roles, self._by_key = members, roles, by_key
        self.anchors.replace(members[i] for i in sorted(members))
        self._contexts.clear()
        self._any = None

    def turn(self, replica: Replica) -> None:
        """Driver turn hook: follow membership changes (one integer comparison per turn)."""
        auth = replica.state.auth
        if auth.members_version != self._version:
            self.refresh(auth)

    def sender(self, peer: PeerCert | None) -> str | None:
        """The current member whose certificate a request came with, or None."""
        if peer is None:
            return None
        mid = self._by_key.get(peer.key_b64)
        if mid is None or self._members.get(mid) != peer.der:
            return None
        return mid

    def role(self, node: str) -> str | None:
        return self._roles.get(node)

    # -- dialling -----------------------------------------------------------------------------

    def ssl_for(self, name: str) -> ssl.SSLContext | None:
        """The pinned TLS context for a Grenache service name of this cluster."""
        if not name.startswith(self.prefix):
            return None
        rest = name[len(self.prefix) :]
        kind, _, node = rest.partition(":")
        if kind in ("peer", "node", "events") and node:
            der = self._members.get(node)
            if der is None:
                # not a member we know: pin nothing it could present (the handshake fails)
                return self._context(node, b"", kind == "peer")
            return self._context(node, der, kind == "peer")
        return self._any_member()

    def _context(self, node: str, der: bytes, mutual: bool) -> ssl.SSLContext:
        k = (("peer:" if mutual else "api:") + node, der)
        ctx = self._contexts.get(k)
        if ctx is None:
            pins = [der] if der else [self.cert]  # unknown member: only ourselves, never them
            if mutual:
                ctx = pinned_client_context(pins, client_cert=self.cert, client_seed=self.key.seed)
            else:
                ctx = pinned_client_context(pins)
            if len(self._contexts) >= _CONTEXTS_MAX:
                self._contexts.clear()
            self._contexts[k] = ctx
        return ctx

    def _any_member(self) -> ssl.SSLContext:
        if self._any is None:
            certs = [self._members[i] for i in sorted(self._members)] or [self.cert]
            self._any = pinned_client_context(certs)
        return self._any
