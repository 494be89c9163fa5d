"""Helpers of the client tests: unreachable addresses, bounded waiting, accounts' key files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from grenex.codec.keys import write_key_file
from grenex.devnet import LocalCluster
from grenex.grenache import RemoteError

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


# ------------------------------------------------------------------------------- keys (SPEC §8)

_registered: dict[tuple[int, str], Path] = {}


def key_file(cluster: LocalCluster, name: str) -> Path:
    """A key file (mode 0600) holding the cluster keyring's key of account ``name``."""
    assert cluster.base_dir is not None
    path = cluster.base_dir / "accounts" / f"{name}.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_key_file(path, cluster.keyring.key(name))
    return path


async def account_key(cluster: LocalCluster, name: str, via: str = "n1") -> str:
    """The key file of account ``name``, registered (once) on the cluster: for ``--key``."""
    path = key_file(cluster, name)
    if (id(cluster), name) not in _registered:
        try:
            await cluster.register(via, name)
        except RemoteError as e:  # registered earlier (by this test run): bound to this key
            assert "client_taken" in str(e), e
        _registered[(id(cluster), name)] = path
    return str(path)


def operator_key(cluster: LocalCluster) -> str:
    """The operator's key file, where LocalCluster wrote it (``keys/operator.key``)."""
    return str(cluster.keys_dir / "operator.key")


def inner(envelope: Any) -> dict[str, Any]:
    """The command inside a signed envelope ``{"cmd": TEXT, "sig"}`` (SPEC §8)."""
    assert isinstance(envelope, dict) and isinstance(envelope.get("cmd"), str), envelope
    out: dict[str, Any] = json.loads(envelope["cmd"])
    return out
