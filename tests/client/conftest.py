"""Fixtures of the client tests: one real local cluster per test module.

``cluster`` starts two real Grapes (npm grenache-grape) and three voting ``grenex node``
processes on loopback (:class:`~grenex.devnet.LocalCluster`, markets BTC-USD and
ETH-USD open) once per module, and stops every process by PID when the module ends.  Tests
in a module share it, so each test uses its own client ids and prices where it matters.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from grenex.devnet import LocalCluster
from grenex.grenache.testing import GrapeNotInstalledError, find_grape_bin


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalCluster]:
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed (the Grapes are npm grenache-grape)")
    try:
        find_grape_bin()
    except GrapeNotInstalledError as e:
        pytest.skip(str(e))
    c = LocalCluster(nodes=3, voters=3, base_dir=tmp_path_factory.mktemp("client"))
    await c.start()
    try:
        yield c
    finally:
        await c.stop()
