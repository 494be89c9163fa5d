"""Test support shipped with the library: real Grape processes on loopback, and waiting helpers.

Typical use (pytest)::

    from grenex.grenache.testing import start_grapes

    @pytest.fixture(scope="module")
    def grapes():
        with start_grapes(2, dpa_ms=4000) as cluster:
            yield cluster          # cluster.api_urls == ["http://127.0.0.1:P1", ...]

and in async code ``async with await astart_grapes(2) as cluster: ...``.

Theory of operation
-------------------
Each Grape is the npm ``grape`` program (grenache-grape 1.0.0) started as a child process with
``--dp`` (DHT, UDP) and ``--aph`` (HTTP API, TCP) on free loopback ports, ``-b 127.0.0.1`` (the
API binds only to loopback, and the Grape also stores its own announcements locally) and
``--bn`` listing the DHT ports of *all* Grapes of the cluster, itself included: a single Grape
then works on its own, and bootstrap order stops mattering. ``--dpa`` makes announcements
expire (without it a CLI Grape keeps them forever).

Readiness is a condition, not a sleep: the HTTP API must answer, and when there are several
Grapes an announcement made on the first must be visible through every other one. Processes
are stopped by PID only (SIGTERM, then SIGKILL after a grace period); an ``atexit`` hook kills
any Grape that its owner forgot, so no test run leaves one behind.

The DHT's UDP socket binds the same host as the API. ``grape -b`` binds only the HTTP API:
grenache-grape 1.0.0 calls ``dht.listen(port)`` without an address, so its DHT listens on every
interface, and an announcement injected from another host would be believed. bittorrent-dht's
``listen(port, address)`` takes an address, so when the host is not a wildcard the Grape is run
as ``node -e <shim> grape.js ...``: the shim makes ``listen`` pass the host, then runs the
unchanged CLI (:func:`grape_argv`). A ``$GRENEX_GRAPE_BIN`` that is not a Node script runs as
is (its DHT then binds wherever it binds).

The binary is ``$GRENEX_GRAPE_BIN`` if set, else ``node_modules/.bin/grape`` in the nearest
parent directory of this file or of the current directory that has one.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = [
    "GrapeCluster",
    "GrapeNotInstalledError",
    "GrapeProcess",
    "astart_grapes",
    "async_wait_for",
    "find_grape_bin",
    "free_port",
    "grape_argv",
    "start_grapes",
    "wait_for",
]

LOOPBACK = "127.0.0.1"


class GrapeNotInstalledError(RuntimeError):
    """The ``grape`` program was not found (run ``./run setup`` to install node_modules)."""


def find_grape_bin() -> Path:
    """Locate the ``grape`` executable, or raise :class:`GrapeNotInstalledError`."""
    env = os.environ.get("GRENEX_GRAPE_BIN")
    if env:
        path = Path(env)
        if path.is_file():
            return path
        raise GrapeNotInstalledError(f"GRENEX_GRAPE_BIN={env!r} is not a file")
    starts = [Path(__file__).resolve().parent, Path.cwd().resolve()]
    for start in starts:
        for d in [start, *start.parents]:
            candidate = d / "node_modules" / ".bin" / "grape"
            if candidate.exists():
                return candidate
    raise GrapeNotInstalledError(
        "grape (npm grenache-grape) is not installed: run `./run setup` (npm ci) at the "
        "repository root, or set GRENEX_GRAPE_BIN to the grape executable"
    )


# Run grenache-grape's CLI with its DHT's UDP socket bound to one address: bittorrent-dht's
# listen(port, address, cb) takes an address that Grape.createNode does not pass.
_DHT_BIND_SHIM = """
const path = require('path')
const fs = require('fs')
const host = process.env.GRENEX_GRAPE_DHT_HOST
const grape = fs.realpathSync(process.argv[1])
const DHT = require(require.resolve('bittorrent-dht', { paths: [path.dirname(grape)] }))
const listen = DHT.prototype.listen
DHT.prototype.listen = function (port, cb) {
  if (typeof cb !== 'function') return listen.apply(this, arguments)
  return listen.call(this, port, host, cb)
}
require(grape)
"""

_WILDCARDS = ("", "0.0.0.0", "::")


def _is_node_script(path: Path) -> bool:
    real = path.resolve()
    if real.suffix in (".js", ".cjs"):
        return True
    try:
        with real.open("rb") as f:
            first = f.readline(200)
    except OSError:
        return False
    return first.startswith(b"#!") and b"node" in first


def grape_argv(binary: Path, host: str) -> tuple[list[str], dict[str, str]]:
    """The command line (and extra environment) that runs ``binary`` with its DHT bound to
    ``host``: the Node shim when ``host`` is an address and ``binary`` a Node script, else
    ``binary`` alone (DHT on every interface)."""
    node = shutil.which("node")
    if host in _WILDCARDS or node is None or not _is_node_script(binary):
        return [str(binary)], {}
    return [node, "-e", _DHT_BIND_SHIM, str(binary.resolve())], {"GRENEX_GRAPE_DHT_HOST": host}


_port_lock = threading.Lock()
_ports_handed_out: set[int] = set()


def free_port() -> int:
    """A port number free for both TCP and UDP on loopback right now.

    Ports are taken from the kernel's ephemeral allocation and never handed out twice by one
    process, which keeps parallel fixtures from colliding with each other.
    """
    with _port_lock:
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                tcp.bind((LOOPBACK, 0))
                port = int(tcp.getsockname()[1])
                if port in _ports_handed_out:
                    continue
                try:
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                        udp.bind(("0.0.0.0", port))
                except OSError:
                    continue
            _ports_handed_out.add(port)
            return port
    raise RuntimeError("no free port found")


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    *,
    interval: float = 0.02,
    message: str = "condition",
) -> None:
    """Poll ``condition`` until it is true; raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {message}")
        time.sleep(interval)


