"""The fault lab's CI set: a few fixed schedules on real processes in network namespaces.

Each test runs ``grenex lab run`` as a separate process (the runner moves itself into the
lab's bridge namespace, which must not happen to pytest) and demands a clean check and a
clean teardown: no namespace and no process left.  Well under three minutes in all; the long
schedules are opt-in: ``GRENEX_LAB_LONG=1``.  Skipped, with the reason, without root,
``ip netns`` or the Grape.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from grenex.grenache.testing import GrapeNotInstalledError, find_grape_bin
from grenex.lab.net import LabError, list_lab_namespaces, preflight


def _why_not() -> str | None:
    try:
        preflight()
    except LabError as e:
        return str(e)
    try:
        find_grape_bin()
    except GrapeNotInstalledError as e:
        return str(e)
    if shutil.which("node") is None:
        return "Node.js is not installed (the Grapes are npm grenache-grape)"
    return None


_REASON = _why_not()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

LONG = os.environ.get("GRENEX_LAB_LONG") == "1"


def _lab(tmp: Path, *args: str, timeout: float = 150) -> tuple[int, dict[str, Any], str]:
    report = tmp / "report.json"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "grenex",
            "lab",
            "run",
            "--workdir",
            str(tmp),
            "--report",
            str(report),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    r = json.loads(report.read_text()) if report.exists() else {}
    return p.returncode, r, p.stdout + p.stderr


def _mine(prefix_pid: int) -> list[str]:
    return [n for n in list_lab_namespaces() if n.startswith(f"glab-{prefix_pid}-")]


def _assert_clean(r: dict[str, Any], out: str) -> None:
    assert r.get("teardown_problems") == [], out
    assert not r.get("aborted"), out
    assert r["violations"] == [], json.dumps(r["violations"][:10], indent=1)
    assert r["final_converged"], r["final_status"]


def test_partitions_kills_pauses_and_torn_tails(tmp_path: Path) -> None:
    code, r, out = _lab(
        tmp_path,
        "--seed",
        "101",
        "--nemesis",
        "isolate_leader,kill_leader,pause_follower,lost_unsynced",
    )
    _assert_clean(r, out)
    assert code == 0, out
    assert r["ops"]["ok"] > 100
    by_name = {rc["name"]: rc for rc in r["recovery"]}
    # the majority elects a new leader and serves again while the old one is cut off / dead
    assert by_name["isolate_leader"]["unavailable_s"] is not None
    assert by_name["kill_leader"]["unavailable_s"] is not None
    lost = next(f for f in r["faults"] if f["name"] == "lost_unsynced")
    assert lost["restarted"] and lost["torn_bytes"] > 0  # the node repaired its log


def test_one_way_bridge_grape_kill_and_full_disk(tmp_path: Path) -> None:
    code, r, out = _lab(
        tmp_path,
        "--seed",
        "202",
        "--nemesis",
        "one_way,bridge,grape_kill,disk_full",
    )
    _assert_clean(r, out)
    assert code == 0, out
    full = next(f for f in r["faults"] if f["name"] == "disk_full")
    assert full["filled_bytes"] > 0
    # stopped or not, the node came back from its own log once space was freed
    assert full.get("restarted_after_full", True), full


@pytest.mark.skipif(not LONG, reason="long schedule: set GRENEX_LAB_LONG=1")
def test_a_host_cut_off_does_not_slow_the_healthy_majority(tmp_path: Path) -> None:
    _code, r, out = _lab(tmp_path, "--seed", "303", "--nemesis", "cut_host", timeout=300)
    _assert_clean(r, out)
    cut = r["recovery"][0]
    assert cut["healthy_not_ok_during"] == 0
    assert cut["latency_during_p95_s"] < 0.5
    assert all(x["exit"] == 0 for x in r["faults"][0]["cli_during"])


@pytest.mark.skipif(not LONG, reason="long schedule: set GRENEX_LAB_LONG=1")
def test_a_voter_restarted_empty_loses_nothing(tmp_path: Path) -> None:
    """Before the founding fix (788cc53) ``amnesia`` made the replicas diverge: an empty
    voter and a lagging one elected a leader without the newest acknowledged orders."""
    _code, r, out = _lab(
        tmp_path, "--seed", "404", "--nemesis", "amnesia,restart_empty,kill_leader"
    )
    _assert_clean(r, out)


def test_refuses_to_start_without_ip_and_says_so(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no ip, no tc
    p = subprocess.run(
        [sys.executable, "-m", "grenex", "lab", "run", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert p.returncode == 1
    assert "`ip`" in p.stderr and "cannot run" in p.stderr


def test_ctrl_c_removes_every_namespace_and_process(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "grenex",
            "lab",
            "run",
            "--workdir",
            str(tmp_path),
            "--seed",
            "5",
            "--nemesis",
            "pause_leader",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(_mine(proc.pid)) < 4 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        # wait until the nodes run, then interrupt mid-run
        while not list(tmp_path.glob("seed5-*/n3/ready")) and time.monotonic() < deadline:
            time.sleep(0.1)
        inside = _pids_inside(proc.pid)
        assert inside, "no process inside the lab namespaces"
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert _mine(proc.pid) == []
    assert [pid for pid in inside if Path(f"/proc/{pid}").exists()] == []


def _pids_inside(runner: int) -> list[int]:
    pids: list[int] = []
    for ns in _mine(runner):
        out = subprocess.run(
            ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False
        ).stdout
        pids += [int(x) for x in out.split() if x.isdigit()]
    return pids
