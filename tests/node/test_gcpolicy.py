"""The node's collector policy: thresholds, periodic freezing, and the bounding full collection.

Proves: ``install`` leaves the older generations out of automatic collection and freezes what
startup left; ``run`` freezes survivors on its period; a reference cycle that became garbage
after being frozen is freed by the periodic full collection (so what the policy holds back is
bounded by ``full_every_s``). Each test restores the interpreter's collector state.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from grenex.node.gcpolicy import GcPolicy


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    gc.collect()


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        GcPolicy(young_threshold=10)
    with pytest.raises(ValueError):
        GcPolicy(freeze_every_s=0)
    with pytest.raises(ValueError):
        GcPolicy(freeze_every_s=2.0, full_every_s=1.0)


def test_install_sets_thresholds_and_freezes_startup() -> None:
    GcPolicy(young_threshold=5_000).install()
    young, older, oldest = gc.get_threshold()
    assert young == 5_000
    assert older >= 100_000 and oldest >= 100_000
    assert gc.get_freeze_count() > 0


async def wait_for(cond: object, timeout_s: float = 10.0) -> None:
    assert callable(cond)
    async with asyncio.timeout(timeout_s):
        while not cond():
            await asyncio.sleep(0.01)


async def test_survivors_are_frozen_and_a_frozen_cycle_is_freed_by_the_full_collection() -> None:
    policy = GcPolicy(young_threshold=1_000_000, freeze_every_s=0.02, full_every_s=0.5)
    policy.install()
    node = Node()
    gone = weakref.ref(node)
    frozen_before = gc.get_freeze_count()
    task = asyncio.create_task(policy.run())
    try:
        # the next freeze takes the new object along
        await wait_for(lambda: gc.get_freeze_count() > frozen_before)
        del node
        assert gone() is not None  # a frozen cycle is not collected by young collections
        gc.collect(0)
        assert gone() is not None
        await wait_for(lambda: gone() is None)  # the periodic full collection frees it
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
