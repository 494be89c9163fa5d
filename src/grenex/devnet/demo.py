"""``grenex demo``: a whole network on this machine, traded on, proven to agree.

``demo`` starts Grapes and a cluster (3 voters + 2 learners by default), runs simulated traders
that place, cancel and amend orders through their OWN nodes at the same time, shows a live view
(per node: role, applied index, lag, top of book; trades per second; progress), and then proves
the point: every replica's state hash and books, side by side, must be identical (exit 0) or
the demo fails (exit 1).  Everything it started is stopped, also on Ctrl-C or SIGTERM.

Each trader has its own account and its own random key (SPEC §8): it registers the account
first, then trades through its own :class:`~grenex.client.GrenexClient`, pinned to its node,
signing every command with its key.  A command whose answer is lost is sent again by the
client as the same signed envelope, and the node answers the repeat with the first outcome
(SPEC §6), so the demo keeps no retry loop of its own.  A command the client gives up on
(its deadline passed) is counted as failed.
``grenex up`` (:mod:`grenex.devnet.up`) starts the same network and keeps it running.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from grenex.client import CommandResult, GrenexClient, GrenexClientError
from grenex.codec.api import STATUS_WITH_HASH, statuses_agree
from grenex.devnet._cli import StoredKeyring, check_grape, run_until_signal
from grenex.devnet.cluster import ClusterError, LocalCluster
from grenex.grenache import GrenacheError

__all__ = ["demo_command"]

MIDS = {"BTC-USD": Decimal("64000"), "ETH-USD": Decimal("3200")}
LOTS = {
    "BTC-USD": (Decimal("0.0001"), [1, 5, 10, 25, 50, 100, 250]),
    "ETH-USD": (Decimal("0.001"), [10, 50, 100, 500, 1000, 2000]),
}


@dataclass
class Trader:
    """One simulated trader: its own client id and its own node."""

    name: str
    node: str
    rng: random.Random
    live: list[tuple[str, str]] = field(default_factory=list)  # (id, market)
    n: int = 0

    def next_command(self) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        r = rng.random()
        if r < 0.6 or len(self.live) < 3:
            self.n += 1
            oid = f"{self.name}-{self.n}"
            market = "BTC-USD" if rng.random() < 0.65 else "ETH-USD"
            side = rng.choice(("buy", "sell"))
            mid = MIDS[market]
            away = Decimal(1 + min(int(rng.expovariate(1 / 6)), 60)) * Decimal("0.5")
            if rng.random() < 0.3:
                away = -Decimal(rng.randrange(0, 4)) * Decimal("0.5")  # marketable
            price = mid - away if side == "buy" else mid + away
            lot, sizes = LOTS[market]
            cmd: dict[str, Any] = {
                "client": self.name,
                "id": oid,
                "market": market,
                "side": side,
                "price": str(price),
                "qty": str(lot * rng.choice(sizes)),
            }
            x = rng.random()
            if x < 0.08:
                cmd["tif"] = "IOC"
            elif x < 0.12:
                del cmd["price"]  # a market order
            else:
                self.live.append((oid, market))
                if len(self.live) > 200:
                    self.live.pop(0)
            return "place", cmd
        oid, market = self.live.pop(rng.randrange(len(self.live)))
        if r < 0.85:
            return "cancel", {"client": self.name, "id": oid}
        self.live.append((oid, market))
        lot, sizes = LOTS[market]
        if rng.random() < 0.5:
            return "amend", {"client": self.name, "id": oid, "qty": str(lot * rng.choice(sizes))}
        mid = MIDS[market]
        return "amend", {"client": self.name, "id": oid, "price": str(mid + rng.choice([-3, 3]))}


@dataclass
class Stats:
    sent: int = 0
    acked: int = 0
    rejected: int = 0
    failed: int = 0  # commands the client gave up on (no outcome within its deadline)
    trades: int = 0
    trade_times: list[float] = field(default_factory=list)

    def trades_per_s(self, window_s: float = 3.0) -> float:
        now = time.monotonic()
        recent = [t for t in self.trade_times[-5000:] if now - t <= window_s]
        return len(recent) / window_s


# one command: at most this long per attempt, and this long overall with the client's retries
ATTEMPT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 30.0


def _client_for(cluster: LocalCluster, trader: Trader) -> GrenexClient:
    """The trader's own client: its node, its account, its key (and nobody else's)."""
    return GrenexClient(
        cluster.grape_urls,
        cluster.cluster,
        trader.node,
        client_id=trader.name,
        key=cluster.keyring.key(trader.name),
        genesis=cluster.genesis,
        timeout=COMMAND_TIMEOUT_S,
        attempt_timeout=ATTEMPT_TIMEOUT_S,
    )


async def _register(client: GrenexClient, trader: Trader) -> None:
    """The trader claims its account for its key, through its own node."""
    r = await client.register(trader.name)
    if r.rejected and r.reason != "client_taken":
        raise ClusterError(f"{trader.name} could not register: {r.reason}")


async def _send(client: GrenexClient, action: str, args: dict[str, Any]) -> CommandResult:
    """One of the trader's commands through the client (which retries it with the same id)."""
    if action == "place":
        return await client.place(
            args["market"],
            args["side"],
            args["qty"],
            args.get("price"),
            client=args["client"],
            id=args["id"],
            tif=args.get("tif"),
        )
    if action == "cancel":
        return await client.cancel(args["client"], args["id"])
    assert action == "amend", action
    return await client.amend(
        args["client"], args["id"], qty=args.get("qty"), price=args.get("price")
    )


