"""Fixtures: every scenario runs against the real engine and against the naive reference."""

from __future__ import annotations

import importlib.util

import pytest

from .harness import Harness, RealSubject, ReferenceSubject

HAVE_ENGINE = importlib.util.find_spec("grenex.engine.core") is not None


@pytest.fixture(params=["engine", "reference"])
def h(request: pytest.FixtureRequest) -> Harness:
    """A fresh harness over the real engine, then over the reference."""
    if request.param == "engine":
        if not HAVE_ENGINE:
            pytest.skip("grenex.engine.core has not landed yet")
        marker = request.node.get_closest_marker("engine_disagrees")
        if marker is not None:
            # Kept as a strict xfail so CI stays green while the report is open, and turns red
            # the moment the engine is fixed (then drop the marker).
            request.applymarker(pytest.mark.xfail(strict=True, reason=str(marker.args[0])))
        return Harness(RealSubject())
    return Harness(ReferenceSubject())


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "engine_disagrees(reason): the real engine is known to break this SPEC rule; the "
        "scenario is expected to fail (strictly) on the engine and pass on the reference",
    )
