"""An optional compiled build of the engine's hot modules, from the very same source.

``grenex.engine.core`` (and the used-id archive it consults for every order,
``grenex.engine.usedids``) are plain, typed Python.  When a C compiler is at hand, setup
compiles both with mypyc, as one group (so the core calls the archive natively), with
``python -m grenex.engine.build_native``, into a directory keyed by a hash of the engine's
sources and the interpreter, and ``grenex.engine`` loads that build instead of the source
modules.  Because the key covers every engine source file, an edited engine is never
served by a stale build: it simply runs as Python until it is built again.

``GRENEX_PURE=1`` forces the pure-Python module (tests compare the two builds).
``GRENEX_NATIVE_DIR`` moves the build directory (default: ``<sys.prefix>/grenex-native``).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
import sysconfig
from pathlib import Path

__all__ = ["SOURCES", "build_id", "built_path", "load_core", "native_dir"]

_HERE = Path(__file__).resolve().parent
# Every file whose content the compiled core depends on.
SOURCES = ("core.py", "decimal.py", "events.py", "usedids.py")
# compiled together, in this order of loading (the core last: its shim marks a whole build)
COMPILED = ("usedids", "core")
_MODULE = "grenex.engine.core"
_LAYOUT = b"group:usedids+core"  # what a build directory holds (part of the build id)


def _suffix() -> str:
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    return suffix if isinstance(suffix, str) else ".so"


def build_id() -> str:
    h = hashlib.sha256(_LAYOUT)
    for name in SOURCES:
        h.update(name.encode())
        h.update((_HERE / name).read_bytes())
    h.update(sys.version.encode())
    h.update(_suffix().encode())
    return h.hexdigest()[:24]


def native_dir() -> Path:
    override = os.environ.get("GRENEX_NATIVE_DIR")
    return Path(override) if override else Path(sys.prefix) / "grenex-native"


def built_path() -> Path:
    """Where the compiled core for the current sources lives (it may not exist)."""
    return native_dir() / build_id() / f"core{_suffix()}"


def _load_extension(name: str, path: Path) -> None:
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)


def group_body(directory: Path) -> Path | None:
    """The group's body in a build directory (mypyc names it ``<hash>__mypyc``), if one."""
    bodies = sorted(directory.glob(f"*__mypyc{_suffix()}"))
    return bodies[0] if len(bodies) == 1 else None


def load_core() -> bool:
    """Install the compiled modules (``grenex.engine.usedids``, ``grenex.engine.core``) if a
    fresh build exists.

    mypyc builds a group of modules as one body (``<hash>__mypyc``) and a small shim per
    module; the body is loaded under its own name, then each shim under its package name.
    """
    names = [f"grenex.engine.{m}" for m in COMPILED]
    if os.environ.get("GRENEX_PURE") or any(n in sys.modules for n in names):
        return False
    try:
        path = built_path()
        body = group_body(path.parent)
        shims = [path.with_name(f"{m}{_suffix()}") for m in COMPILED]
        if body is None or not all(p.is_file() for p in shims):
            return False
    except OSError:
        return False
    loaded: list[str] = []
    try:
        body_name = body.name[: -len(_suffix())]
        loaded.append(body_name)
        _load_extension(body_name, body)
        for name, shim in zip(names, shims, strict=True):
            loaded.append(name)
            _load_extension(name, shim)
    except Exception:  # a broken build must never stop the engine: fall back to the source
        for name in loaded:
            sys.modules.pop(name, None)
        return False
    return True
