"""Fixtures: every scenario runs against each build of the real engine and the naive reference."""

from __future__ import annotations

import pytest

from .builds import BUILDS, engine_class
from .harness import Harness, RealSubject, ReferenceSubject


@pytest.fixture(params=[*BUILDS, "reference"])
def h(request: pytest.FixtureRequest) -> Harness:
    """A fresh harness over the real engine (each build), then over the reference."""
    if request.param == "reference":
        return Harness(ReferenceSubject())
    marker = request.node.get_closest_marker("engine_disagrees")
    if marker is not None:
        # Kept as a strict xfail so CI stays green while the report is open, and turns red
        # the moment the engine is fixed (then drop the marker).
        request.applymarker(pytest.mark.xfail(strict=True, reason=str(marker.args[0])))
    return Harness(RealSubject(engine_class(request.param)()))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "engine_disagrees(reason): the real engine is known to break this SPEC rule; the "
        "scenario is expected to fail (strictly) on the engine and pass on the reference",
    )
