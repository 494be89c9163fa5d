"""``grenex up`` watches what it started (issue 14, item 5), run as a user runs it.

Proves, with ``grenex up`` as a process: ``up.json`` in the state directory says where the
Grapes and nodes are (pids and all three ports, which answer); a node killed by its PID from
``up.json`` is reported at once, in one line naming it and its exit code, and ``up.json`` is
rewritten (the node moves to ``exited``); the state directory holds ``genesis.json`` (named by
``up.json``) and ``keys/operator.key``, ``keys/<node id>.key`` (mode 0600), with which the CLI
registers an account, trades and opens a market; neither the cluster secret nor any key is
ever printed; SIGINT stops
every process ``up`` started and removes ``up.json``; and when every voter is gone ``up``
stops the rest by itself and exits 1.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from grenex.grenache.tls import b64url, make_self_signed

GRENEX = [sys.executable, "-m", "grenex"]

pytestmark = pytest.mark.timeout(120)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still answers kill(0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Up:
    """``grenex up`` in its own process; its output collected line by line by a thread."""

    def __init__(self, state: Path, *args: str) -> None:
        self.state = state
        self.proc = subprocess.Popen(
            [*GRENEX, "up", "--grapes", "1", "--state-dir", str(state), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        )
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._q.put(line)
        self._q.put(None)

    def output(self) -> str:
        while True:
            try:
                line = self._q.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return "".join(self.lines)

    def wait_line(self, pattern: str, timeout_s: float) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            m = re.search(pattern, self.output())
            if m is None and self.proc.poll() is not None:
                raise AssertionError(f"up exited {self.proc.returncode}: {self.output()}")
            return m

        match: re.Match[str] = _wait(found, timeout_s, f"{pattern!r} in: {self.output()}")
        return match

    def up_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.state / "up.json").read_text())
        return doc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)


@pytest.fixture
def up_factory(tmp_path: Path) -> Iterator[Callable[..., Up]]:
    started: list[Up] = []

    def make(*args: str) -> Up:
        u = Up(tmp_path / f"state{len(started)}", *args)
        started.append(u)
        return u

    yield make
    for u in started:
        u.stop()


def _pids(doc: dict[str, Any]) -> list[int]:
    return [n["pid"] for n in doc["nodes"]]


def _grape_pids(grape_urls: list[str]) -> list[int]:
    """The pids listening on the Grapes' API ports (from /proc/net/tcp and /proc/*/fd)."""
    ports = {int(u.rsplit(":", 1)[1]) for u in grape_urls}
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[3] == "0A" and int(f[1].split(":")[1], 16) in ports:
            inodes.add(f[9])
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            links = {os.readlink(fd) for fd in (p / "fd").iterdir()}
        except OSError:
            continue
        if any(f"socket:[{i}]" in links for i in inodes):
            pids.append(int(p.name))
    return pids


