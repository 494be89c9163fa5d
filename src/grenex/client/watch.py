"""``grenex watch --node ID --market M``: a live ladder of one market, as one node sees it.

The screen shows the asks (highest at the top) over the bids, each price level with its
quantity, order count and a depth bar; the spread between them; the last trades; and the
node's role, term, leader, commit and applied index.

What refreshes it: events from the cluster's event stream (``grenex:<cluster>:events``) mark
the view stale, and the loop then re-reads the watched node's book and trades (at most every
``MIN_REFRESH_S``, so a busy market costs a few requests a second, not one per event); a poll
every ``--poll`` seconds refreshes the status and catches anything the stream missed while it
reconnected.  A failing node is shown in the header and retried; the view never blocks on it.

The layout follows the terminal's width, read at every redraw: the trades beside the ladder
when both fit, else below it, with a shorter depth bar on a narrow terminal; nothing is cut off
at 80 columns.

Ctrl-C (or SIGTERM) stops it cleanly, no traceback: exit status 130 for Ctrl-C (SIGINT), as
SPEC §5 says for an interrupted command, and 143 for SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from grenex.client.client import (
    Book,
    EventStream,
    GrenexClient,
    GrenexClientError,
    Level,
    NodeStatus,
)
from grenex.client.commands import (
    ClientCommand,
    console,
    fail,
    make_client,
    network_options,
    run_client,
)
from grenex.client.timefmt import time_of_day_ms
from grenex.engine import Trade

__all__ = ["Ladder", "render", "watch_command"]

MIN_REFRESH_S = 0.2
BAR_WIDTH = 24
BAR_WIDTH_MIN = 4
# columns the ladder takes besides its depth bar (price, qty, orders, total, borders, padding)
_LADDER_FIXED_WIDTH = 56
_EIGHTHS = " ▏▎▍▌▋▊▉█"


def bar(value: Decimal, top: Decimal, width: int = BAR_WIDTH) -> str:
    """A horizontal bar of ``value / top`` × ``width`` cells, in eighths of a cell."""
    if top <= 0 or value <= 0:
        return ""
    eighths = max(1, int(value / top * width * 8))
    full, part = divmod(min(eighths, width * 8), 8)
    return "█" * full + (_EIGHTHS[part] if part else "")


def _fmt(d: Decimal) -> str:
    s = f"{d:f}"
    return s.rstrip("0").rstrip(".") if "." in s else s


@dataclass
class Ladder:
    """What the screen shows; updated by the loop, drawn by :func:`render`."""

    node: str
    market: str
    depth: int = 10
    trades_max: int = 12
    book: Book | None = None
    applied: int = 0
    status: NodeStatus | None = None
    trades: list[Trade] = field(default_factory=list)
    trade_times: list[int | None] = field(default_factory=list)  # each trade's time (ms)
    error: str | None = None
    events_seen: int = 0
    publisher: str | None = None
    updated: float = 0.0


def _side_rows(
    levels: list[Level], top: Decimal, style: str, bar_width: int = BAR_WIDTH
) -> list[list[Text | str]]:
    rows: list[list[Text | str]] = []
    total = Decimal(0)
    for lv in levels:
        total += lv.qty
        rows.append(
            [
                Text(_fmt(lv.price), style=f"bold {style}"),
                _fmt(lv.qty),
                str(lv.orders),
                _fmt(total),
                Text(bar(lv.qty, top, bar_width), style=style),
            ]
        )
    return rows


def ladder_table(v: Ladder, bar_width: int = BAR_WIDTH) -> Table:
    t = Table(header_style="bold", expand=False, pad_edge=False)
    t.add_column("price", justify="right", min_width=10)
    t.add_column("qty", justify="right", min_width=8)
    t.add_column("orders", justify="right")
    t.add_column("total", justify="right", min_width=8)
    t.add_column("depth", justify="left", min_width=bar_width)
    book = v.book
    if book is None:
        t.add_row("…", "", "", "", "")
        return t
    asks = book.levels("asks", v.depth)
    bids = book.levels("bids", v.depth)
    top = max([lv.qty for lv in asks + bids], default=Decimal(0))
    for row in reversed(_side_rows(asks, top, "red", bar_width)):
        t.add_row(*row)
    if not asks:
        t.add_row(Text("no asks", style="dim red"), "", "", "", "")
    spread = book.spread
    if spread is not None:
        bid, ask = book.best_bid, book.best_ask
        assert bid is not None and ask is not None
        mid = (bid + ask) / 2
        line = Text(f"spread {_fmt(spread)} · mid {_fmt(mid)}", style="bold yellow")
    else:
        line = Text("spread —", style="dim")
    t.add_section()
    t.add_row("", "", "", "", line)
    t.add_section()
    for row in _side_rows(bids, top, "green", bar_width):
        t.add_row(*row)
    if not bids:
        t.add_row(Text("no bids", style="dim green"), "", "", "", "")
    return t


def trades_panel(v: Ladder) -> Table:
    t = Table(title="last trades", header_style="bold", title_style="bold", pad_edge=False)
    t.add_column("time (UTC)", style="dim")
    t.add_column("seq", justify="right", style="dim")
    t.add_column("side")
    t.add_column("price", justify="right")
    t.add_column("qty", justify="right")
    times = v.trade_times if len(v.trade_times) == len(v.trades) else [None] * len(v.trades)
    for tr, at in reversed(list(zip(v.trades, times, strict=True))[-v.trades_max :]):
        style = "green" if tr.taker_side == "buy" else "red"
        t.add_row(
            time_of_day_ms(at),
            str(tr.seq),
            Text(tr.taker_side, style=style),
            Text(tr.price, style=style),
            tr.qty,
        )
    if not v.trades:
        t.add_row("", "", Text("none yet", style="dim"), "", "")
    return t


def header(v: Ladder) -> Text:
    h = Text()
    h.append("grenex watch ", style="bold")
    h.append(v.market, style="bold magenta")
    h.append(f" · node {v.node}")
    st = v.status
    if st is not None:
        h.append(f" ({st.role}, term {st.term})")
        h.append(" · leader ")
        h.append(st.leader or "none", style="bold" if st.leader else "bold red")
        h.append(f" · commit {max(st.commit, v.applied)}")
    h.append(f" · applied {v.applied}", style="bold")
    if v.error:
        h.append("\n")
        h.append(f"⚠ {v.error}", style="bold red")
    return h


def footer(v: Ladder) -> Text:
    f = Text(style="dim")
    f.append(f"events: {v.events_seen}")
    f.append(f" via {v.publisher}" if v.publisher else " (connecting…)")
    if v.updated:
        f.append(f" · updated {time.strftime('%H:%M:%S', time.localtime(v.updated))}")
    f.append(" · Ctrl-C to quit")
    return f


def render(v: Ladder, console: Console | None = None) -> RenderableType:
    """The screen; with ``console``, laid out for its current width: the trades beside the
    ladder when both fit, else below it (and a shorter depth bar when even the ladder is
    wide for the terminal)."""
    if console is None:
        ladder, trades = ladder_table(v), trades_panel(v)
    else:
        width = console.width
        bar_w = max(BAR_WIDTH_MIN, min(BAR_WIDTH, width - _LADDER_FIXED_WIDTH))
        ladder, trades = ladder_table(v, bar_w), trades_panel(v)
        opts = console.options
        need = (
            Measurement.get(console, opts, ladder).maximum
            + 3
            + Measurement.get(console, opts, trades).maximum
        )
        if need > width:
            return Group(header(v), ladder, trades, footer(v))
    body = Table.grid(padding=(0, 3))
    body.add_column()
    body.add_column()
    body.add_row(ladder, trades)
    return Group(header(v), body, footer(v))


class _Watcher:
    def __init__(self, client: GrenexClient, view: Ladder, poll_s: float) -> None:
        self.client = client
        self.view = view
        self.poll_s = poll_s
        self.stale = asyncio.Event()

    async def load(self) -> None:
        """Book, trades and status now; raises when the node cannot be read."""
        v = self.view
        snap = await self.client.book(v.market)
        v.book = snap.books.get(v.market)
        v.applied = max(v.applied, snap.applied)
        if v.book is None:
            raise GrenexClientError(f"unknown market {v.market!r}")
        timed = await self.client.trades_timed(v.market, limit=v.trades_max)
        v.trades, v.trade_times = [t for t, _ in timed], [at for _, at in timed]
        v.updated = time.time()

    async def poll_status(self) -> None:
        st = await self.client.status()
        self.view.status = st
        self.view.applied = max(self.view.applied, st.applied)

    async def read_events(self, stream: EventStream) -> None:
        while True:
            ev = await stream.next()
            if ev is None:
                return
            self.view.events_seen += 1
            self.view.publisher = stream.publisher
            self.stale.set()

    async def run(self, live: Live, stream: EventStream) -> None:
        v = self.view
        last_poll = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.05, last_poll + self.poll_s - time.monotonic())):
                    await self.stale.wait()
            polling = time.monotonic() - last_poll >= self.poll_s
            self.stale.clear()
            try:
                if polling:
                    last_poll = time.monotonic()
                    await self.poll_status()
                await self.load()
                v.error = None
            except GrenexClientError as e:
                v.error = f"node {v.node}: {e.message} (retrying)"
            v.publisher = stream.publisher
            live.update(render(v, live.console), refresh=True)
            await asyncio.sleep(MIN_REFRESH_S)


async def watch(
    grape: str, cluster: str | None, node: str, market: str, depth: int, poll: float, timeout: float
) -> int:
    """Run the live view until SIGINT/SIGTERM, and return that signal's number; raise
    GrenexClientError if it cannot start."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    got: list[int] = []

    def on_signal(sig: int) -> None:
        got.append(sig)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    view = Ladder(node=node, market=market, depth=depth)
    async with make_client(grape, cluster, node, timeout) as first:
        w = _Watcher(first, view, poll)
        await w.poll_status()
        await w.load()
    # While running, each read gets a short budget so a failing node shows up quickly.
    async with (
        make_client(grape, cluster, node, min(timeout, 3.0)) as c,
        c.events(market) as stream,
    ):
        w = _Watcher(c, view, poll)
        out = console()
        with Live(render(view, out), console=out, auto_refresh=False, transient=False) as live:
            tasks = [
                asyncio.create_task(w.run(live, stream)),
                asyncio.create_task(w.read_events(stream)),
                asyncio.create_task(stop.wait()),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    if not t.cancelled() and t.exception() is not None:
                        raise t.exception()  # type: ignore[misc]
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    return got[0] if got else signal.SIGINT


@click.command("watch", cls=ClientCommand)
@click.option("--node", required=True, help="The node whose replica to watch.")
@click.option("--market", required=True, help="The market, e.g. BTC-USD.")
@click.option(
    "--depth",
    type=click.IntRange(1, 50),
    default=10,
    show_default=True,
    help="Price levels per side.",
)
@click.option(
    "--poll",
    type=click.FloatRange(min=0.2),
    default=1.0,
    show_default=True,
    help="Seconds between status polls.",
)
@network_options
def watch_command(
    node: str, market: str, depth: int, poll: float, grape: str, cluster: str | None, timeout: float
) -> None:
    """A live ladder of one market: depth, spread, last trades, applied index and leader.

    Ctrl-C quits (exit status 130, as for any interrupted command)."""

    async def go() -> int:
        return await watch(grape, cluster, node, market, depth, poll, timeout)

    try:
        sig = run_client(go)
    except KeyboardInterrupt:  # pragma: no cover - run_client already handles it
        fail("interrupted", 130)
    sys.exit(128 + sig)
