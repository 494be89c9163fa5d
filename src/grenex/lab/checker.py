"""The lab's checker: the history of every client against the committed log.

The log, as the nodes report it
-------------------------------
Every live node is asked for the events of every command it applied (the ``events`` API
action, paged): each event carries ``seq``, the log index of its command, so the events group
into log entries (indexes with no events are no-op, membership or duplicate entries: the engine
never ran them).  Where two nodes' windows overlap they must agree exactly; the union, which
must start at index 1, is the committed log used below.

The demands (each failure is a violation with a category)
---------------------------------------------------------
* ``diverged`` — every live replica at the same applied index and state hash (``status``),
  within a bounded time after everything healed (the caller waits; see runner.py), and two
  nodes never report different events at one index;
* ``lost`` — every acknowledged command is in the log at the ``seq`` it was answered with;
* ``mismatch`` — ... with exactly the events it was answered with;
* ``reexecuted`` — no command (acknowledged or not) executed twice: a ``(client, id)`` place,
  a ``cancel``/``amend`` ``(client, req)`` appears at most once, and a ``duplicate_id``
  rejection of one of our (never reused) ids means a retried place ran again;
* ``phantom`` — every entry is a command some client sent;
* ``failed_in_log`` — a command refused with ``ERR_GRENEX_BAD_REQUEST`` never reached the log;
* ``replay`` — the reconstructed command log (each command at its index, blank lines
  elsewhere), run through a fresh engine by ``grenex replay --book`` **as a separate process**,
  gives exactly the events the nodes report;
* ``books`` — every live node's books equal that replay's final books;
* ``coverage`` — the nodes could not show the log from index 1 (reported, not guessed);
* ``export`` — where the nodes have the ``log`` action (``grenex export``): every node exports
  the same commands at the same indexes, each is the command the history put there, and
  ``grenex replay`` of the export gives exactly the events the nodes applied, and their books.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from grenex.engine import Event
from grenex.grenache import GrenacheError, Link, PeerRPCClient, RemoteError

__all__ = ["CheckResult", "Observer", "Op", "check", "load_history"]

Json = Any


def norm_events(raw: Json) -> list[dict[str, Json]]:
    """Events in one canonical form (decoded as the engine's Event types, then plain JSON)."""
    try:
        out = msgspec.to_builtins(msgspec.convert(raw, list[Event]))
    except (msgspec.ValidationError, TypeError):
        return list(raw) if isinstance(raw, list) else []
    assert isinstance(out, list)
    return out


@dataclass
class Op:
    client: str
    node: str
    kind: str
    args: dict[str, Json]
    status: str = "unknown"
    seq: int | None = None
    events: list[dict[str, Json]] | None = None
    error: str = ""
    t0: float = 0.0
    t1: float = 0.0

    @property
    def key(self) -> tuple[str, str, str]:
        """What identifies the command in the log: a place by its id, cancel/amend by req."""
        if self.kind == "place":
            return ("place", str(self.args.get("client")), str(self.args.get("id")))
        return (self.kind, str(self.args.get("client")), str(self.args.get("id")))

    @property
    def command(self) -> dict[str, Json]:
        return {"type": self.kind, **self.args}


def load_history(paths: Iterable[Path]) -> list[Op]:
    ops: list[Op] = []
    for path in paths:
        if not path.exists():
            continue
        by_id: dict[int, Op] = {}
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line torn by a kill
            if rec.get("rec") == "invoke":
                op = Op(rec["args"]["client"], rec["node"], rec["kind"], rec["args"], t0=rec["t"])
                by_id[rec["op"]] = op
                ops.append(op)
            elif rec.get("rec") == "done" and rec.get("op") in by_id:
                op = by_id[rec["op"]]
                op.status = rec["status"]
                op.error = rec.get("error", "")
                op.t1 = rec["t"]
                if op.status == "ok":
                    op.seq = int(rec["seq"])
                    op.events = norm_events(rec["events"])
    return ops


class Observer:
    """Reads every node's API directly by address (no Grape), from the bridge namespace."""

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        self.link = Link("http://127.0.0.1:1")  # never used: only request_peer
        self.rpc = PeerRPCClient(self.link, request_timeout_ms=5_000)

    async def close(self) -> None:
        await self.rpc.close()
        await self.link.stop()

    async def ask(
        self,
        addr: str,
        node: str,
        action: str,
        args: dict[str, Json] | None = None,
        timeout_ms: int = 5_000,
    ) -> Json:
        return await self.rpc.request_peer(
            addr,
            f"grenex:{self.cluster}:node:{node}",
            {"action": action, "args": [args or {}]},
            timeout_ms=timeout_ms,
        )

    async def status(
        self, addr: str, node: str, timeout_ms: int = 2_000, *, fresh_hash: bool = False
    ) -> dict[str, Json] | None:
        """``status``; with ``fresh_hash`` the state hash at the applied index."""
        try:
            args = {"hash": True} if fresh_hash else None
            r = await self.ask(addr, node, "status", args, timeout_ms=timeout_ms)
        except (GrenacheError, OSError, TimeoutError):
            return None
        return r if isinstance(r, dict) else None

    async def events(self, addr: str, node: str) -> tuple[int, int, list[dict[str, Json]]]:
        """(first index kept, applied, events) of every command ``node`` applied."""
        since, first, out = 0, -1, []
        while True:
            r = await self.ask(addr, node, "events", {"since": since, "limit": 1_000}, 20_000)
            if first < 0:
                first = int(r["first"])
            out += r["events"]
            if r["through"] <= since or r["through"] >= r["applied"]:
                return first, int(r["applied"]), out
            since = int(r["through"])

    async def log(self, addr: str, node: str) -> dict[int, str] | None:
        """The node's exported log (``log`` action, paged): index -> command text as logged;
        None when the node has no ``log`` action."""
        since, out = 0, {}
        while True:
            try:
                r = await self.ask(addr, node, "log", {"since": since, "limit": 1_000}, 20_000)
            except RemoteError as e:
                if "log" in str(e) and "BAD_REQUEST" in str(e):
                    return None  # a node without the action
                raise
            for line in r["entries"]:
                out[int(line["seq"])] = str(line["cmd"])
            if r["through"] <= since or r["through"] >= r["applied"]:
                return out
            since = int(r["through"])

    async def books(self, addr: str, node: str) -> dict[str, Json]:
        r = await self.ask(addr, node, "book", {"depth": 100_000}, 20_000)
        assert isinstance(r, dict)
        return r


@dataclass
class CheckResult:
    entries: int = 0
    acked: int = 0
    unknown: int = 0
    unknown_executed: int = 0
    failed: int = 0
    trades: int = 0
    violations: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Json]:
        return {
            "entries": self.entries,
            "acked": self.acked,
            "unknown": self.unknown,
            "unknown_executed": self.unknown_executed,
            "failed": self.failed,
            "trades": self.trades,
            "violations": [list(v) for v in self.violations],
        }


