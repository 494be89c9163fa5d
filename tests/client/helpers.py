"""Helpers of the client tests: unreachable addresses and bounded waiting."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@contextlib.asynccontextmanager
async def black_hole() -> AsyncIterator[str]:
    """``http://127.0.0.1:P`` of a server that accepts connections and never answers."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        writers.append(w)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()


async def until(
    check: Callable[[], Awaitable[T | None]], timeout_s: float = 10.0, what: str = "condition"
) -> T:
    """Poll ``check`` until it returns something other than None (or fail after timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
