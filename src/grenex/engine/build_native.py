"""Compile ``grenex.engine.core`` and ``grenex.engine.usedids`` with mypyc, as one group,
into the build directory of :mod:`.native`.

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

from grenex.engine.native import COMPILED, SOURCES, built_path, group_body

__all__ = ["build"]

_HERE = Path(__file__).resolve().parent


def build(quiet: bool = True) -> Path:
    """Compile the engine's hot modules with mypyc; returns the path of the built core."""
    target = built_path()
    suffix = target.name[len("core") :]
    if target.is_file() and group_body(target.parent) is not None:
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
            [sys.executable, "-m", "mypyc", *(f"grenex/engine/{m}.py" for m in COMPILED)],
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "MYPYPATH": ""},
        )
        shims = [pkg / "engine" / f"{m}{suffix}" for m in COMPILED]
        body = group_body(root)
        if proc.returncode != 0 or body is None or not all(p.is_file() for p in shims):
            raise RuntimeError(f"mypyc failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        target.parent.mkdir(parents=True, exist_ok=True)
        # body first, the core's shim last and atomically: the loader looks for the shim
        for src in (body, *shims):
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
