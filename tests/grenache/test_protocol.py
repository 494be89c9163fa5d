"""The sans-IO protocol: frames, gzip bounds and Grape reply classification.

Proves, without any socket: request/reply frames round-trip for any JSON value (hypothesis);
a reply for another rid, a non-array or an error string is reported as the right error; the
Grape's 200-with-an-error-string replies are classified by JSON type as grenache.md §9.2 says;
gzip is readable both ways and a gzip bomb is refused before it is inflated; ports outside
1..65535 (which crash a ``-b`` Grape) are refused.
"""

from __future__ import annotations

import gzip as stdlib_gzip
import hashlib
import zlib
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grenex.grenache.errors import GrapeError, ProtocolError, RemoteError, ReplyError
from grenex.grenache.protocol import (
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    grape_body,
    gunzip_bounded,
    gzip,
    new_rid,
    parse_announce,
    parse_get,
    parse_lookup,
    parse_put,
    split_dest,
    validate_port,
    wants_gzip,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(key=st.text(min_size=1, max_size=30), payload=json_values)
def test_request_frame_round_trips(key: str, payload: Any) -> None:
    rid = new_rid()
    req = decode_request(encode_request(rid, key, payload))
    assert (req.rid, req.key, req.payload) == (rid, key, payload)


@given(result=json_values)
def test_reply_frame_round_trips(result: Any) -> None:
    rid = new_rid()
    assert decode_reply(encode_reply(rid, None, result), rid) == result


def test_request_is_the_node_array_shape() -> None:
    body = encode_request("r-1", "svc", {"a": 1})
    assert msgspec.json.decode(body) == ["r-1", "svc", {"a": 1}]
    assert len(new_rid()) == 36 and new_rid() != new_rid()


def test_error_reply_raises_remote_error_with_message_and_result() -> None:
    with pytest.raises(RemoteError) as info:
        decode_reply(b'["r",  "ERR_X: detail", {"partial": 1}]', "r")
    assert info.value.message == "ERR_X: detail"
    assert info.value.code == "ERR_X"
    assert info.value.result == {"partial": 1}


def test_non_string_error_becomes_json_text() -> None:
    with pytest.raises(RemoteError, match=r'\{"code":1\}'):
        decode_reply(b'["r",{"code":1},null]', "r")


def test_two_element_reply_is_success_with_null() -> None:
    assert decode_reply(b'["r",null]', "r") is None


@pytest.mark.parametrize("body", [b"", b"not json", b"{}", b"[]", b'"x"', b"[" * 5000])
def test_garbage_reply_is_reply_empty(body: bytes) -> None:
    with pytest.raises(ReplyError) as info:
        decode_reply(body, "r")
    assert info.value.code == "ERR_REPLY_EMPTY"


def test_reply_for_another_rid_is_refused() -> None:
    with pytest.raises(ReplyError) as info:
        decode_reply(b'["other",null,1]', "mine")
    assert info.value.code == "ERR_REPLY_RID_MISMATCH"


@pytest.mark.parametrize(
    ("body", "has_rid"),
    [
        (b"garbage", False),
        (b'{"rid":"x"}', False),
        (b"[]", False),
        (b'[null,"k",1]', False),
        (b'["r"]', True),
        (b'["r", 5, 1]', True),
        (b"[" * 100_000 + b"]" * 100_000, False),  # deeper than any parser's stack
    ],
)
def test_bad_request_frames(body: bytes, has_rid: bool) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_request(body)
    assert info.value.code == "ERR_REQUEST_INVALID"
    assert (info.value.rid == "r") if has_rid else info.value.rid is None


def test_request_without_payload_has_null_payload() -> None:
    assert decode_request(b'["r","k"]').payload is None


def test_unencodable_result_still_gives_a_reply() -> None:
    reply = msgspec.json.decode(encode_reply("r", None, {object()}))
    assert reply[0] == "r" and reply[1].startswith("ERR_REPLY_ENCODE") and reply[2] is None


def test_unencodable_payload_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        encode_request("r", "k", object())


# ------------------------------------------------------------------------------------- gzip


def test_gzip_is_standard_gzip_both_ways() -> None:
    data = b'["r","k",{"x":"' + b"y" * 1000 + b'"}]'
    assert stdlib_gzip.decompress(gzip(data)) == data
    assert gunzip_bounded(stdlib_gzip.compress(data), 10_000) == data


def test_gzip_bomb_is_refused_without_inflating_it() -> None:
    bomb = stdlib_gzip.compress(b"\0" * 50_000_000)  # ~50 KB that inflates to 50 MB
    assert len(bomb) < 100_000
    with pytest.raises(ValueError, match="exceeds"):
        gunzip_bounded(bomb, 1_000_000)


@pytest.mark.parametrize("body", [b"", b"not gzip", stdlib_gzip.compress(b"abc")[:-6]])
def test_corrupt_or_truncated_gzip_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        gunzip_bounded(body, 1000)


def test_wants_gzip_follows_node_contains_rule() -> None:
    assert wants_gzip("gzip") and wants_gzip("x-gzip") and not wants_gzip("none")
    assert not wants_gzip(None)


def test_zlib_level_is_the_node_default() -> None:
    data = b"a" * 1000
    assert zlib.decompress(gzip(data), 31) == data


# ------------------------------------------------------------------------------ Grape bodies


def test_grape_body_shape() -> None:
    body = msgspec.json.decode(grape_body(["svc", 5555]))
    assert set(body) == {"rid", "data"} and body["data"] == ["svc", 5555]


def test_grape_replies_are_classified_by_type() -> None:
    assert parse_announce(200, b"2") == 2
    assert parse_lookup(200, b'["127.0.0.1:5555","127.0.0.1:5556"]') == [
        "127.0.0.1:5555",
        "127.0.0.1:5556",
    ]
    assert parse_lookup(200, b"[]") == []
    value = "hello world"
    digest = hashlib.sha1(b"11:" + value.encode()).hexdigest()
    assert digest == "6d33adc2b6b2c14c3036feefb7fedbca1a880527"
    assert parse_put(200, f'"{digest}"'.encode()) == digest
    got = parse_get(200, b'{"id":"' + b"a" * 40 + b'","token":null,"v":"hello world"}')
    assert got is not None and got.v == "hello world" and got.token is None
    assert parse_get(200, b"") is None


@pytest.mark.parametrize(
    ("parse", "body", "code"),
    [
        (parse_announce, b'"No nodes to query"', "No nodes to query"),
        (parse_announce, b'"ERR_GRAPE_SERVICE_PORT"', "ERR_GRAPE_SERVICE_PORT"),
        (parse_lookup, b'"ERR_GRAPE_LOOKUP"', "ERR_GRAPE_LOOKUP"),
        (
            parse_put,
            b'"v must be less than 1000 bytes in put()"',
            "v must be less than 1000 bytes in put()",
        ),
        (parse_put, b'"All queries failed"', "All queries failed"),
        (parse_lookup, b"{}", "ERR_GRAPE_REPLY_INVALID"),
        (parse_announce, b"not json", "ERR_GRAPE_REPLY_INVALID"),
    ],
)
def test_grape_error_strings_become_grape_errors(parse: Any, body: bytes, code: str) -> None:
    with pytest.raises(GrapeError) as info:
        parse(200, body, "http://g")
    assert info.value.code == code
    assert info.value.grape == "http://g"


def test_grape_non_200_is_an_error_with_its_text() -> None:
    with pytest.raises(GrapeError) as info:
        parse_lookup(500, b"ERR_GRAPE_PAYLOAD_INVALID")
    assert info.value.code == "ERR_GRAPE_PAYLOAD_INVALID"


def test_malformed_lookup_entries_are_dropped() -> None:
    assert parse_lookup(200, b'["127.0.0.1:1", 5, "nope", "1.2.3.4:70000"]') == ["127.0.0.1:1"]


@pytest.mark.parametrize("port", [0, -1, 65536, 70000, True, "80", 5000.5])
def test_ports_that_crash_a_grape_are_refused(port: Any) -> None:
    with pytest.raises(ValueError):
        validate_port(port)


def test_split_dest() -> None:
    assert split_dest("127.0.0.1:5555") == ("127.0.0.1", 5555)
    for bad in ["127.0.0.1", ":80", "h:x", "h:0"]:
        with pytest.raises(ValueError):
            split_dest(bad)
