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

from grenex.codec.envelope import Envelope
from grenex.replica.auth import verify_envelope

__all__ = ["Verdicts"]


class Verdicts:
    """See the module docstring."""

    __slots__ = ("_map", "cluster_id", "hits", "max_entries", "misses")

    def __init__(self, cluster_id: str, max_entries: int = 65_536) -> None:
        assert max_entries >= 1
        self.cluster_id = cluster_id
        self.max_entries = max_entries
        self._map: dict[tuple[bytes, str, bytes], bool] = {}
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
