"""``grenex demo`` and ``grenex up`` run as a user runs them (subprocesses, real Grapes).

Proves: the demo with a small order count registers each trader (its own account and key) and
trades through several nodes, prints every replica side by side and exits 0 only because
they agree; ``up`` starts a network that the client commands reach with the genesis it
prints (and never prints a key), and on Ctrl-C (SIGINT) stops every process it started (their
PIDs are gone);
without an installed Grape both say what to run, at once, with a non-zero exit.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

GRENEX = [sys.executable, "-m", "grenex"]

pytestmark = pytest.mark.timeout(240)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); its /proc state says it is gone
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_demo_proves_the_replicas_agree() -> None:
    proc = subprocess.run(
        [*GRENEX, "demo", "--orders", "150", "--nodes", "3", "--voters", "3", "--traders", "3"],
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, (out[-3000:], proc.stderr[-3000:])
    assert "3 traders registered, each with its own account and key" in out
    assert "every replica, side by side" in out
    assert re.search(r"all 3 replicas hold identical books and state", out)
    assert "150 commands acknowledged" in out
    assert "Traceback" not in proc.stderr


def test_up_serves_until_ctrl_c_then_stops_everything(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*GRENEX, "up", "--nodes", "3", "--voters", "3", "--grapes", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    grape = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"Grapes: (\S+)", line)
        if m:
            grape = m.group(1)
        if "Ctrl-C stops everything" in line:
            break
    try:
        text = "".join(lines)
        assert grape is not None, text
        pids = [int(p) for p in re.findall(r"127\.0\.0\.1:\d+\s+│?\s*(\d+)", text)]
        assert len(pids) == 3, text
        genesis = re.search(r"Genesis: (\S+)", text)
        op_key = re.search(r"Operator key: (\S+)", text)
        assert genesis is not None and op_key is not None, text
        # the paths are printed, never a key
        assert Path(op_key.group(1)).read_text().strip() not in text
        status = subprocess.run(
            [*GRENEX, "status", "--grape", grape, "--genesis", genesis.group(1), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert status.returncode == 0, status.stderr
        reply = json.loads(status.stdout)
        assert reply["agree"] is True and len(reply["nodes"]) == 3
        assert all(_alive(p) for p in pids)
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, rest  # interrupted (SPEC §5 exit codes)
    assert "Traceback" not in rest
    gone_by = time.monotonic() + 15
    while any(_alive(p) for p in pids) and time.monotonic() < gone_by:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


@pytest.mark.parametrize("command", ["demo", "up"])
def test_without_a_grape_they_say_what_to_run(command: str, tmp_path: Path) -> None:
    env = {**os.environ, "GRENEX_GRAPE_BIN": str(tmp_path / "no-grape-here")}
    started = time.monotonic()
    proc = subprocess.run(
        [*GRENEX, command], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert proc.returncode != 0
    assert time.monotonic() - started < 30
    assert "grenache-grape" in proc.stderr and "./run setup" in proc.stderr
    assert "Traceback" not in proc.stderr
