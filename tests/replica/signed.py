"""Signed envelopes for the replica-layer tests (SPEC §8): one genesis, deterministic keys.

:data:`GENESIS` founds a cluster of voters ``a``, ``b``, ``c`` (no certificates) whose operator
is ``op``; :class:`Accounts` signs commands for any account with its keyring key (counter
nonces per account), so a test names accounts freely.  Accounts other than the operator must
be registered first (:meth:`Accounts.register`); :func:`registered_state` gives a
:class:`ReplicaState` where the named accounts already are.
"""

from __future__ import annotations

from typing import Any

from grenex.codec.genesis import Genesis, Limits, parse_genesis
from grenex.codec.keys import SecretKey
from grenex.codec.signer import Keyring, Signer
from grenex.replica import ReplicaState

KEYRING = Keyring("grenex-replica-tests")
OP = KEYRING.operator
VOTERS = ("a", "b", "c")
T0 = 1_700_000_000_000  # ms: the entries' time in these tests


def make_genesis(limits: Limits | None = None, voters: tuple[str, ...] = VOTERS) -> Genesis:
    return parse_genesis(KEYRING.genesis("main", list(voters), limits=limits))


GENESIS = make_genesis()


class Accounts:
    """Signs commands for any account of a genesis made from :data:`KEYRING`."""

    def __init__(self, genesis: Genesis = GENESIS) -> None:
        self.genesis = genesis
        self.keys: dict[str, SecretKey] = {}  # rotated keys; KEYRING's otherwise
        self.signer = Signer(genesis.cluster_id, self.key)

    def key(self, client: str) -> SecretKey:
        k = self.keys.get(client)
        return k if k is not None else KEYRING.key(client)

    def cmd(self, client: str, by: SecretKey | None = None, **fields: Any) -> bytes:
        """``fields`` (with ``type``) as ``client``'s next envelope, signed ``by`` a given key
        (default: the account's)."""
        return self.signer.command(dict(fields, client=client), by)

    def op(self, **fields: Any) -> bytes:
        """A command of the operator (add_market and the membership commands)."""
        return self.cmd(OP, **fields)

    def register(self, client: str) -> bytes:
        return self.signer.register(client, self.key(client))

    def rotate(self, client: str, new: SecretKey) -> bytes:
        """``rotate_key`` to ``new`` (signed by the current key); later envelopes use ``new``."""
        env = self.cmd(client, type="rotate_key", key=new.public_key)
        self.keys[client] = new
        return env

    def place(self, client: str, oid: str, market: str = "M", **kw: Any) -> bytes:
        fields: dict[str, Any] = {"side": "buy", "qty": "1", "price": "100"}
        fields.update(kw)
        return self.cmd(client, type="place", id=oid, market=market, **fields)

    def add_market(self, market: str = "M", tick: str = "1", lot: str = "1") -> bytes:
        return self.op(type="add_market", market=market, tick=tick, lot=lot)


def registered_state(accounts: Accounts, clients: list[str]) -> ReplicaState:
    """A state at index ``len(clients)`` where each client registered, in order."""
    state = ReplicaState(accounts.genesis)
    for i, c in enumerate(clients, 1):
        o = state.apply_command(i, 1, accounts.register(c), T0)
        assert type(o.events[0]).__name__ == "Registered", o.events
    return state
