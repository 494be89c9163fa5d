"""Fixtures for the grenache tests: two real Grapes per test module, and a Link to them.

``grapes`` starts two real Grapes (grenache-grape 1.0.0 from node_modules, through
:mod:`grenex.grenache.testing`) once per test module, bootstrapping to each other, with
``--dpa 4000`` so announcements expire; they are stopped by PID when the module ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from grenex.grenache import Link
from grenex.grenache.testing import GrapeCluster, start_grapes


@pytest.fixture(scope="module")
def grapes() -> Iterator[GrapeCluster]:
    """Two Grapes on free loopback ports, announcements expiring (``--dpa 4000``)."""
    with start_grapes(2, dpa_ms=4000) as cluster:
        yield cluster


@pytest.fixture
async def link(grapes: GrapeCluster) -> AsyncIterator[Link]:
    """A Link to both Grapes, with a short lookup cache so tests see changes quickly."""
    async with Link(grapes.api_urls, request_timeout_ms=5000, lookup_cache_ttl_ms=500) as lk:
        yield lk
