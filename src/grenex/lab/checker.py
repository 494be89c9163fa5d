"""The lab's checker: the history of every client against the committed log.

The log, as the nodes report it
-------------------------------
Every live node is asked for the events of every command it applied (the ``events`` API
action, paged, its frames with each entry's time): each event carries ``seq``, the log index of
its command, so the events group into log entries (indexes with no events are no-op, membership
or duplicate entries: nothing ran).  Where two nodes' windows overlap they must agree
exactly; the union, which must start at index 1, is the committed log used below.

The demands (each failure is a violation with a category)
---------------------------------------------------------
* ``diverged`` — every live replica at the same applied index and state hash (``status``),
  within a bounded time after everything healed (the caller waits; see runner.py), and two
  nodes never report different events at one index;
* ``lost`` — every acknowledged command is in the log at the ``seq`` it was answered with;
* ``mismatch`` — ... with exactly the events it was answered with;
* ``reexecuted`` — no command (acknowledged or not) executed twice: a ``(client, id)`` place
  appears at most once, and a ``duplicate_id`` rejection of one of our (never reused) ids
  means a retried place ran again (every retry re-sends the same signed envelope, which the
  account's nonce window answers with its first outcome, SPEC §6);
* ``phantom`` — every entry is a command some client sent;
* ``failed_in_log`` — a command refused with ``ERR_GRENEX_BAD_REQUEST`` never reached the log;
* ``replay`` — the reconstructed log (each client's signed envelope at its index, with the
  entry's time, as a ``grenex export`` carrying the genesis), run through a fresh replicated
  state (every SPEC §8 check, the nonce windows, the engine) by ``grenex replay --book``
  **as a separate process**, gives exactly the events the nodes report;
* ``books`` — every live node's books equal that replay's final books;
* ``coverage`` — the nodes could not show the log from index 1 (reported, not guessed);
* ``export`` — where the nodes have the ``log`` action (``grenex export``): every node exports
  the same envelopes at the same indexes, each is the envelope the history put there, and
  ``grenex replay`` of the export gives exactly the events the nodes applied, and their books.
  (A command sent by the ``grenex place`` command line has no envelope in the history: the
  export's, when its TEXT is that command, is used.)
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

from grenex.client.pins import MemberPins
from grenex.codec.genesis import Genesis
from grenex.engine import Event
from grenex.grenache import GrenacheError, Link, PeerRPCClient, RemoteError

__all__ = ["CheckResult", "Observer", "Op", "check", "load_history"]

Json = Any


def norm_events(raw: Json) -> list[dict[str, Json]]:
    """Events in one canonical form (decoded as the engine's Event types, then plain JSON;
    the SPEC §8 events as they are), without the entry's ``time`` and a batch's ``n``."""
    if isinstance(raw, list):
        raw = [
            {k: v for k, v in e.items() if k not in ("time", "n")} if isinstance(e, dict) else e
            for e in raw
        ]
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
    env: dict[str, Json] | None = None  # the signed envelope sent (every retry: the same)

    @property
    def key(self) -> tuple[str, str, str]:
        """What names the command's log entry: (type, client, order id); a register by its
        client, an add_market by its market."""
        if self.kind == "add_market":
            return ("add_market", "", str(self.args.get("market")))
        if self.kind == "register":
            return ("register", str(self.args.get("client")), "")
        return (self.kind, str(self.args.get("client")), str(self.args.get("id")))

    @property
    def command(self) -> dict[str, Json]:
        return {"type": self.kind, **{k: v for k, v in self.args.items() if k != "type"}}


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
                env = rec.get("env")
                op.env = env if isinstance(env, dict) else None
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

    def __init__(self, cluster: str, genesis: Genesis) -> None:
        self.cluster = cluster
        self.link = Link("http://127.0.0.1:1")  # never used: only request_peer
        # TLS pinned to each node's certificate (the genesis voters', SPEC §8 "Endpoints")
        self.pins = MemberPins(genesis)
        self.rpc = PeerRPCClient(self.link, request_timeout_ms=5_000, ssl_for=self.pins.ssl_for)
        self.times: dict[int, int] = {}  # log index -> its entry's time (events, log)

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
            for frame in r["entries"]:  # a batch's events carry ``n`` here
                if type(frame.get("time")) is int:
                    self.times[int(frame["seq"])] = frame["time"]
                out += frame["events"]
            if r["through"] <= since or r["through"] >= r["applied"]:
                return first, int(r["applied"]), out
            since = int(r["through"])

    async def log(self, addr: str, node: str) -> dict[int, str] | None:
        """The node's exported log (``log`` action, paged): index -> the envelope as logged
        (its entry's time goes to :attr:`times`); None when the node has no ``log`` action."""
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
                if type(line.get("time")) is int:
                    self.times[int(line["seq"])] = line["time"]
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
    if t == "registered":
        return ("register", str(first.get("client")), "")
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
        if cmd == "register" and "client" in first:
            return ("register", str(first["client"]), "")
        if isinstance(cmd, str) and "client" in first and "id" in first:
            return (cmd, str(first["client"]), str(first["id"]))
    return None


MEMBERSHIP_EVENTS = ("member_added", "member_promoted", "member_removed")
# SPEC §8 reasons of checks 1–5: a logged rejection for one of them consumed and ran nothing
INERT_REASONS = (
    "bad_signature",
    "client_taken",
    "invalid_command",
    "invalid_key",
    "invalid_nonce",
    "key_taken",
    "stale_nonce",
    "unknown_client",
)


def _inert(events: list[dict[str, Json]]) -> bool:
    first = events[0]
    return (
        len(events) == 1
        and first.get("type") == "rejected"
        and first.get("reason") in INERT_REASONS
    )


def export_file(genesis: bytes, lines: dict[int, str], times: dict[int, int]) -> bytes:
    """A ``grenex export`` of ``lines`` (index -> envelope JSON) with the entries' times."""
    head = {"grenex_export": 1, "genesis": genesis.decode(), "first": 1}
    out = [json.dumps(head, separators=(",", ":"))]
    for seq in sorted(lines):
        line: dict[str, Json] = {"seq": seq, "cmd": lines[seq]}
        if seq in times:
            line["time"] = times[seq]
        out.append(json.dumps(line, separators=(",", ":")))
    return "".join(x + "\n" for x in out).encode()


def export_lines(data: bytes) -> dict[int, str]:
    """index -> envelope JSON of an export made by :func:`export_file`."""
    out: dict[int, str] = {}
    for raw in data.splitlines()[1:]:
        if raw.strip():
            line = json.loads(raw)
            out[int(line["seq"])] = str(line["cmd"])
    return out


def replay(
    lines: bytes, env: dict[str, str] | None = None
) -> tuple[dict[int, list[dict[str, Json]]], list[dict[str, Json]]]:
    """``grenex replay --book`` of the export ``lines`` in a separate process: (events by
    seq, books)."""
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


def _envelope_of(op: Op, seq: int, exported: dict[int, str] | None) -> str | None:
    """The envelope ``op`` put at ``seq``: its own, else (a command line's order, signed out
    of the history's sight) the exported one when its TEXT is ``op``'s command."""
    if op.env is not None:
        return json.dumps(op.env, separators=(",", ":"))
    text = (exported or {}).get(seq)
    if text is None:
        return None
    try:
        cmd = json.loads(json.loads(text)["cmd"])
    except (ValueError, KeyError, TypeError):
        return None
    fields = ("type", "client", "id", "market", "side", "qty", "price")
    want = op.command
    if any(str(cmd.get(k)) != str(want.get(k)) for k in fields if k in want):
        return None
    return text


def check(
    ops: Sequence[Op],
    log: dict[int, list[dict[str, Json]]],
    admin: Sequence[Op] = (),
    env: dict[str, str] | None = None,
    *,
    genesis: bytes,
    times: dict[int, int] | None = None,
    exported: dict[int, str] | None = None,
) -> tuple[CheckResult, bytes]:
    """Check the history against the merged log; (result, the reconstructed log as a
    ``grenex export``).  ``genesis``: the cluster's genesis file; ``times``: each entry's
    time; ``exported``: a node's export, for commands whose envelope the history lacks."""
    res = CheckResult()
    v = res.violations
    everyone = [*admin, *ops]
    keys = {seq: _entry_key(g) for seq, g in log.items()}
    inert = {seq for seq, g in log.items() if _inert(g)}
    claimed: dict[int, Op] = {}
    pending: dict[tuple[str, str, str], list[Op]] = {}
    for op in everyone:
        if op.status != "ok":
            pending.setdefault(op.key, []).append(op)
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
        if op.seq in inert:  # answered with a rejection that ran nothing: it may run elsewhere
            pending.setdefault(op.key, []).append(op)
    matched: dict[int, Op] = {seq: op for seq, op in claimed.items() if seq not in inert}
    sent = {op.key for op in everyone}
    seen_keys: dict[tuple[str, str, str], int] = {}
    for seq, key in keys.items():
        if key is None or seq in inert:
            continue
        if key in seen_keys and key[0] in ("place", "add_market", "register"):
            v.append(("reexecuted", f"{key} executed at seq {seen_keys[key]} and again at {seq}"))
        seen_keys.setdefault(key, seq)
    for seq, g in log.items():
        if seq in claimed:
            continue
        key = keys[seq]
        if key is None and all(e.get("type") in MEMBERSHIP_EVENTS for e in g):
            continue  # the operator's membership changes, not a client's
        if seq in inert:
            if key not in sent:
                v.append(("phantom", f"seq {seq}: a rejection no client sent: {g[:2]}"))
            continue
        cands = pending.get(key, []) if key is not None else []
        if key is not None and key[0] == "amend":
            cands = [op for op in cands if _amend_fits(op, g)]
        if not cands:
            if (
                key is not None
                and key[0] in ("place", "add_market", "register")
                and any(s != seq and k == key and s not in inert for s, k in keys.items())
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
    lines: dict[int, str] = {}
    for seq, op in sorted(matched.items()):
        text = _envelope_of(op, seq, exported)
        if text is None:
            v.append(("replay", f"seq {seq}: no envelope of {op.key} to replay"))
        else:
            lines[seq] = text
    export = export_file(genesis, lines, times or {})
    replayed, _books = replay(export, env)
    for seq in sorted(lines):
        if replayed.get(seq, []) != log[seq]:
            v.append(
                ("replay", f"seq {seq}: replay gives {replayed.get(seq)}, the log has {log[seq]}")
            )
    res.entries = len(log)
    res.acked = sum(1 for op in ops if op.status == "ok")
    res.unknown = sum(1 for op in ops if op.status == "unknown")
    res.failed = sum(1 for op in ops if op.status == "failed")
    res.trades = sum(1 for g in log.values() for ev in g if ev.get("type") == "trade")
    return res, export


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
    matched: bytes,
    env: dict[str, str] | None = None,
    *,
    genesis: bytes,
    times: dict[int, int] | None = None,
) -> tuple[list[tuple[str, str]], list[dict[str, Json]] | None]:
    """Hold the nodes' exported logs against each other, the history's reconstruction
    (``matched``, an export) and a replay of the export itself; (violations, its books)."""
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
    reconstructed = export_lines(matched)
    for seq, text in ref.items():
        want = reconstructed.get(seq)
        if want is None:
            continue
        try:
            same = json.loads(text) == json.loads(want)
        except ValueError:
            same = False
        if not same:
            v.append(("export", f"log index {seq}: exported {text[:200]}, history {want[:200]}"))
    # the export replayed as it is: a duplicate that reached the log again is absorbed by the
    # replicated nonce windows there too (SPEC §6), so every line goes in
    replayed, books = replay(export_file(genesis, ref, times or {}), env)
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
