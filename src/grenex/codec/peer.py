"""Messages between nodes on the peer service (``grenex:<cluster>:peer:<id>``), typed and
versioned.

A peer request is a Grenache RPC payload (JSON, as every Grenache peer speaks)::

    {"v": 1, "b": BASE64(msgpack(MESSAGE)), "mac": HEX | null}

where MESSAGE is one of the tagged structs below (field ``t``), encoded once in MessagePack:
commands and consensus messages inside it are raw bytes, never a JSON string inside JSON.
``mac`` is the HMAC-SHA256 of the MessagePack bytes under the cluster secret, when the cluster
has one.  Replies are encoded the same way (``{"v": 1, "b": ...}``, no mac).  Anything that
does not decode to a known message of this version is :class:`PeerWireError` — the receiver
answers ``ERR_GRENEX_BAD_REQUEST`` and changes nothing; a reply that does not decode is a
failed request.  No substring of an error text carries meaning: "not the leader" is the
:class:`FwdNotLeader` reply.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any, Final

import msgspec

__all__ = [
    "PEER_WIRE_VERSION",
    "RAFT_STREAM_PATH",
    "RAFT_STREAM_PATH_V1",
    "Forward",
    "FwdAnswer",
    "FwdAt",
    "FwdDeclined",
    "FwdItem",
    "FwdNotLeader",
    "FwdReply",
    "Join",
    "JoinReply",
    "PeerMessage",
    "PeerReply",
    "PeerWireError",
    "Probe",
    "ProbeReply",
    "RaftAck",
    "RaftBatch",
    "RaftFrame",
    "Rejoin",
    "RejoinReply",
    "SnapChunk",
    "SnapChunkAck",
    "decode_peer_reply",
    "decode_peer_request",
    "decode_raft_frame",
    "encode_peer_reply",
    "encode_peer_request",
    "encode_raft_frame",
]

# the consensus stream's path on a node's peer service (grenex.grenache.stream): each binary
# frame is a :class:`RaftFrame` from the node the TLS client certificate names; nothing is
# answered on the connection (answers to forwards travel on the other node's stream to us)
RAFT_STREAM_PATH: Final = "/grenex/raft/2"
# version 1 of the stream (a frame is a bare array of consensus messages, no forwards): still
# served, so that a node of the previous version keeps its streams to this one
RAFT_STREAM_PATH_V1: Final = "/grenex/raft/1"


def encode_raft_frame(
    msgs: list[bytes], fwds: list[FwdItem] | None = None, answers: list[FwdAnswer] | None = None
) -> bytes:
    return _enc.encode(RaftFrame(msgs, fwds or [], answers or []))


def decode_raft_frame(data: bytes, version: int = 2) -> RaftFrame:
    """One stream frame (of ``version``: 1 is a bare array of messages); :class:`PeerWireError`
    when it is not one."""
    try:
        if version == 1:
            return RaftFrame(_FRAME_V1_DECODER.decode(data))
        return _FRAME_DECODER.decode(data)
    except (msgspec.DecodeError, ValueError) as e:
        raise PeerWireError(f"not a consensus frame: {str(e)[:120]}") from None


PEER_WIRE_VERSION: Final = 1


class PeerWireError(ValueError):
    """A peer payload that is not a valid message of this version."""


class RaftBatch(msgspec.Struct, tag="raft", frozen=True, omit_defaults=True):
    """Consensus messages (each ``grenex.codec.raft.encode_message`` bytes), and the forwards
    and forward answers that travel with them (as in a stream frame, :class:`RaftFrame`)."""

    src: str
    msgs: list[bytes]
    fwds: list[FwdItem] = []
    answers: list[FwdAnswer] = []


class Forward(msgspec.Struct, tag="fwd", frozen=True):
    """Commands a follower forwards to the leader, as batch ``batch`` of ``src``."""

    src: str
    batch: int
    cmds: list[bytes]


class Join(msgspec.Struct, tag="join", frozen=True):
    """``src`` asks the leader to add it as a learner."""

    src: str


class Probe(msgspec.Struct, tag="probe", frozen=True):
    """A founding voter that starts empty asks another whether the cluster committed more
    than its founding entries (SPEC §6)."""

    src: str


class Rejoin(msgspec.Struct, tag="rejoin", frozen=True):
    """A voter that lost its state asks the leader to take it back as a learner and promote
    it once it caught up; ``lost_state`` is False once it holds the log again."""

    src: str
    lost_state: bool
    # node/founding.py: this incarnation's tag (for its REJOIN entry), whether that entry is
    # applied here, and the applied index (the leader appends another if it was skipped)
    tag: str = ""
    marked: bool = False
    applied: int = 0


class SnapChunk(msgspec.Struct, tag="snap", frozen=True):
    """One piece of a consensus message too large for one request (a snapshot): bytes
    ``offset`` … of ``total``, whose SHA-256 is ``digest``; transfer ``transfer`` of ``src``.
    Pieces are sent in order, one at a time; the last one completes the message."""

    src: str
    transfer: int
    offset: int
    total: int
    digest: bytes
    data: bytes


PeerMessage = RaftBatch | Forward | Join | Probe | Rejoin | SnapChunk


class RaftAck(msgspec.Struct, tag="raft_ack", frozen=True):
    taken: int
    dropped: int


class SnapChunkAck(msgspec.Struct, tag="snap_ack", frozen=True):
    """The receiver holds bytes up to ``received`` of the transfer (``done``: the message
    was complete and handed to consensus; ``restart``: send from offset 0 again)."""

    received: int
    done: bool = False
    restart: bool = False


class FwdAt(msgspec.Struct, tag="at", frozen=True):
    """The forwarded commands were appended at ``first``, ``first + 1``, … in ``term``."""

    first: int
    term: int
    # commands of the batch the leader did not propose, by position: (position, reason).
    # The others were appended at first, first + 1, … in their order.  Reason "duplicate":
    # the envelope was executed before (its outcome is the first one); any other: a SPEC §8
    # reason code (the envelope failed a check before the log)
    skipped: list[tuple[int, str]] = []


class FwdNotLeader(msgspec.Struct, tag="not_leader", frozen=True):
    """Nothing was proposed: this node does not lead; ``leader`` is its hint."""

    leader: str | None


class FwdDeclined(msgspec.Struct, tag="declined", frozen=True):
    """Nothing was proposed (the leader is busy, or refused the proposal for now)."""

    why: str
    busy: bool


FwdReply = FwdAt | FwdNotLeader | FwdDeclined


class FwdItem(msgspec.Struct, array_like=True, frozen=True):
    """Commands forwarded to the leader as batch ``batch`` of the sender, riding with its
    consensus messages (a stream frame or a ``raft`` request); answered by a
    :class:`FwdAnswer` riding the other way, never by a reply."""

    batch: int
    cmds: list[bytes]


class FwdAnswer(msgspec.Struct, array_like=True, frozen=True):
    """The leader's answer to the sender's forwarded batch ``batch`` (a :class:`FwdItem`)."""

    batch: int
    reply: FwdReply


class RaftFrame(msgspec.Struct, array_like=True, frozen=True):
    """One consensus stream frame: ``[msgs, fwds, answers]`` in MessagePack."""

    msgs: list[bytes]
    fwds: list[FwdItem] = []
    answers: list[FwdAnswer] = []


class JoinReply(msgspec.Struct, tag="join_ack", frozen=True):
    ok: bool
    already: bool
    why: str = ""


class ProbeReply(msgspec.Struct, tag="probe_ack", frozen=True):
    """``founded`` False: this node itself still waits to found (empty storage)."""

    founded: bool
    commit: int
    last_index: int
    rejoining: bool = False  # lost its state and waits to be re-admitted (node/founding.py)
    leader: str | None = None  # who this node believes leads


class RejoinReply(msgspec.Struct, tag="rejoin_ack", frozen=True):
    ok: bool
    why: str = ""
    state: str = ""  # where the re-admission stands (consensus/rejoin.py)


PeerReply = (
    RaftAck
    | FwdAt
    | FwdNotLeader
    | FwdDeclined
    | JoinReply
    | ProbeReply
    | RejoinReply
    | SnapChunkAck
)

_enc: Final = msgspec.msgpack.Encoder()
_FRAME_DECODER: Final = msgspec.msgpack.Decoder(RaftFrame)
_FRAME_V1_DECODER: Final = msgspec.msgpack.Decoder(list[bytes])
_req_dec: Final[msgspec.msgpack.Decoder[PeerMessage]] = msgspec.msgpack.Decoder(PeerMessage)
_rep_dec: Final[msgspec.msgpack.Decoder[PeerReply]] = msgspec.msgpack.Decoder(PeerReply)


def _mac(secret: bytes, body: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def encode_peer_request(msg: PeerMessage, secret: bytes | None = None) -> dict[str, Any]:
    body = _enc.encode(msg)
    return {
        "v": PEER_WIRE_VERSION,
        "b": base64.b64encode(body).decode(),
        "mac": _mac(secret, body) if secret else None,
    }


def _body(payload: Any) -> bytes:
    if type(payload) is not dict:
        raise PeerWireError("a peer payload is an object")
    if payload.get("v") != PEER_WIRE_VERSION:
        raise PeerWireError(f"unsupported peer wire version {str(payload.get('v'))[:20]}")
    b = payload.get("b")
    if type(b) is not str:
        raise PeerWireError("b must be a base64 string")
    try:
        return base64.b64decode(b, validate=True)
    except (binascii.Error, ValueError):
        raise PeerWireError("b is not base64") from None


def decode_peer_request(payload: Any, secret: bytes | None = None) -> PeerMessage:
    """The message in a peer request; :class:`PeerWireError` for anything else, including a
    missing or wrong ``mac`` when the cluster has a secret."""
    body = _body(payload)
    if secret:
        mac = payload.get("mac")
        if type(mac) is not str or not hmac.compare_digest(mac, _mac(secret, body)):
            raise PeerWireError("peer payload not signed with this cluster's secret")
    try:
        return _req_dec.decode(body)
    except (msgspec.DecodeError, ValueError) as e:
        raise PeerWireError(f"malformed peer message: {str(e)[:200]}") from None


def encode_peer_reply(reply: PeerReply) -> dict[str, Any]:
    return {"v": PEER_WIRE_VERSION, "b": base64.b64encode(_enc.encode(reply)).decode()}


def decode_peer_reply(payload: Any) -> PeerReply:
    body = _body(payload)
    try:
        return _rep_dec.decode(body)
    except (msgspec.DecodeError, ValueError) as e:
        raise PeerWireError(f"malformed peer reply: {str(e)[:200]}") from None
