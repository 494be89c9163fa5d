"""``grenex replay``: commands as JSON lines through one engine, events out as JSON lines.

Streaming: input is read and output written in large buffers, so memory grows with the book,
not with the input.  Lines are split on ``\\n`` only; a line holding only spaces, tabs or
``\\r`` is skipped but counted, so ``seq`` is always the input line number (SPEC §5).
A gzip file is recognised by its magic bytes and read as its decompressed text.

An export (what ``grenex export`` writes: its first line is a header object with the key
``"grenex_export"``) is replayed as the node applied it: the header carries the cluster's
genesis file (its exact text), from which the replay recomputes the cluster id; each entry's
envelope then goes through a fresh replicated state built from that genesis — SPEC §8
signatures, accounts, nonce windows and all, so an envelope that reached the log twice is
absorbed as it was on the node, emitting nothing — with ``seq`` = the entry's log index, and
every event is printed with the entry's ``time``.
"""

from __future__ import annotations

import gzip
import io
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Final, cast

import click
import msgspec

from grenex.codec import decode_command, encode_json
from grenex.codec.genesis import Genesis, GenesisError, parse_genesis
from grenex.engine import Engine, Event
from grenex.replica.state import ReplicaState

__all__ = [
    "EXPORT_KEY",
    "EXPORT_VERSION",
    "ExportError",
    "ExportLine",
    "export_entries",
    "export_header",
    "genesis_of",
    "open_input",
    "replay_command",
    "replay_export",
    "replay_lines",
    "replay_stream",
]

_BLANK = b" \t\r\n"
_CHUNK_BYTES = 1 << 20
_LINE_MAX = 64 << 20  # a longer line is answered invalid_command without being held

EXPORT_KEY: Final = "grenex_export"  # the header line of an export has it
EXPORT_VERSION: Final = 1
_HEADER_MAX = 64 << 10  # the first line is read up to this long to tell an export apart
_FLUSH_BYTES = 64 << 10  # replayed export events are written in pieces of about this size


class ExportLine(msgspec.Struct, frozen=True):
    """One entry of an export: a command entry of the log, ``cmd`` the text as logged."""

    seq: int
    cmd: str
    time: int | None = None


class ExportError(ValueError):
    """An export that cannot be replayed (a bad header or line); the message says where."""


_export_line: Final = msgspec.json.Decoder(ExportLine)


def open_input(path: str) -> IO[bytes]:
    """A binary stream of the commands in ``path`` (``-`` is stdin), gunzipped if needed."""
    if path == "-":
        buffered = sys.stdin.buffer
        if not isinstance(buffered, io.BufferedReader):  # e.g. replaced by a test harness
            buffered = io.BufferedReader(buffered)
    else:
        buffered = open(path, "rb")  # noqa: SIM115 - closed by the caller
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        return cast(IO[bytes], gzip.GzipFile(fileobj=buffered))
    return buffered


def export_header(line: bytes) -> dict[str, Any] | None:
    """The export header if ``line`` (the first line of an input) is one, else None."""
    if not line.lstrip(_BLANK).startswith(b"{"):
        return None
    try:
        obj = msgspec.json.decode(line)
    except msgspec.DecodeError:
        return None
    if isinstance(obj, dict) and EXPORT_KEY in obj:
        return obj
    return None


def check_header(header: dict[str, Any]) -> None:
    """Raise :class:`ExportError` unless this replay can run an export with ``header``."""
    version = header.get(EXPORT_KEY)
    if version != EXPORT_VERSION:
        raise ExportError(
            f"export format {version!r} is not supported (this grenex reads {EXPORT_VERSION})"
        )
    genesis_of(header)
    first = header.get("first", 1)
    if first != 1:
        raise ExportError(
            f"the export starts at log index {first!r}: a replay needs the whole log from 1"
        )


def genesis_of(header: dict[str, Any]) -> Genesis:
    """The genesis an export's header carries (the file's exact text); the cluster id is
    recomputed from it and must match the header's ``cluster_id`` when that is given."""
    text = header.get("genesis")
    if type(text) is not str:
        raise ExportError("the export's header has no genesis (an export from before SPEC §8?)")
    try:
        g = parse_genesis(text.encode("utf-8"))
    except (GenesisError, UnicodeEncodeError) as e:
        raise ExportError(f"the export's genesis is not valid: {e}") from None
    want = header.get("cluster_id")
    if want is not None and want != g.cluster_id:
        raise ExportError(
            f"the export says cluster id {str(want)[:64]!r}, its genesis gives {g.cluster_id}"
        )
    return g


