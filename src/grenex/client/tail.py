"""``grenex tail``: the cluster's events as they are applied, one line each (SPEC §5, §7).

Live events come from the events stream (``grenex:<cluster>:events:<id>`` with ``--node``,
else any node's ``grenex:<cluster>:events``): one frame per applied log entry that has events,
``{"seq", "time", "events"}``.  Every line shows the entry's ``seq`` (log index), its ``time``
(the leader's stamp: ISO-8601 UTC with milliseconds, or the raw milliseconds with ``--json``)
and the event.

Resuming, without gaps or repeats
---------------------------------
``--since N`` first subscribes to the stream (frames that arrive meanwhile wait in a bounded
queue), then fills from the node's ``events`` action, page by page, everything after index N
up to the node's applied index, then continues with the stream.  Every entry is printed once:
an entry at or below the last one printed is a repeat and skipped.  The stream carries no
frame for an entry without events, so a jump in ``seq`` proves nothing; instead, the first
frame after every (re)connection to a publisher is checked by filling the span before it from
the ``events`` action (a no-op when nothing is missing).  The ``events`` reply has no times, so
the fill reads them from the ``log`` action for the same span (a node that compacted that part
of its log prints those times as unknown: ``-`` / null).

The node keeps the events of its last entries only (a window of 65,536 entries, and only since
it started).  When it no longer holds entry N+1, ``tail --since N`` says so and exits 1 (the
older events are in ``grenex export`` + ``grenex replay``, or run ``tail --since F-1`` to start
from the oldest kept entry F): it never starts silently with a gap.  A gap found later (after a
reconnection, past the window) is one warning line on stderr, and tailing goes on.

An idle cluster prints one hint line on stderr after a few seconds (``waiting for events…``),
so a quiet tail does not look hung.  Ctrl-C exits 130.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import stat
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import click
import msgspec

from grenex.client.client import (
    BadRequest,
    Compacted,
    GrenexClient,
    GrenexClientError,
    Unavailable,
)
from grenex.client.commands import ClientCommand, fail, make_client, network_options
from grenex.client.timefmt import iso_ms
from grenex.codec.api import LogReply
from grenex.grenache import GrenacheError, PeerSub, RequestTimeoutError, TransportError

__all__ = [
    "IDLE_HINT_S",
    "Cursor",
    "Entry",
    "WindowGap",
    "fill",
    "format_event",
    "format_time",
    "tail_command",
    "tail_entries",
]

IDLE_HINT_S: Final = 3.0  # nothing printed for this long: one hint line on stderr
PAGE_EVENTS: Final = 1_000  # events asked per ``events`` request (the node's maximum)
CATCH_UP_S: Final = 5.0  # how long a fill waits for a lagging node to reach a frame's seq
QUEUE_MAX: Final = 8_192  # frames waiting while a fill runs (beyond: reading pauses)


@dataclass(frozen=True, slots=True)
class Entry:
    """One applied log entry's events (JSON objects, each with its ``seq``)."""

    seq: int
    time: int | None
    events: list[dict[str, Any]]


class WindowGap(GrenexClientError):  # noqa: N818 - a condition, not a failure of the client
    """The node no longer keeps the events of the entries after ``since``: they begin at
    ``first``."""

    def __init__(self, message: str, since: int, first: int) -> None:
        super().__init__(message)
        self.since = since
        self.first = first


class _Reads(Protocol):
    """What a fill needs of a client (a :class:`GrenexClient`, or a fake in tests)."""

    async def events_after(
        self, since: int = 0, limit: int | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]: ...

    async def log(
        self, since: int = 0, limit: int | None = None, *, timeout: float | None = None
    ) -> LogReply: ...


class _Frame(msgspec.Struct):
    seq: int
    events: list[dict[str, Any]]
    time: int | None = None


_decode_frame: Final = msgspec.json.Decoder(_Frame).decode
_encode: Final = msgspec.json.Encoder().encode


# ------------------------------------------------------------------------------- the fill