async def async_wait_for(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout: float,
    *,
    interval: float = 0.02,
    message: str = "condition",
) -> None:
    """Async :func:`wait_for`: ``condition`` may be a plain or an async callable."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {message}")
        await asyncio.sleep(interval)


_live: dict[int, subprocess.Popen[bytes]] = {}
_live_lock = threading.Lock()


@atexit.register
def _kill_leftovers() -> None:  # pragma: no cover - only when an owner forgot to stop
    with _live_lock:
        procs = list(_live.values())
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)


def _post(url: str, data: object, timeout: float) -> tuple[int, bytes]:
    body = json.dumps({"rid": "grenex-testing", "data": data}).encode()
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


@dataclass
class GrapeProcess:
    """One running Grape. ``api_url`` is its HTTP API (``http://127.0.0.1:PORT``)."""

    dht_port: int
    api_port: int
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    host: str = LOOPBACK
    env: dict[str, str] = field(default_factory=dict)  # added to this process's environment

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "grape not started"
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start (or restart, with the same ports and arguments) the process."""
        assert not self.alive, "grape already running"
        fd, name = tempfile.mkstemp(prefix=f"grape-{self.api_port}-", suffix=".log")
        self.log_path = Path(name)
        with os.fdopen(fd, "wb") as log:
            self.process = subprocess.Popen(
                self.args,
                env={**os.environ, **self.env} if self.env else None,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                close_fds=True,
            )
        with _live_lock:
            _live[self.process.pid] = self.process

    def api_answers(self) -> bool:
        """True when the HTTP API answers any request (it says ``ERR_REQ_NOTFOUND`` to ``/``)."""
        try:
            status, _ = _post(self.api_url + "/", None, 0.5)
        except OSError:
            return False
        return status == 200

    def log_tail(self, limit: int = 2000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-limit:].decode("utf-8", "replace")

    def kill(self) -> None:
        """SIGKILL the process (a crash) and reap it."""
        self._signal(signal.SIGKILL, grace_s=5.0)

    def stop(self, grace_s: float = 3.0) -> None:
        """SIGTERM the process; SIGKILL it if it has not exited after ``grace_s``."""
        self._signal(signal.SIGTERM, grace_s=grace_s)

    def _signal(self, sig: int, grace_s: float) -> None:
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        with _live_lock:
            _live.pop(proc.pid, None)
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()


@dataclass
class GrapeCluster:
    """Grapes bootstrapping to each other. Use as a (sync or async) context manager."""

    grapes: list[GrapeProcess] = field(default_factory=list)
    dpa_ms: int | None = None

    @property
    def api_urls(self) -> list[str]:
        return [g.api_url for g in self.grapes]

    @property
    def pids(self) -> list[int]:
        return [g.pid for g in self.grapes if g.process is not None]

    def __getitem__(self, index: int) -> GrapeProcess:
        return self.grapes[index]

    def __iter__(self) -> Iterator[GrapeProcess]:
        return iter(self.grapes)

    def __len__(self) -> int:
        return len(self.grapes)

    def wait_ready(self, timeout_s: float = 15.0) -> None:
        """Wait until every Grape's API answers and the DHT links them (see module doc)."""
        deadline = time.monotonic() + timeout_s
        for g in self.grapes:
            try:
                wait_for(
                    lambda g=g: self._check_alive(g) and g.api_answers(),  # type: ignore[misc]
                    max(0.1, deadline - time.monotonic()),
                    message=f"grape API {g.api_url}",
                )
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}\n--- grape log ---\n{g.log_tail()}") from None
        if len(self.grapes) < 2:
            return
        probe = f"grenex:testing:probe:{os.getpid()}:{self.grapes[0].api_port}"

        def visible_everywhere() -> bool:
            # Re-announcing is cheap (~2 ms) and covers a first announce that raced the DHT
            # bootstrap of the other Grapes.
            status, body = _post(self.grapes[0].api_url + "/announce", [probe, 1], 5.0)
            if status != 200 or body.strip() in (b"", b"0") or body.startswith(b'"'):
                return False
            for g in self.grapes[1:]:
                status, body = _post(g.api_url + "/lookup", probe, 5.0)
                if status != 200 or not body.startswith(b'["'):
                    return False
            return True

        wait_for(
            visible_everywhere,
            max(0.1, deadline - time.monotonic()),
            interval=0.1,
            message="grapes to see each other's announcements",
        )

    @staticmethod
    def _check_alive(g: GrapeProcess) -> bool:
        if not g.alive:
            raise RuntimeError(f"grape exited early\n--- grape log ---\n{g.log_tail()}")
        return True

    def stop(self) -> None:
        """Stop every Grape (SIGTERM, then SIGKILL), by PID."""
        for g in self.grapes:
            g.stop()

    def kill(self) -> None:
        for g in self.grapes:
            g.kill()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)


