"""The builds of the real engine under test.

``grenex.engine`` serves a mypyc-compiled ``core`` when a fresh build exists, else the source
module. Both must behave identically, so when the compiled build is the one loaded, the tests
also load ``core.py`` from source under a private module name and run against that too.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import grenex.engine

__all__ = ["BUILDS", "NATIVE_LOADED", "engine_class", "snapshot_error"]

NATIVE_LOADED = not str(getattr(sys.modules["grenex.engine.core"], "__file__", "")).endswith(".py")
_PURE_NAME = "grenex.engine._core_from_source_for_tests"


def _pure_module() -> Any:
    if _PURE_NAME in sys.modules:
        return sys.modules[_PURE_NAME]
    path = Path(grenex.engine.__file__).parent / "core.py"
    spec = importlib.util.spec_from_file_location(_PURE_NAME, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_PURE_NAME] = module
    spec.loader.exec_module(module)
    return module


# "engine": whatever ``grenex.engine`` serves; "engine-source": core.py run as Python, only when
# the served one is the compiled build (otherwise it would be the same thing twice).
BUILDS = ("engine", "engine-source") if NATIVE_LOADED else ("engine",)


def engine_class(build: str) -> type[grenex.engine.Engine]:
    if build == "engine":
        return grenex.engine.Engine
    assert build == "engine-source"
    cls: type[grenex.engine.Engine] = _pure_module().Engine
    return cls


def snapshot_error(build: str) -> type[Exception]:
    if build == "engine":
        return grenex.engine.SnapshotError
    err: type[Exception] = _pure_module().SnapshotError
    return err
