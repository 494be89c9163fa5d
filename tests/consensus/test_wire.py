"""The consensus wire format (grenex.codec.raft): every message type round-trips exactly,
entry data travels as raw bytes, and anything malformed is refused with WireError (never a
crash, never a half-decoded message reaching the core)."""

from __future__ import annotations

import msgspec
import pytest

from grenex.codec.raft import WIRE_VERSION, WireError, decode_message, encode_message
from grenex.consensus import ConfState, Entry, Message, MessageType, Snapshot

SAMPLES = [
    Message(
        MessageType.APP,
        "n1",
        "n2",
        7,
        log_term=6,
        index=41,
        entries=[Entry(42, 7, 0, b"\x00\xff{json}"), Entry(43, 7, 1, b"add_learner n9")],
        commit=40,
    ),
    Message(MessageType.APP_RESP, "n2", "n1", 7, index=41, reject=True, reject_hint=30, log_term=5),
    Message(MessageType.VOTE, "n3", "n1", 8, log_term=7, index=43, transfer=True),
    Message(MessageType.PRE_VOTE_RESP, "n1", "n3", 8, reject=False),
    Message(MessageType.HEARTBEAT, "n1", "n2", 7, commit=40),
    Message(
        MessageType.SNAP,
        "n1",
        "n9",
        7,
        snapshot=Snapshot(40, 6, ConfState(("n1", "n2", "n3"), ("n9",)), b"\x01" * 1000),
    ),
    Message(MessageType.TIMEOUT_NOW, "n1", "n2", 7),
]


@pytest.mark.parametrize("m", SAMPLES, ids=lambda m: m.type.name)
def test_round_trip(m: Message) -> None:
    got = decode_message(encode_message(m))
    assert got.type is m.type
    assert (got.src, got.dst, got.term, got.log_term, got.index, got.commit) == (
        m.src,
        m.dst,
        m.term,
        m.log_term,
        m.index,
        m.commit,
    )
    assert (got.reject, got.reject_hint, got.transfer) == (m.reject, m.reject_hint, m.transfer)
    assert list(got.entries) == list(m.entries)
    assert got.snapshot == m.snapshot


def test_compact() -> None:
    hb = encode_message(SAMPLES[4])
    assert len(hb) < 20  # a heartbeat is a handful of bytes
    app = encode_message(SAMPLES[0])
    assert b"\x00\xff{json}" in app  # raw bytes, not base64


def _raw(**over: object) -> bytes:
    fields: list[object] = [WIRE_VERSION, 0, "a", "b", 1, 0, 0, 0, False, 0, False, [], None]
    names = ["v", "type", "src", "dst", "term", "log_term", "index", "commit"]
    for k, v in over.items():
        fields[names.index(k)] = v
    return msgspec.msgpack.encode(fields)


def _raw_entries(entries: list[list[object]]) -> bytes:
    return msgspec.msgpack.encode(
        [WIRE_VERSION, 0, "a", "b", 1, 0, 0, 0, False, 0, False, entries, None]
    )


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"garbage",
        _raw(v=2),
        _raw(type=99),
        _raw(term=-1),
        _raw(src=5),
        encode_message(SAMPLES[0])[:-4],
        msgspec.msgpack.encode(
            [1, 0, "a", "b", 1, 0, 0, 0, False, 0, False, [[1, 1, 9, b""]], None]
        ),
    ],
)
def test_malformed_is_refused(data: bytes) -> None:
    with pytest.raises(WireError):
        decode_message(data)
