"""What ``grenex up`` and ``grenex demo`` share: the Grape check and signal handling."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

import click

from grenex.grenache.testing import GrapeNotInstalledError, find_grape_bin

__all__ = ["GRAPE_MISSING", "check_grape", "run_until_signal"]

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