def group_log(
    views: dict[str, tuple[int, list[dict[str, Json]]]], violations: list[tuple[str, str]]
) -> dict[int, list[dict[str, Json]]]:
    """Merge the nodes' views ``node -> (first index, events)`` into ``index -> events``."""
    merged: dict[int, list[dict[str, Json]]] = {}
    owner: dict[int, str] = {}
    for node, (_first, events) in sorted(views.items()):
        groups: dict[int, list[dict[str, Json]]] = {}
        for ev in events:
            seq = ev.get("seq")
            if type(seq) is not int:
                violations.append(("stream", f"{node}: event without an integer seq: {ev}"))
                continue
            groups.setdefault(seq, []).append(ev)
        for seq, raw in groups.items():
            g = norm_events(raw)
            if seq in merged:
                if merged[seq] != g:
                    violations.append(
                        (
                            "diverged",
                            f"log index {seq}: {owner[seq]} applied {merged[seq]}, "
                            f"{node} applied {g}",
                        )
                    )
            else:
                merged[seq] = g
                owner[seq] = node
    return dict(sorted(merged.items()))


def _entry_key(events: list[dict[str, Json]]) -> tuple[str, str, str] | None:
    first = events[0]
    t = first.get("type")
    if t == "market_added":
        return ("add_market", "", str(first.get("market")))
    if t == "accepted":
        return ("place", str(first["client"]), str(first["id"]))
    if t == "amended":
        return ("amend", str(first["client"]), str(first["id"]))
    if t == "cancelled" and first.get("reason") == "user":
        return ("cancel", str(first["client"]), str(first["id"]))
    if t == "rejected":
        cmd = first.get("cmd")
        if cmd == "add_market":
            return ("add_market", "", str(first.get("market")))
        if isinstance(cmd, str) and "client" in first and "id" in first:
            return (cmd, str(first["client"]), str(first["id"]))
    return None


