"""What ``grenex up`` and ``grenex demo`` share: the Grape check, signal handling, and keys.

:class:`StoredKeyring` gives :class:`~grenex.devnet.LocalCluster` random keys (the operating
system's random source, :meth:`SecretKey.generate`), each kept in a key file (mode 0600) under
the state directory's ``keys/``, as SPEC §5 says ``grenex up`` writes them: ``operator.key``,
``<node id>.key``, and ``accounts/<name>.key`` for the demo's traders.  A key file that exists
is read, never replaced: ``grenex up`` started again on the same state directory (and
``--data-dir``) founds the same genesis, so its nodes find their own durable logs again.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from grenex.codec.keys import SecretKey, read_key_file, write_key_file
from grenex.codec.signer import Keyring
from grenex.grenache.testing import GrapeNotInstalledError, find_grape_bin

__all__ = ["GRAPE_MISSING", "StoredKeyring", "check_grape", "run_until_signal"]

T = TypeVar("T")

GRAPE_MISSING = (
    "the pinned Grape (npm package grenache-grape@1.0.0) is not installed.\n"
    "Run ./run setup in the grenex checkout (it runs `npm ci`), or set GRENEX_GRAPE_BIN to a "
    "grape executable."
)


def check_grape() -> None:
    """Fail at once, saying what to run, when no Grape executable is installed."""
    try:
        find_grape_bin()
    except GrapeNotInstalledError:
        raise click.ClickException(GRAPE_MISSING) from None


def run_until_signal(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; SIGINT/SIGTERM cancel it (its ``finally`` blocks then stop everything)."""

    async def main() -> T:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        return await task

    return asyncio.run(main())


class StoredKeyring(Keyring):
    """Random keys kept in key files under ``directory`` (see the module docstring)."""

    def __init__(self, directory: Path, operator: str = "op") -> None:
        super().__init__(salt="", operator=operator)
        self.directory = directory

    def path_of(self, name: str) -> Path:
        """The key file of account ``name`` (the operator's is ``operator.key``)."""
        if name == self.operator:
            return self.directory / "operator.key"
        return self.directory / "accounts" / f"{name}.key"

    def _load(self, cache_name: str, path: Path) -> SecretKey:
        k = self._keys.get(cache_name)
        if k is None:
            if path.exists():
                k = read_key_file(path)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                k = SecretKey.generate()
                write_key_file(path, k)
            self._keys[cache_name] = k
        return k

    def key(self, name: str) -> SecretKey:
        return self._load(name, self.path_of(name))

    __call__ = key

    def node_key(self, node: str) -> SecretKey:
        return self._load("node:" + node, self.directory / f"{node}.key")
