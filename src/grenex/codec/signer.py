"""Making envelopes (SPEC §8): one account's signer, and a keyring for tests, demos and benches.

:class:`Signer` turns SPEC §2/§8 command objects into signed envelope JSON for one cluster:
it sets ``client`` and ``nonce`` (batches: ``{"client", "nonce", "batch": [...]}``), keeps the
nonce strictly increasing per account, and signs ``"grenex/1\\n" + cluster id + "\\n" + TEXT``.
The nonce comes from ``nonces`` (a callable returning a candidate, e.g. microseconds since the
epoch; the signer takes ``max(candidate, last + 1)``) or, by default, a counter from 1 — the
deterministic choice for the simulator.  A real client uses the clock: two processes signing
for one account then do not collide (a counter in each would reuse nonces: ``stale_nonce``).

:class:`Keyring` derives keys from a salt and a name (``sha256(salt, name)`` as the Ed25519
seed).  **Anyone who knows the salt can sign for every account it derives**: it exists so that
tests, the simulator and benchmarks can name accounts freely and build a genesis in one line.
Real deployments use key files (``grenex keys new``); ``grenex up`` and ``grenex demo`` write
random keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from grenex.codec import encode_json
from grenex.codec.envelope import BATCH_MAX, encode_envelope
from grenex.codec.genesis import Limits, make_genesis
from grenex.codec.keys import SecretKey

__all__ = ["KeySource", "Keyring", "Signer"]

KeySource = Callable[[str], SecretKey]
"""``account name -> its key`` (raises KeyError when the signer holds none)."""


class Keyring:
    """Deterministic keys by name (see the module docstring: test/demo use only)."""

    def __init__(self, salt: str = "grenex-dev", operator: str = "op") -> None:
        self.salt = salt
        self.operator = operator
        self._keys: dict[str, SecretKey] = {}

    def key(self, name: str) -> SecretKey:
        k = self._keys.get(name)
        if k is None:
            seed = hashlib.sha256(f"grenex-keyring\0{self.salt}\0{name}".encode()).digest()
            k = self._keys[name] = SecretKey(seed)
        return k

    __call__ = key

    def node_key(self, node: str) -> SecretKey:
        """A node's key (its own namespace: a node id may equal an account name)."""
        return self.key("node:" + node)

    def genesis(
        self,
        cluster: str,
        voters: Sequence[str],
        *,
        join: str = "operator",
        register: str = "open",
        limits: Limits | None = None,
        cert: Callable[[SecretKey, str], str] | None = None,
    ) -> bytes:
        """Genesis bytes: this keyring's operator and node keys (``cert(key, id)`` makes each
        voter's certificate when given)."""
        vs: list[tuple[str, str, str | None]] = []
        for v in voters:
            k = self.node_key(v)
            vs.append((v, k.public_key, cert(k, v) if cert is not None else None))
        op = (self.operator, self.key(self.operator).public_key)
        return make_genesis(cluster, op, vs, join=join, register=register, limits=limits)


class Signer:
    """Signs commands for accounts of one cluster (see the module docstring)."""

    def __init__(
        self,
        cluster_id: str,
        keys: KeySource | Mapping[str, SecretKey],
        nonces: Callable[[], int] | None = None,
    ) -> None:
        self.cluster_id = cluster_id
        self._keys: KeySource = keys.__getitem__ if isinstance(keys, Mapping) else keys
        self._nonces = nonces
        self._last: dict[str, int] = {}

    def key_of(self, client: str) -> SecretKey:
        return self._keys(client)

    def next_nonce(self, client: str) -> int:
        last = self._last.get(client, 0)
        n = last + 1
        if self._nonces is not None:
            n = max(n, self._nonces())
        self._last[client] = n
        return n

    def sign_text(self, client: str, text: bytes, key: SecretKey | None = None) -> bytes:
        """An envelope for TEXT already made (its nonce chosen by the caller)."""
        k = key if key is not None else self._keys(client)
        return encode_envelope(text, k.sign(self.cluster_id, text))

    def command(self, cmd: Mapping[str, Any], key: SecretKey | None = None) -> bytes:
        """One command object (with ``client``) as a signed envelope; ``nonce`` is set here
        unless the command has one."""
        client = cmd["client"]
        obj = dict(cmd)
        if "nonce" not in obj:
            obj["nonce"] = self.next_nonce(client)
        return self.sign_text(client, encode_json(obj), key)

    def batch(self, client: str, cmds: Sequence[Mapping[str, Any]]) -> bytes:
        """1–256 command objects (without client or nonce) as one signed batch envelope."""
        if not 1 <= len(cmds) <= BATCH_MAX:
            raise ValueError(f"a batch holds 1 to {BATCH_MAX} commands")
        obj = {"client": client, "nonce": self.next_nonce(client), "batch": list(cmds)}
        return self.sign_text(client, encode_json(obj))

    def register(self, client: str, key: SecretKey | None = None) -> bytes:
        """``register`` of ``client`` for its key (signed by that key)."""
        k = key if key is not None else self._keys(client)
        cmd = {"type": "register", "client": client, "key": k.public_key}
        return self.command(cmd, k)
