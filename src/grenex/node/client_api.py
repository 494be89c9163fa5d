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
import contextlib
import logging
import os
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec

from grenex.codec import api as wire
from grenex.codec.api import ApiError, BadRequest, Busy, Compacted, Unavailable
from grenex.codec.envelope import Envelope, Rejection, decode_text, encode_envelope
from grenex.codec.stamp import unstamp
from grenex.consensus import EntryKind, Role
from grenex.engine import Trade
from grenex.node.driving import DriverService, ExecutedBefore
from grenex.replica import Applied
from grenex.replica import queries as q
from grenex.replica.auth import Duplicate, Reject
from grenex.replica.verdicts import Verdicts

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
FIRST_OUTCOME_WAIT_S = 5.0  # how long an envelope executed before waits for this node's apply


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


_raws: Final = msgspec.json.Decoder(list[msgspec.Raw])


def outcome_reply(
    seq: int,
    time_ms: int | None,
    batch: bool,
    events_json: bytes | None,
    results_json: bytes | None,
) -> dict[str, Any]:
    """A command's reply (SPEC §7): ``{"seq", "time", "events"}``, or for a batch ``{"seq",
    "time", "results": [{"events"}...]}``; the JSON encoded once when applied, embedded as is.
    ``events_json`` None (a duplicate): the per-command lists are ``results_json`` (None when
    the window dropped them: ``"events": null``)."""
    reply: dict[str, Any] = {"seq": seq}
    if time_ms is not None:
        reply["time"] = time_ms  # the leader's stamp (SPEC §6)
    if not batch:
        if events_json is None:
            raws = _raws.decode(results_json) if results_json is not None else None
            reply["events"] = raws[0] if raws else None
        else:
            reply["events"] = msgspec.Raw(events_json)
        return reply
    if results_json is None:
        reply["events"] = None
        return reply
    reply["results"] = [{"events": r} for r in _raws.decode(results_json)]
    return reply


def duplicate_reply(v: Duplicate, batch: bool) -> dict[str, Any]:
    """The first outcome of an envelope executed before, marked as such."""
    reply = outcome_reply(v.seq, v.time, batch, None, v.events)
    reply["duplicate"] = True
    return reply


