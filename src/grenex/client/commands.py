"""The client commands of the ``grenex`` CLI (SPEC §5): place, cancel, cancel-all, amend,
add-market, book, trades, markets, orders, order, status (``watch`` lives in
:mod:`grenex.client.watch`).

Each command talks to one node (``--node``) or any node, through the Grapes (``--grape``,
``--cluster``), with :class:`~grenex.client.GrenexClient` and its bounded retries
(``--timeout``).  Output is a rich table by default and one JSON document with ``--json``.

Exit status: 0 done; 1 the order was rejected (the reason and its remedy on stderr) or the
network failed (unreachable Grape or node, no answer in time: then the outcome is unknown and
the line says which id to retry with), or ``status`` found the cluster degraded (no leader, a
member not answering, a lagging node, replicas that differ: :mod:`grenex.client.health`); 2 bad
usage; 130 interrupted.  Every error is one line on
stderr, ``error: ...``, never a traceback.

An order is printed as ``CLIENT/ID``; every ``--id`` option accepts that form as well as the
bare id (a ``/`` cannot occur in a name, so the two never clash).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import msgspec
from rich.console import Console
from rich.table import Table
from rich.text import Text

from grenex.client.client import (
    BATCH_MAX,
    DEFAULT_CLUSTER,
    BadRequest,
    Book,
    BookSnapshot,
    CommandResult,
    GrapeUnavailable,
    GrenexClient,
    GrenexClientError,
    MarketInfo,
    NodeStatus,
    OpenOrder,
    OrderState,
    Unavailable,
)
from grenex.client.health import (
    HASH_WAIT_S,
    MAX_LAG,
    Health,
    Row,
    gather_health,
    single_problems,
    status_table,
)
from grenex.client.timefmt import iso_ms
from grenex.codec.envelope import (
    KeyRotated,
    MemberAdded,
    MemberPromoted,
    MemberRemoved,
    Registered,
)
from grenex.codec.genesis import Genesis, GenesisError, parse_genesis
from grenex.codec.keys import KeyFileError, SecretKey, read_key_file
from grenex.engine import (
    Accepted,
    Amended,
    Cancelled,
    Filled,
    MarketAdded,
    Rejected,
    Resting,
    Trade,
)
from grenex.grenache import DEFAULT_GRAPE
from grenex.grenache.tls import check_cert

__all__ = [
    "REMEDIES",
    "ClientCommand",
    "add_market_command",
    "amend_command",
    "book_command",
    "cancel_all_command",
    "cancel_command",
    "markets_command",
    "network_options",
    "order_command",
    "orders_command",
    "place_command",
    "run_client",
    "status_command",
    "trades_command",
]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


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


def run_client(fn: Callable[[], Awaitable[T]], what: str | None = None) -> T:
    """Run one command's coroutine; turn every expected failure into one stderr line.

    ``what`` names a command that changes state (``place``, ``cancel``...): when its outcome
    is unknown, the line says so and how to retry it safely."""
    try:
        return asyncio.run(_call(fn))
    except BadRequest as e:
        why = BAD_REQUEST_REMEDIES.get(e.message.rpartition(":")[2].strip())
        fail(e.message + (f": {why}" if why else ""))
    except GrenexClientError as e:
        fail(unknown_outcome(e, what) or e.message or e.code)
    except ValueError as e:  # e.g. a --grape that is not a URL list
        fail(str(e), 2)
    except KeyboardInterrupt:
        fail("interrupted", 130)


def _sent_command(cmd: dict[str, Any]) -> dict[str, Any]:
    """The command inside what was sent: a signed envelope's TEXT (SPEC §8), decoded."""
    text = cmd.get("cmd")
    if isinstance(text, str):
        try:
            inner = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return {}
        return inner if isinstance(inner, dict) else {}
    return cmd