def start_grapes(
    n: int = 2,
    *,
    dpa_ms: int | None = 4000,
    host: str = LOOPBACK,
    extra_args: Sequence[str] = (),
    ready_timeout_s: float = 15.0,
) -> GrapeCluster:
    """Start ``n`` Grapes on free loopback ports, bootstrapping to each other; wait until ready.

    ``dpa_ms`` is the Grape's ``--dpa`` (announcement lifetime; an entry stays visible up to
    about 2 × dpa after its last announce); None omits it (announcements never expire).
    Raises :class:`GrapeNotInstalledError` if grape is not installed, TimeoutError (with the
    Grape's log) if a Grape does not become ready in time. Stops what it started on failure.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    binary = find_grape_bin()
    command, env = grape_argv(binary, host)
    dht_ports = [free_port() for _ in range(n)]
    bootstrap = ",".join(f"{host}:{p}" for p in dht_ports)
    cluster = GrapeCluster(dpa_ms=dpa_ms)
    for dht_port in dht_ports:
        api_port = free_port()
        args = [
            *command,
            "--dp",
            str(dht_port),
            "--aph",
            str(api_port),
            "--bn",
            bootstrap,
            "-b",
            host,
        ]
        if dpa_ms is not None:
            args += ["--dpa", str(dpa_ms)]
        args += list(extra_args)
        cluster.grapes.append(GrapeProcess(dht_port, api_port, args, host=host, env=env))
    try:
        for g in cluster.grapes:
            g.start()
        cluster.wait_ready(ready_timeout_s)
    except BaseException:
        cluster.kill()
        raise
    return cluster


async def astart_grapes(
    n: int = 2,
    *,
    dpa_ms: int | None = 4000,
    host: str = LOOPBACK,
    extra_args: Sequence[str] = (),
    ready_timeout_s: float = 15.0,
) -> GrapeCluster:
    """:func:`start_grapes` without blocking the event loop."""
    return await asyncio.to_thread(
        start_grapes,
        n,
        dpa_ms=dpa_ms,
        host=host,
        extra_args=extra_args,
        ready_timeout_s=ready_timeout_s,
    )