async def _trade(client: GrenexClient, trader: Trader, stats: Stats, count: int) -> None:
    """Send ``count`` commands, one at a time, through the trader's own client."""
    for _ in range(count):
        action, args = trader.next_command()
        stats.sent += 1
        try:
            result = await _send(client, action, args)
        except GrenexClientError:
            stats.failed += 1
            continue
        stats.acked += 1
        if result.rejected:
            stats.rejected += 1
        if result.trades:
            now = time.monotonic()
            stats.trades += len(result.trades)
            stats.trade_times.extend(now for _ in result.trades)
            del stats.trade_times[:-5000]


def _top(book: dict[str, Any]) -> str:
    bid = book["bids"][0]["price"] if book["bids"] else "-"
    ask = book["asks"][0]["price"] if book["asks"] else "-"
    return f"{bid}/{ask}"


@dataclass(frozen=True, slots=True)
class Sample:
    """One node at one refresh: its status and its BTC-USD top of book, asked together (the
    book reply says at which applied index it was read, so two books at different indexes
    explain themselves)."""

    status: dict[str, Any] | str  # the reply, or why there is none
    top: str = ""
    book_applied: int | None = None


async def _sample(cluster: LocalCluster, node: str) -> Sample:
    try:
        st, book = await asyncio.gather(
            # a fresh hash is asked for each time; a later status carries it, at its index
            cluster.request(node, "status", STATUS_WITH_HASH, timeout_ms=2_000),
            cluster.request(node, "book", {"market": "BTC-USD", "depth": 1}, timeout_ms=2_000),
        )
    except GrenacheError as e:
        return Sample(e.code)
    top = _top(book["books"][0]) if book["books"] else "-"
    return Sample(st, top, book.get("applied"))


async def _snapshot(cluster: LocalCluster) -> dict[str, Sample]:
    """Every running node's status and top of book, one pair per node, asked at once."""
    ids = [n for n, p in cluster.procs.items() if p.alive]
    samples = await asyncio.gather(*(_sample(cluster, n) for n in ids))
    return dict(zip(ids, samples, strict=True))


