"""The client API (SPEC §7): service names, actions, request shapes and error codes — defined
once, here, for the node, the client, devnet, tests and benchmarks.

Pure functions: a request is ``{"action": NAME, "args": [OBJECT]}``; anything else is refused
with ``ERR_GRENEX_BAD_REQUEST: <why>`` and changes nothing.  Commands are re-encoded as the
canonical SPEC §2 JSON object (``type`` first) that goes into the log; numbers keep their
literal text (the server decodes them with :class:`~grenex.engine.JsonNumber`).

Errors (:class:`ApiError` and its subclasses) carry their wire code; ``str()`` of one is the
Grenache error text ``CODE: why`` that a node answers with.  The codes:

* ``ERR_GRENEX_BAD_REQUEST`` — not of the request shape, or failed a check before the log:
  sending it again cannot help;
* ``ERR_GRENEX_BUSY`` — a per-node bound (rate, pending commands, connections): nothing was
  done; retry later;
* ``ERR_GRENEX_UNAVAILABLE`` — no leader reachable, or no outcome in time: the command may or
  may not have executed; sending the same command again is safe;
* ``ERR_GRENEX_COMPACTED`` — the events asked for are no longer kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final

import msgspec

from grenex.engine import is_name

__all__ = [
    "COMMAND_ACTIONS",
    "ERR_BAD_REQUEST",
    "ERR_BUSY",
    "ERR_CLIENT",
    "ERR_COMPACTED",
    "ERR_UNAVAILABLE",
    "READ_ACTIONS",
    "RETRYABLE_CODES",
    "STATUS_WITH_HASH",
    "SUBMIT_ACTION",
    "ApiError",
    "BadRequest",
    "Busy",
    "Compacted",
    "LogLine",
    "LogReply",
    "Members",
    "Request",
    "StatusReply",
    "Unavailable",
    "envelope_arg",
    "error_code",
    "int_or_default",
    "name_or_none",
    "parse_request",
    "service_names",
    "statuses_agree",
]

ERR_BAD_REQUEST: Final = "ERR_GRENEX_BAD_REQUEST"
ERR_BUSY: Final = "ERR_GRENEX_BUSY"
ERR_UNAVAILABLE: Final = "ERR_GRENEX_UNAVAILABLE"
ERR_COMPACTED: Final = "ERR_GRENEX_COMPACTED"
ERR_CLIENT: Final = "ERR_GRENEX_CLIENT"  # a client library's own failure (never on the wire)
# after these (and Grenache's own busy/timeout codes) the same command may be sent again
RETRYABLE_CODES: Final = frozenset(
    {ERR_UNAVAILABLE, ERR_BUSY, "ERR_SERVICE_BUSY", "ERR_TIMEOUT", "ERR_HANDLER_TIMEOUT"}
)

# ``submit`` takes any envelope; the others an envelope whose command(s) are all of that type
SUBMIT_ACTION: Final = "submit"
COMMAND_ACTIONS: Final = (
    "submit",
    "place",
    "cancel",
    "amend",
    "add_market",
    "register",
    "rotate_key",
    "admit",
    "join",
    "promote",
    "remove",
)
READ_ACTIONS: Final = (
    "book",
    "trades",
    "status",
    "events",
    "markets",
    "orders",
    "order",
    "log",
    "account",
    "members",
)


# -- replies (typed: the node encodes these, clients may decode them with msgspec) ---------------


class Members(msgspec.Struct, frozen=True):
    voters: list[str]
    learners: list[str]


class StatusReply(msgspec.Struct, frozen=True, omit_defaults=False):
    """``status``: answered at once; ``state_hash`` is the hash of the state at
    ``state_hash_index`` (the newest snapshot's), not necessarily at ``applied``."""

    node: str
    role: str
    term: int
    leader: str | None
    commit: int
    applied: int
    members: Members
    state_hash: str | None
    state_hash_index: int | None
    pid: int
    snapshot_index: int
    first_index: int
    last_index: int
    cluster_id: str = ""
    pending: int = 0
    queued: int = 0
    forwards_inflight: int = 0
    dropped_messages: int = 0
    snapshot_transfers: int = 0  # snapshots this node received in pieces (chunked transfers)
    peer_streams: int = 0  # consensus streams from this node to peers that are up now
    forwards_riding: int = 0  # forwards sent riding with consensus messages (not requests)


class LogLine(msgspec.Struct, frozen=True):
    """One line of ``log`` / ``grenex export``: a command entry as it was logged."""

    seq: int
    time: int | None
    cmd: str


class LogReply(msgspec.Struct, frozen=True):
    entries: list[LogLine]
    through: int
    applied: int


def service_names(cluster: str, node_id: str) -> dict[str, str]:
    """The Grenache names a node announces (SPEC §7)."""
    return {
        "node": f"grenex:{cluster}:node:{node_id}",
        "nodes": f"grenex:{cluster}:nodes",
        "peer": f"grenex:{cluster}:peer:{node_id}",
        "events": f"grenex:{cluster}:events",
        # the same stream, from this node only (a subscriber that wants one node's view)
        "node_events": f"grenex:{cluster}:events:{node_id}",
    }


def statuses_agree(statuses: list[Any]) -> bool:
    """True when every ``status`` reply (as decoded JSON) is at the same applied index, has
    applied everything it knows committed, and reports a state hash computed *at* that index
    (``state_hash_index``), the same everywhere.  Ask for fresh hashes with the status
    argument ``{"hash": true}`` (the node computes them where it takes snapshots)."""
    if not statuses or not all(isinstance(s, dict) for s in statuses):
        return False
    first = statuses[0]
    return all(
        s.get("applied") == first.get("applied")
        and s.get("commit") == s.get("applied")
        and s.get("state_hash_index") == s.get("applied")
        and isinstance(s.get("state_hash"), str)
        and s.get("state_hash") == first.get("state_hash")
        for s in statuses
    )


STATUS_WITH_HASH: Final = {"hash": True}


def error_code(text: str) -> str:
    """The code of a Grenache error text ``CODE: why`` (the text itself when it has none)."""
    return text.partition(":")[0].strip()


class ApiError(Exception):
    """An answer that is an error; ``str()`` is its wire text ``CODE: why``."""

    code: ClassVar[str] = ERR_BAD_REQUEST

    @property
    def why(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return f"{self.code}: {self.why}"


class BadRequest(ApiError):  # noqa: N818 - the Grenache error name is what matters
    code = ERR_BAD_REQUEST


class Busy(ApiError):  # noqa: N818
    code = ERR_BUSY


class Unavailable(ApiError):  # noqa: N818
    code = ERR_UNAVAILABLE


class Compacted(ApiError):  # noqa: N818
    code = ERR_COMPACTED


@dataclass(frozen=True, slots=True)
class Request:
    action: str
    args: dict[str, Any]


def parse_request(payload: Any) -> Request:
    if type(payload) is not dict:
        raise BadRequest('a request is {"action": NAME, "args": [OBJECT]}')
    action = payload.get("action")
    if type(action) is not str:
        raise BadRequest("action must be a string")
    if action not in COMMAND_ACTIONS and action not in READ_ACTIONS:
        shown = action[:40]
        known = ", ".join((*COMMAND_ACTIONS, *READ_ACTIONS))
        raise BadRequest(f"unknown action {shown!r} (one of {known})")
    args = payload.get("args")
    if args is None or args == []:
        if action in COMMAND_ACTIONS:
            raise BadRequest(f"{action} needs args: [OBJECT]")
        return Request(action, {})
    if type(args) is not list or len(args) != 1 or type(args[0]) is not dict:
        raise BadRequest("args must be a list holding one object")
    return Request(action, args[0])


def envelope_arg(req: Request) -> tuple[str, str]:
    """A command request's envelope (SPEC §8): ``args[0]`` is ``{"cmd": TEXT, "sig": SIG}``.
    Only the shape is checked here; TEXT is checked (§8 checks 1–2) by the caller."""
    text, sig = req.args.get("cmd"), req.args.get("sig")
    if type(text) is not str or type(sig) is not str:
        raise BadRequest('invalid_command: a command is an envelope {"cmd": TEXT, "sig": SIG}')
    return text, sig


def name_or_none(args: dict[str, Any], key: str) -> str | None:
    """An optional SPEC name field of a read request."""
    v = args.get(key)
    if v is None:
        return None
    if not is_name(v):
        raise BadRequest(f"{key} must be a name")
    return v


def int_or_default(args: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    v = args.get(key)
    if v is None:
        return default
    if type(v) is not int or not low <= v <= high:
        raise BadRequest(f"{key} must be an integer in [{low}, {high}]")
    return v
