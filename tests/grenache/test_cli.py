"""``grenex grenache ...`` run as a subprocess against this module's real Grapes.

Proves: lookup/announce/put/get/request/map print JSON on stdout and exit 0; errors are one
line on stderr with a non-zero exit and no traceback; ``--grape`` takes a list and fails over
past a dead Grape; ``announce`` keeps announcing until interrupted (SIGTERM, stopped by PID).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from grenex.grenache.testing import GrapeCluster, free_port, wait_for

GRENEX = [sys.executable, "-c", "from grenex.cli import main; main()"]


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GRENEX, "grenache", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def ok_json(*args: str) -> Any:
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    assert proc.stdout == "" or proc.stdout.startswith("[")
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def echo_server(grapes: GrapeCluster) -> Iterator[str]:
    """A Python echo service in a thread of its own, announced on the Grapes."""
    import asyncio

    from grenex.grenache import Link, PeerRPCServer

    name = f"cli:echo:{time.monotonic_ns()}"
    ready = threading.Event()
    stop: list[Any] = []

    async def handler(key: str, payload: Any) -> Any:
        if payload == "fail":
            raise RuntimeError("ERR_CLI_TEST")
        return {"echo": payload}

    async def main() -> None:
        async with Link(grapes.api_urls) as link, PeerRPCServer(handler) as srv:
            await link.start_announcing(name, srv.port)
            done = asyncio.Event()
            stop.append((asyncio.get_running_loop(), done))
            ready.set()
            await done.wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(15)
    yield name
    loop, done = stop[0]
    loop.call_soon_threadsafe(done.set)
    thread.join(10)


def test_request_and_map(grapes: GrapeCluster, echo_server: str) -> None:
    grape = grapes.api_urls[1]
    assert ok_json("request", echo_server, '{"a": [1, 2]}', "--grape", grape) == {
        "echo": {"a": [1, 2]}
    }
    assert ok_json("request", echo_server, '"z"', "--grape", grape, "--compress") == {"echo": "z"}
    assert ok_json("request", echo_server, "1", "--grape", grape, "--ws") == {"echo": 1}
    replies = ok_json("map", echo_server, "5", "--grape", grape)
    assert [r["result"] for r in replies] == [{"echo": 5}]


def test_errors_are_one_line(grapes: GrapeCluster, echo_server: str) -> None:
    grape = grapes.api_urls[0]
    line = one_line_error(run("request", echo_server, '"fail"', "--grape", grape))
    assert "ERR_CLI_TEST" in line
    line = one_line_error(run("request", "cli:nobody", "1", "--grape", grape))
    assert "ERR_GRAPE_LOOKUP_EMPTY" in line
    line = one_line_error(run("request", echo_server, "{not json", "--grape", grape))
    assert "JSON" in line
    dead = f"http://127.0.0.1:{free_port()}"
    line = one_line_error(run("lookup", "x", "--grape", dead, "--timeout-ms", "500"))
    assert "ERR_GRAPE_UNAVAILABLE" in line
    line = one_line_error(run("announce", "x", "70000", "--grape", grape, "--once"))
    assert "65535" in line
    line = one_line_error(run("get", "0" * 40, "--grape", grape))
    assert "ERR_GRAPE_GET_EMPTY" in line


def test_put_get_and_grape_list_failover(grapes: GrapeCluster) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    grape_list = f"{dead},{grapes.api_urls[0]}"
    digest = ok_json("put", "hello world", "--grape", grape_list, "--json")
    assert digest == "6d33adc2b6b2c14c3036feefb7fedbca1a880527"
    assert ok_json("get", digest, "--grape", grape_list)["v"] == "hello world"


def test_announce_until_interrupted(grapes: GrapeCluster) -> None:
    name = f"cli:announce:{time.monotonic_ns()}"
    env = {**os.environ, "GRENEX_GRAPE": grapes.api_urls[0]}
    proc = subprocess.Popen(
        [*GRENEX, "grenache", "announce", name, "4567"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["announced"] == name and first["port"] == 4567
        # Visible through the other Grape, and the process is still announcing.
        wait_for(
            lambda: ok_json("lookup", name, "--grape", grapes.api_urls[1]) == ["127.0.0.1:4567"],
            10.0,
            interval=0.2,
        )
        assert proc.poll() is None
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 0
    assert ok_json("lookup", name, "--grape", grapes.api_urls[0], "--timeout-ms", "3000") in (
        [],
        ["127.0.0.1:4567"],
    )