async def _times(c: _Reads, since: int, through: int, want: set[int]) -> dict[int, int | None]:
    """The time stamps of the entries ``want`` (indexes in ``since+1..through``), from the
    ``log`` action; {} when the node compacted that part of its log."""
    out: dict[int, int | None] = {}
    at = since
    try:
        while at < through and len(out) < len(want):
            page = await c.log(at, 1_000)
            for e in page.entries:
                if e.seq in want:
                    out[e.seq] = e.time
            if page.through <= at:
                break
            at = page.through
    except (Compacted, BadRequest):  # compacted, or a node without the log action
        return {}
    return out


def _group(events: list[dict[str, Any]]) -> list[tuple[int, list[dict[str, Any]]]]:
    """Consecutive events of one entry together, in order."""
    out: list[tuple[int, list[dict[str, Any]]]] = []
    for ev in events:
        seq = ev.get("seq")
        if not isinstance(seq, int):
            continue
        if out and out[-1][0] == seq:
            out[-1][1].append(ev)
        else:
            out.append((seq, [ev]))
    return out


@dataclass(slots=True)
class Cursor:
    """How far a fill has covered the log: every entry up to ``at`` was looked at."""

    at: int


async def fill(
    c: _Reads,
    since: int,
    upto: int | None = None,
    *,
    strict: bool = True,
    catch_up_s: float = CATCH_UP_S,
    on_gap: Callable[[WindowGap], None] | None = None,
    cursor: Cursor | None = None,
) -> AsyncIterator[Entry]:
    """The entries after log index ``since`` (and up to ``upto``) from the node's ``events``
    action, a page at a time; ``cursor.at`` says how far the log was covered (entries without
    events yield nothing).  Without ``upto``, until the node's applied index when asked.

    When the node no longer keeps entry ``since + 1``: with ``strict``, raise
    :class:`WindowGap`; else report it to ``on_gap`` and go on from what is kept.  A node that
    has not applied ``upto`` yet (another node answered) is asked again for at most
    ``catch_up_s`` seconds; then the fill ends where that node is.
    """
    cur = cursor if cursor is not None else Cursor(since)
    cur.at = since
    deadline = time.monotonic() + catch_up_s
    gap_checked = False
    while upto is None or cur.at < upto:
        at = cur.at
        reply = await c.events_after(at, PAGE_EVENTS)
        try:
            through, first, applied = (int(reply[k]) for k in ("through", "first", "applied"))
        except (KeyError, TypeError, ValueError):
            raise GrenexClientError(f"unexpected reply to events: {str(reply)[:200]}") from None
        if not gap_checked:
            gap_checked = True
            if first > at + 1 and at < applied:
                gap = WindowGap(
                    f"the node keeps events from log index {first} on; entries {at + 1}.."
                    f"{first - 1} are no longer in its window",
                    at,
                    first,
                )
                if strict:
                    raise gap
                if on_gap is not None:
                    on_gap(gap)
        if upto is not None:
            through = min(through, upto)  # a page may run past upto: the rest comes later
        frames = reply.get("entries")
        if isinstance(frames, list):  # SPEC §7's form: stream frames, with their times
            for f in frames:
                fr = msgspec.convert(f, _Frame)
                if at < fr.seq <= through and fr.events:
                    yield Entry(fr.seq, fr.time, fr.events)
        else:
            groups = [(s, evs) for s, evs in _group(reply.get("events") or []) if at < s <= through]
            if groups:
                times = await _times(c, at, through, {s for s, _ in groups})
                for seq, evs in groups:
                    yield Entry(seq, times.get(seq), evs)
        if through <= at:  # nothing more there now
            if upto is None or applied >= upto or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.1)  # a lagging node: let it catch up, for a bounded time
            continue
        cur.at = through
        if upto is None and through >= applied:
            return


# ------------------------------------------------------------------------------- the tail


