"""Wire encoding of consensus messages (node <-> node over Grenache peer RPC).

Format, version 1: one MessagePack array, positional, so a message costs a few bytes of
framing plus its payload, and entry data travels as raw bytes (``bin``), never base64::

    [1, type, src, dst, term, log_term, index, commit, reject, reject_hint, transfer,
     entries, snapshot]

    entries:  [[index, term, kind, data], ...]
    snapshot: nil | [index, term, [voters, learners], data]

A peer that sees another version refuses the message (:class:`WireError`); adding a field
means a new version.  Decoding validates every type, so a malformed or hostile body raises
:class:`WireError` and never reaches the consensus core.
"""

from __future__ import annotations

from typing import Final

import msgspec

from grenex.consensus.types import Entry, EntryKind, Message, MessageType, Snapshot

__all__ = ["WIRE_VERSION", "WireError", "decode_message", "encode_message"]

WIRE_VERSION: Final = 1
# Terms and indexes at or above this are refused: no honest cluster gets near it, and a forged
# term of 2**64 - 1 would otherwise be adopted and overflow the next election's encoding.
POSITION_MAX: Final = 1 << 62
_KINDS: Final = frozenset(int(k) for k in EntryKind)
_TYPES: Final = tuple(MessageType)


class WireError(ValueError):
    """A consensus message body that is not valid version-1 wire format."""


class _Wire(msgspec.Struct, array_like=True, gc=False):
    v: int
    type: int
    src: str
    dst: str
    term: int
    log_term: int
    index: int
    commit: int
    reject: bool
    reject_hint: int
    transfer: bool
    entries: list[Entry]
    snapshot: Snapshot | None


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(_Wire)


def encode_message(m: Message) -> bytes:
    return _encoder.encode(
        _Wire(
            WIRE_VERSION,
            int(m.type),
            m.src,
            m.dst,
            m.term,
            m.log_term,
            m.index,
            m.commit,
            m.reject,
            m.reject_hint,
            m.transfer,
            list(m.entries),
            m.snapshot,
        )
    )


def decode_message(data: bytes) -> Message:
    try:
        w = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        # msgspec validates shape and types; ValidationError subclasses DecodeError today,
        # named here in case that changes.
        raise WireError(f"bad consensus message: {e}") from None
    if w.v != WIRE_VERSION:
        raise WireError(f"unsupported consensus wire version {w.v}")
    if not 0 <= w.type < len(_TYPES):
        raise WireError(f"unknown message type {w.type}")
    positions = (w.term, w.log_term, w.index, w.commit, w.reject_hint)
    if min(positions) < 0 or max(positions) >= POSITION_MAX:
        raise WireError("position out of range")
    for ent in w.entries:
        if (
            ent.kind not in _KINDS
            or not 1 <= ent.index < POSITION_MAX
            or not 0 <= ent.term < POSITION_MAX
        ):
            raise WireError(f"bad entry {ent.index}/{ent.term} kind {ent.kind}")
    snap = w.snapshot
    if snap is not None and not (0 <= snap.index < POSITION_MAX and 0 <= snap.term < POSITION_MAX):
        raise WireError("bad snapshot position")
    return Message(
        _TYPES[w.type],
        w.src,
        w.dst,
        w.term,
        w.log_term,
        w.index,
        w.entries or (),
        w.commit,
        w.reject,
        w.reject_hint,
        w.snapshot,
        w.transfer,
    )
