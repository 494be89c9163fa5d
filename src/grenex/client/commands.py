"""The client commands of the ``grenex`` CLI (SPEC §5): place, cancel, amend, add-market, book,
trades, status (``watch`` lives in :mod:`grenex.client.watch`).

Each command talks to one node (``--node``) or any node, through the Grapes (``--grape``,
``--cluster``), with :class:`~grenex.client.GrenexClient` and its bounded retries
(``--timeout``).  Output is a rich table by default and one JSON document with ``--json``.

Exit status: 0 done; 1 the order was rejected (the reason on stderr) or the network failed
(unreachable Grape or node, no answer in time); 2 bad usage; 130 interrupted.  Every error is
one line on stderr, ``error: ...``, never a traceback.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any, NoReturn, TypeVar

import click
import msgspec
from rich.console import Console
from rich.table import Table
from rich.text import Text

from grenex.client.client import (
    DEFAULT_CLUSTER,
    Book,
    BookSnapshot,
    CommandResult,
    GrenexClient,
    GrenexClientError,
    NodeStatus,
    StatusReply,
)
from grenex.engine import (
    Accepted,
    Amended,
    Cancelled,
    Event,
    Filled,
    MarketAdded,
    Rejected,
    Resting,
    Trade,
)
from grenex.grenache import DEFAULT_GRAPE

__all__ = [
    "ClientCommand",
    "add_market_command",
    "amend_command",
    "book_command",
    "cancel_command",
    "network_options",
    "place_command",
    "run_client",
    "status_command",
    "trades_command",
]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

HASH_PREFIX = 12


# ------------------------------------------------------------------------------- plumbing


class _OneLineUsageError(click.UsageError):
    """A usage error shown as one line (click's default adds the usage and a hint)."""

    def show(self, file: Any = None) -> None:
        name = self.ctx.command_path if self.ctx is not None else "grenex"
        click.echo(f"error: {self.format_message()} (see '{name} --help')", err=True)


class ClientCommand(click.Command):
    """A click command whose usage errors are one line on stderr (exit 2)."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as e:
            if isinstance(e, _OneLineUsageError):
                raise
            raise _OneLineUsageError(e.format_message(), e.ctx) from None


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr, then exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def run_client(fn: Callable[[], Awaitable[T]]) -> T:
    """Run one command's coroutine; turn every expected failure into one stderr line."""
    try:
        return asyncio.run(_call(fn))
    except GrenexClientError as e:
        fail(e.message or e.code)
    except ValueError as e:  # e.g. a --grape that is not a URL list
        fail(str(e), 2)
    except KeyboardInterrupt:
        fail("interrupted", 130)


async def _call(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()


def network_options(f: F) -> F:
    """``--grape``, ``--cluster`` and ``--timeout``: where the cluster is, how long to try."""
    f = click.option(
        "--timeout",
        type=click.FloatRange(min=0.1),
        default=10.0,
        show_default=True,
        help="Give up after this many seconds (retries included).",
    )(f)
    f = click.option(
        "--cluster",
        default=lambda: os.environ.get("GRENEX_CLUSTER") or DEFAULT_CLUSTER,
        show_default="main or $GRENEX_CLUSTER",
        help="Cluster name (the Grenache names are grenex:<cluster>:...).",
    )(f)
    f = click.option(
        "--grape",
        default=lambda: os.environ.get("GRENEX_GRAPE") or DEFAULT_GRAPE,
        show_default="http://127.0.0.1:30001 or $GRENEX_GRAPE",
        help="Grape HTTP API URL(s), comma-separated.",
    )(f)
    return f


_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")


def make_client(
    grape: str, cluster: str, node: str | None, timeout: float, **kw: Any
) -> GrenexClient:
    return GrenexClient(
        grape,
        cluster,
        node,
        timeout=timeout,
        attempt_timeout=min(12.0, timeout),
        read_timeout=min(5.0, timeout),
        grape_timeout=min(2.0, timeout / 2),
        **kw,
    )


def console() -> Console:
    """Rich output; when not on a terminal, wide enough that tables do not wrap."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def print_json(value: Any) -> None:
    click.echo(msgspec.json.encode(value).decode())


# ------------------------------------------------------------------------------- commands


def _order(client: str | None, oid: str | None) -> str:
    return f"{client}/{oid}" if client is not None else (oid or "")


def _event_row(e: Event) -> list[str]:
    """event, order, market, side, price, qty, note."""
    if type(e) is Accepted:
        return [
            "accepted",
            _order(e.client, e.id),
            e.market,
            e.side,
            e.price or "market",
            e.qty,
            e.tif,
        ]
    if type(e) is Trade:
        maker = _order(e.maker_client, e.maker)
        taker = _order(e.taker_client, e.taker)
        return [
            "trade",
            f"{taker} × {maker}",
            e.market,
            e.taker_side,
            e.price,
            e.qty,
            "taker × maker",
        ]
    if type(e) is Filled:
        return ["filled", _order(e.client, e.id), e.market, "", "", "0", ""]
    if type(e) is Resting:
        return ["resting", _order(e.client, e.id), e.market, "", e.price, e.remaining, ""]
    if type(e) is Cancelled:
        return ["cancelled", _order(e.client, e.id), e.market, "", "", e.remaining, e.reason]
    if type(e) is Amended:
        return ["amended", _order(e.client, e.id), e.market, "", e.price, e.qty, ""]
    if type(e) is MarketAdded:
        return ["market_added", "", e.market, "", f"tick {e.tick}", f"lot {e.lot}", ""]
    if type(e) is Rejected:
        return [
            "rejected",
            _order(e.client, e.id),
            e.market or "",
            "",
            "",
            "",
            f"{e.cmd}: {e.reason}",
        ]
    return [type(e).__name__, "", "", "", "", "", ""]  # pragma: no cover


_STATUS_STYLE = {
    "filled": "bold green",
    "resting": "bold cyan",
    "amended": "bold cyan",
    "market_added": "bold green",
    "cancelled": "bold yellow",
    "rejected": "bold red",
}


def _summary(what: str, r: CommandResult) -> Text:
    status = r.status
    head = Text(f"{what} ")
    if r.client is not None:
        head.append(_order(r.client, r.id), style="bold")
        head.append(" → ")
    head.append(status, style=_STATUS_STYLE.get(status, "bold"))
    details = []
    if r.reason is not None:
        details.append(r.reason)
    if r.trades:
        details.append(
            f"{len(r.trades)} trade{'s' if len(r.trades) != 1 else ''}, "
            f"{r.filled_qty.normalize():f} filled"
        )
    if status in ("resting", "amended") and r.remaining is not None:
        details.append(f"{r.remaining} resting")
    if details:
        head.append(f" ({'; '.join(details)})")
    head.append(f" · seq {r.seq}", style="dim")
    return head


def report(what: str, r: CommandResult, as_json: bool) -> None:
    """Print a command's outcome; a rejection is one line on stderr and exit status 1."""
    if as_json:
        print_json(r.to_json())
    else:
        out = console()
        out.print(_summary(what, r))
        if r.events:
            t = Table(box=None, pad_edge=False, header_style="bold")
            for col in ("event", "order", "market", "side", "price", "qty", "note"):
                t.add_column(col, justify="right" if col in ("price", "qty") else "left")
            for e in r.events:
                t.add_row(*_event_row(e))
            out.print(t)
    if r.rejected:
        order = f" {_order(r.client, r.id)}" if r.client is not None else ""
        fail(f"rejected: {r.reason} ({what}{order})")


@click.command("place", cls=ClientCommand)
@click.option("--node", required=True, help="The node to send the order to.")
@click.option("--client", "client_id", default=None, help="Client id [default: the node id].")
@click.option("--market", required=True, help="Market, e.g. BTC-USD.")
@click.option("--side", required=True, type=click.Choice(["buy", "sell"]))
@click.option("--qty", required=True, help="Quantity (a decimal; a multiple of the lot).")
@click.option("--price", default=None, help="Limit price; none: a market order.")
@click.option(
    "--tif",
    type=click.Choice(["GTC", "IOC", "FOK"], case_sensitive=False),
    default=None,
    help="Time in force [default: GTC, IOC for a market order].",
)
@click.option("--post-only", is_flag=True, help="Reject instead of taking liquidity.")
@click.option(
    "--stp",
    type=click.Choice(["cancel_maker", "cancel_taker", "cancel_both"]),
    default=None,
    help="Self-trade prevention [default: cancel_maker].",
)
@click.option("--id", "order_id", default=None, help="Order id [default: a fresh unique id].")
@network_options
@_json_option
def place_command(
    node: str,
    client_id: str | None,
    market: str,
    side: str,
    qty: str,
    price: str | None,
    tif: str | None,
    post_only: bool,
    stp: str | None,
    order_id: str | None,
    grape: str,
    cluster: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Place an order through a node; prints its events (trades, resting, ...)."""

    async def go() -> CommandResult:
        async with make_client(grape, cluster, node, timeout) as c:
            return await c.place(
                market,
                side,
                qty,
                price,
                client=client_id,
                id=order_id,
                tif=tif.upper() if tif else None,
                post_only=True if post_only else None,
                stp=stp,
            )

    report("place", run_client(go), as_json)


@click.command("cancel", cls=ClientCommand)
@click.option("--node", required=True, help="The node to send the cancel to.")
@click.option("--client", "client_id", default=None, help="Client id [default: the node id].")
@click.option("--id", "order_id", required=True, help="The order's id.")
@network_options
@_json_option
def cancel_command(
    node: str,
    client_id: str | None,
    order_id: str,
    grape: str,
    cluster: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Cancel a resting order."""

    async def go() -> CommandResult:
        async with make_client(grape, cluster, node, timeout) as c:
            return await c.cancel(client_id, order_id)

    report("cancel", run_client(go), as_json)


@click.command("amend", cls=ClientCommand)
@click.option("--node", required=True, help="The node to send the amend to.")
@click.option("--client", "client_id", default=None, help="Client id [default: the node id].")
@click.option("--id", "order_id", required=True, help="The order's id.")
@click.option("--qty", default=None, help="New remaining quantity.")
@click.option("--price", default=None, help="New price.")
@network_options
@_json_option
def amend_command(
    node: str,
    client_id: str | None,
    order_id: str,
    qty: str | None,
    price: str | None,
    grape: str,
    cluster: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Amend a resting order: a smaller quantity keeps its priority, anything else re-enters."""

    async def go() -> CommandResult:
        async with make_client(grape, cluster, node, timeout) as c:
            return await c.amend(client_id, order_id, qty=qty, price=price)

    report("amend", run_client(go), as_json)


@click.command("add-market", cls=ClientCommand)
@click.option("--market", required=True, help="Market name, e.g. SOL-USD.")
@click.option("--tick", required=True, help="Price step (a decimal).")
@click.option("--lot", required=True, help="Quantity step (a decimal).")
@click.option("--node", default=None, help="Send it to this node [default: any node].")
@network_options
@_json_option
def add_market_command(
    market: str,
    tick: str,
    lot: str,
    node: str | None,
    grape: str,
    cluster: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Open a market (through the replicated log, like any command)."""

    async def go() -> CommandResult:
        async with make_client(grape, cluster, node, timeout) as c:
            return await c.add_market(market, tick, lot)

    report("add-market", run_client(go), as_json)


# ------------------------------------------------------------------------------- reads


def _fmt(d: Decimal) -> str:
    s = f"{d:f}"
    return s.rstrip("0").rstrip(".") if "." in s else s


def book_table(book: Book, depth: int, title: str | None = None) -> Table:
    """Bids and asks side by side, aggregated by price level, best first."""
    t = Table(title=title or book.market, title_style="bold", header_style="bold")
    t.add_column("orders", justify="right", style="green")
    t.add_column("bid qty", justify="right", style="green")
    t.add_column("bid", justify="right", style="bold green")
    t.add_column("ask", justify="left", style="bold red")
    t.add_column("ask qty", justify="right", style="red")
    t.add_column("orders", justify="right", style="red")
    bids, asks = book.levels("bids", depth), book.levels("asks", depth)
    if not bids and not asks:
        t.add_row("", "", "(empty)", "(empty)", "", "")
    for i in range(max(len(bids), len(asks))):
        b = bids[i] if i < len(bids) else None
        a = asks[i] if i < len(asks) else None
        t.add_row(
            str(b.orders) if b else "",
            _fmt(b.qty) if b else "",
            _fmt(b.price) if b else "",
            _fmt(a.price) if a else "",
            _fmt(a.qty) if a else "",
            str(a.orders) if a else "",
        )
    spread = book.spread
    if spread is not None:
        t.caption = f"spread {_fmt(spread)}"
    return t


def _book_json(snap: BookSnapshot, depth: int | None) -> dict[str, Any]:
    out = snap.to_json()
    if depth is None:
        return out
    for b in out["books"]:
        for side in ("bids", "asks"):
            kept: list[dict[str, str]] = []
            prices: list[str] = []
            for o in b[side]:
                if not prices or Decimal(prices[-1]) != Decimal(o["price"]):
                    if len(prices) == depth:
                        break
                    prices.append(o["price"])
                kept.append(o)
            b[side] = kept
    return out


@click.command("book", cls=ClientCommand)
@click.option("--node", default=None, help="Ask this node [default: any node].")
@click.option("--market", default=None, help="One market [default: every market].")
@click.option(
    "--depth",
    type=click.IntRange(min=1),
    default=None,
    help="Price levels per side [default: 10; JSON: all].",
)
@network_options
@_json_option
def book_command(
    node: str | None,
    market: str | None,
    depth: int | None,
    grape: str,
    cluster: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Print the order book(s) of a node's replica."""

    async def go() -> BookSnapshot:
        async with make_client(grape, cluster, node, timeout) as c:
            return await c.book(market)

    snap = run_client(go)
    if market is not None and market not in snap.books:
        fail(f"unknown market {market!r}")
    if as_json:
        print_json(_book_json(snap, depth))
        return
    out = console()
    where = f"node {node}" if node else "any node"
    for b in snap.books.values():
        out.print(book_table(b, depth or 10, f"{b.market} · {where} · applied {snap.applied}"))
    if not snap.books:
        out.print("no markets open")


@click.command("trades", cls=ClientCommand)
@click.option("--node", default=None, help="Ask this node [default: any node].")
@click.option("--market", default=None, help="One market [default: every market].")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option(
    "--since",
    type=click.IntRange(min=0),
    default=None,
    help="Only trades after this log position (seq).",
)
@network_options
@_json_option
def trades_command(
    node: str | None,
    market: str | None,
    limit: int,
    since: int | None,
    grape: str,
    cluster: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Print the most recent trades, oldest first."""

    async def go() -> list[Trade]:
        async with make_client(grape, cluster, node, timeout) as c:
            return await c.trades(market, since=since, limit=limit)

    trades = run_client(go)
    if as_json:
        print_json({"trades": [msgspec.to_builtins(t) for t in trades]})
        return
    out = console()
    if not trades:
        out.print("no trades" + (f" in {market}" if market else ""))
        return
    out.print(trades_table(trades))


def trades_table(trades: Sequence[Trade], title: str | None = None) -> Table:
    t = Table(title=title, header_style="bold", title_style="bold")
    for col, just in (
        ("seq", "right"),
        ("market", "left"),
        ("side", "left"),
        ("price", "right"),
        ("qty", "right"),
        ("taker", "left"),
        ("maker", "left"),
    ):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for tr in trades:
        style = "green" if tr.taker_side == "buy" else "red"
        t.add_row(
            str(tr.seq),
            tr.market,
            Text(tr.taker_side, style=style),
            Text(tr.price, style=style),
            tr.qty,
            _order(tr.taker_client, tr.taker),
            _order(tr.maker_client, tr.maker),
        )
    return t


def _short_error(e: GrenexClientError | None) -> str:
    """A few words for a table cell (the JSON output has the whole message)."""
    if e is None:
        return "?"
    text = e.message
    for needle, words in (
        ("refused", "connection refused"),
        ("Connect call failed", "connection refused"),
        ("ERR_TIMEOUT", "timeout"),
    ):
        if needle in text:
            return words
    return e.code


def _status_rows(replies: list[StatusReply]) -> tuple[list[NodeStatus], list[StatusReply]]:
    ok = sorted((r.status for r in replies if r.status is not None), key=lambda s: s.node)
    bad = [r for r in replies if r.status is None]
    return ok, bad


def agreement(statuses: Sequence[NodeStatus]) -> tuple[bool, str]:
    """(all replicas agree, a sentence saying so).

    Equal ``(applied, state_hash)`` everywhere: agree.  Different positions (a busy cluster):
    nodes at the same position must report the same hash, else the replicas diverged.
    """
    if not statuses:
        return False, "no node answered"
    pairs = {(s.applied, s.state_hash) for s in statuses}
    if len(pairs) == 1:
        applied, h = next(iter(pairs))
        return True, f"all {len(statuses)} nodes agree: applied {applied}, hash {h[:HASH_PREFIX]}"
    by_index: dict[int, set[str]] = {}
    for s in statuses:
        by_index.setdefault(s.applied, set()).add(s.state_hash)
    split = sorted(i for i, hs in by_index.items() if len(hs) > 1)
    if split:
        return False, f"DIVERGED: nodes at applied {split[0]} report different state hashes"
    lo, hi = min(by_index), max(by_index)
    return True, (
        f"nodes are at different positions (applied {lo}..{hi}); those at the same position agree"
    )


def status_table(statuses: Sequence[NodeStatus], failed: Sequence[StatusReply] = ()) -> Table:
    t = Table(header_style="bold")
    for col, just in (
        ("node", "left"),
        ("role", "left"),
        ("term", "right"),
        ("leader", "left"),
        ("commit", "right"),
        ("applied", "right"),
        ("lag", "right"),
        ("state hash", "left"),
        ("pid", "right"),
    ):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    top = max((s.applied for s in statuses), default=0)
    role_style = {"leader": "bold green", "follower": "cyan", "learner": "magenta"}
    for s in statuses:
        lag = top - s.applied
        t.add_row(
            s.node,
            Text(s.role, style=role_style.get(s.role, "")),
            str(s.term),
            s.leader or "-",
            str(s.commit),
            str(s.applied),
            Text(str(lag), style="yellow" if lag else "dim"),
            s.state_hash[:HASH_PREFIX],
            str(s.pid),
        )
    for r in failed:
        err = _short_error(r.error)
        t.add_row(
            Text(r.peer, style="red"),
            Text("unreachable", style="red"),
            "",
            "",
            "",
            "",
            "",
            Text(err, style="dim"),
            "",
        )
    return t


@click.command("status", cls=ClientCommand)
@click.option("--node", default=None, help="One node [default: every node found].")
@network_options
@_json_option
def status_command(
    node: str | None, grape: str, cluster: str, timeout: float, as_json: bool
) -> None:
    """Role, term, leader, commit/applied and state hash of one node or every node.

    Without --node, also says whether all replicas agree (exit status 1 if they diverged or
    none answered).
    """
    if node is not None:

        async def one() -> NodeStatus:
            async with make_client(grape, cluster, node, timeout) as c:
                return await c.status()

        st = run_client(one)
        if as_json:
            print_json(st.raw)
        else:
            console().print(status_table([st]))
        return

    async def every() -> list[StatusReply]:
        async with make_client(grape, cluster, None, timeout) as c:
            return await c.statuses()

    ok, bad = _status_rows(run_client(every))
    agree, sentence = agreement(ok)
    if as_json:
        print_json(
            {
                "nodes": [s.raw for s in ok],
                "unreachable": [
                    {"peer": r.peer, "error": r.error.message if r.error else None} for r in bad
                ],
                "agree": agree,
            }
        )
    else:
        out = console()
        out.print(status_table(ok, bad))
        out.print(
            Text(("✓ " if agree else "✗ ") + sentence, style="green" if agree else "bold red")
        )
    if not agree:
        if as_json:
            click.echo(f"error: {sentence}", err=True)
        sys.exit(1)
