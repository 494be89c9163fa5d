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

The devnet starts nodes as processes: of the node package it may import only
``grenex.node.config`` (names and settings), never the node's internals.  The client holds the
client library and its command line only; :func:`test_client_holds_no_devnet` keeps
``LocalCluster``, ``up`` and ``demo`` out of it.
"""

from __future__ import annotations

import ast
import importlib.util
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
    # single modules of packages not in ``may`` that it may still import (``grenex.x.y``)
    may_modules: frozenset[str] = field(default_factory=frozenset)


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
    "devnet": Rule(
        frozenset({"client", "grenache", "codec", "engine"}),
        may_modules=frozenset({"grenex.node.config"}),
    ),
    # the fault lab starts nodes only as processes (`grenex node`), never imports them
    "lab": Rule(frozenset({"client", "grenache", "engine", "codec"})),
    "sim": Rule(
        frozenset({"engine", "consensus", "replica", "codec"}),
        frozenset({"asyncio", "time", "aiohttp", "socket"}),
        True,
    ),
}

# loader modules inside the engine package (see the module docstring)
EXEMPT_FROM_IO = {"engine/native.py", "engine/build_native.py"}

# the module that starts a replay may only use the pure layers (the replica's state machine:
# an export is replayed with the session table, as the nodes applied it)
TOP_LEVEL_RULES: dict[str, Rule] = {
    "replay.py": Rule(frozenset({"engine", "codec", "replica"}), frozenset({"asyncio", "aiohttp"})),
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
            allowed = target == package or target in rule.may or name in rule.may_modules
            if not allowed and (SRC / target).is_dir():
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


def test_devnet_may_use_the_node_config_but_not_its_internals(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from grenex.node.config import NodeConfig\nimport grenex.client\n")
    assert _violations(probe, "devnet", RULES["devnet"], rel="devnet/probe.py") == []
    for bad in ("from grenex.node.node import Node", "import grenex.node", "import grenex.replica"):
        probe.write_text(bad + "\n")
        assert _violations(probe, "devnet", RULES["devnet"], rel="devnet/probe.py") != [], bad
    probe.write_text("from grenex.devnet import LocalCluster\n")
    assert _violations(probe, "client", RULES["client"], rel="client/probe.py") != []


# what belongs in grenex.devnet, never in grenex.client
DEVNET_MODULES = {"cluster.py", "demo.py", "up.py"}
DEVNET_NAMES = {"LocalCluster", "NodeProc", "ClusterError", "demo_command", "up_command"}
DEVNET_COMMANDS = {"demo", "up"}


def _click_command_names(tree: ast.AST) -> list[str]:
    """The names given to ``@click.command("name")`` / ``@x.command("name")`` decorators."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for d in node.decorator_list:
                if (
                    isinstance(d, ast.Call)
                    and isinstance(d.func, ast.Attribute)
                    and d.func.attr == "command"
                    and d.args
                    and isinstance(d.args[0], ast.Constant)
                    and isinstance(d.args[0].value, str)
                ):
                    names.append(d.args[0].value)
    return names