def unknown_outcome(e: GrenexClientError, what: str | None) -> str | None:
    """The line for a command whose outcome is unknown (it may or may not have executed), or
    None when ``e`` is not that (nothing was sent, or the node refused it)."""
    if what is None or e.command is None or not isinstance(e, Unavailable):
        return None
    if isinstance(e, GrapeUnavailable) and e.attempts <= 1:
        return None  # no Grape at all: nothing was sent
    cmd = _sent_command(e.command)
    head = "no leader reachable or no answer in time: the outcome is unknown"
    client = cmd.get("client")
    if "batch" in cmd:
        n = len(cmd["batch"]) if isinstance(cmd["batch"], list) else 0
        safe = (
            f"running it again is safe (it lists the resting orders again; each of the {n} "
            "cancels it sent executes at most once)"
        )
        return f"{head} ({what} {client}); {safe} [{e.message}]"
    oid = cmd.get("id")
    if what == "place" and oid is not None:
        order = _order(client, oid)
        safe = (
            f"retrying the same command with the same id (--id {oid}) is safe: it never "
            "executes twice (if the first got through, the retry is rejected duplicate_id); "
            f"or ask: grenex order --client {client} --id {oid}"
        )
        return f"{head} ({what} {order}); {safe} [{e.message}]"
    if oid is not None:
        safe = "retrying the same command is safe (cancel and amend carry absolute values)"
        return f"{head} ({what} {_order(client, oid)}); {safe} [{e.message}]"
    return f"{head} ({what}); retrying the same command is safe [{e.message}]"