def export_entries(
    state: ReplicaState, src: IO[bytes]
) -> Iterator[tuple[int, int | None, list[Event]]]:
    """``(seq, time, events)`` for every entry of an export (after its header line) applied
    to ``state``; an envelope the account's nonce window absorbs (a duplicate) yields no
    events."""
    apply = state.apply_command
    decode = _export_line.decode
    lineno = 1  # the header
    last = 0
    for lines in _chunks(src):
        for line in lines:
            lineno += 1
            if not line.strip(_BLANK):
                continue
            try:
                e = decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError) as err:
                raise ExportError(f"line {lineno}: not an export entry ({err})") from None
            if e.seq <= last:
                raise ExportError(
                    f"line {lineno}: log index {e.seq} after {last} (an export is in log order)"
                )
            last = e.seq
            o = apply(e.seq, 0, e.cmd.encode(), e.time)
            yield e.seq, e.time, [] if o.duplicate else o.events


def replay_export(state: ReplicaState, src: IO[bytes], out: IO[bytes], book: bool = False) -> int:
    """Replay an export (``src`` positioned after its header line), writing each event as a
    JSON line with the entry's ``time`` (null when the entry had none).  Returns the number of
    entries."""
    from msgspec.json import Encoder

    encode_into = Encoder().encode_into
    buf = bytearray()
    write = out.write
    n = 0
    for _seq, time_ms, events in export_entries(state, src):
        n += 1
        if not events:
            continue
        tail = b',"time":' + (b"null" if time_ms is None else str(time_ms).encode()) + b"}\n"
        for ev in events:
            encode_into(ev, buf, -1)
            del buf[-1]  # the closing brace: the time goes in before it
            buf += tail
        if len(buf) >= _FLUSH_BYTES:
            write(buf)
            buf.clear()
            out.flush()
    if book:
        for snap in state.engine.books():
            buf += encode_json(snap)
            buf += b"\n"
    write(buf)
    out.flush()
    return n


def replay_lines(engine: Engine, lines: Iterable[bytes]) -> Iterator[tuple[int, list[Event]]]:
    """``(seq, events)`` for every non-blank line; ``seq`` counts every line from 1."""
    apply = engine.apply
    seq = 0
    for line in lines:
        seq += 1
        if not line.strip(_BLANK):
            continue
        yield seq, apply(decode_command(line), seq)


def _chunks(src: IO[bytes], first: bytes = b"") -> Iterator[list[bytes]]:
    """The lines of ``src`` (split on ``\\n`` only), a chunk of lines at a time.

    Reading ~1 MiB at a time and splitting in C is about twice as fast as iterating lines,
    and ``read1`` returns what is available, so a pipe is processed as it arrives.  A line
    longer than ``_LINE_MAX`` is not held: it becomes one ``b"\\x00"`` line (not JSON, so
    ``invalid_command``) and the rest of it is skipped.
    """
    read = getattr(src, "read1", src.read)

    def reads() -> Iterator[bytes]:
        if first:  # already read from ``src`` (its first line, to tell an export apart)
            yield first
        while chunk := read(_CHUNK_BYTES):
            yield chunk

    rest = b""
    skipping = False  # inside an oversized line that was already counted
    for chunk in reads():
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        if skipping:
            if not parts:
                rest = b""  # still inside the oversized line
                continue
            parts.pop(0)  # its tail
            skipping = False
        if len(rest) > _LINE_MAX:
            parts.append(b"\x00")  # the oversized line, counted now: invalid_command
            rest = b""
            skipping = True
        if parts:
            yield parts
    if rest:
        yield [rest]


def replay_stream(
    engine: Engine, src: IO[bytes], out: IO[bytes], book: bool = False, first: bytes = b""
) -> int:
    """Run every line of ``src`` through ``engine``, writing events as JSON lines to ``out``.

    Output is flushed after every chunk of input, so piped input is answered as it arrives.
    ``first``: bytes already read from ``src`` (they come first).  Returns the number of lines
    read.
    """
    from msgspec.json import Encoder

    encode_into = Encoder().encode_into
    buf = bytearray()
    write = out.write
    apply = engine.apply
    seq = 0
    for lines in _chunks(src, first):
        for line in lines:
            seq += 1
            if not line.strip(_BLANK):
                continue
            for ev in apply(decode_command(line), seq):
                encode_into(ev, buf, -1)
                buf += b"\n"
        if buf:
            write(buf)
            buf.clear()
            out.flush()
    if book:
        for snap in engine.books():
            buf += encode_json(snap)
            buf += b"\n"
    write(buf)
    out.flush()
    return seq


