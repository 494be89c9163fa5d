"""Processes of a lab run: Grapes, ``grenex node`` processes and client workers, each started
inside its host's namespace (``ip netns exec``, which execs: the PID is the program's) and
recorded by PID, so that teardown kills exactly what this run started.

Nodes are driven only through their command line (``python -m grenex node …``): the lab never
imports the node, consensus or replica code.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from grenex.grenache.testing import find_grape_bin
from grenex.lab.net import LabNet

__all__ = ["DHT_PORT", "GRAPE_API_PORT", "NODE_PORT", "LabHost", "ProcTable"]

DHT_PORT: Final = 20001
GRAPE_API_PORT: Final = 30001
NODE_PORT: Final = 40001  # API; peer = +1, events = +2 (fixed: a restarted node keeps them)


@dataclass
class ProcTable:
    """Every process this run started, by PID, until it is reaped."""

    procs: dict[int, tuple[str, subprocess.Popen[bytes]]] = field(default_factory=dict)

    def spawn(
        self,
        what: str,
        argv: Sequence[str],
        log: Path,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            out.write(f"--- {time.strftime('%H:%M:%S')} start {what}: {' '.join(argv)}\n".encode())
            out.flush()
            p = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env,
                close_fds=True,
                start_new_session=True,  # a Ctrl-C in the terminal reaches only the runner
            )
        self.procs[p.pid] = (what, p)
        return p

    def send(self, p: subprocess.Popen[bytes], sig: int) -> None:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, sig)

    def stop(
        self, p: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace_s: float = 5.0
    ) -> None:
        """Signal, wait up to ``grace_s``, then SIGKILL; reap."""
        if p.poll() is None:
            self.send(p, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            self.send(p, sig)
            try:
                p.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.send(p, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=5)
        self.procs.pop(p.pid, None)

    def kill_all(self) -> list[str]:
        """SIGKILL every recorded process (by PID) and reap it; what was still running."""
        alive = []
        for pid, (what, p) in list(self.procs.items()):
            if p.poll() is None:
                alive.append(f"{what} (pid {pid})")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for _pid, (_what, p) in list(self.procs.items()):
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
        self.procs.clear()
        return alive


@dataclass
class LabHost:
    """One host of the lab: its namespace, Grape, node and data directory."""

    name: str
    ip: str
    dir: Path
    grape: subprocess.Popen[bytes] | None = None
    node: subprocess.Popen[bytes] | None = None
    tmpfs: bool = False  # data dir is a small tmpfs (disk-full nemesis)
    paused: bool = False
    restarts: int = 0

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def ready_file(self) -> Path:
        return self.dir / "ready"

    @property
    def grape_url(self) -> str:
        return f"http://{self.ip}:{GRAPE_API_PORT}"

    @property
    def api_addr(self) -> str:
        return f"{self.ip}:{NODE_PORT}"

    @property
    def node_alive(self) -> bool:
        return self.node is not None and self.node.poll() is None

    @property
    def grape_alive(self) -> bool:
        return self.grape is not None and self.grape.poll() is None

    def ready(self) -> dict[str, Any] | None:
        try:
            lines = self.ready_file.read_text().splitlines()
            obj = json.loads(lines[1])
        except (OSError, IndexError, ValueError):
            return None
        return obj if isinstance(obj, dict) else None


def grape_argv(net: LabNet, host: str, bootstrap: str = "mesh") -> list[str]:
    others = [f"{net.ip(h)}:{DHT_PORT}" for h in net.hosts if h != host]
    if bootstrap == "ring":  # only the next host's Grape (see docs/lab.md, lookups)
        i = net.hosts.index(host)
        others = [f"{net.ip(net.hosts[(i + 1) % len(net.hosts)])}:{DHT_PORT}"]
    # as on separate machines (README "Several machines"): each host's Grape bootstraps to the
    # others' DHT ports; -b makes it listen on (and store its own announcements at) the
    # host's address
    return [
        str(find_grape_bin()),
        "--dp",
        str(DHT_PORT),
        "--aph",
        str(GRAPE_API_PORT),
        "--bn",
        ",".join(others) or f"{net.ip(host)}:{DHT_PORT}",
        "-b",
        net.ip(host),
        "--dpa",
        "20000",
    ]


def node_argv(
    h: LabHost,
    voters: Sequence[str],
    cluster: str,
    *,
    memory: bool,
    genesis: Path,
    key: Path,
    join: bool = False,
) -> list[str]:
    """``grenex node`` for host ``h`` of the genesis ``genesis`` (its voters are the founding
    voters, ``voters`` only says who they are), with its own key file."""
    argv = [
        sys.executable,
        "-m",
        "grenex",
        "node",
        "--id",
        h.name,
        "--host",
        h.ip,
        "--port",
        str(NODE_PORT),
        "--peer-port",
        str(NODE_PORT + 1),
        "--events-port",
        str(NODE_PORT + 2),
        "--grape",
        h.grape_url,
        "--cluster",
        cluster,
        "--genesis",
        str(genesis),
        "--key",
        str(key),
        "--ready-file",
        str(h.ready_file),
    ]
    if join or h.name not in voters:
        argv.append("--join")
    argv += ["--memory"] if memory else ["--data-dir", str(h.data_dir)]
    return argv


def code_snapshot(repo: Path, rev: str, dest: Path) -> Path:
    """``src`` of ``rev`` (``git archive``) with this lab package laid over it: every child
    process of a run can then use code that other people's edits cannot change under it."""
    import shutil

    src = dest / "src"
    if not (src / "grenex").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", "--format=tar", rev, "src"],
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    lab = Path(__file__).resolve().parent
    shutil.rmtree(src / "grenex" / "lab", ignore_errors=True)
    shutil.copytree(lab, src / "grenex" / "lab", ignore=shutil.ignore_patterns("__pycache__"))
    return src