async def tail_entries(
    client: GrenexClient,
    since: int | None = None,
    *,
    connect_timeout: float = 10.0,
    idle_s: float = IDLE_HINT_S,
    on_idle: Callable[[], None] | None = None,
    on_gap: Callable[[WindowGap], None] | None = None,
) -> AsyncIterator[Entry]:
    """Applied entries as they come, each once, in log order: with ``since``, first every
    entry after that index still kept (:class:`WindowGap` when the node no longer holds
    ``since + 1``), then the live stream.  ``on_idle`` is called once when nothing came for
    ``idle_s`` seconds; ``on_gap`` for a gap found after a reconnection."""
    pins = client.pins  # TLS pinned to the node's certificate (docs/trust.md)
    sub = PeerSub(
        client.link,
        client.events_topic,
        queue_max=QUEUE_MAX,
        backoff_max_ms=2_000,
        ssl_context=pins.ssl_for_voters(client.events_topic) if pins is not None else None,
    )
    await sub.start()
    try:
        try:
            await sub.wait_connected(timeout_ms=max(1, int(connect_timeout * 1000)))
        except GrenacheError:
            raise Unavailable(
                f"no events publisher reached under {client.events_topic!r} in "
                f"{connect_timeout:g}s (is the node running, and --grape/--cluster right?)",
                code="ERR_TIMEOUT",
            ) from None
        last = since  # every entry up to here was delivered or had no events
        hint_at: float | None = time.monotonic() + idle_s if on_idle is not None else None
        if since is not None:
            cursor = Cursor(since)
            async for e in fill(client, since, cursor=cursor):
                yield e
            last = cursor.at  # the node's applied index when the fill ended
        seen_connects = 0
        while True:
            wait_ms: int | None = None
            if hint_at is not None:
                left = hint_at - time.monotonic()
                if left <= 0 and on_idle is not None:
                    on_idle()  # once, whatever came: the caller knows whether it printed
                    hint_at = None
                else:
                    wait_ms = max(1, int(left * 1000))
            try:
                raw = await sub.recv(timeout_ms=wait_ms)
            except RequestTimeoutError:
                continue
            except TransportError:
                return  # stopped
            try:
                fr = _decode_frame(raw)
            except msgspec.DecodeError:
                continue
            if last is not None and fr.seq <= last:
                continue  # a repeat (a fill covered it, or a new publisher started behind)
            if sub.connects != seen_connects:
                seen_connects = sub.connects
                if last is not None and fr.seq > last + 1:
                    # the first frame from this publisher: whatever came before it and after
                    # the last entry delivered is filled from the events action
                    async for e in fill(client, last, fr.seq - 1, strict=False, on_gap=on_gap):
                        yield e
            yield Entry(fr.seq, fr.time, fr.events)
            last = fr.seq
    finally:
        await sub.stop()


# ------------------------------------------------------------------------------- printing


def format_time(ms: int | None) -> str:
    """ISO-8601 UTC with milliseconds (``2026-12-05T05:12:43.123Z``); ``-`` when unknown."""
    return iso_ms(ms)


def _order(ev: dict[str, Any], client: str = "client", oid: str = "id") -> str:
    return f"{ev.get(client)}/{ev.get(oid)}"


def format_event(ev: dict[str, Any]) -> str:
    """One event, readably: its type, then what it says."""
    kind = str(ev.get("type"))
    g = ev.get
    if kind == "market_added":
        text = f"{g('market')} tick {g('tick')} lot {g('lot')}"
    elif kind == "rejected":
        who = f" {_order(ev)}" if g("client") is not None else ""
        where = f" {g('market')}" if g("market") is not None else ""
        text = f"{g('cmd')}{who}{where}: {g('reason')}"
    elif kind == "accepted":
        price = "market" if g("price") is None else g("price")
        text = f"{_order(ev)} {g('market')} {g('side')} {g('qty')} @ {price} {g('tif')}"
    elif kind == "amended":
        text = f"{_order(ev)} {g('market')} {g('qty')} @ {g('price')}"
    elif kind == "trade":
        text = (
            f"{g('market')} {g('qty')} @ {g('price')} taker "
            f"{_order(ev, 'taker_client', 'taker')} ({g('taker_side')}) maker "
            f"{_order(ev, 'maker_client', 'maker')}"
        )
    elif kind == "filled":
        text = f"{_order(ev)} {g('market')}"
    elif kind == "resting":
        text = f"{_order(ev)} {g('market')} {g('remaining')} @ {g('price')}"
    elif kind == "cancelled":
        text = f"{_order(ev)} {g('market')} {g('reason')}, remaining {g('remaining')}"
    else:
        text = " ".join(f"{k}={v}" for k, v in ev.items() if k not in ("type", "seq"))
    return f"{kind:<12} {text}"


