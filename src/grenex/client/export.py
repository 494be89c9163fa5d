"""``grenex export``: a node's committed log as JSON lines, for ``grenex replay`` (SPEC §5).

The format (version 1)::

    {"grenex_export": 1, "cluster": NAME, "cluster_id": HEX, "node": ID, "genesis": TEXT,
     "first": 1}
    {"seq": 1, "time": 1765000000000, "cmd": "{\\"type\\":\\"add_market\\",...}"}
    ...

Line 1 is the header; then one line per *command* entry of the log, in log order: ``seq`` is
the entry's log index (entries that carry no command, such as the leader's no-op or a
membership change, are not written, so indexes may skip), ``time`` the leader's stamp
(SPEC §6; null for an entry written before stamps existed) and ``cmd`` the signed envelope
(SPEC §8) exactly as it was logged.  ``genesis`` is the cluster's genesis file, its exact text
(``--genesis``), from which ``grenex replay`` recomputes the cluster id (``cluster_id``) and
checks every signature again; the node's ``status`` must report that cluster id, or nothing
is exported.  ``first`` is the first log index the export covers, always 1: an export is the
whole log.

Bounded memory: the log is read with the node's ``log`` action a page at a time (at most 1,000
entries or 4 MiB) and every page is written before the next is asked for.  The export ends at
the node's applied index as of its first page, so a busy cluster does not keep it running.

A node compacts its log below its snapshots (every ``--snapshot-interval`` entries, keeping
``--compaction-retain`` below it); once entry 1 is gone the node can no longer export its whole
log and the export fails with ``ERR_GRENEX_COMPACTED`` and the first index it still holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any, Final

import click
import msgspec

from grenex.client.client import Compacted, GrenexClient, GrenexClientError
from grenex.client.commands import (
    ClientCommand,
    fail,
    make_client,
    need_genesis,
    network_options,
    run_client,
)

__all__ = [
    "EXPORT_VERSION",
    "PAGE_ENTRIES",
    "compacted_message",
    "export_command",
    "export_header",
    "export_lines",
    "export_pages",
]

EXPORT_VERSION: Final = 1  # as grenex.replay reads (its EXPORT_VERSION)
PAGE_ENTRIES: Final = 1_000  # entries asked per ``log`` request (the node's maximum)

_encode = msgspec.json.Encoder().encode


def export_header(cluster: str, node: str, genesis: bytes) -> dict[str, Any]:
    """The first line of an export: ``genesis`` is the genesis file's exact bytes (UTF-8)."""
    return {
        "grenex_export": EXPORT_VERSION,
        "cluster": cluster,
        "cluster_id": hashlib.sha256(genesis).hexdigest(),
        "node": node,
        "genesis": genesis.decode("utf-8"),
        "first": 1,
    }


def _genesis_bytes(genesis: bytes | None) -> bytes:
    if genesis is not None:
        return genesis
    path = os.environ.get("GRENEX_GENESIS")
    if not path:
        raise ValueError(
            "an export carries the cluster's genesis file: pass genesis=<its bytes> or set "
            "GRENEX_GENESIS"
        )
    with open(path, "rb") as f:
        return f.read()


async def export_pages(
    client: GrenexClient,
    genesis: bytes | None = None,
    *,
    page: int = PAGE_ENTRIES,
    timeout: float | None = None,
) -> AsyncIterator[tuple[bytes, int, int]]:
    """An export a page at a time: ``(lines, command entries in them, last index)``; the
    header comes first, alone (0 entries).  See :func:`export_lines`."""
    if client.node is None:
        raise ValueError("an export is one node's log: construct GrenexClient with node=...")
    genesis = _genesis_bytes(genesis)
    want = hashlib.sha256(genesis).hexdigest()
    have = (await client.status(timeout=timeout)).raw.get("cluster_id")
    if have != want:
        raise GrenexClientError(
            f"node {client.node} reports cluster id {str(have)[:64]}, but the genesis given "
            f"is of cluster id {want}: export with that node's own genesis"
        )
    since = 0
    target: int | None = None
    while True:
        reply = await client.log(since, page, timeout=timeout)
        if target is None:  # the first page came: the node can export (else nothing written)
            target = reply.applied
            header = export_header(client.cluster, client.node, genesis)
            yield _encode(header) + b"\n", 0, 0
        if reply.entries:
            lines = b"".join(_encode(e) + b"\n" for e in reply.entries)
            yield lines, len(reply.entries), reply.entries[-1].seq
        if reply.through >= target:
            return
        if reply.through <= since:  # a node must move forward until its applied index
            raise GrenexClientError(
                f"node {client.node} sent no log after index {since} (applied {reply.applied})"
            )
        since = reply.through