def replay(
    lines: bytes, env: dict[str, str] | None = None
) -> tuple[dict[int, list[dict[str, Json]]], list[dict[str, Json]]]:
    """``grenex replay --book`` of ``lines`` in a separate process: (events by seq, books)."""
    p = subprocess.run(
        [sys.executable, "-m", "grenex", "replay", "-", "--book"],
        input=lines,
        capture_output=True,
        timeout=300,
        check=False,
        env=env,
    )
    if p.returncode != 0:
        raise RuntimeError(f"grenex replay failed: {p.stderr.decode(errors='replace')[:500]}")
    events: dict[int, list[dict[str, Json]]] = {}
    books: list[dict[str, Json]] = []
    for raw in p.stdout.splitlines():
        obj = json.loads(raw)
        if obj.get("type") == "book":
            books.append(obj)
        else:
            events.setdefault(int(obj["seq"]), []).append(obj)
    return {k: norm_events(v) for k, v in events.items()}, books


def check(
    ops: Sequence[Op],
    log: dict[int, list[dict[str, Json]]],
    admin: Sequence[Op] = (),
    env: dict[str, str] | None = None,
) -> tuple[CheckResult, bytes]:
    """Check the history against the merged log; (result, reconstructed command log)."""
    res = CheckResult()
    v = res.violations
    everyone = [*admin, *ops]
    keys = {seq: _entry_key(g) for seq, g in log.items()}
    claimed: dict[int, Op] = {}
    for op in everyone:
        if op.status != "ok":
            continue
        assert op.seq is not None
        g = log.get(op.seq)
        if g is None:
            v.append(("lost", f"acknowledged {op.key} at seq {op.seq} is not in the log"))
            continue
        if g != op.events:
            v.append(("mismatch", f"seq {op.seq}: {op.key} was answered {op.events}, log {g}"))
        if op.seq in claimed and claimed[op.seq].key != op.key:
            v.append(("shared", f"seq {op.seq} answered to {claimed[op.seq].key} and {op.key}"))
        claimed[op.seq] = op
    pending: dict[tuple[str, str, str], list[Op]] = {}
    for op in everyone:
        if op.status != "ok":
            pending.setdefault(op.key, []).append(op)
    matched: dict[int, Op] = dict(claimed)
    seen_keys: dict[tuple[str, str, str], int] = {}
    for seq, key in keys.items():
        if key is None:
            continue
        if key in seen_keys and key[0] in ("place", "add_market"):
            v.append(("reexecuted", f"{key} executed at seq {seen_keys[key]} and again at {seq}"))
        seen_keys.setdefault(key, seq)
    for seq, g in log.items():
        if seq in matched:
            continue
        key = keys[seq]
        cands = pending.get(key, []) if key is not None else []
        if key is not None and key[0] == "amend":
            cands = [op for op in cands if _amend_fits(op, g)]
        if not cands:
            if (
                key is not None
                and key[0] == "place"
                and any(s != seq and k == key for s, k in keys.items())
            ):
                continue  # reported above as reexecuted
            v.append(("phantom", f"seq {seq}: no client sent this command: {g[:2]}"))
            continue
        op = cands[0]
        pending[key].remove(op)  # type: ignore[index]
        matched[seq] = op
        res.unknown_executed += 1
        if op.status == "failed":
            v.append(("failed_in_log", f"seq {seq}: {op.key} was refused yet is in the log"))
    for seq, g in log.items():
        for ev in g:
            if ev.get("type") == "rejected" and ev.get("reason") == "duplicate_id":
                v.append(
                    (
                        "reexecuted",
                        f"seq {seq}: duplicate_id for ({ev.get('client')}, {ev.get('id')}): "
                        "a retried place reached the engine again",
                    )
                )
    top = max(log, default=0)
    lines = [b""] * top
    for seq, op in matched.items():
        if 1 <= seq <= top:
            lines[seq - 1] = json.dumps(op.command, separators=(",", ":")).encode()
    log_lines = b"".join(line + b"\n" for line in lines)
    replayed, _books = replay(log_lines, env)
    for seq, g in log.items():
        if seq in matched and replayed.get(seq, []) != g:
            v.append(("replay", f"seq {seq}: replay gives {replayed.get(seq)}, the log has {g}"))
    res.entries = len(log)
    res.acked = sum(1 for op in ops if op.status == "ok")
    res.unknown = sum(1 for op in ops if op.status == "unknown")
    res.failed = sum(1 for op in ops if op.status == "failed")
    res.trades = sum(1 for g in log.values() for ev in g if ev.get("type") == "trade")
    return res, log_lines