def summarize(
    engine: Engine,
    entries: Iterable[tuple[int, list[Event]]],
    source: str,
    what: str = "lines",
    last_trades: int = 10,
) -> None:
    """Run ``entries`` (``(seq, events)`` as ``engine`` applies them) and print a readable
    summary: counts, last trades, top of every book."""
    from collections import Counter, deque

    from rich.console import Console
    from rich.table import Table

    from grenex.engine import Rejected, Trade

    kinds: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    trades: deque[Trade] = deque(maxlen=last_trades)
    lines = 0
    for seq, events in entries:
        lines = seq
        for ev in events:
            kinds[str(ev.__struct_config__.tag)] += 1
            if type(ev) is Trade:
                trades.append(ev)
            elif type(ev) is Rejected:
                reasons[ev.reason] += 1

    console = Console()
    console.print(f"[bold]grenex replay[/] of {source}: {lines} {what}, one engine, no network\n")
    counts = Table(title="Events", show_header=True, header_style="bold")
    counts.add_column("event")
    counts.add_column("count", justify="right")
    for kind, n in sorted(kinds.items()):
        counts.add_row(kind, str(n))
    console.print(counts)
    if reasons:
        console.print(
            "rejections: " + ", ".join(f"{r} {n}" for r, n in sorted(reasons.items())) + "\n"
        )
    if trades:
        t = Table(title=f"Last {len(trades)} trades", header_style="bold")
        for col in ("seq", "market", "price", "qty", "maker", "taker", "taker side"):
            t.add_column(col, justify="right" if col in ("seq", "price", "qty") else "left")
        for tr in trades:
            t.add_row(
                str(tr.seq),
                tr.market,
                tr.price,
                tr.qty,
                f"{tr.maker_client}/{tr.maker}",
                f"{tr.taker_client}/{tr.taker}",
                tr.taker_side,
            )
        console.print(t)
    for book in engine.books():
        console.print(_book_table(book))
    console.print(f"state hash [bold]{engine.state_hash()}[/] ({engine.resting_orders} resting)")


def _book_table(book: dict[str, Any], depth: int = 5) -> Any:
    """Top ``depth`` price levels of each side, aggregated."""
    from decimal import Decimal

    from rich.table import Table

    def levels(orders: list[dict[str, str]]) -> list[tuple[str, Decimal, int]]:
        out: list[tuple[str, Decimal, int]] = []
        for o in orders:
            if out and out[-1][0] == o["price"]:
                price, qty, n = out[-1]
                out[-1] = (price, qty + Decimal(o["qty"]), n + 1)
            elif len(out) < depth:
                out.append((o["price"], Decimal(o["qty"]), 1))
            else:
                break
        return out

    bids, asks = levels(book["bids"]), levels(book["asks"])
    t = Table(title=f"{book['market']} book (top {depth})", header_style="bold")
    for col in ("orders", "bid qty", "bid", "ask", "ask qty", "orders "):
        t.add_column(col, justify="right")
    for i in range(max(len(bids), len(asks), 1)):
        b = bids[i] if i < len(bids) else None
        a = asks[i] if i < len(asks) else None
        t.add_row(
            str(b[2]) if b else "",
            str(b[1]) if b else "",
            f"[green]{b[0]}[/]" if b else "",
            f"[red]{a[0]}[/]" if a else "",
            str(a[1]) if a else "",
            str(a[2]) if a else "",
        )
    return t


@click.command("replay")
@click.argument("file", default="-", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--book", is_flag=True, help="Print the book snapshot after the last command.")
@click.option("--summary", is_flag=True, help="Print a readable summary instead of JSON lines.")
def replay_command(file: str, book: bool, summary: bool) -> None:
    """Run commands (JSON lines) through one engine and print the events as JSON lines.

    FILE is a path (plain or gzip) or - for standard input.  No network is involved.
    Given what `grenex export` wrote (its first line says so), each entry runs at its log
    index, as the node applied it, and every event carries the entry's time.
    """
    try:
        src = open_input(file)
    except OSError as e:
        raise click.ClickException(f"cannot read {file}: {e.strerror or e}") from None
    source = "standard input" if file == "-" else file
    try:
        first = src.readline(_HEADER_MAX)
        header = export_header(first)
        if header is not None:
            check_header(header)
            state = ReplicaState(genesis_of(header))
            if summary:
                entries = ((s, ev) for s, _t, ev in export_entries(state, src))
                summarize(state.engine, entries, source, "log entries")
            else:
                replay_export(state, src, sys.stdout.buffer, book=book)
        elif summary:
            engine = Engine()
            summarize(engine, replay_lines(engine, _prefixed(first, src)), source)
        else:
            replay_stream(Engine(), src, sys.stdout.buffer, book=book, first=first)
    except BrokenPipeError:  # e.g. `grenex replay big.jsonl | head`
        sys.stderr.close()
    except ExportError as e:
        raise click.ClickException(f"{source}: {e}") from None
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise click.ClickException(f"error reading {file}: {e}") from None
    finally:
        src.close()


def _prefixed(first: bytes, src: IO[bytes]) -> Iterator[bytes]:
    """The lines of ``src`` with ``first`` (its first line, already read) in front."""
    for lines in _chunks(src, first):
        yield from lines


def sample_path() -> Path:
    """The sample order stream shipped with grenex."""
    return Path(__file__).parent / "data" / "sample.jsonl"