def test_client_holds_no_devnet() -> None:
    """client/ is the client library and its command line; the local network lives in devnet/."""
    client = SRC / "client"
    assert sorted(p.name for p in client.rglob("*.py") if p.name in DEVNET_MODULES) == []
    problems = []
    for path in sorted(client.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        defined = {
            n.name
            for n in ast.walk(tree)
            if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        }
        rel = path.relative_to(SRC).as_posix()
        problems += [f"{rel} defines {name}" for name in sorted(defined & DEVNET_NAMES)]
        problems += [
            f"{rel} defines the {name!r} command"
            for name in _click_command_names(tree)
            if name in DEVNET_COMMANDS
        ]
    assert problems == []
    import grenex.client

    assert not DEVNET_NAMES & set(grenex.client.__all__)
    assert not DEVNET_NAMES & set(dir(grenex.client))
    for name in ("cluster", "demo", "up"):
        assert importlib.util.find_spec(f"grenex.client.{name}") is None, name
    assert (SRC / "devnet" / "cluster.py").is_file()
    assert (SRC / "devnet" / "demo.py").is_file()
    assert (SRC / "devnet" / "up.py").is_file()


def test_the_cli_runs_up_and_demo_from_devnet() -> None:
    from grenex.cli import _COMMANDS

    assert {n: _COMMANDS[n] for n in sorted(DEVNET_COMMANDS)} == {
        "demo": "grenex.devnet.demo:demo_command",
        "up": "grenex.devnet.up:up_command",
    }


# -- the node's layout (ARCHITECTURE.md "What the node looks like from the inside") ------------

NODE_SERVICES = {
    "node.py": "lifecycle: assembles and runs the services",
    "driving.py": "the driver service: the one task that touches the replica",
    "client_api.py": "the client API service",
    "peer_api.py": "the peer service (what other nodes send)",
    "peers.py": "outbound traffic to other nodes",
    "publisher.py": "the events publisher",
    "io.py": "NodeIO: the injected I/O (real, or fakes with a manual clock)",
    "errors.py": "the node's error tree",
    "snapshotter.py": "snapshots in a forked child",
    "membership.py": "joining, and keeping members' peer names fresh",
    "founding.py": "an empty founding voter asks before it founds; rejoin",
    "identity.py": "the node's certificate, TLS of its services, who the members are",
    "verifying.py": "signatures verified in threads, verdicts reused at apply",
}
# the most lines one class or function of the node may span: small services, not one hallway
NODE_CLASS_LINES_MAX = 400
NODE_FUNCTION_LINES_MAX = 80


def _defs(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        (f"{path.name}:{n.name}", (n.end_lineno or n.lineno) - n.lineno + 1)
        for n in ast.walk(tree)
        if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
    ]


def test_the_node_is_small_services() -> None:
    node = SRC / "node"
    missing = [name for name in sorted(NODE_SERVICES) if not (node / name).is_file()]
    assert missing == []
    too_big = []
    for path in sorted(node.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for n in ast.walk(tree):
            if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (n.end_lineno or n.lineno) - n.lineno + 1
                limit = (
                    NODE_CLASS_LINES_MAX if isinstance(n, ast.ClassDef) else NODE_FUNCTION_LINES_MAX
                )
                if lines > limit:
                    too_big.append(f"{path.name}:{n.name} spans {lines} lines (> {limit})")
    assert too_big == []


def _calls_attribute(path: Path, attrs: set[str]) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{path.name}:{n.lineno} calls .{n.func.attr}()"
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in attrs
    ]


def test_routing_decisions_live_in_the_gateway() -> None:
    """Only the pure gateway proposes client commands: the node neither proposes nor forwards
    by itself (it carries the gateway's outputs)."""
    problems: list[str] = []
    for path in sorted((SRC / "node").glob("*.py")):
        problems += _calls_attribute(path, {"propose", "propose_many"})
    assert problems == []
    gateway = (SRC / "replica" / "gateway.py").read_text()
    assert "propose_many" in gateway


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = n.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _wire_spellings(path: Path) -> list[str]:
    """String literals (not docstrings) that spell an error code or a service name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docs = _docstrings(tree)
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs:
            v = n.value
            if v.startswith("ERR_GRENEX_") or any(k in v for k in (":peer:", ":node:", ":events")):
                out.append(f"{path.name}:{n.lineno} spells {v[:40]!r}")
    return out


def test_the_wire_vocabulary_is_defined_once_in_codec() -> None:
    """Error codes and service names are spelled in codec/ and nowhere else in the shell."""
    problems: list[str] = []
    for pkg in ("node", "devnet", "client"):
        for path in sorted((SRC / pkg).rglob("*.py")):
            problems += _wire_spellings(path)
    assert problems == []


def test_node_and_simulator_share_the_driver_and_gateway() -> None:
    for rel in ("node/driving.py", "sim/cluster.py"):
        names = {name for _, name in _imports(ast.parse((SRC / rel).read_text()))}
        assert "grenex.replica.driver" in names, rel
        assert "grenex.replica.gateway" in names, rel


def test_the_node_reads_time_only_through_its_io() -> None:
    """So five nodes run in one process on a manual clock."""
    allowed = {"io.py", "main.py", "gcpolicy.py", "snapshotter.py"}
    problems = []
    for path in sorted((SRC / "node").glob("*.py")):
        if path.name in allowed:
            continue
        names = {name for _, name in _imports(ast.parse(path.read_text()))}
        problems += [f"{path.name} imports {n}" for n in sorted(names & {"time", "datetime"})]
        text = path.read_text()
        problems += [f"{path.name} sleeps on asyncio" for _ in [0] if "asyncio.sleep(" in text]
    assert problems == []