def test_up_reports_a_death_keeps_up_json_and_stops_everything(
    up_factory: Callable[..., Up],
) -> None:
    up = up_factory("--nodes", "4", "--voters", "3")
    up.wait_line(r"Ctrl-C stops everything", 90)
    doc = up.up_json()
    assert doc["genesis"] == str(up.state / "genesis.json") and doc["memory"] is True
    assert doc["exited"] == []
    assert [n["id"] for n in doc["nodes"]] == ["n1", "n2", "n3", "n4"]
    assert [n["voter"] for n in doc["nodes"]] == [True, True, True, False]
    for n in doc["nodes"]:
        assert _alive(n["pid"])
        for port in ("api_port", "peer_port", "events_port"):
            with socket.create_connection(("127.0.0.1", n[port]), timeout=5):
                pass  # every port up.json names is served
    assert doc["grapes"] and "In memory: the logs are NOT durable" in up.output()
    grapes = _grape_pids(doc["grapes"])
    assert len(grapes) == 1

    victim = doc["nodes"][3]
    os.kill(victim["pid"], signal.SIGKILL)
    t0 = time.monotonic()
    line = up.wait_line(r"✗ node n4 \(learner, pid (\d+)\) exited: killed by SIGKILL", 10)
    assert int(line.group(1)) == victim["pid"] and time.monotonic() - t0 < 5
    assert "(exit code -9)" in up.output()
    after = _wait(lambda: (d := up.up_json())["exited"] and d, 5, "up.json to name the exited node")
    assert [n["id"] for n in after["nodes"]] == ["n1", "n2", "n3"]
    assert after["exited"] == [{"id": "n4", "pid": victim["pid"], "exit_code": -9, "voter": False}]
    assert up.proc.poll() is None  # a learner's death does not stop the network

    secret = (up.state / "cluster.secret").read_text().strip()
    assert len(secret) >= 32 and secret not in up.output()
    assert (up.state / "cluster.secret").stat().st_mode & 0o077 == 0
    keys = up.state / "keys"
    assert sorted(p.name for p in keys.glob("*.key")) == [
        "n1.key",
        "n2.key",
        "n3.key",
        "n4.key",
        "operator.key",
    ]
    for p in keys.glob("*.key"):
        assert p.stat().st_mode & 0o777 == 0o600
        assert p.read_text().strip() not in up.output()
    assert f"Operator key: {keys / 'operator.key'}" in up.output()

    # the CLI as up's hints say: the genesis from the environment, a key of one's own
    env = {**os.environ, "GRENEX_GRAPE": ",".join(doc["grapes"]), "GRENEX_GENESIS": doc["genesis"]}
    env.pop("GRENEX_KEY", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*GRENEX, *args], capture_output=True, text=True, env=env, timeout=60, check=False
        )

    me = up.state / "me.key"
    made = cli("keys", "new", str(me))
    assert made.returncode == 0, made.stderr
    assert me.read_text().strip() not in made.stdout
    reg = cli("register", "--client", "me", "--key", str(me))
    assert reg.returncode == 0 and "registered" in reg.stdout, reg.stdout + reg.stderr
    placed = cli(
        "place",
        "--node",
        "n2",
        "--key",
        str(me),
        "--market",
        "BTC-USD",
        "--side",
        "buy",
        "--qty",
        "0.5",
        "--price",
        "64000",
    )
    assert placed.returncode == 0 and "me/" in placed.stdout, placed.stdout + placed.stderr
    opened = cli(
        "add-market",
        "--key",
        str(keys / "operator.key"),
        "--market",
        "UP-USD",
        "--tick",
        "1",
        "--lot",
        "1",
    )
    assert opened.returncode == 0 and "market_added" in opened.stdout, opened.stderr

    up.proc.send_signal(signal.SIGINT)
    up.proc.wait(60)
    assert up.proc.returncode == 130, up.output()
    assert "Traceback" not in up.output()
    _wait(lambda: not any(_alive(p) for p in [*_pids(doc), *grapes]), 15, "every pid gone")
    assert not (up.state / "up.json").exists()


def test_up_exits_1_when_every_voter_is_gone(up_factory: Callable[..., Up]) -> None:
    up = up_factory("--nodes", "2", "--voters", "1")
    up.wait_line(r"Ctrl-C stops everything", 90)
    doc = up.up_json()
    grapes = _grape_pids(doc["grapes"])
    voter = next(n for n in doc["nodes"] if n["voter"])
    os.kill(voter["pid"], signal.SIGTERM)
    up.proc.wait(30)
    out = up.output()
    assert up.proc.returncode == 1, out
    assert re.search(r"✗ node n1 \(voter, pid \d+\) exited: exit code \d+", out), out
    assert "every voter is gone" in out and "Traceback" not in out
    _wait(lambda: not any(_alive(p) for p in [*_pids(doc), *grapes]), 15, "every pid gone")


def test_up_keys_are_random_kept_in_files_and_reused(tmp_path: Path) -> None:
    """``up``'s keyring: random keys, one 0600 file each where SPEC §5 puts them, read back
    (not replaced) when ``up`` runs again on the state directory, so the genesis is the same."""
    from grenex.devnet._cli import StoredKeyring

    def genesis_of(kr: StoredKeyring) -> bytes:
        return kr.genesis(
            "main", ["n1", "n2"], cert=lambda k, n: b64url(make_self_signed(k.seed, n))
        )

    first = StoredKeyring(tmp_path / "a" / "keys")
    data = genesis_of(first)
    keys = tmp_path / "a" / "keys"
    assert sorted(p.name for p in keys.glob("*.key")) == ["n1.key", "n2.key", "operator.key"]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in keys.glob("*.key"))
    assert first.key("trader1").public_key == StoredKeyring(keys).key("trader1").public_key
    assert genesis_of(StoredKeyring(keys)) == data  # the same cluster again
    assert genesis_of(StoredKeyring(tmp_path / "b" / "keys")) != data  # random, not derived