async def _call(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()


@dataclass(frozen=True, slots=True)
class GenesisFile:
    """The genesis a command was given (``--genesis`` / ``$GRENEX_GENESIS``): its path, its
    exact bytes (what ``export`` copies) and what they say."""

    path: Path
    data: bytes
    genesis: Genesis


_GENESIS_META = "grenex.genesis"


def read_genesis_file(path: str | os.PathLike[str]) -> GenesisFile:
    """The genesis at ``path``, checked (certificates included); GenesisError otherwise."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise GenesisError(f"cannot read genesis {os.fspath(p)!r}: {e.strerror}") from None
    return GenesisFile(p, data, parse_genesis(data, check_cert))


def _genesis_callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is None or value == "":
        return
    try:
        ctx.meta[_GENESIS_META] = read_genesis_file(value)
    except GenesisError as e:
        raise click.BadParameter(str(e), ctx, param) from None


def current_genesis() -> GenesisFile | None:
    """The genesis the running command was given, if any."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return None
    found = ctx.find_root().meta.get(_GENESIS_META)
    return found if isinstance(found, GenesisFile) else None


def need_genesis(what: str) -> GenesisFile:
    """The genesis, or a usage error: ``what`` (signing, exporting) needs it."""
    g = current_genesis()
    if g is None:
        raise _OneLineUsageError(
            f"{what} needs the cluster's genesis (it signs for it and authenticates its nodes): "
            "give --genesis FILE or set GRENEX_GENESIS (grenex up writes it as genesis.json "
            "in its state directory)"
        )
    return g


def cluster_name(cluster: str | None) -> str:
    """The cluster's name: the genesis' when one is given (``--cluster`` must then match it),
    else ``--cluster`` / ``$GRENEX_CLUSTER``, else ``main``."""
    g = current_genesis()
    if g is None:
        return cluster or DEFAULT_CLUSTER
    if cluster and cluster != g.genesis.cluster:
        raise _OneLineUsageError(
            f"--cluster {cluster!r} does not match the genesis' cluster "
            f"{g.genesis.cluster!r} ({g.path})"
        )
    return g.genesis.cluster


def network_options(f: F) -> F:
    """``--grape``, ``--cluster``, ``--genesis`` and ``--timeout``: where the cluster is,
    which one it is, how long to try."""
    f = click.option(
        "--timeout",
        type=click.FloatRange(min=0.1),
        default=10.0,
        show_default=True,
        help="Give up after this many seconds (retries included).",
    )(f)
    f = click.option(
        "--genesis",
        envvar="GRENEX_GENESIS",
        type=click.Path(dir_okay=False),
        default=None,
        expose_value=False,
        callback=_genesis_callback,
        help=(
            "The cluster's genesis file (docs/trust.md): it names the cluster, authenticates its "
            "nodes and is what commands are signed for [default: $GRENEX_GENESIS]."
        ),
    )(f)
    f = click.option(
        "--cluster",
        envvar="GRENEX_CLUSTER",
        default=None,
        show_default="the genesis' name, else $GRENEX_CLUSTER or main",
        help="Cluster name (the Grenache names are grenex:<cluster>:...); must match the genesis.",
    )(f)
    f = click.option(
        "--grape",
        default=lambda: os.environ.get("GRENEX_GRAPE") or DEFAULT_GRAPE,
        show_default="http://127.0.0.1:30001 or $GRENEX_GRAPE",
        help="Grape HTTP API URL(s), comma-separated.",
    )(f)
    return f


def _key_callback(ctx: click.Context, param: click.Parameter, value: Any) -> SecretKey | None:
    if value is None or value == "":
        return None
    try:
        return read_key_file(value)
    except KeyFileError as e:
        raise click.BadParameter(str(e), ctx, param) from None


def key_option(
    name: str = "--key",
    help: str = "The account's key file (docs/trust.md) [default: $GRENEX_KEY].",
    envvar: str | None = "GRENEX_KEY",
    dest: str = "key",
) -> Callable[[F], F]:
    """``--key FILE``: the key that signs (read here; its seed is never printed)."""
    return click.option(
        name,
        dest,
        envvar=envvar,
        type=click.Path(dir_okay=False),
        default=None,
        callback=_key_callback,
        help=help,
    )


def need_key(key: SecretKey | None, what: str) -> SecretKey:
    if key is None:
        raise _OneLineUsageError(f"{what} is signed: give --key FILE or set GRENEX_KEY")
    return key


_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")


def make_client(
    grape: str, cluster: str | None, node: str | None, timeout: float, **kw: Any
) -> GrenexClient:
    """A client of the cluster the command names: its genesis authenticates the nodes (TLS
    pinned to the members' certificates, SPEC §8) and is what commands are signed for."""
    g = need_genesis("talking to the nodes")
    kw.setdefault("genesis", g.genesis)
    return GrenexClient(
        grape,
        cluster_name(cluster),
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
    if client is None:
        return oid or ""
    return f"{client}/{oid}" if oid is not None else client


def _event_row(e: Any) -> list[str]:
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
    if type(e) is Registered:
        return ["registered", e.client, "", "", "", "", f"key {e.key}"]
    if type(e) is KeyRotated:
        return ["key_rotated", e.client, "", "", "", "", f"key {e.key}"]
    if type(e) is MemberAdded:
        return ["member_added", f"node {e.node}", "", "", "", "", f"{e.role}, key {e.key}"]
    if type(e) is MemberPromoted:
        return ["member_promoted", f"node {e.node}", "", "", "", "", "voter"]
    if type(e) is MemberRemoved:
        return ["member_removed", f"node {e.node}", "", "", "", "", ""]
    return [type(e).__name__, "", "", "", "", "", ""]  # pragma: no cover


_STATUS_STYLE = {
    "filled": "bold green",
    "resting": "bold cyan",
    "amended": "bold cyan",
    "market_added": "bold green",
    "registered": "bold green",
    "key_rotated": "bold green",
    "member_added": "bold green",
    "member_promoted": "bold green",
    "member_removed": "bold green",
    "cancelled": "bold yellow",
    "rejected": "bold red",
}


def _summary(what: str, r: CommandResult) -> Text:
    status = r.status
    head = Text(f"{what} ")
    if r.client is not None:
        head.append(_order(r.client, r.id), style="bold")
        head.append(" → ")
    if r.partly_filled:
        # an IOC/market remainder (or a self-trade stop) after some trades: not just "cancelled"
        head.append("partly filled", style="bold green")
        head.append(", rest ")
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
    if r.duplicate:
        head.append("\n")
        head.append(
            "duplicate: the node already had this exact signed command (an earlier attempt "
            "got through); this is its FIRST outcome, and nothing new was executed now",
            style="bold yellow",
        )
    return head


# What to do about each rejection reason (SPEC §2); docs/api.md has the same table.
# invalid_price / invalid_qty get the market's tick or lot added when it can be read.
REMEDIES: dict[str, str] = {
    "invalid_command": "client and id must be names: 1-64 of A-Z a-z 0-9 . _ : -",
    "invalid_market": "market must be a name, tick and lot decimals above zero",
    "market_exists": "that market is open already (see grenex markets)",
    "duplicate_id": (
        "this client used that id before (ids are used up forever, whatever the outcome): "
        "choose another --id, or leave --id out for a fresh one"
    ),
    "unknown_market": "no such market is open (see grenex markets)",
    "invalid_side": "side must be buy or sell",
    "invalid_qty": "the quantity must be a plain decimal above zero and a multiple of the lot",
    "invalid_price": "the price must be a plain decimal above zero and a multiple of the tick",
    "invalid_tif": (
        "tif must be GTC, IOC or FOK; a market order (no --price) cannot be GTC; "
        "--post-only needs GTC"
    ),
    "invalid_stp": "stp must be cancel_maker, cancel_taker or cancel_both",
    "post_only_would_cross": (
        "a post-only order must not trade at once: choose a price that does not cross the "
        "best opposite price (see grenex book)"
    ),
    "fok_unfillable": (
        "the book cannot fill all of it at once at that price: change qty or price, or use IOC"
    ),
    "unknown_order": (
        "this client has no resting order with that id (filled, cancelled or never placed): "
        "see grenex orders / grenex order"
    ),
    "invalid_amend": "give --qty, --price or both",
}


# What to do about each reason a node refuses a signed command before the log (SPEC §8).
BAD_REQUEST_REMEDIES: dict[str, str] = {
    "unknown_client": (
        "no account of that name: register it first (grenex register --client NAME --key FILE)"
    ),
    "bad_signature": (
        "the key does not sign for that account (another key is bound to it, or the genesis "
        "is not this cluster's): check --key, --client and --genesis"
    ),
    "client_taken": "that account name is bound to another key: choose another --client",
    "key_taken": "that key is bound to another account already (see grenex keys show)",
    "invalid_key": "not a valid Ed25519 public key",
    "stale_nonce": (
        "the account has newer commands than this one (another process signing for it?); "
        "run it again"
    ),
    "invalid_nonce": "the nonce is not a counter or microseconds since the epoch",
}


def step_remedy(reason: str | None, info: MarketInfo | None) -> str | None:
    """The remedy for ``invalid_price``/``invalid_qty`` naming the market's tick or lot."""
    if info is None:
        return None
    if reason == "invalid_price":
        return (
            f"price must be a multiple of the tick {info.tick} of {info.market} "
            f"(a plain decimal above zero)"
        )
    if reason == "invalid_qty":
        return (
            f"quantity must be a multiple of the lot {info.lot} of {info.market} "
            f"(a plain decimal above zero)"
        )
    return None


async def market_info(c: GrenexClient, market: str | None) -> MarketInfo | None:
    """The market's tick and lot, or None when it cannot be read (then the generic remedy)."""
    if market is None:
        return None
    try:
        return next((m for m in await c.markets() if m.market == market), None)
    except GrenexClientError:
        return None


async def remedy_for(c: GrenexClient, r: CommandResult, market: str | None = None) -> str | None:
    """For a rejected price or quantity, the market's tick or lot; ``market`` None: the
    market of the client's resting order ``r.id`` (an amend)."""
    if not r.rejected or r.reason not in ("invalid_price", "invalid_qty"):
        return None
    if market is None and r.id is not None:
        try:
            market = (await c.order(r.client, r.id)).market
        except GrenexClientError:
            return None
    return step_remedy(r.reason, await market_info(c, market))


def report(what: str, r: CommandResult, as_json: bool, remedy: str | None = None) -> None:
    """Print a command's outcome; a rejection is also one line on stderr, ``rejected: …``
    (the reason and what to do about it).  The exit status stays 0: the node answered, and
    its events hold the rejection (the command line's contract: 1 is for errors)."""
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
        why = remedy or REMEDIES.get(r.reason or "")
        click.echo(f"rejected: {r.reason} ({what}{order})" + (f": {why}" if why else ""), err=True)


def order_ref(client_id: str | None, order_id: str) -> tuple[str | None, str]:
    """``(client, id)`` from ``--client`` and ``--id``, where ``--id`` may be the ``CLIENT/ID``
    that ``place`` prints; a usage error when it names another client than ``--client``."""
    client, sep, oid = order_id.rpartition("/")
    if not sep:
        return client_id, order_id
    if not client or not oid:
        raise _OneLineUsageError(f"--id {order_id!r}: write ID or CLIENT/ID")
    if client_id is not None and client_id != client:
        raise _OneLineUsageError(
            f"--id {order_id!r} is an order of client {client!r}, but --client is {client_id!r}"
        )
    return client, oid


_PLAIN_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")


def check_decimal(option: str, value: str | None) -> None:
    """Refuse ``.1`` and ``1.`` with the spelling to use; anything else goes to the engine."""
    if value is None or _PLAIN_DECIMAL.fullmatch(value):
        return
    m = re.fullmatch(r"([0-9]*)\.([0-9]*)", value)
    if m is not None and (m.group(1) or m.group(2)):
        fixed = (m.group(1) or "0") + (f".{m.group(2)}" if m.group(2) else "")
        raise _OneLineUsageError(f"{option} {value!r} is not a decimal here: write {fixed}")


def signing_key(cluster: str | None, key: SecretKey | None, what: str) -> SecretKey:
    """The key ``what`` is signed with, checked with the genesis (usage errors, exit 2, when
    either is missing or --cluster contradicts the genesis).  Call it before any network work."""
    need_genesis(what)
    k = need_key(key, what)
    cluster_name(cluster)
    return k


async def account_of(c: GrenexClient, client_id: str | None) -> str:
    """``--client`` when given, else the account the client's key is bound to (asked of the
    node: ``account {key}``); it becomes the client's default account."""
    if client_id is None:
        assert c.key is not None
        reply = await c.account(key=c.key.public_key)
        name = reply.get("client")
        if not isinstance(name, str):
            raise GrenexClientError(
                f"the key {c.key.public_key} is bound to no account: register one first "
                "(grenex register --client NAME --key FILE), or give --client"
            )
        client_id = name
    c.client_id = client_id
    return client_id


_client_option = click.option(
    "--client",
    "client_id",
    default=None,
    help="The account [default: the account the key is bound to].",
)


@click.command("place", cls=ClientCommand)
@click.option("--node", required=True, help="The node to send the order to.")
@_client_option
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
@key_option()
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
    key: SecretKey | None,
    grape: str,
    cluster: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Place an order through a node, signed with --key; prints its events (trades, ...).

    The order is printed as CLIENT/ID; cancel, amend and order accept that as --id.  If the
    outcome is unknown (no leader, no answer in time), running it again with the same --id
    is safe: an id executes at most once (a second one is rejected duplicate_id)."""
    check_decimal("--qty", qty)
    check_decimal("--price", price)
    k = signing_key(cluster, key, "place")

    async def go() -> tuple[CommandResult, str | None]:
        async with make_client(grape, cluster, node, timeout, key=k) as c:
            who = await account_of(c, client_id)
            r = await c.place(
                market,
                side,
                qty,
                price,
                client=who,
                id=order_id,
                tif=tif.upper() if tif else None,
                post_only=True if post_only else None,
                stp=stp,
            )
            return r, await remedy_for(c, r, market)

    r, remedy = run_client(go, "place")
    report("place", r, as_json, remedy)


@click.command("cancel", cls=ClientCommand)
@click.option("--node", required=True, help="The node to send the cancel to.")
@_client_option
@click.option("--id", "order_id", required=True, help="The order's id (ID or CLIENT/ID).")
@key_option()
@network_options
@_json_option
def cancel_command(
    node: str,
    client_id: str | None,
    order_id: str,
    key: SecretKey | None,
    grape: str,
    cluster: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Cancel a resting order (signed with --key)."""
    client_id, order_id = order_ref(client_id, order_id)
    k = signing_key(cluster, key, "cancel")

    async def go() -> CommandResult:
        async with make_client(grape, cluster, node, timeout, key=k) as c:
            return await c.cancel(await account_of(c, client_id), order_id)

    report("cancel", run_client(go, "cancel"), as_json)


@click.command("amend", cls=ClientCommand)
@click.option("--node", required=True, help="The node to send the amend to.")
@_client_option
@click.option("--id", "order_id", required=True, help="The order's id (ID or CLIENT/ID).")
@click.option("--qty", default=None, help="New remaining quantity.")
@click.option("--price", default=None, help="New price.")
@key_option()
@network_options
@_json_option
def amend_command(
    node: str,
    client_id: str | None,
    order_id: str,
    qty: str | None,
    price: str | None,
    key: SecretKey | None,
    grape: str,
    cluster: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Amend a resting order: a smaller quantity keeps its priority, anything else re-enters."""
    client_id, order_id = order_ref(client_id, order_id)
    check_decimal("--qty", qty)
    check_decimal("--price", price)
    k = signing_key(cluster, key, "amend")

    async def go() -> tuple[CommandResult, str | None]:
        async with make_client(grape, cluster, node, timeout, key=k) as c:
            who = await account_of(c, client_id)
            r = await c.amend(who, order_id, qty=qty, price=price)
            return r, await remedy_for(c, r)

    r, remedy = run_client(go, "amend")
    report("amend", r, as_json, remedy)


def check_operator(key: SecretKey, what: str) -> None:
    """Operator commands are signed with the genesis operator's key: say so before sending
    anything when ``key`` is another one (exit 1)."""
    g = need_genesis(what).genesis
    if key.public_key != g.operator.key:
        fail(
            f"{what} is an operator command: --key must be the operator's key (the genesis "
            f"names operator {g.operator.client!r} with key {g.operator.key}); this key is "
            f"{key.public_key}"
        )


def operator_key(cluster: str | None, key: SecretKey | None, what: str) -> SecretKey:
    """:func:`signing_key`, and it must be the genesis operator's."""
    k = signing_key(cluster, key, what)
    check_operator(k, what)
    return k


_operator_key_option = key_option(
    help="The operator's key file (the genesis' operator) [default: $GRENEX_KEY]."
)


@click.command("add-market", cls=ClientCommand)
@click.option("--market", required=True, help="Market name, e.g. SOL-USD.")
@click.option("--tick", required=True, help="Price step (a decimal).")
@click.option("--lot", required=True, help="Quantity step (a decimal).")
@click.option("--node", default=None, help="Send it to this node [default: any node].")
@_operator_key_option
@network_options
@_json_option
def add_market_command(
    market: str,
    tick: str,
    lot: str,
    node: str | None,
    key: SecretKey | None,
    grape: str,
    cluster: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Open a market (an operator command, through the replicated log like any command)."""
    k = operator_key(cluster, key, "add-market")

    async def go() -> CommandResult:
        async with make_client(grape, cluster, node, timeout, key=k) as c:
            return await c.add_market(market, tick, lot)

    report("add-market", run_client(go, "add-market"), as_json)


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
    cluster: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Print the order book(s) of a node's replica."""

    async def go() -> BookSnapshot:
        async with make_client(grape, cluster, node, timeout) as c:
            return await c.book(market)

    snap = run_client(go)
    if market is not None and market not in snap.books:
        fail(f"unknown market {market!r} (see grenex markets)")
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
@click.option("--client", default=None, help="Only this account's trades (maker or taker).")
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
    client: str | None,
    limit: int,
    since: int | None,
    grape: str,
    cluster: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Print the most recent trades, oldest first."""

    async def go() -> tuple[list[tuple[Trade, int | None]], bool]:
        async with make_client(grape, cluster, node, timeout) as c:
            trades = await c.trades_timed(market, since=since, limit=limit, client=client)
            # no trades: is the market open at all? (as `book`, an unknown market is an error)
            known = bool(trades) or market is None or await market_info(c, market) is not None
            return trades, known

    trades, known = run_client(go)
    if not known:
        fail(f"unknown market {market!r} (see grenex markets)")
    if as_json:
        print_json({"trades": [{**msgspec.to_builtins(t), "time": at} for t, at in trades]})
        return
    out = console()
    if not trades:
        out.print("no trades" + (f" in {market}" if market else ""))
        return
    out.print(trades_table([t for t, _ in trades], times=[at for _, at in trades]))


def trades_table(
    trades: Sequence[Trade], title: str | None = None, times: Sequence[int | None] | None = None
) -> Table:
    """``times``: each trade's entry time (ms, SPEC §6), shown in UTC when given."""
    t = Table(title=title, header_style="bold", title_style="bold")
    if times is not None:
        t.add_column("time (UTC)")
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
    for i, tr in enumerate(trades):
        style = "green" if tr.taker_side == "buy" else "red"
        t.add_row(
            *([iso_ms(times[i])] if times is not None else []),
            str(tr.seq),
            tr.market,
            Text(tr.taker_side, style=style),
            Text(tr.price, style=style),
            tr.qty,
            _order(tr.taker_client, tr.taker),
            _order(tr.maker_client, tr.maker),
        )
    return t


@click.command("status", cls=ClientCommand)
@click.option("--node", default=None, help="One node [default: every node found].")
@click.option(
    "--max-lag",
    type=click.IntRange(min=0),
    default=MAX_LAG,
    show_default=True,
    help="A node applied more than this many entries behind the newest commit is lagging.",
)
@network_options
@_json_option
def status_command(
    node: str | None, max_lag: int, grape: str, cluster: str | None, timeout: float, as_json: bool
) -> None:
    """Role, term, leader, commit/applied and state hash of one node or every node.

    Without --node: every node announced, and every member (voter or learner) that does not
    answer, named; who leads (or "no leader"); lagging nodes; and whether the replicas agree
    (fresh state hashes at one log index). Exit status: 0 healthy; 1 degraded (no leader, a
    member not answering, a lagging node, replicas that differ; listed, and one line on
    stderr) or no answer at all; 2 bad usage. With --node: exit 1 when that node knows no
    leader.
    """
    if node is not None:

        async def one() -> NodeStatus:
            async with make_client(grape, cluster, node, timeout) as c:
                return await c.status()

        st = run_client(one)
        problems = single_problems(st)
        if as_json:
            print_json(st.raw)
        else:
            out = console()
            out.print(status_table([Row(st.node, "ok", _kind(st), st)], st.leader))
            for p in problems:
                out.print(Text(f"✗ {p}", style="bold red"))
        if problems:
            fail("; ".join(problems))
        return

    async def every() -> Health:
        async with make_client(grape, cluster, None, timeout) as c:
            return await gather_health(c, max_lag=max_lag, hash_wait=min(HASH_WAIT_S, timeout))

    health = run_client(every)
    if as_json:
        print_json(health.to_json())
    else:
        out = console()
        out.print(status_table(health.rows, health.leader))
        if health.leader is not None:
            out.print(Text(f"leader {health.leader}", style="green"))
        for p in health.problems:
            out.print(Text(f"✗ {p}", style="bold red"))
        if health.agree and health.healthy:
            out.print(Text(f"✓ {health.agreement}", style="green"))
        elif health.agree is not False:
            out.print(Text(f"· {health.agreement}", style="yellow" if health.agree is None else ""))
    if not health.healthy:
        n = len(health.problems)
        if as_json:
            fail(f"degraded: {'; '.join(health.problems)}")
        fail(f"degraded: {n} problem{'s' if n != 1 else ''} (listed above)")


def _kind(s: NodeStatus) -> str:
    return "voter" if s.node in s.voters else "learner" if s.node in s.learners else ""


# ------------------------------------------------------------------------------- the account


@click.command("markets", cls=ClientCommand)
@click.option("--node", default=None, help="Ask this node [default: any node].")
@network_options
@_json_option
def markets_command(
    node: str | None, grape: str, cluster: str | None, timeout: float, as_json: bool
) -> None:
    """The open markets with their tick (price step) and lot (quantity step)."""

    async def go() -> list[MarketInfo]:
        async with make_client(grape, cluster, node, timeout) as c:
            return await c.markets()

    found = run_client(go)
    if as_json:
        print_json({"markets": [{"market": m.market, "tick": m.tick, "lot": m.lot} for m in found]})
        return
    if not found:
        console().print("no markets open")
        return
    t = Table(header_style="bold")
    t.add_column("market")
    t.add_column("tick (price step)", justify="right")
    t.add_column("lot (quantity step)", justify="right")
    for m in found:
        t.add_row(m.market, m.tick, m.lot)
    console().print(t)


def _open_order_json(o: OpenOrder) -> dict[str, Any]:
    return {
        "id": o.id,
        "market": o.market,
        "side": o.side,
        "price": o.price,
        "qty": o.qty,
        "remaining": o.remaining,
    }


@click.command("orders", cls=ClientCommand)
@click.option("--client", "client_id", required=True, help="The account whose orders to list.")
@click.option("--market", default=None, help="One market [default: every market].")
@click.option("--node", default=None, help="Ask this node [default: any node].")
@network_options
@_json_option
def orders_command(
    client_id: str,
    market: str | None,
    node: str | None,
    grape: str,
    cluster: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """An account's resting orders, by market, side and price (best first).

    qty is what the order was placed with while the node still remembers its place
    (else -); remaining is exact."""

    async def go() -> list[OpenOrder]:
        async with make_client(grape, cluster, node, timeout) as c:
            return await c.orders(client_id, market)

    found = run_client(go)
    if as_json:
        print_json({"orders": [_open_order_json(o) for o in found]})
        return
    out = console()
    if not found:
        out.print(f"no resting orders of {client_id}" + (f" in {market}" if market else ""))
        return
    t = Table(header_style="bold")
    for col, just in (
        ("order", "left"),
        ("market", "left"),
        ("side", "left"),
        ("price", "right"),
        ("qty", "right"),
        ("remaining", "right"),
    ):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for o in found:
        style = "green" if o.side == "buy" else "red"
        t.add_row(
            _order(client_id, o.id),
            o.market,
            Text(o.side, style=style),
            Text(o.price, style=style),
            o.qty or "-",
            o.remaining,
        )
    out.print(t)


_ORDER_STATE_NOTES = {
    "resting": "rests on the book",
    "filled": "filled when placed (it never rested)",
    "cancelled": "its remainder was cancelled when placed (it never rested)",
    "rejected": "rejected when placed",
    "used": (
        "not resting: it was filled, cancelled or rejected, but the node no longer remembers "
        "which (it keeps no per-order history)"
    ),
    "unknown": "this client never used this id",
}


@click.command("order", cls=ClientCommand)
@click.option("--client", "client_id", default=None, help="The order's account.")
@click.option("--id", "order_id", required=True, help="The order's id (ID or CLIENT/ID).")
@click.option("--node", default=None, help="Ask this node [default: any node].")
@network_options
@_json_option
def order_command(
    client_id: str | None,
    order_id: str,
    node: str | None,
    grape: str,
    cluster: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """One order's state: resting, filled, cancelled, rejected, used or unknown."""
    client, oid = order_ref(client_id, order_id)
    if client is None:
        raise _OneLineUsageError("--client is needed (or give --id as CLIENT/ID)")

    async def go() -> OrderState:
        async with make_client(grape, cluster, node, timeout) as c:
            return await c.order(client, oid)

    st = run_client(go)
    if as_json:
        print_json(st.raw)
        return
    line = Text(f"order {_order(client, oid)} → ")
    line.append(st.state, style=_STATUS_STYLE.get(st.state, "bold"))
    facts = [
        f"{k} {v}"
        for k, v in (
            ("market", st.market),
            ("side", st.side),
            ("price", st.price),
            ("qty", st.qty),
            ("remaining", st.remaining),
            ("reason", st.reason),
        )
        if v is not None
    ]
    if facts:
        line.append(f" ({', '.join(facts)})")
    if st.seq is not None:
        line.append(f" · placed at seq {st.seq}", style="dim")
    for f in st.fills:  # from the node's recent-trades window
        when = f" at {iso_ms(f['time'])}" if isinstance(f.get("time"), int) else ""
        line.append(
            f"\n  fill {f.get('qty')} @ {f.get('price')} as {f.get('role')} · seq {f.get('seq')}"
            f"{when}",
            style="dim",
        )
    note = _ORDER_STATE_NOTES.get(st.state)
    if note:
        line.append(f"\n{note}", style="dim")
    console().print(line)


@click.command("cancel-all", cls=ClientCommand)
@click.option("--node", required=True, help="The node to send the cancels to.")
@_client_option
@click.option("--market", default=None, help="Only this market [default: every market].")
@key_option()
@network_options
@_json_option
def cancel_all_command(
    node: str,
    client_id: str | None,
    market: str | None,
    key: SecretKey | None,
    grape: str,
    cluster: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Cancel an account's resting orders (in one market, or all), signed with --key.

    It lists the orders (as `grenex orders` does), then sends the cancels as signed batches
    (one envelope, one log entry, per 256 orders). Each cancel has its own outcome; a batch
    is not all-or-nothing. Orders placed after the listing are NOT cancelled; an order that
    filled meanwhile is reported unknown_order. Exit 1 if any cancel failed."""
    k = signing_key(cluster, key, "cancel-all")

    async def go() -> tuple[str, list[OpenOrder], list[CommandResult | GrenexClientError]]:
        async with make_client(grape, cluster, node, timeout, key=k) as c:
            who = await account_of(c, client_id)
            listed = await c.orders(who, market)
            return who, listed, await c.cancel_many(who, [o.id for o in listed])

    who, listed, results = run_client(go, "cancel-all")
    cancelled = [r for r in results if isinstance(r, CommandResult) and r.status == "cancelled"]
    failed = [r for r in results if not (isinstance(r, CommandResult) and r.status == "cancelled")]
    batches = (len(listed) + BATCH_MAX - 1) // BATCH_MAX
    if as_json:
        print_json(
            {
                "client": who,
                "listed": [_open_order_json(o) for o in listed],
                "results": [
                    r.to_json() if isinstance(r, CommandResult) else {"error": r.message}
                    for r in results
                ],
                "cancelled": len(cancelled),
                "failed": len(failed),
                "batches": batches,
            }
        )
    else:
        out = console()
        where = f" in {market}" if market else ""
        out.print(
            f"cancel-all {who}{where}: {len(listed)} resting order"
            f"{'' if len(listed) == 1 else 's'} listed, {len(cancelled)} cancelled"
            + (f", {len(failed)} not cancelled" if failed else "")
            + f" ({batches} signed cancel batch{'' if batches == 1 else 'es'}; orders placed "
            "after the listing are not cancelled)"
        )
        for o, r in zip(listed, results, strict=True):
            if isinstance(r, CommandResult):
                note = r.status + (f" ({r.reason})" if r.reason else "")
                if r.status == "cancelled":
                    note += f", {_cancelled_qty(r)} was resting"
            else:
                note = f"error: {r.message}"
            out.print(f"  {_order(who, o.id)} {o.market} {o.side} {o.price}: {note}")
    if failed:
        sys.exit(1)


def _cancelled_qty(r: CommandResult) -> str:
    for e in r.events:
        if type(e) is Cancelled:
            return e.remaining
    return "?"
