"""``grenex replay``: commands as JSON lines through one engine, events out as JSON lines.

Streaming: input is read and output written in large buffers, so memory grows with the book,
not with the input.  Lines are split on ``\\n`` only; a line holding only spaces, tabs or
``\\r`` is skipped but counted, so ``seq`` is always the input line number (SPEC §5).
A gzip file is recognised by its magic bytes and read as its decompressed text.
"""

from __future__ import annotations

import gzip
import io
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, cast

import click

from grenex.codec import decode_command, encode_json
from grenex.engine import Engine, Event

__all__ = ["open_input", "replay_command", "replay_lines", "replay_stream"]

_BLANK = b" \t\r\n"
_FLUSH_BYTES = 1 << 16


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


def replay_lines(engine: Engine, lines: Iterable[bytes]) -> Iterator[tuple[int, list[Event]]]:
    """``(seq, events)`` for every non-blank line; ``seq`` counts every line from 1."""
    apply = engine.apply
    seq = 0
    for line in lines:
        seq += 1
        if not line.strip(_BLANK):
            continue
        yield seq, apply(decode_command(line), seq)


def replay_stream(engine: Engine, src: IO[bytes], out: IO[bytes], book: bool = False) -> int:
    """Run every line of ``src`` through ``engine``, writing events as JSON lines to ``out``.

    Returns the number of lines read.
    """
    from msgspec.json import Encoder

    encode_into = Encoder().encode_into
    buf = bytearray()
    write = out.write
    apply = engine.apply
    seq = 0
    for line in src:
        seq += 1
        if not line.strip(_BLANK):
            continue
        for ev in apply(decode_command(line), seq):
            encode_into(ev, buf, -1)
            buf += b"\n"
        if len(buf) >= _FLUSH_BYTES:
            write(buf)
            buf.clear()
    if book:
        for snap in engine.books():
            buf += encode_json(snap)
            buf += b"\n"
    write(buf)
    out.flush()
    return seq


@click.command("replay")
@click.argument("file", default="-", type=click.Path(allow_dash=True, dir_okay=False))
@click.option("--book", is_flag=True, help="Print the book snapshot after the last command.")
def replay_command(file: str, book: bool) -> None:
    """Run commands (JSON lines) through one engine and print the events as JSON lines.

    FILE is a path (plain or gzip) or - for standard input.  No network is involved.
    """
    try:
        src = open_input(file)
    except OSError as e:
        raise click.ClickException(f"cannot read {file}: {e.strerror or e}") from None
    try:
        replay_stream(Engine(), src, sys.stdout.buffer, book=book)
    except BrokenPipeError:  # e.g. `grenex replay big.jsonl | head`
        sys.stderr.close()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise click.ClickException(f"error reading {file}: {e}") from None
    finally:
        src.close()


def sample_path() -> Path:
    """The sample order stream shipped with grenex."""
    return Path(__file__).parent / "data" / "sample.jsonl"
