"""Fixtures of the real-process node tests: a recorded cluster per test module.

Every module gets its own :class:`~node.harness.Harness` (real Grapes from npm, real
``grenex node`` processes on loopback), started once and stopped by PID when the module ends.
Logs and data directories live under pytest's temporary directory (kept for the last runs), so
a failure can be read afterwards.  Every test here is marked ``node``; the long fault tests
are also marked ``long``: ``-m long`` runs only them, ``-m "node and not long"`` the rest.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator

import pytest

from grenex.devnet import LocalCluster

from .harness import Harness


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/node/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.node)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "long: a long real-process fault test (run alone: -m long)")
    config.addinivalue_line("markers", "node: a real-process node test (tests/node)")


@contextlib.asynccontextmanager
async def started_harness(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    *,
    stream_node: str = "n5",
    memory: bool = True,
    nodes: int = 5,
    voters: int = 3,
    grapes: int = 2,
    secret: str | None = None,
) -> AsyncIterator[Harness]:
    """A started :class:`Harness` on cluster ``name`` (its own Grenache names); with
    ``secret``, peer traffic is signed (``GRENEX_CLUSTER_SECRET``)."""
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed (the Grapes are npm grenache-grape)")
    cluster = LocalCluster(
        nodes=nodes,
        voters=voters,
        grapes=grapes,
        cluster=name,
        memory=memory,
        base_dir=tmp_path_factory.mktemp(name),
        secret=secret,
    )
    h = Harness(cluster, stream_node)
    await h.start()
    try:
        yield h
    finally:
        await h.stop()
