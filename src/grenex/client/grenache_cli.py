"""``grenex grenache ...``: Grenache tools usable against any Grenache network.

Replies are printed as JSON on stdout; an error is one line on stderr and a non-zero exit
(1 for a Grenache error, 2 for bad usage), never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
import msgspec

from grenex.grenache import (
    DEFAULT_GRAPE,
    GrenacheError,
    Link,
    PeerRPCClient,
    WsPeerRPCClient,
)

T = TypeVar("T")

_grape_option = click.option(
    "--grape",
    "grape",
    default=lambda: os.environ.get("GRENEX_GRAPE") or DEFAULT_GRAPE,
    show_default="http://127.0.0.1:30001 or $GRENEX_GRAPE",
    help="Grape HTTP API URL(s), comma-separated; tried in order when one is down.",
)
_timeout_option = click.option(
    "--timeout-ms",
    type=click.IntRange(min=1),
    default=5000,
    show_default=True,
    help="Timeout of each call (per Grape, per peer).",
)


def _print_json(value: Any) -> None:
    click.echo(msgspec.json.encode(value).decode())


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run one command; turn library and usage errors into one stderr line."""

    async def main() -> T:
        return await coro_fn()

    try:
        return asyncio.run(main())
    except GrenacheError as exc:
        _fail(str(exc) or exc.code)
    except (ValueError, TypeError) as exc:
        _fail(str(exc), 2)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    raise AssertionError("unreachable")  # pragma: no cover


def _make_link(grape: str, timeout_ms: int) -> Link:
    return Link(grape, request_timeout_ms=timeout_ms)


def _parse_payload(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        _fail(f"the JSON argument is not JSON: {exc}", 2)
        raise AssertionError("unreachable") from None  # pragma: no cover


@click.group("grenache")
def grenache_group() -> None:
    """Grenache tools: look up, announce, call services, store values in the DHT."""


@grenache_group.command("lookup")
@click.argument("name")
@_grape_option
@_timeout_option
def lookup_command(name: str, grape: str, timeout_ms: int) -> None:
    """Print the ["ip:port", ...] list announced for NAME."""

    async def go() -> list[str]:
        async with _make_link(grape, timeout_ms) as link:
            return await link.lookup(name, use_cache=False)

    _print_json(_run(go))


@grenache_group.command("announce")
@click.argument("name")
@click.argument("port", type=int)
@_grape_option
@_timeout_option
@click.option("--once", is_flag=True, help="Announce once and exit (default: every second).")
@click.option("--interval-ms", type=click.IntRange(min=50), default=1000, show_default=True)
def announce_command(
    *, name: str, port: int, grape: str, timeout_ms: int, once: bool, interval_ms: int
) -> None:
    """Announce that service NAME listens on PORT (of this host's Grape IP)."""

    async def go() -> int:
        async with Link(
            grape, request_timeout_ms=timeout_ms, announce_interval_ms=interval_ms
        ) as link:
            nodes = await link.announce(name, port)
            _print_json({"announced": name, "port": port, "nodes": nodes})
            if once:
                return 0
            await link.start_announcing(name, port, wait=False)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            return 0

    _run(go)


async def _client_call(
    *, name: str, payload: Any, grape: str, timeout_ms: int, compress: bool, ws: bool, kind: str
) -> Any:
    async with _make_link(grape, timeout_ms) as link:
        client: PeerRPCClient | WsPeerRPCClient = (
            WsPeerRPCClient(link, request_timeout_ms=timeout_ms)
            if ws
            else PeerRPCClient(link, request_timeout_ms=timeout_ms)
        )
        async with client:
            if kind == "request":
                return await client.request(name, payload, compress=compress)
            replies = await client.map(name, payload, compress=compress)
            return [r.to_json() for r in replies]


def _rpc_options(fn: Callable[..., None]) -> Callable[..., None]:
    fn = click.option("--ws", is_flag=True, help="Use the WebSocket transport.")(fn)
    fn = click.option("--compress", is_flag=True, help="gzip request and reply.")(fn)
    fn = _timeout_option(fn)
    return _grape_option(fn)


@grenache_group.command("request")
@click.argument("name")
@click.argument("payload", metavar="JSON")
@_rpc_options
def request_command(
    *, name: str, payload: str, grape: str, timeout_ms: int, compress: bool, ws: bool
) -> None:
    """Send JSON to one peer of NAME; print its result."""
    value = _parse_payload(payload)
    _print_json(
        _run(
            lambda: _client_call(
                name=name,
                payload=value,
                grape=grape,
                timeout_ms=timeout_ms,
                compress=compress,
                ws=ws,
                kind="request",
            )
        )
    )


@grenache_group.command("map")
@click.argument("name")
@click.argument("payload", metavar="JSON")
@_rpc_options
def map_command(
    *, name: str, payload: str, grape: str, timeout_ms: int, compress: bool, ws: bool
) -> None:
    """Send JSON to every peer of NAME; print [{peer, result} | {peer, error}, ...]."""
    value = _parse_payload(payload)
    replies = _run(
        lambda: _client_call(
            name=name,
            payload=value,
            grape=grape,
            timeout_ms=timeout_ms,
            compress=compress,
            ws=ws,
            kind="map",
        )
    )
    _print_json(replies)
    failed = sum(1 for r in replies if "error" in r)
    if failed:
        _fail(f"{failed} of {len(replies)} peers answered with an error")


@grenache_group.command("put")
@click.argument("value")
@_grape_option
@_timeout_option
@click.option("--json", "as_json", is_flag=True, help='Print the hash as a JSON string ("...").')
def put_command(value: str, grape: str, timeout_ms: int, as_json: bool) -> None:
    """Store VALUE (at most 999 UTF-8 bytes) in the DHT; print its hash (plain, as `get`
    takes it: `grenex grenache get $(grenex grenache put hello)`)."""

    async def go() -> str:
        async with _make_link(grape, timeout_ms) as link:
            return await link.put(value)

    digest = _run(go)
    if as_json:
        _print_json(digest)
    else:
        click.echo(digest)


@grenache_group.command("get")
@click.argument("hash_hex", metavar="HASH")
@_grape_option
@_timeout_option
def get_command(hash_hex: str, grape: str, timeout_ms: int) -> None:
    """Fetch the value stored under HASH; exit 1 when nobody has it.  HASH may be quoted as
    JSON (what `put --json` prints)."""
    if len(hash_hex) >= 2 and hash_hex[0] == hash_hex[-1] == '"':
        hash_hex = hash_hex[1:-1]

    async def go() -> Any:
        async with _make_link(grape, timeout_ms) as link:
            found = await link.get(hash_hex)
            if found is None:
                return None
            return {"v": found.v, "id": found.id, "token": found.token}

    found = _run(go)
    if found is None:
        _fail(f"ERR_GRAPE_GET_EMPTY: no value for {hash_hex}")
    _print_json(found)