async def export_lines(
    client: GrenexClient,
    genesis: bytes | None = None,
    *,
    page: int = PAGE_ENTRIES,
    timeout: float | None = None,
) -> AsyncIterator[bytes]:
    """The lines of an export of ``client``'s chosen node, each ending in ``\\n``: the header
    (carrying ``genesis``, the genesis file's exact bytes; default: the file
    ``$GRENEX_GENESIS`` names),
    then the committed log up to the node's applied index when the first page came, read a
    page at a time as the lines are consumed (bounded memory).

    Raises :class:`~grenex.client.client.Compacted` when the node no longer holds the whole
    log, and ``ValueError`` when the client has no chosen node (an export is one node's log).
    """
    async for lines, _n, _last in export_pages(client, genesis, page=page, timeout=timeout):
        for line in lines.splitlines(keepends=True):
            yield line


def compacted_message(node: str, e: Compacted) -> str:
    first = f"index {e.first}" if e.first is not None else "its snapshot"
    return (
        f"node {node} compacted its log below {first}: the entries before it are only in a "
        "snapshot, so it cannot export the whole log; export from a node that still holds it "
        "(one that has not taken a snapshot yet), or run the nodes with a larger "
        "--snapshot-interval (see docs/client.md, 'export')"
    )


async def _export(
    grape: str, cluster: str | None, node: str | None, timeout: float, out: IO[bytes]
) -> tuple[str, int, int]:
    """Write the export to ``out``; (node, command entries, last index written)."""
    genesis = need_genesis("export").data
    if node is None:
        async with make_client(grape, cluster, None, timeout) as anyone:
            node = (await anyone.status()).node
    entries = last = 0
    async with make_client(grape, cluster, node, timeout) as c:
        try:
            async for lines, n, at in export_pages(c, genesis, timeout=timeout):
                out.write(lines)
                out.flush()
                entries += n
                last = at or last
        except Compacted as e:
            raise GrenexClientError(compacted_message(node, e), code=e.code) from None
    return node, entries, last


@click.command("export", cls=ClientCommand)
@click.option("--node", default=None, help="Export this node's log [default: any node's].")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to FILE (complete or not at all) [default: standard output].",
)
@network_options
def export_command(
    node: str | None, out_path: Path | None, grape: str, cluster: str | None, timeout: float
) -> None:
    """Export a node's committed log as JSON lines, for `grenex replay`.

    Line 1 is a header ({"grenex_export": 1, "cluster", "cluster_id", "node", "genesis": the
    genesis file's text, "first": 1}), then one line per command entry: {"seq": log index,
    "time": ms since the epoch, "cmd": the signed envelope as logged}.  Needs --genesis (or
    $GRENEX_GENESIS): the node must report that genesis' cluster id.  Streamed a page at a
    time, up to the node's applied index when the export starts.  `grenex replay FILE`
    reproduces the node's events and books.

    Fails (exit 1) when the node compacted its log below a snapshot: it no longer holds
    entry 1 (see --snapshot-interval of `grenex node`).
    """
    need_genesis("export")
    if out_path is None:
        try:
            run_client(lambda: _export(grape, cluster, node, timeout, sys.stdout.buffer))
        except BrokenPipeError:  # e.g. `grenex export | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    part = out_path.with_name(out_path.name + ".part")
    try:
        with part.open("wb") as f:
            who, entries, last = run_client(lambda: _export(grape, cluster, node, timeout, f))
        os.replace(part, out_path)
    except OSError as e:
        fail(f"cannot write {out_path}: {e.strerror or e}")
    finally:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
    upto = f" (log indexes 1..{last})" if entries else ""
    click.echo(f"exported {entries} entries{upto} from node {who} to {out_path}", err=True)