def reply_of(applied: Applied) -> dict[str, Any]:
    """The answer to one applied envelope (see :func:`outcome_reply`)."""
    if applied.duplicate:
        reply = outcome_reply(
            applied.outcome_seq, applied.outcome_time, applied.batch, None, applied.results_json
        )
        reply["duplicate"] = True  # answered from the account's window: the first outcome
        return reply
    if applied.batch:
        return outcome_reply(
            applied.index, applied.time, True, applied.events_json, applied.results_json
        )
    return outcome_reply(applied.index, applied.time, False, applied.events_json, None)


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
        wall_ms: Callable[[], int],
        verdicts: Verdicts,
        verify: Callable[[Envelope, bytes], Awaitable[bool]],
    ) -> None:
        self.node_id = node_id
        self.wall_ms = wall_ms
        self.snapshot_transfers: Callable[[], int] = lambda: 0  # set by the node
        self.peer_streams: Callable[[], int] = lambda: 0  # set by the node
        # True while this node's replica is catching up (set by the node; see _signer)
        self.catching_up: Callable[[], bool] = lambda: False
        self.verdicts = verdicts
        self.verify = verify  # verifies off the loop (a thread), filling ``verdicts``
        self.driver = driver
        self.limits = limits
        self.clock = clock
        self.snapshot_index = snapshot_index
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        # (trade, the time stamp of its entry)
        self._trades: deque[tuple[Trade, int | None]] = deque(maxlen=limits.trades_kept_max)
        self._window: deque[Applied] = deque(maxlen=limits.events_window_entries_max)
        self._applied = asyncio.Event()  # set (and replaced) whenever entries are applied

    # -- fed by the driver --------------------------------------------------------------------

    def record(self, applied: list[Applied]) -> None:
        """Applied entries: the events window and the trade tape."""
        if applied:
            self._applied.set()  # wake waiters for a first outcome, then a fresh event
            self._applied = asyncio.Event()
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
            out = q.order(state, client, oid)
            if out.get("state") != "unknown":
                out["fills"] = self._fills(client, oid)
            return out
        if action == "members":
            return q.members(state)
        if action == "account":
            key = args.get("key")
            if args.get("client") is None and type(key) is str and len(key) <= 64:
                return q.account(state, None, key)
            client = wire.name_or_none(args, "client")
            if client is None:
                raise BadRequest("account needs a client or a key")
            return q.account(state, client, None)
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

    async def _command(self, req: wire.Request) -> Any:
        """SPEC §8 checks 1–5 here (the receiving node), then the log; see the module doc."""
        text, sig = wire.envelope_arg(req)
        env = decode_text(text, sig)
        if type(env) is Rejection:
            raise BadRequest(env.reason)
        assert type(env) is Envelope
        if req.action != wire.SUBMIT_ACTION:
            for c in env.commands:
                if c.get("type") != req.action:
                    raise BadRequest(f"invalid_command: {req.action} takes only {req.action}")
        signer = await self._signer(env)
        if not self._rate_ok(env.client):
            raise Busy(f"rate limit for account {env.client}; retry later")
        verdicts = self.verdicts
        if not verdicts.known(env, signer):
            await self.verify(env, signer)
        state = self.driver.replica.state  # a snapshot may have replaced it meanwhile
        v = state.auth.check(env, self.wall_ms(), verify=verdicts)
        if type(v) is Reject:
            raise BadRequest(v.reason)
        if type(v) is Duplicate:
            return duplicate_reply(v, env.batch)
        data = encode_envelope(env.text, env.sig)
        verdicts.put_decoded(data, env)  # decoded here once: not again before apply
        if len(data) > self.limits.command_bytes_max:
            raise BadRequest(
                f"invalid_command: {len(data)} bytes (at most {self.limits.command_bytes_max})"
            )
        try:
            return reply_of(await self.driver.submit(data))
        except ExecutedBefore:
            return await self._first_outcome(env)

    async def _signer(self, env: Envelope) -> bytes:
        """The key that must have signed ``env`` (§8 check 3).  A node still catching up (it
        restarted empty and is rejoining, or knows no leader yet) cannot tell an account it
        has not applied yet from one that does not exist: it waits, bounded, for its replica
        to catch up before it answers ``unknown_client``."""
        deadline = self.clock() + FIRST_OUTCOME_WAIT_S
        while True:
            signer = self.driver.replica.state.auth.signer(env)
            if type(signer) is bytes:
                return signer
            assert type(signer) is Reject
            left = deadline - self.clock()
            if signer.reason != "unknown_client" or left <= 0 or not self.catching_up():
                raise BadRequest(signer.reason)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._applied.wait(), min(left, 0.5))

    async def _first_outcome(self, env: Envelope) -> Any:
        """The leader found ``env`` executed before: answer its first outcome from this
        node's window as soon as this node has applied that far (bounded wait)."""
        deadline = self.clock() + FIRST_OUTCOME_WAIT_S
        while True:
            state = self.driver.replica.state
            v = state.auth.check(env, self.wall_ms(), verify=self.verdicts)
            if type(v) is Duplicate:
                return duplicate_reply(v, env.batch)
            left = deadline - self.clock()
            if left <= 0:
                raise Unavailable(
                    "executed before, but not yet applied here: send the same envelope again"
                )
            evt = self._applied
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(evt.wait(), min(left, 0.5))

    # -- reads ---------------------------------------------------------------------------------

    def _book(self, args: dict[str, Any]) -> Any:
        replica = self.driver.replica
        market = wire.name_or_none(args, "market")
        depth = wire.int_or_default(args, "depth", BOOK_DEPTH_DEFAULT, 0, 1 << 30)
        books = replica.state.engine.books(market, depth or None)
        return {"applied": replica.applied_index, "books": books}

    def _fills(self, client: str, oid: str) -> list[dict[str, Any]]:
        """The order's fills in this node's trade window (bounded: the last trades applied
        here), oldest first: ``{"seq", "time", "price", "qty", "role"}``."""
        out: list[dict[str, Any]] = []
        for t, at in self._trades:
            if t.maker == oid and t.maker_client == client:
                role = "maker"
            elif t.taker == oid and t.taker_client == client:
                role = "taker"
            else:
                continue
            out.append({"seq": t.seq, "time": at, "price": t.price, "qty": t.qty, "role": role})
        return out

    def _trades_reply(self, args: dict[str, Any]) -> Any:
        """Without ``since``: the newest ``limit`` trades.  With ``since``: the oldest
        ``limit`` trades after that seq, and ``more`` when others follow (to page forward)."""
        market = wire.name_or_none(args, "market")
        client = wire.name_or_none(args, "client")  # an account's own trades (either side)
        since = wire.int_or_default(args, "since", -1, 0, 1 << 62)
        limit = wire.int_or_default(args, "limit", 100, 1, self.limits.trades_reply_max)
        trades = [
            (t, at)
            for t, at in self._trades
            if t.seq > since
            and (market is None or t.market == market)
            and (client is None or client in (t.maker_client, t.taker_client))
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
                # as in the frame (a batch's events carry n)
                events.extend(msgspec.json.decode(a.events_json))
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
            cluster_id=replica.state.cluster_id,
            pending=extra["pending"],
            queued=extra["queued"],
            forwards_inflight=extra["forwards_inflight"],
            dropped_messages=extra["dropped_messages"],
            snapshot_transfers=self.snapshot_transfers(),
            peer_streams=self.peer_streams(),
            forwards_riding=extra["forwards_riding"],
        )
