"""Compile ``grenex.engine.core`` with mypyc into the build directory of :mod:`.native`.

Run by setup (``./run``): ``python -m grenex.engine.build_native``.  Exit status 1 (and a
one-line note) when there is no compiler: the engine then runs as pure Python.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from grenex.engine.native import SOURCES, built_path

__all__ = ["build"]

_HERE = Path(__file__).resolve().parent


def build(quiet: bool = True) -> Path:
    """Compile the engine core with mypyc; returns the path of the built module."""
    target = built_path()
    body_name = target.name.replace("core", "core__mypyc", 1)
    if target.is_file() and target.with_name(body_name).is_file():
        return target
    with tempfile.TemporaryDirectory(prefix="grenex-mypyc-") as tmp:
        root = Path(tmp)
        pkg = root / "grenex"
        (pkg / "engine").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "py.typed").write_text("")
        (pkg / "engine" / "__init__.py").write_text("")
        for name in SOURCES:
            shutil.copyfile(_HERE / name, pkg / "engine" / name)
        proc = subprocess.run(
            [sys.executable, "-m", "mypyc", "grenex/engine/core.py"],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "MYPYPATH": ""},
        )
        shim = pkg / "engine" / target.name
        body = pkg / "engine" / body_name
        if proc.returncode != 0 or not shim.is_file() or not body.is_file():
            raise RuntimeError(f"mypyc failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        target.parent.mkdir(parents=True, exist_ok=True)
        # body first, shim last and atomically: the loader looks for the shim
        for src in (body, shim):
            partial = target.with_name(src.name + ".partial")
            shutil.copyfile(src, partial)
            partial.replace(target.with_name(src.name))
    # builds of earlier sources can never be loaded again (their id is gone): drop them
    for old in target.parent.parent.iterdir():
        if old.is_dir() and old != target.parent:
            shutil.rmtree(old, ignore_errors=True)
    if not quiet:
        print(f"grenex: compiled the engine core into {target.parent}", file=sys.stderr)
    return target


def main() -> int:
    try:
        build(quiet=False)
    except (RuntimeError, OSError) as e:
        first = str(e).strip().splitlines()[:1]
        print(f"grenex: engine not compiled ({' '.join(first)}); it runs as pure Python")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
