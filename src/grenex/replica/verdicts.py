"""Signature verdicts computed once and reused (SPEC §8: "a replica may verify a signature
earlier (on receipt, in threads) and reuse the verdict if the key is unchanged at apply").

:class:`Verdicts` is a bounded map ``(TEXT digest, SIG, key) -> verdict``.  Verifying is a pure
function of those three, so a cached verdict is exactly what verifying at apply would give: the
state machine stays deterministic whoever filled the cache, and whenever.  :meth:`put` may be
called from any thread (a dict assignment; the GIL makes it atomic); :meth:`__call__` is the
:data:`~grenex.replica.state.Verifier` the state machine calls: a hit costs a dict lookup, a
miss verifies now (one libsodium call) and remembers it.  Oldest entries are dropped first
beyond ``max_entries`` (insertion order; a dropped verdict is only computed again).
"""

from __future__ import annotations

from grenex.codec.envelope import Envelope, Rejection, decode_envelope_json
from grenex.replica.auth import verify_envelope

__all__ = ["DECODED_MAX", "Verdicts"]

DECODED_MAX = 4_096  # decoded entries on their way to apply (a batch's can be ~20 KB each)


class Verdicts:
    """See the module docstring."""

    __slots__ = ("_decoded", "_map", "cluster_id", "hits", "max_entries", "misses")

    def __init__(self, cluster_id: str, max_entries: int = 65_536) -> None:
        assert max_entries >= 1
        self.cluster_id = cluster_id
        self.max_entries = max_entries
        self._map: dict[tuple[bytes, str, bytes], bool] = {}
        # log entry bytes -> the envelope they decode to (decoding is a pure function too:
        # an entry decoded on receipt is not decoded again at apply)
        self._decoded: dict[bytes, Envelope | Rejection] = {}
        self.hits = 0
        self.misses = 0

    def verify(self, env: Envelope, key: bytes) -> bool:
        """Verify now (any thread) and remember the verdict."""
        ok = verify_envelope(self.cluster_id, env, key)
        self.put(env, key, ok)
        return ok

    def put(self, env: Envelope, key: bytes, ok: bool) -> None:
        m = self._map
        m[(env.digest, env.sig, key)] = ok
        while len(m) > self.max_entries:
            try:
                del m[next(iter(m))]
            except (StopIteration, KeyError, RuntimeError):  # another thread got there first
                break

    def decode(self, data: bytes) -> Envelope | Rejection:
        """The envelope in log entry ``data`` (§8 checks 1–2), decoded once and kept."""
        d = self._decoded
        env = d.get(data)
        if env is None:
            env = decode_envelope_json(data)
            d[data] = env
            while len(d) > DECODED_MAX:
                try:
                    del d[next(iter(d))]
                except (StopIteration, KeyError, RuntimeError):
                    break
        return env

    def put_decoded(self, data: bytes, env: Envelope) -> None:
        """An envelope decoded elsewhere (the client API) from exactly ``data``."""
        if len(self._decoded) < DECODED_MAX:
            self._decoded[data] = env

    def take(self, data: bytes) -> Envelope | Rejection:
        """As :meth:`decode`, and forget it (the entry is being applied: it is not needed
        again), so the map holds only what is on its way to apply."""
        env = self._decoded.pop(data, None)
        return env if env is not None else decode_envelope_json(data)

    def known(self, env: Envelope, key: bytes) -> bool:
        return (env.digest, env.sig, key) in self._map

    def __call__(self, env: Envelope, key: bytes) -> bool:
        ok = self._map.get((env.digest, env.sig, key))
        if ok is None:
            self.misses += 1
            return self.verify(env, key)
        self.hits += 1
        return ok

    def __len__(self) -> int:
        return len(self._map)
