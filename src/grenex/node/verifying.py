"""Signatures off the event loop (SPEC §8: "a replica may verify a signature earlier, on receipt,
in threads, and reuse the verdict if the key is unchanged at apply").

:class:`Signatures` owns a small thread pool (PyNaCl releases the GIL while libsodium verifies)
and the node's :class:`~grenex.replica.verdicts.Verdicts` (verdicts and decoded envelopes, both
pure functions of the bytes, so whoever fills them the state machine decides the same):

* the client API awaits :meth:`verify` for an envelope it received;
* the peer API awaits :meth:`prepare` for forwarded commands (the leader checks them before it
  appends) and calls :meth:`prefetch` for log entries as they arrive (verified while they wait
  for their commit; at apply the verdict is a dict lookup);
* the gateway calls :meth:`precheck` (the leader's checks 1–5 before appending).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from grenex.codec.envelope import Envelope
from grenex.replica import Replica
from grenex.replica.auth import Duplicate, Reject
from grenex.replica.verdicts import Verdicts

__all__ = ["Signatures"]


class Signatures:
    """See the module docstring."""

    def __init__(
        self,
        cluster_id: str,
        threads: int,
        verdicts_max: int,
        wall_ms: Callable[[], int],
    ) -> None:
        self.verdicts = Verdicts(cluster_id, verdicts_max)
        self.wall_ms = wall_ms
        self.replica: Replica | None = None
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="verify")

    def attach(self, replica: Replica) -> None:
        """Verdicts and decoded envelopes are reused at apply."""
        self.replica = replica
        replica.verifier = self.verdicts
        replica.decoder = self.verdicts.take

    async def verify(self, env: Envelope, key: bytes) -> bool:
        """Verify ``env``'s signature by ``key`` in a worker thread; the verdict is kept for
        the checks before the log and at apply."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.verdicts.verify, env, key)

    def _verify_datas(self, datas: list[bytes]) -> None:
        """In a worker thread: decode and verify every envelope among ``datas`` whose signer
        the applied state knows (a key read a moment early is harmless: at apply a verdict is
        reused only for the key that signs then)."""
        replica = self.replica
        if replica is None:
            return
        verdicts = self.verdicts
        for d in datas:
            env = verdicts.decode(d)
            if type(env) is not Envelope:
                continue
            signer = replica.state.auth.signer(env)
            if type(signer) is bytes and not verdicts.known(env, signer):
                verdicts.verify(env, signer)

    async def prepare(self, datas: list[bytes]) -> None:
        """Verify forwarded commands before the gateway looks at them."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._verify_datas, datas)

    def prefetch(self, datas: list[bytes]) -> None:
        """Start verifying log entries as they arrive (their verdicts wait at apply)."""
        if datas:
            self._pool.submit(self._verify_datas, datas)

    def precheck(self, data: bytes) -> str | None:
        """The leader's SPEC §8 checks 1–5 before it appends (the gateway's hook): None to
        propose, "duplicate", or the reason code."""
        replica = self.replica
        assert replica is not None
        verdicts = self.verdicts
        _env, v = replica.state.precheck(data, self.wall_ms(), verdicts, verdicts.decode)
        if type(v) is Reject:
            return v.reason
        if type(v) is Duplicate:
            return "duplicate"
        return None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