def _node_table(snap: dict[str, Sample], voters: list[str]) -> Table:
    t = Table(title="replicas", header_style="bold", expand=False)
    cols = ("node", "kind", "role", "term", "applied", "lag", "BTC-USD bid/ask @applied", "hash")
    for col in cols:
        t.add_column(col, justify="right" if col in ("term", "applied", "lag") else "left")
    commit = max(
        (x.status["commit"] for x in snap.values() if isinstance(x.status, dict)), default=0
    )
    for node, x in snap.items():
        kind = "voter" if node in voters else "learner"
        s = x.status
        if not isinstance(s, dict):
            t.add_row(node, kind, f"[red]unreachable ({s})[/]", "", "", "", "", "")
            continue
        role = s["role"]
        role_txt = f"[bold green]{role}[/]" if role == "leader" else role
        h = s.get("state_hash")
        t.add_row(
            node,
            kind,
            role_txt,
            str(s["term"]),
            str(s["applied"]),
            str(max(0, commit - s["applied"])),
            f"{x.top} @{x.book_applied}",
            f"{h[:8]} @{s.get('state_hash_index')}" if isinstance(h, str) else "-",
        )
    return t


def _book_digest(reply: dict[str, Any]) -> str:
    text = json.dumps(reply["books"], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


async def _verify(cluster: LocalCluster, console: Console) -> bool:
    """Every replica: same applied index, same state hash, same books.  Printed side by side."""
    with contextlib.suppress(ClusterError):  # if not, the table below shows how they differ
        await cluster.wait_converged(30)
    st = await cluster.statuses()
    books: dict[str, Any] = {}
    for node in st:
        try:
            books[node] = await cluster.request(node, "book", {}, timeout_ms=5_000)
        except GrenacheError as e:
            books[node] = e
    t = Table(title="every replica, side by side (best bid/ask per market)", header_style="bold")
    for col in ("node", "applied", "state", "books", "BTC-USD", "ETH-USD", "orders"):
        t.add_column(col, no_wrap=True)
    for node, s in st.items():
        b = books[node]
        if not isinstance(s, dict) or not isinstance(b, dict):
            t.add_row(node, "[red]unreachable[/]", "", "", "", "", "")
            continue
        by_market = {x["market"]: x for x in b["books"]}
        resting = sum(len(x["bids"]) + len(x["asks"]) for x in b["books"])
        t.add_row(
            node,
            str(s["applied"]),
            (s["state_hash"] or "-")[:8],
            _book_digest(b)[:8],
            _top(by_market["BTC-USD"]) if "BTC-USD" in by_market else "-",
            _top(by_market["ETH-USD"]) if "ETH-USD" in by_market else "-",
            str(resting),
        )
    console.print(t)
    good = [s for s in st.values() if isinstance(s, dict)]
    digests = {_book_digest(b) for b in books.values() if isinstance(b, dict)}
    same = (
        len(good) == len(st)
        and statuses_agree(good)
        and len(digests) == 1
        and len(books) == len(st)
    )
    if same:
        console.print(
            f"[bold green]✓ all {len(st)} replicas hold identical books and state "
            f"(applied index {good[0]['applied']}, state hash {good[0]['state_hash'][:16]}…)[/]"
        )
    else:
        console.print("[bold red]✗ the replicas differ[/]")
    return same


async def _demo(
    orders: int, nodes: int, voters: int, traders: int, grapes: int, duration: float
) -> bool:
    console = Console()
    with tempfile.TemporaryDirectory(prefix="grenex-demo-") as tmp:
        return await _demo_in(Path(tmp), console, orders, nodes, voters, traders, grapes, duration)


async def _demo_in(
    base: Path,
    console: Console,
    orders: int,
    nodes: int,
    voters: int,
    traders: int,
    grapes: int,
    duration: float,
) -> bool:
    cluster = LocalCluster(
        nodes=nodes,
        voters=voters,
        grapes=grapes,
        base_dir=base,
        secret=secrets.token_hex(16),
        keyring=StoredKeyring(base / "keys"),  # random keys, one file each (mode 0600)
    )
    console.print(
        f"[bold]grenex demo[/]: {grapes} Grapes, {nodes} nodes ({voters} voters, "
        f"{nodes - voters} learners), {traders} traders, {orders} commands"
    )
    with console.status("starting Grapes and nodes on 127.0.0.1 …"):
        await cluster.start()
    try:
        leader = await cluster.wait_leader()
        console.print(f"cluster up; leader {leader}; markets BTC-USD and ETH-USD open")
        node_ids = cluster.node_ids
        crowd = [
            Trader(f"trader{i + 1}", node_ids[i % len(node_ids)], random.Random(1000 + i))
            for i in range(traders)
        ]
        shares = [orders // traders + (1 if i < orders % traders else 0) for i in range(traders)]
        stats = Stats()
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(_client_for(cluster, t)) for t in crowd]
            await asyncio.gather(*(_register(c, t) for c, t in zip(clients, crowd, strict=True)))
            console.print(
                f"{len(crowd)} traders registered, each with its own account and key: "
                + ", ".join(f"{t.name}→{t.node}" for t in crowd)
            )
            tasks = [
                asyncio.create_task(_trade(c, t, stats, n))
                for c, t, n in zip(clients, crowd, shares, strict=True)
            ]
            try:
                await _show(cluster, console, crowd, tasks, stats, orders, duration)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        console.print(
            f"{stats.acked} commands acknowledged, {stats.trades} trades, "
            f"{stats.rejected} rejected by the engine, {stats.failed} failed"
        )
        return await _verify(cluster, console)
    finally:
        with console.status("stopping every process the demo started …"):
            await cluster.stop()


async def _show(
    cluster: LocalCluster,
    console: Console,
    crowd: list[Trader],
    tasks: list[asyncio.Task[None]],
    stats: Stats,
    orders: int,
    duration: float,
) -> None:
    """The live view, until every trader is done or ``duration`` has passed."""
    voter_ids = cluster.voter_ids
    progress = Progress(
        TextColumn("commands"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    bar = progress.add_task("commands", total=orders)
    deadline = time.monotonic() + duration
    snap = await _snapshot(cluster)
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        while not all(t.done() for t in tasks) and time.monotonic() < deadline:
            progress.update(bar, completed=stats.acked)
            info = (
                f"trades {stats.trades}  ({stats.trades_per_s():.0f}/s)   "
                f"rejected {stats.rejected}   failed {stats.failed}   "
                f"traders: " + ", ".join(f"{t.name}→{t.node}" for t in crowd)
            )
            live.update(Panel(Group(_node_table(snap, voter_ids), info, progress), title="grenex"))
            await asyncio.sleep(0.5)
            snap = await _snapshot(cluster)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        progress.update(bar, completed=stats.acked)
        with contextlib.suppress(ClusterError):  # the last frame: fresh hashes, if they come
            await cluster.wait_converged(5)
        snap = await _snapshot(cluster)
        live.update(Panel(Group(_node_table(snap, voter_ids), progress), title="grenex"))


@click.command("demo")
@click.option("--orders", type=int, default=2_000, show_default=True, help="Commands to send.")
@click.option("--nodes", type=int, default=5, show_default=True)
@click.option("--voters", type=int, default=3, show_default=True)
@click.option("--traders", type=int, default=4, show_default=True)
@click.option("--grapes", type=int, default=2, show_default=True)
@click.option("--duration", type=float, default=120.0, show_default=True, help="At most (s).")
def demo_command(
    orders: int, nodes: int, voters: int, traders: int, grapes: int, duration: float
) -> None:
    """Start a local network, trade on it from several nodes at once, prove the replicas agree."""
    check_grape()
    if not (1 <= voters <= nodes and traders >= 1 and orders >= 0 and grapes >= 1):
        raise click.UsageError("need 1 <= voters <= nodes, traders >= 1, grapes >= 1")
    try:
        same = run_until_signal(_demo(orders, nodes, voters, traders, grapes, duration))
    except asyncio.CancelledError:
        click.echo("interrupted; everything the demo started is stopped", err=True)
        raise SystemExit(130) from None
    except ClusterError as e:
        raise click.ClickException(f"the network did not come up: {e}") from None
    raise SystemExit(0 if same else 1)
