"""The layering of ARCHITECTURE.md, enforced: a rule that lives only in prose decays.

Every module under ``src/grenex`` is parsed with ``ast`` (imports inside functions included)
and each import is checked against its package's row of the dependency table: which grenex
packages it may import, and which standard or foreign modules it must never import.  The pure
layers (engine, consensus, sim) also may not call the global ``random`` functions.

Deviation, written down here and in ARCHITECTURE.md's spirit: the engine imports ``msgspec``
(its events are msgspec Structs and its snapshot is msgspec JSON; no I/O), and two engine
modules are loaders rather than engine logic (``native`` reads its own source files to find a
compiled build; ``build_native`` runs the compiler), so they are exempt from the no-I/O rule
but not from the no-other-grenex-package rule.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "grenex"

IO_AND_TIME = {"asyncio", "time", "socket", "selectors", "subprocess", "threading", "aiohttp"}


@dataclass(frozen=True)
class Rule:
    may: frozenset[str]  # grenex packages it may import (itself always may)
    never: frozenset[str] = field(default_factory=frozenset)  # top-level modules it must not
    no_global_random: bool = False


RULES: dict[str, Rule] = {
    "engine": Rule(frozenset(), frozenset(IO_AND_TIME | {"random", "os"}), True),
    "consensus": Rule(frozenset(), frozenset({"asyncio", "time", "aiohttp", "socket"}), True),
    "codec": Rule(frozenset({"engine", "consensus"}), frozenset({"asyncio", "aiohttp"})),
    "replica": Rule(
        frozenset({"engine", "consensus", "codec"}),
        frozenset({"asyncio", "time", "aiohttp", "socket"}),
        True,
    ),
    "storage": Rule(frozenset({"consensus", "codec"}), frozenset({"asyncio", "aiohttp"})),
    "grenache": Rule(frozenset()),
    "node": Rule(frozenset({"engine", "consensus", "codec", "replica", "storage", "grenache"})),
    "client": Rule(frozenset({"grenache", "codec", "engine"})),
    "sim": Rule(
        frozenset({"engine", "consensus", "replica", "codec"}),
        frozenset({"asyncio", "time", "aiohttp", "socket"}),
        True,
    ),
}

# loader modules inside the engine package (see the module docstring)
EXEMPT_FROM_IO = {"engine/native.py", "engine/build_native.py"}

# the module that starts a replay may only use the pure layers
TOP_LEVEL_RULES: dict[str, Rule] = {
    "replay.py": Rule(frozenset({"engine", "codec"}), frozenset({"asyncio", "aiohttp"})),
}


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"relative import at line {node.lineno}: use grenex.<pkg>"
            if node.module:
                out.append((node.lineno, node.module))
    return out


def _global_random_calls(tree: ast.AST) -> list[int]:
    """Lines that use ``random.<fn>`` other than the ``random.Random`` class."""
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "random"
            and node.attr != "Random"
        ):
            lines.append(node.lineno)
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "random"
            and any(alias.name != "Random" for alias in node.names)
        ):
            lines.append(node.lineno)
    return lines


def _violations(path: Path, package: str | None, rule: Rule, rel: str = "") -> list[str]:
    rel = rel or path.relative_to(SRC).as_posix()
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for line, name in _imports(tree):
        parts = name.split(".")
        if parts[0] == "grenex":
            if len(parts) == 1:
                found.append(f"{rel}:{line} imports the grenex top level package")
                continue
            target = parts[1]
            if target != package and target not in rule.may and (SRC / target).is_dir():
                found.append(f"{rel}:{line} imports grenex.{target}")
            if (SRC / f"{target}.py").is_file() and package is not None:
                found.append(f"{rel}:{line} imports the top-level module grenex.{target}")
        elif parts[0] in rule.never and rel not in EXEMPT_FROM_IO:
            found.append(f"{rel}:{line} imports {name}")
    if rule.no_global_random:
        found.extend(f"{rel}:{line} uses the global random" for line in _global_random_calls(tree))
    return found


def _package_modules() -> list[tuple[str, Path]]:
    return [(pkg, p) for pkg in sorted(RULES) for p in sorted((SRC / pkg).rglob("*.py"))]


def test_every_package_has_a_rule() -> None:
    packages = sorted(p.name for p in SRC.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert [p for p in packages if p not in RULES and p != "data"] == []


@pytest.mark.parametrize("package", sorted(RULES))
def test_package_imports_follow_the_table(package: str) -> None:
    problems: list[str] = []
    for pkg, path in _package_modules():
        if pkg == package:
            problems.extend(_violations(path, pkg, RULES[pkg]))
    assert problems == []


def test_top_level_modules() -> None:
    problems: list[str] = []
    for name, rule in TOP_LEVEL_RULES.items():
        problems.extend(_violations(SRC / name, None, rule))
    assert problems == []


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    """The rules above are only worth something if the checker can fail."""
    bad = tmp_path / "probe.py"
    bad.write_text("import asyncio\nimport random\nfrom grenex.node import x\nrandom.random()\n")
    problems = _violations(bad, "engine", RULES["engine"], rel="engine/probe.py")
    assert any("imports asyncio" in p for p in problems)
    assert any("imports grenex.node" in p for p in problems)
    assert any("global random" in p for p in problems)
