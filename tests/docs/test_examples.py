"""The code examples of README.md and docs/*.md run as written (issue 14, item 6).

Every fenced block with a language (a block without one is a diagram or sample output) is
preceded by a marker line:

* ``<!-- example: python|js|sh expect="TEXT" -->``: run here, against one real ``grenex up``
  (2 Grapes, 3 voters + 1 learner) started for this module, with the network in the
  environment as a user has it (``GRENEX_GRAPE``, from that ``up``'s ``up.json``): python with
  this virtualenv's interpreter, js with ``node`` (``NODE_PATH`` = the repo's node_modules),
  sh with ``bash -e -o pipefail`` (``PATH`` starting with ``.venv/bin``).  Each must exit 0
  within :data:`BLOCK_TIMEOUT_S` and print TEXT.  Blocks run in document order.
* ``<!-- not run: REASON -->``: deliberately not run (a fragment, a placeholder, interactive,
  minutes long, root or several hosts needed); the reason is in the document.

A code block without a marker fails :func:`test_every_code_block_is_marked`.  And nothing a
user reads (README, docs, every ``--help``) points at files outside the repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK_TIMEOUT_S = 60.0
UP_TIMEOUT_S = 90.0
UP = (sys.executable, "-m", "grenex", "up")

pytestmark = pytest.mark.timeout(150)

_FENCE = re.compile(r"^```(\S*)\s*$")
_MARK = re.compile(r"^<!-- (example|not run):\s*(.*?)\s*-->$")
_EXPECT = re.compile(r'expect="([^"]*)"')
RUNNERS = ("python", "js", "sh")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    mark: str | None  # "example" / "not run" / None
    note: str  # the marker's text: "python expect=..." or the reason

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    @property
    def runner(self) -> str:
        return self.note.split()[0] if self.note else ""

    @property
    def expect(self) -> str | None:
        m = _EXPECT.search(self.note)
        return m.group(1) if m else None


def blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path`` with a language, with the marker line before it."""
    lines = path.read_text().splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        if lang and lang != "text":
            k = start - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            mk = _MARK.match(lines[k].strip()) if k >= 0 else None
            out.append(
                Block(
                    path,
                    start + 1,
                    lang,
                    "\n".join(lines[start + 1 : j]) + "\n",
                    mk.group(1) if mk else None,
                    mk.group(2) if mk else "",
                )
            )
        i = j + 1
    return out


ALL = [b for p in DOCS for b in blocks(p)]
RUNNABLE = [b for b in ALL if b.mark == "example"]


def test_every_code_block_is_marked() -> None:
    unmarked = [f"{b.where} ({b.lang})" for b in ALL if b.mark is None]
    assert unmarked == [], "mark them <!-- example: … --> or <!-- not run: reason -->"
    for b in ALL:
        if b.mark == "not run":
            assert len(b.note) >= 8, f"{b.where}: say why it is not run"
        else:
            assert b.runner in RUNNERS, f"{b.where}: runner {b.runner!r}"
            assert b.expect, f'{b.where}: expect="…" names a line it prints'
    # the three README snippets and the Python client are among the runnable ones
    readme = {b.runner for b in RUNNABLE if b.path.name == "README.md"}
    assert readme == {"python", "js", "sh"}


# ------------------------------------------------------------------------------ the network


@dataclass
class Network:
    env: dict[str, str]
    cwd: Path


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # up stops everything it started
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed (the Grapes are npm grenache-grape)")
    if not (REPO / "node_modules" / ".bin" / "grape").exists():
        pytest.skip("the Grape is not installed (./run setup)")
    base = tmp_path_factory.mktemp("docs")
    state = base / "state"
    log = (base / "up.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRENEX_")}
    proc = subprocess.Popen(
        [*UP, "--nodes", "4", "--voters", "3", "--grapes", "2", "--state-dir", str(state)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    try:
        up_json = state / "up.json"
        deadline = time.monotonic() + UP_TIMEOUT_S
        while not up_json.exists():
            assert proc.poll() is None, (base / "up.log").read_text()
            assert time.monotonic() < deadline, (base / "up.log").read_text()
            time.sleep(0.1)
        doc = json.loads(up_json.read_text())
        venv_bin = str(Path(sys.executable).parent)
        env.update(
            GRENEX_GRAPE=",".join(doc["grapes"]),
            GRENEX_GENESIS=doc["genesis"],
            OPERATOR_KEY=str(Path(doc["genesis"]).parent / "keys" / "operator.key"),
            PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}",
            NODE_PATH=str(REPO / "node_modules"),
            COLUMNS="160",
        )
        cwd = base / "work"
        cwd.mkdir()
        yield Network(env, cwd)
    finally:
        _stop(proc)
        log.close()


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.where for b in RUNNABLE])
def test_example_runs_as_written(block: Block, network: Network) -> None:
    suffix = {"python": ".py", "js": ".js", "sh": ".sh"}[block.runner]
    script = network.cwd / f"example{suffix}"
    script.write_text(block.code)
    cmd = {
        "python": [sys.executable, str(script)],
        "js": ["node", str(script)],
        "sh": ["bash", "-e", "-o", "pipefail", str(script)],
    }[block.runner]
    try:
        run = subprocess.run(
            cmd,
            cwd=network.cwd,
            env=network.env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{block.where} did not end within {BLOCK_TIMEOUT_S} s: {e}") from e
    said = f"{block.where}\n--- stdout\n{run.stdout}\n--- stderr\n{run.stderr}"
    assert run.returncode == 0, said
    assert block.expect is not None and block.expect in run.stdout, said


# ------------------------------------------------------------------------------ nothing outside

OUTSIDE = re.compile(r"\.\./shared|shared/|\bSPEC\b|ARCHITECTURE\.md|BENCHMARKS\.md")


def test_the_docs_point_only_inside_the_repo() -> None:
    found = [
        f"{p.relative_to(REPO)}:{n}: {line.strip()[:80]}"
        for p in DOCS
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert found == []


def _help_texts() -> Iterator[tuple[str, str]]:
    from grenex.cli import cli

    runner = CliRunner()

    def walk(path: list[str], cmd: click.Command) -> Iterator[tuple[str, str]]:
        result = runner.invoke(cli, [*path, "--help"], terminal_width=200)
        yield " ".join(path) or "grenex", result.output
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                if sub is not None:
                    yield from walk([*path, name], sub)

    yield from walk([], cli)


def test_help_points_only_inside_the_repo() -> None:
    texts = dict(_help_texts())
    assert "up" in texts and "status" in texts and len(texts) > 15
    found = [
        f"grenex {name} --help: {m.group(0)}"
        for name, t in texts.items()
        for m in [OUTSIDE.search(t)]
        if m
    ]
    assert found == []