def entry_lines(e: Entry, market: str | None, as_json: bool) -> list[str]:
    """The output lines of one entry (its events in ``market``, or all)."""
    out: list[str] = []
    for ev in e.events:
        if market is not None and ev.get("market") != market:
            continue
        if as_json:
            out.append(_encode({**ev, "time": e.time}).decode())
        else:
            out.append(f"{e.seq:>8}  {format_time(e.time)}  {format_event(ev)}")
    return out


# ------------------------------------------------------------------------------- command


async def _reader_gone(fd: int = 1, every_s: float = 0.5) -> None:
    """Return when the reader of the pipe ``fd`` has gone away (``grenex tail | head``: an
    idle tail would otherwise wait for its next event to find out); never, for a file or a
    terminal."""
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        await asyncio.Event().wait()
    poll = select.poll()
    poll.register(fd, 0)  # POLLERR and POLLHUP are always reported
    while not poll.poll(0):
        await asyncio.sleep(every_s)


async def _tail(*args: Any) -> None:
    """:func:`_tail_body`, ended by a broken pipe when standard output's reader goes away."""
    body = asyncio.ensure_future(_tail_body(*args))
    gone = asyncio.ensure_future(_reader_gone())
    try:
        await asyncio.wait({body, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (body, gone):
            if not t.done():
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
    if not body.done() or body.cancelled():
        raise BrokenPipeError
    body.result()


async def _tail_body(
    grape: str,
    cluster: str | None,
    node: str | None,
    timeout: float,
    since: int | None,
    market: str | None,
    as_json: bool,
) -> None:
    printed = False

    def idle() -> None:
        if not printed:
            what = f" in {market}" if market else ""
            click.echo(f"waiting for events{what}… (none yet; Ctrl-C to stop)", err=True)

    def gap(g: WindowGap) -> None:
        click.echo(f"warning: events may be missing: {g.message}", err=True)

    async with make_client(grape, cluster, node, timeout) as c:
        async for e in tail_entries(c, since, connect_timeout=timeout, on_idle=idle, on_gap=gap):
            lines = entry_lines(e, market, as_json)
            if lines:
                click.echo("\n".join(lines))
                printed = True


@click.command("tail", cls=ClientCommand)
@click.option("--node", default=None, help="Tail this node's stream [default: any node's].")
@click.option(
    "--since",
    type=click.IntRange(min=0),
    default=None,
    help="First print every event after this log index (seq) the node still keeps.",
)
@click.option("--market", default=None, help="Only this market's events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event, with time.")
@network_options
def tail_command(
    node: str | None,
    since: int | None,
    market: str | None,
    as_json: bool,
    grape: str,
    cluster: str | None,
    timeout: float,
) -> None:
    """Print the cluster's events as they are applied, one line each, until Ctrl-C.

    Each line: the entry's seq (log index), its time (ISO-8601 UTC; --json: milliseconds
    since the epoch) and the event.  --since N first prints every event after index N, then
    goes on live, without gaps or repeats; when the node no longer keeps index N+1 it says
    so and exits 1 (see docs/client.md).  Ctrl-C exits 130.
    """
    try:
        asyncio.run(_tail(grape, cluster, node, timeout, since, market, as_json))
    except WindowGap as e:
        fail(
            f"--since {e.since}: {e.message}; start from the oldest kept with --since "
            f"{e.first - 1}, or read the older events with grenex export + grenex replay"
        )
    except GrenexClientError as e:
        fail(e.message or e.code)
    except ValueError as e:
        fail(str(e), 2)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # e.g. `grenex tail | head`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
