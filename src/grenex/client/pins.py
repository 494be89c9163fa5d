"""Which certificates a client believes (SPEC §8 "Endpoints"): the members' own.

A client starts from the genesis: its voters' certificates.  It learns other members (learners
admitted later) only from the ``members`` reply of a voter it authenticated (the reply is
fetched over a connection pinned to that voter's certificate).  Every connection is pinned
(:meth:`MemberPins.ssl_for`):

* ``node:<id>`` and ``events:<id>`` — exactly that member's certificate; an id the client does
  not know yet pins nothing an impostor could present (the handshake fails);
* ``nodes`` and ``events`` — any current member's certificate for discovery and reads the
  client can cross-check (:meth:`MemberPins.ssl_for`); a client that did not choose a node
  sends its commands and reads its events through :meth:`MemberPins.ssl_for_voters`, which
  admits only a **voter** there (any participant may run a learner).

An impostor announcing a member's name fails the TLS handshake, the Grenache client marks it
untrusted for that name and tries the next announced peer: one failed handshake, then never
again for ``untrusted_peer_ms``.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any, Final

from grenex.codec.genesis import Genesis
from grenex.grenache.tls import make_self_signed, pinned_client_context, unb64url

__all__ = ["MemberPins"]

_NOBODY_SEED: Final = b"\x00" * 31 + b"\x01"


class MemberPins:
    """See the module docstring."""

    def __init__(self, genesis: Genesis) -> None:
        self.prefix = f"grenex:{genesis.cluster}:"
        self.voters: tuple[str, ...] = tuple(v.id for v in genesis.voters)
        self._certs: dict[str, bytes] = {}
        self._voters: set[str] = set()  # ids whose role is voter (checked by membership)
        for v in genesis.voters:
            if v.cert is not None:
                self._certs[v.id] = unb64url(v.cert)
                self._voters.add(v.id)
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._nobody: ssl.SSLContext | None = None

    def knows(self, node: str) -> bool:
        return node in self._certs

    @property
    def members(self) -> Mapping[str, bytes]:
        return self._certs

    def add(self, node: str, der: bytes, voter: bool = False) -> None:
        """Pin ``node`` to a certificate known first-hand (e.g. the operator who made it)."""
        self._certs[node] = der
        if voter:
            self._voters.add(node)
        self._contexts.clear()

    def learn(self, reply: Any) -> int:
        """Take a voter's ``members`` reply (``{"index", "members": [{"id", "key", "cert",
        "role"}…]}``): the current members' certificates.  Returns how many are known now."""
        members = reply.get("members") if isinstance(reply, dict) else None
        if not isinstance(members, list):
            return len(self._certs)
        certs: dict[str, bytes] = {}
        voters: set[str] = set()
        for m in members:
            if not isinstance(m, dict):
                continue
            mid, cert = m.get("id"), m.get("cert")
            if isinstance(mid, str) and isinstance(cert, str):
                try:
                    certs[mid] = unb64url(cert)
                except ValueError:
                    continue
                if m.get("role") == "voter":
                    voters.add(mid)
        if certs:
            self._certs = certs
            self._voters = voters
            self._contexts.clear()
        return len(self._certs)

    def ssl_for(self, name: str) -> ssl.SSLContext | None:
        """``node:<id>``/``events:<id>``: that member; ``nodes``/``events``: any member."""
        if not name.startswith(self.prefix):
            return None
        _kind, _, node = name[len(self.prefix) :].partition(":")
        if node:
            return self._one(node)
        return self._all(voters_only=False)

    def ssl_for_voters(self, name: str) -> ssl.SSLContext | None:
        """As :meth:`ssl_for`, but ``nodes``/``events`` admit only a voter."""
        if not name.startswith(self.prefix):
            return None
        _kind, _, node = name[len(self.prefix) :].partition(":")
        if node:
            return self._one(node)
        return self._all(voters_only=True)

    def _one(self, node: str) -> ssl.SSLContext:
        ctx = self._contexts.get(node)
        if ctx is None:
            der = self._certs.get(node)
            if der is None:
                return self._nobody_context()
            ctx = self._contexts[node] = pinned_client_context([der])
        return ctx

    def _all(self, voters_only: bool) -> ssl.SSLContext:
        """Any member, or any voter (``nodes``, ``events``)."""
        k = "\0voters" if voters_only else "\0all"  # never a node id (not a name)
        ctx = self._contexts.get(k)
        if ctx is None:
            certs = [
                self._certs[i] for i in sorted(self._certs) if not voters_only or i in self._voters
            ]
            if not certs:
                return self._nobody_context()
            ctx = self._contexts[k] = pinned_client_context(certs)
        return ctx

    def _nobody_context(self) -> ssl.SSLContext:
        """A context whose only pin is a certificate nobody serves with (a fixed throwaway
        key): every handshake fails."""
        if self._nobody is None:
            self._nobody = pinned_client_context([make_self_signed(_NOBODY_SEED, "nobody")])
        return self._nobody
