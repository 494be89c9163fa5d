"""The client API service (``grenex:<cluster>:node:<id>`` and ``grenex:<cluster>:nodes``).

Requests are checked by :mod:`grenex.codec.api` (shapes) before anything reaches the driver.
Commands are handed to the driver service and answered when their entry is committed *and
applied here* (read your writes); reads are answered from this node's replica at once, with
bounded work: ``book`` is cut at a depth (default 100 per side), ``trades`` and ``events`` come
from bounded windows kept here, and ``status`` reports the state hash of the newest snapshot
with the index it belongs to (``{"hash": true}`` asks for a fresh one, made where snapshots are
made: it comes with a later ``status``), never hashing the whole state on the request path.

Errors: every failure leaves this module as an :class:`~grenex.codec.api.ApiError` whose text
is the wire error (``ERR_GRENEX_…: why``) — translated here, in :meth:`ClientAPI.handle`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import msgspec

from grenex.codec import api as wire
from grenex.codec.api import ApiError, BadRequest, Busy, Compacted, Unavailable
from grenex.codec.stamp import unstamp
from grenex.consensus import EntryKind, Role
from grenex.engine import Trade
from grenex.node.driving import DriverService
from grenex.replica import Applied
from grenex.replica import queries as q

__all__ = ["ClientAPI", "ClientLimits"]

log = logging.getLogger("grenex.node.api")

ROLE_NAMES = {
    Role.FOLLOWER: "follower",
    Role.PRE_CANDIDATE: "pre_candidate",
    Role.CANDIDATE: "candidate",
    Role.LEADER: "leader",
}

BOOK_DEPTH_DEFAULT = 100
LOG_REPLY_BYTES_MAX = 4 * 1024 * 1024  # log entries in one ``log`` reply


class ClientLimits(msgspec.Struct, frozen=True):
    command_bytes_max: int
    batch_commands_max: int
    client_rate_per_s: float
    client_burst: float
    client_buckets_max: int
    trades_kept_max: int
    trades_reply_max: int
    events_window_entries_max: int
    events_reply_max: int = 1_000


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


def reply_of(applied: Applied) -> dict[str, Any]:
    """The answer to one applied command: its seq and its events (the JSON encoded once for
    this entry, embedded as is)."""
    events = applied.events
    seq = events[0].seq if events else applied.index
    reply: dict[str, Any] = {"seq": seq}
    if applied.outcome_time is not None:
        reply["time"] = applied.outcome_time  # the leader's stamp (SPEC §6)
    reply["events"] = msgspec.Raw(applied.events_json)
    if applied.duplicate:
        reply["duplicate"] = True  # answered from the session table: the first outcome
    return reply


def _with_time(trade: Trade, time_ms: int | None) -> dict[str, Any]:
    d: dict[str, Any] = msgspec.to_builtins(trade)
    if time_ms is not None:
        d["time"] = time_ms
    return d


class ClientAPI:
    """One node's client API; ``handle`` is the RPC handler."""

    def __init__(
        self,
        node_id: str,
        driver: DriverService,
        limits: ClientLimits,
        clock: Callable[[], float],
        snapshot_index: Callable[[], int],
    ) -> None:
        self.node_id = node_id
        self.driver = driver
        self.limits = limits
        self.clock = clock
        self.snapshot_index = snapshot_index
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        # (trade, the time stamp of its entry)
        self._trades: deque[tuple[Trade, int | None]] = deque(maxlen=limits.trades_kept_max)
        self._window: deque[Applied] = deque(maxlen=limits.events_window_entries_max)

    # -- fed by the driver --------------------------------------------------------------------

    def record(self, applied: list[Applied]) -> None:
        """Applied entries: the events window and the trade tape."""
        window, trades = self._window, self._trades
        for a in applied:
            window.append(a)
            if a.kind != EntryKind.NORMAL or a.duplicate:
                continue
            for ev in a.events:
                if type(ev) is Trade:
                    trades.append((ev, a.time))

    # -- the handler ---------------------------------------------------------------------------

    async def handle(self, key: str, payload: Any) -> Any:
        """The one boundary: everything raised here is an ApiError (wire text)."""
        try:
            req = wire.parse_request(payload)
            action = req.action
            if action in wire.COMMAND_ACTIONS:
                return await self._command(req)
            if action == wire.BATCH_ACTION:
                return await self._batch(req)
            return self._read(req)
        except ApiError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug here must not look like a node failure to clients
            log.exception("client API failed on %r", key)
            raise Unavailable(f"internal error ({type(e).__name__})") from None

    def _read(self, req: wire.Request) -> Any:
        action, args = req.action, req.args
        state = self.driver.replica.state
        if action == "book":
            return self._book(args)
        if action == "trades":
            return self._trades_reply(args)
        if action == "events":
            return self._events_reply(args)
        if action == "log":
            return self._log_reply(args)
        if action == "markets":
            return q.markets(state)
        if action == "orders":
            client = wire.name_or_none(args, "client")
            if client is None:
                raise BadRequest("orders needs a client")
            return q.orders(state, client, wire.name_or_none(args, "market"))
        if action == "order":
            client, oid = wire.name_or_none(args, "client"), wire.name_or_none(args, "id")
            if client is None or oid is None:
                raise BadRequest("order needs a client and an id")
            return q.order(state, client, oid)
        return self.status(args)

    # -- commands ------------------------------------------------------------------------------

    def _rate_ok(self, client: str) -> bool:
        lim = self.limits
        now = self.clock()
        b = self._buckets.get(client)
        if b is None:
            b = self._buckets[client] = _Bucket(lim.client_burst, now)
            if len(self._buckets) > lim.client_buckets_max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
            b.tokens = min(lim.client_burst, b.tokens + (now - b.stamp) * lim.client_rate_per_s)
            b.stamp = now
        if b.tokens < 1:
            return False
        b.tokens -= 1
        return True

    def _submit(self, req: wire.Request) -> asyncio.Future[Applied]:
        data = wire.command_bytes(req, self.limits.command_bytes_max)
        client = wire.client_of(req.args)
        if client is not None and not self._rate_ok(client):
            raise Busy(f"rate limit for client {client}; retry later")
        return self.driver.submit(data)

    async def _command(self, req: wire.Request) -> Any:
        fut = self._submit(req)
        return reply_of(await fut)

    async def _batch(self, req: wire.Request) -> Any:
        """Each command of a batch is its own log entry with its own outcome (not atomic):
        ``{"results": [{"seq", "events"} | {"error": "ERR_GRENEX_…"}, ...]}`` in order.
        One wait for the whole batch."""
        reqs = wire.batch_requests(req, self.limits.batch_commands_max)
        futs: list[asyncio.Future[Applied] | ApiError] = []
        for r in reqs:
            try:
                futs.append(self._submit(r))
            except ApiError as e:
                futs.append(e)
        live = [f for f in futs if isinstance(f, asyncio.Future)]
        if live:
            await asyncio.wait(live)
        results: list[Any] = []
        for f in futs:
            if isinstance(f, ApiError):
                results.append({"error": str(f)})
            elif (exc := f.exception()) is not None:
                if not isinstance(exc, ApiError):
                    raise exc
                results.append({"error": str(exc)})
            else:
                results.append(reply_of(f.result()))
        return {"results": results}

    # -- reads ---------------------------------------------------------------------------------

    def _book(self, args: dict[str, Any]) -> Any:
        replica = self.driver.replica
        market = wire.name_or_none(args, "market")
        depth = wire.int_or_default(args, "depth", BOOK_DEPTH_DEFAULT, 0, 1 << 30)
        books = replica.state.engine.books(market, depth or None)
        return {"applied": replica.applied_index, "books": books}

    def _trades_reply(self, args: dict[str, Any]) -> Any:
        """Without ``since``: the newest ``limit`` trades.  With ``since``: the oldest
        ``limit`` trades after that seq, and ``more`` when others follow (to page forward)."""
        market = wire.name_or_none(args, "market")
        since = wire.int_or_default(args, "since", -1, 0, 1 << 62)
        limit = wire.int_or_default(args, "limit", 100, 1, self.limits.trades_reply_max)
        trades = [
            (t, at)
            for t, at in self._trades
            if t.seq > since and (market is None or t.market == market)
        ]
        more = False
        if since < 0:
            out = trades[-limit:]
        else:
            # a page never ends inside a log entry: its trades share one seq
            end = min(limit, len(trades))
            while 0 < end < len(trades) and trades[end][0].seq == trades[end - 1][0].seq:
                end += 1
            out, more = trades[:end], end < len(trades)
        reply: dict[str, Any] = {"trades": [_with_time(t, at) for t, at in out]}
        if since >= 0:
            reply["more"] = more
        return reply

    def _events_reply(self, args: dict[str, Any]) -> Any:
        """The entries applied after log index ``since``, oldest first, from a bounded window
        (``first`` is the oldest index still kept; ``{"strict": true}`` answers
        ``ERR_GRENEX_COMPACTED: <first>`` instead when entries after ``since`` are gone).

        ``entries``: the stream's frames, ``{"seq", "time", "events"}`` per entry with events
        (at most ``limit`` entries); ``events``: the same events in one list (kept for readers
        of the earlier shape); ``through``: the last index looked at (page on from there)."""
        since = wire.int_or_default(args, "since", 0, 0, 1 << 62)
        lim = self.limits.events_reply_max
        limit = wire.int_or_default(args, "limit", lim, 1, lim)
        window = self._window
        first = window[0].index if window else self.driver.replica.applied_index + 1
        applied = self.driver.replica.applied_index
        if args.get("strict") and window and since + 1 < first and since < applied:
            raise Compacted(str(first))
        entries: list[Any] = []
        events: list[Any] = []
        last = since
        for a in window:
            if a.index <= since:
                continue
            last = a.index
            if a.kind == EntryKind.NORMAL and not a.duplicate and a.events:
                frame = {"seq": a.index, "time": a.time, "events": msgspec.Raw(a.events_json)}
                entries.append(frame)
                events.extend(msgspec.to_builtins(e) for e in a.events)
                if len(entries) >= limit or len(events) >= limit:
                    break
        return {
            "entries": entries,
            "events": events,
            "through": last,
            "first": first,
            "applied": applied,
        }

    def _log_reply(self, args: dict[str, Any]) -> Any:
        """The committed, applied log after index ``since`` (for ``grenex export``): one line
        per command entry, ``{"seq", "time", "cmd"}`` with the command's text exactly as it
        was logged; at most ``limit`` (≤ 1,000) entries and ``log_reply_bytes_max`` bytes.
        ``ERR_GRENEX_COMPACTED: <first index>`` when entries after ``since`` were compacted
        below a snapshot.  ``through`` is the last index looked at (page on from there)."""
        replica = self.driver.replica
        lim = self.limits.events_reply_max
        since = wire.int_or_default(args, "since", 0, 0, 1 << 62)
        limit = wire.int_or_default(args, "limit", lim, 1, lim)
        applied = replica.applied_index
        out: list[wire.LogLine] = []
        through = min(since, applied)
        if since < applied:
            ents = replica.raft.log.entries(since + 1, applied + 1, LOG_REPLY_BYTES_MAX, limit)
            if ents is None:
                raise Compacted(str(replica.raft.log.first_index()))
            for e in ents:
                through = e.index
                if e.kind != EntryKind.NORMAL:
                    continue
                time_ms, data = unstamp(e.data)
                out.append(wire.LogLine(e.index, time_ms, data.decode("utf-8", "replace")))
        return wire.LogReply(out, through, applied)

    def status(self, args: dict[str, Any] | None = None) -> wire.StatusReply:
        """Answered at once, whatever the state's size."""
        driver = self.driver
        replica = driver.replica
        snaps = driver.snapshots
        if args and args.get("hash") is True:
            snaps.request()
            driver.wake.set()
        st = replica.raft.status()
        hash_at = snaps.hash_at
        extra = driver.status_extra()
        return wire.StatusReply(
            node=self.node_id,
            role=ROLE_NAMES.get(st.role, str(st.role)),
            term=st.term,
            leader=st.leader,
            commit=st.commit,
            applied=replica.applied_index,
            members=wire.Members(list(st.conf.voters), list(st.conf.learners)),
            state_hash=hash_at[1] if hash_at else None,
            state_hash_index=hash_at[0] if hash_at else None,
            pid=os.getpid(),
            # where this replica's log starts and ends (a log that starts after 1 was compacted
            # below a snapshot, taken here or installed from the leader)
            snapshot_index=self.snapshot_index(),
            first_index=st.first_index,
            last_index=st.last_index,
            pending=extra["pending"],
            queued=extra["queued"],
            forwards_inflight=extra["forwards_inflight"],
            dropped_messages=extra["dropped_messages"],
        )
