"""An optional compiled build of the engine's hot module, from the very same source.

``grenex.engine.core`` is plain, typed Python.  When a C compiler is at hand, setup compiles
it with mypyc (``python -m grenex.engine.build_native``) into a directory keyed by a hash of
the engine's sources and the interpreter, and ``grenex.engine`` loads that build instead of
the source module.  Because the key covers every engine source file, an edited engine is never
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
_MODULE = "grenex.engine.core"


def _suffix() -> str:
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    return suffix if isinstance(suffix, str) else ".so"


def build_id() -> str:
    h = hashlib.sha256()
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


def load_core() -> bool:
    """Install the compiled core as ``grenex.engine.core`` if a fresh build exists.

    mypyc builds one module as a small shim (``core``) plus its body (``core__mypyc``); both
    are loaded from the build directory under their package names.
    """
    if os.environ.get("GRENEX_PURE") or _MODULE in sys.modules:
        return False
    try:
        path = built_path()
        body = path.with_name(f"core__mypyc{_suffix()}")
        if not (path.is_file() and body.is_file()):
            return False
    except OSError:
        return False
    try:
        _load_extension(f"{_MODULE}__mypyc", body)
        _load_extension(_MODULE, path)
    except Exception:  # a broken build must never stop the engine: fall back to the source
        sys.modules.pop(_MODULE, None)
        sys.modules.pop(f"{_MODULE}__mypyc", None)
        return False
    return True
