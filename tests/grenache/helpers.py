"""Helpers for the grenache tests: Node.js peers run as processes, stopped by PID.

``node_peer(...)`` runs ``tests/grenache/js/peer.js`` (the Node.js Grenache packages from the
repository's node_modules) for the duration of a block; ``node_call`` runs a one-shot Node
client and returns its JSON answer. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
PEER_JS = Path(__file__).resolve().parent / "js" / "peer.js"
NODE = shutil.which("node") or "node"


class NodePeer:
    """A running ``peer.js`` process; read its stdout lines with a bounded wait."""

    def __init__(self, proc: asyncio.subprocess.Process, args: tuple[str, ...]) -> None:
        self.proc = proc
        self.args = args

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def line(self, timeout_s: float = 10.0) -> str:
        assert self.proc.stdout is not None
        try:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        except TimeoutError:
            raise AssertionError(f"no output from node {self.args} in {timeout_s}s") from None
        if not raw:
            err = b""
            if self.proc.stderr is not None:
                with contextlib.suppress(TimeoutError):
                    err = await asyncio.wait_for(self.proc.stderr.read(4000), 2)
            raise AssertionError(f"node {self.args} exited: {err.decode(errors='replace')}")
        return raw.decode().rstrip("\n")

    async def ready_port(self, timeout_s: float = 10.0) -> int:
        text = await self.line(timeout_s)
        assert text.startswith("READY "), text
        return int(text.split()[1])

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()


async def start_node(*args: str, env: dict[str, str] | None = None) -> NodePeer:
    proc = await asyncio.create_subprocess_exec(
        NODE,
        str(PEER_JS),
        *args,
        cwd=REPO_ROOT,  # so require() finds the repository's node_modules
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    return NodePeer(proc, args)


@contextlib.asynccontextmanager
async def node_peer(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[NodePeer]:
    """Run ``peer.js ARGS`` for the duration of the block; stop it by PID afterwards."""
    peer = await start_node(*args, env=env)
    try:
        yield peer
    finally:
        await peer.stop()


async def node_call(
    grape: str,
    name: str,
    transport: str,
    kind: str,
    payload: Any,
    *,
    compress: bool = False,
    timeout_ms: int = 5000,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run a one-shot Node client (``request`` or ``map``); return its JSON answer line."""
    async with node_peer(
        "client",
        grape,
        name,
        transport,
        kind,
        json.dumps(payload),
        "compress" if compress else "plain",
        str(timeout_ms),
        env=env,
    ) as peer:
        answer: dict[str, Any] = json.loads(await peer.line(timeout_ms / 1000 + 10))
        return answer


def count_writes(transport: asyncio.BaseTransport) -> list[int]:
    """From now on, the size of every ``transport.write`` (the list grows as they happen)."""
    writes: list[int] = []
    real_write = transport.write  # type: ignore[attr-defined]

    def counting(data: bytes | bytearray | memoryview) -> None:
        writes.append(len(data))
        real_write(data)

    transport.write = counting  # type: ignore[attr-defined]
    return writes
