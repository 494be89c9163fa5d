"""The shipped test support (grenex.grenache.testing) that other grenex tests build on.

Proves: the grape binary is found in node_modules, ``GRENEX_GRAPE_BIN`` overrides it and a
wrong value fails with a clear message; a single Grape works on its own (it bootstraps to
itself); ``stop`` and ``kill`` end the process by PID; ``wait_for`` gives up after its bound.
"""

from __future__ import annotations

import os
import urllib.request

import pytest

from grenex.grenache.testing import (
    GrapeNotInstalledError,
    async_wait_for,
    find_grape_bin,
    start_grapes,
    wait_for,
)


def test_grape_binary_is_found_and_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_grape_bin().name == "grape"
    monkeypatch.setenv("GRENEX_GRAPE_BIN", "/nonexistent/grape")
    with pytest.raises(GrapeNotInstalledError, match="GRENEX_GRAPE_BIN"):
        find_grape_bin()
    with pytest.raises(GrapeNotInstalledError):
        start_grapes(1)


def test_single_grape_lifecycle() -> None:
    with start_grapes(1, dpa_ms=None) as cluster:
        grape = cluster[0]
        pid = grape.pid
        req = urllib.request.Request(
            grape.api_url + "/announce", method="POST", data=b'{"rid":"x","data":["t:single",4000]}'
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.read() != b""
        req = urllib.request.Request(
            grape.api_url + "/lookup", method="POST", data=b'{"rid":"x","data":"t:single"}'
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.read() == b'["127.0.0.1:4000"]'
        grape.kill()
        assert not grape.alive
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_wait_for_is_bounded() -> None:
    with pytest.raises(TimeoutError, match="never"):
        wait_for(lambda: False, 0.05, message="never")


async def test_async_wait_for_accepts_async_conditions() -> None:
    calls = 0

    async def cond() -> bool:
        nonlocal calls
        calls += 1
        return calls >= 3

    await async_wait_for(cond, 2.0)
    assert calls == 3
    with pytest.raises(TimeoutError):
        await async_wait_for(lambda: False, 0.05)