def _amend_fits(op: Op, events: list[dict[str, Json]]) -> bool:
    first = events[0]
    if first.get("type") != "amended":
        return True
    from decimal import Decimal

    for f in ("qty", "price"):
        if f in op.args and Decimal(str(op.args[f])) != Decimal(str(first.get(f))):
            return False
    return True


def check_export(
    exports: dict[str, dict[int, str]],
    log: dict[int, list[dict[str, Json]]],
    matched_lines: bytes,
    env: dict[str, str] | None = None,
) -> tuple[list[tuple[str, str]], list[dict[str, Json]] | None]:
    """Hold the nodes' exported logs against each other, the history's reconstruction and a
    replay; (violations, the replay's books)."""
    v: list[tuple[str, str]] = []
    if not exports:
        return v, None
    names = sorted(exports)
    ref = exports[names[0]]
    for n in names[1:]:
        other = exports[n]
        for seq in sorted(set(ref) & set(other)):
            if ref[seq] != other[seq]:
                v.append(
                    (
                        "diverged",
                        f"log index {seq}: {names[0]} exports {ref[seq][:200]}, "
                        f"{n} exports {other[seq][:200]}",
                    )
                )
                break
    reconstructed = matched_lines.split(b"\n")
    for seq, text in ref.items():
        if seq - 1 < len(reconstructed) and reconstructed[seq - 1]:
            want = json.loads(reconstructed[seq - 1])
            try:
                got = json.loads(text)
            except ValueError:
                got = {}
            keys = ("type", "client", "id", "market", "side", "qty", "price", "req")
            if any(str(got.get(k)) != str(want.get(k)) for k in keys if k in want):
                v.append(("export", f"log index {seq}: exported {text[:200]}, history {want}"))
    # A command that reached the log a second time (a retried or duplicated forward) is
    # absorbed by the replicated session table: no events (SPEC §6). A bare engine does not
    # have that table, so such entries are left out of the replay, and counted.
    top = max(ref, default=0)
    lines = [b""] * top
    seen: set[tuple[str, str, str]] = set()
    absorbed = 0
    for seq in sorted(ref):
        text = ref[seq]
        try:
            cmd = json.loads(text)
        except ValueError:
            cmd = None
        key = _command_key(cmd)
        if key is not None and key in seen and seq not in log:
            absorbed += 1
            continue
        if key is not None:
            seen.add(key)
        lines[seq - 1] = text.encode()
    if absorbed:
        v.append(("note", f"{absorbed} duplicate log entries absorbed by the session table"))
    replayed, books = replay(b"".join(x + b"\n" for x in lines), env)
    for seq, g in log.items():
        if replayed.get(seq, []) != g:
            v.append(
                (
                    "export",
                    f"seq {seq}: replay of the export gives {replayed.get(seq)}, "
                    f"the nodes applied {g}",
                )
            )
    for seq, g in replayed.items():
        if seq not in log:
            v.append(
                (
                    "export",
                    f"seq {seq}: the export's replay has events {g[:2]} that no node reported",
                )
            )
    return v, books


def _command_key(cmd: Json) -> tuple[str, str, str] | None:
    """What makes a logged command a duplicate: place (client, id), cancel/amend (client,
    req), add_market (client, req)."""
    if not isinstance(cmd, dict):
        return None
    t = cmd.get("type")
    if t == "place":
        return ("place", str(cmd.get("client")), str(cmd.get("id")))
    if t in ("cancel", "amend", "add_market") and cmd.get("req") is not None:
        return (str(t), str(cmd.get("client")), str(cmd.get("req")))
    return None
