"""Envelopes (SPEC §8 checks 1–2): the SPEC vector decodes, every malformed input gets the exact
reason code (``invalid_command`` or ``invalid_nonce``) and never an exception, numbers stay
exact, batches get their client, and the strict-JSON rules hold at every depth (hypothesis
builds nested values with a repeated key or an escaped lone surrogate somewhere inside)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grenex.codec import decode_command
from grenex.codec.envelope import (
    BATCH_MAX,
    NONCE_AHEAD_US,
    NONCE_MAX,
    TEXT_BYTES_MAX,
    UNBATCHABLE,
    Envelope,
    Registered,
    Rejection,
    decode_envelope,
    decode_envelope_json,
    decode_text,
    encode_envelope,
    nonce_in_time,
    sign_envelope,
)
from grenex.codec.keys import SecretKey, verify_text
from grenex.engine import JsonNumber

CLUSTER_ID = "c481c2836cf43517b42d2e86ef27ce385bb49798ffa3b9940189f5b3edc2baa7"
SEED = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
KEY = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
VECTOR = (
    b'{"cmd":"{\\"type\\":\\"cancel\\",\\"client\\":\\"op\\",\\"id\\":\\"o1\\",\\"nonce\\":1}",'
    b'"sig":"cVVf34L4Um7rhob_nBV9_RGB0spyJ4KQ9ZwslWhjBkaI2G3u0bC2rjWUhNGHcNsQWglJ8yN9AoLDPL9CS-63Bg"}'
)
TEXT = b'{"type":"cancel","client":"op","id":"o1","nonce":1}'
SIG = "cVVf34L4Um7rhob_nBV9_RGB0spyJ4KQ9ZwslWhjBkaI2G3u0bC2rjWUhNGHcNsQWglJ8yN9AoLDPL9CS-63Bg"

INVALID = "invalid_command"
BAD_NONCE = "invalid_nonce"


def _env(v: Envelope | Rejection) -> Envelope:
    assert isinstance(v, Envelope), v
    return v


def _reason(text: str | bytes) -> str | None:
    t = text.decode() if isinstance(text, bytes) else text
    r = decode_text(t, "sig")
    return r.reason if isinstance(r, Rejection) else None


def test_vector_envelope() -> None:
    e = _env(decode_envelope_json(VECTOR))
    assert (e.client, e.nonce, e.text, e.sig, e.batch) == ("op", 1, TEXT, SIG, False)
    assert e.digest == hashlib.sha256(TEXT).digest()
    assert e.commands == [{"type": "cancel", "client": "op", "id": "o1", "nonce": 1}]
    assert e.type == "cancel"
    assert verify_text(KEY, CLUSTER_ID, e.text, e.sig)
    assert encode_envelope(TEXT, SIG) == VECTOR
    assert sign_envelope(SecretKey.from_text(SEED), CLUSTER_ID, TEXT) == VECTOR
    assert decode_envelope(json.loads(VECTOR)) == e


def test_batch_sets_client() -> None:
    text = json.dumps(
        {
            "client": "al",
            "nonce": 7,
            "batch": [
                {
                    "type": "place",
                    "id": "a",
                    "market": "M",
                    "side": "buy",
                    "qty": 1.50,
                    "price": "2",
                },
                {"type": "cancel", "id": "b", "client": None, "nonce": None},
            ],
        }
    )
    e = _env(decode_text(text, "s"))
    assert e.batch and e.type is None and e.nonce == 7 and e.client == "al"
    assert [c["client"] for c in e.commands] == ["al", "al"]
    qty = e.commands[0]["qty"]
    assert type(qty) is JsonNumber and qty == "1.5"  # json.dumps wrote 1.5: kept as its text


def test_numbers_exact_like_decode_command() -> None:
    text = (
        '{"type":"place","client":"c","nonce":3,"qty":100.50,"price":1e3,"x":-0,'
        '"big":123456789012345678901234567890}'
    )
    e = _env(decode_text(text, "s"))
    cmd = e.commands[0]
    assert cmd == decode_command(text)
    assert type(cmd["qty"]) is JsonNumber and cmd["qty"] == "100.50"
    assert type(cmd["price"]) is JsonNumber and cmd["price"] == "1e3"
    assert cmd["x"] == 0 and type(cmd["big"]) is int


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", INVALID),
        ("   ", INVALID),
        ("null", INVALID),
        ("[]", INVALID),
        ('"x"', INVALID),
        ("1", INVALID),
        ("{", INVALID),
        ('{"type":"cancel","client":"op","nonce":1', INVALID),
        ('{"type":"cancel","client":"op","nonce":1}x', INVALID),
        ('{"type":"cancel","client":"op","nonce":NaN}', INVALID),
        ('{"type":"cancel","client":"op","nonce":1,"x":Infinity}', INVALID),
        ('{"type":"cancel","client":"op","nonce":1,"x":-Infinity}', INVALID),
        ("{'type':'cancel'}", INVALID),
        ('{"type":"cancel","client":"op","nonce":1,}', INVALID),
        ('{"type":"cancel","client":"op","nonce":1,"id":"a\x01"}', INVALID),  # raw control char
        # repeated keys, at any depth
        ('{"type":"cancel","type":"cancel","client":"op","nonce":1}', INVALID),
        ('{"type":"cancel","client":"op","nonce":1,"nonce":1}', INVALID),
        ('{"type":"cancel","client":"op","nonce":1,"x":{"a":1,"a":2}}', INVALID),
        ('{"type":"cancel","client":"op","nonce":1,"x":[[{"a":1,"b":{"c":1,"c":1}}]]}', INVALID),
        ('{"client":"op","nonce":1,"batch":[{"type":"cancel","id":"a","id":"b"}]}', INVALID),
        # unpaired surrogates (escaped) anywhere
        ('{"type":"cancel","client":"op","nonce":1,"id":"\\ud800"}', INVALID),
        ('{"type":"cancel","client":"op","nonce":1,"id":"\\udc00x"}', INVALID),
        ('{"type":"cancel","client":"op","nonce":1,"id":"\\ude00\\ud83d"}', INVALID),
        ('{"type":"cancel","client":"op","nonce":1,"\\ud800":1}', INVALID),
        ('{"type":"cancel","client":"op","nonce":1,"x":[["\\udfff"]]}', INVALID),
        ('{"type":"cancel","client":"op","nonce":1,"x":{"y":"\\uD800"}}', INVALID),
        # client
        ('{"type":"cancel","nonce":1}', INVALID),
        ('{"type":"cancel","client":null,"nonce":1}', INVALID),
        ('{"type":"cancel","client":"","nonce":1}', INVALID),
        ('{"type":"cancel","client":"a b","nonce":1}', INVALID),
        ('{"type":"cancel","client":"op\\n","nonce":1}', INVALID),
        ('{"type":"cancel","client":5,"nonce":1}', INVALID),
        ('{"type":"cancel","client":["op"],"nonce":1}', INVALID),
        ('{"type":"cancel","client":"' + "x" * 65 + '","nonce":1}', INVALID),
        # nonce
        ('{"type":"cancel","client":"op"}', BAD_NONCE),
        ('{"type":"cancel","client":"op","nonce":null}', BAD_NONCE),
        ('{"type":"cancel","client":"op","nonce":0}', BAD_NONCE),
        ('{"type":"cancel","client":"op","nonce":-0}', BAD_NONCE),
        ('{"type":"cancel","client":"op","nonce":-1}', BAD_NONCE),
        ('{"type":"cancel","client":"op","nonce":1.0}', BAD_NONCE),
        ('{"type":"cancel","client":"op","nonce":1e3}', BAD_NONCE),
        ('{"type":"cancel","client":"op","nonce":1E0}', BAD_NONCE),
        ('{"type":"cancel","client":"op","nonce":"1"}', BAD_NONCE),
        ('{"type":"cancel","client":"op","nonce":true}', BAD_NONCE),
        ('{"type":"cancel","client":"op","nonce":[1]}', BAD_NONCE),
        ('{"type":"cancel","client":"op","nonce":9007199254740992}', BAD_NONCE),
        ('{"type":"cancel","client":"op","nonce":10000000000000000}', BAD_NONCE),
        ('{"type":"cancel","client":"op","nonce":99999999999999999999}', BAD_NONCE),
        ('{"type":"cancel","client":"op","nonce":01}', INVALID),  # not JSON at all
        # batches
        ('{"client":"op","nonce":1,"batch":[]}', INVALID),
        ('{"client":"op","nonce":1,"batch":{}}', INVALID),
        ('{"client":"op","nonce":1,"batch":"x"}', INVALID),
        ('{"client":"op","nonce":1,"batch":[1]}', INVALID),
        ('{"client":"op","nonce":1,"batch":[null]}', INVALID),
        ('{"client":"op","nonce":1,"batch":[[]]}', INVALID),
        ('{"client":"op","nonce":1,"batch":[{"type":"cancel","client":"op"}]}', INVALID),
        ('{"client":"op","nonce":1,"batch":[{"type":"cancel","client":"x"}]}', INVALID),
        ('{"client":"op","nonce":1,"batch":[{"type":"cancel","nonce":2}]}', INVALID),
        ('{"client":"op","nonce":1,"batch":[{"type":"cancel"},{"type":"register"}]}', INVALID),
        ('{"nonce":1,"batch":[{"type":"cancel"}]}', INVALID),
        ('{"client":"a b","nonce":1,"batch":[{"type":"cancel"}]}', INVALID),
        ('{"client":"op","batch":[{"type":"cancel"}]}', BAD_NONCE),
        ('{"client":"op","nonce":0,"batch":[{"type":"cancel"}]}', BAD_NONCE),
        ('{"client":"op","nonce":0,"batch":[]}', INVALID),  # check 1 before check 2
    ],
)
def test_malformed(text: str, reason: str) -> None:
    assert _reason(text) == reason


@pytest.mark.parametrize("t", UNBATCHABLE)
def test_unbatchable(t: str) -> None:
    text = json.dumps({"client": "op", "nonce": 1, "batch": [{"type": "place"}, {"type": t}]})
    assert _reason(text) == INVALID
    # alone they are fine here (their own checks come later)
    e = _env(decode_text(json.dumps({"type": t, "client": "op", "nonce": 1}), "s"))
    assert e.type == t and not e.batch


def test_valid_edges() -> None:
    for n in (1, 9, 10**15, NONCE_MAX):
        assert _env(decode_text(f'{{"client":"op","nonce":{n}}}', "s")).nonce == n
    # no type, unknown type, extra fields: all for §2 to reject later
    assert _reason('{"client":"op","nonce":1}') is None
    assert _reason('{"type":"frob","client":"op","nonce":1,"extra":[1,{"a":null}]}') is None
    assert _reason('{"type":"cancel","client":"op","nonce":1,"batch":null}') is None
    assert _reason(' \t\n{"type":"cancel","client":"op","nonce":1}\r\n ') is None
    # a valid escaped pair, and a backslash before "ud800" that is not an escape
    assert _reason('{"type":"cancel","client":"op","nonce":1,"id":"\\ud83d\\ude00"}') is None
    assert _reason('{"type":"cancel","client":"op","nonce":1,"id":"\\\\ud800"}') is None
    # max batch
    items = [{"type": "cancel", "id": str(i)} for i in range(BATCH_MAX)]
    e = _env(decode_text(json.dumps({"client": "op", "nonce": 1, "batch": items}), "s"))
    assert len(e.commands) == BATCH_MAX
    assert _reason(json.dumps({"client": "op", "nonce": 1, "batch": [*items, items[0]]})) == INVALID


def test_text_size_limit_in_utf8_bytes() -> None:
    head = '{"type":"cancel","client":"op","nonce":1,"x":"'
    tail = '"}'
    room = TEXT_BYTES_MAX - len(head) - len(tail)
    assert _reason(head + "a" * room + tail) is None
    assert _reason(head + "a" * (room + 1) + tail) == INVALID
    # multibyte: 3 bytes each
    assert _reason(head + "€" * (room // 3) + tail) is None
    assert _reason(head + "€" * (room // 3 + 1) + tail) == INVALID
    assert _reason(head + "é" * (room // 2 + 1) + tail) == INVALID


def test_raw_surrogate_and_bad_utf8() -> None:
    assert _reason('{"type":"cancel","client":"op","nonce":1,"id":"\ud800"}') == INVALID
    outer = b'{"cmd":"{\\"client\\":\\"op\\",\\"nonce\\":1,\\"x\\":\\"\\ud800\\"}","sig":"s"}'
    r = decode_envelope_json(outer)  # \ud800 in the outer string: a raw surrogate in TEXT
    assert isinstance(r, Rejection) and r.reason == INVALID
    raw = b'{"cmd":"{\\"client\\":\\"op\\",\\"nonce\\":1,\\"x\\":\\"\xed\xa0\x80\\"}","sig":"s"}'
    assert isinstance(decode_envelope_json(raw), Rejection)
    assert isinstance(decode_envelope_json(b"\xff"), Rejection)


def test_deep_nesting_never_raises() -> None:
    deep = '{"client":"op","nonce":1,"x":' + "[" * 60_000 + "]" * 60_000 + "}"
    assert _reason(deep[:TEXT_BYTES_MAX]) == INVALID
    assert _reason('{"client":"op","nonce":1,"x":' + "[" * 30_000 + "]" * 30_000 + "}") in (
        None,
        INVALID,
    )


@pytest.mark.parametrize(
    "value",
    [
        None,
        [],
        "x",
        {},
        {"cmd": "{}"},
        {"sig": "s"},
        {"cmd": 1, "sig": "s"},
        {"cmd": "{}", "sig": None},
        {"cmd": {"type": "cancel"}, "sig": "s"},
    ],
)
def test_not_an_envelope(value: Any) -> None:
    r = decode_envelope(value)
    assert isinstance(r, Rejection) and r.reason == INVALID


def test_outer_json() -> None:
    # a repeated outer key takes its last value (msgspec); TEXT is what is signed
    dup = b'{"cmd":"{}","cmd":' + json.dumps(TEXT.decode()).encode() + b',"sig":"s"}'
    e = decode_envelope_json(dup)
    assert isinstance(e, Envelope) and e.text == TEXT
    assert isinstance(decode_envelope_json(b'{"cmd":"{}","sig":"s","cmd":1}'), Rejection)
    extra = b'{"x":[1,{"y":2}],' + VECTOR[1:]
    assert isinstance(decode_envelope_json(extra), Envelope)
    assert isinstance(decode_envelope_json(b"[]"), Rejection)
    assert isinstance(decode_envelope_json(VECTOR + b"x"), Rejection)
    assert isinstance(decode_envelope_json(VECTOR.decode()), Envelope)


def test_rejection_carries_client_and_type() -> None:
    r = decode_text('{"type":"place","client":"al"}', "s")
    assert r == Rejection("invalid_nonce", "al", "place")
    r = decode_text('{"type":"place","client":"a l","nonce":1}', "s")
    assert r == Rejection("invalid_command", None, "place")
    r = decode_text('{"client":"al","nonce":1,"batch":[]}', "s")
    assert r == Rejection("invalid_command", "al", None)


def test_nonce_in_time() -> None:
    t = 1_700_000_000_000
    assert nonce_in_time(1, 0)
    assert nonce_in_time(t * 1000 + NONCE_AHEAD_US, t)
    assert not nonce_in_time(t * 1000 + NONCE_AHEAD_US + 1, t)
    assert nonce_in_time(NONCE_MAX, 9_007_199_254_740)  # year ~2255: every nonce is in time


def test_events_encode_with_type_first() -> None:
    import msgspec

    assert msgspec.json.encode(Registered(3, "al", KEY)) == (
        b'{"type":"registered","seq":3,"client":"al","key":"' + KEY.encode() + b'"}'
    )


# -- properties ---------------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.text(max_size=8),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(_json, st.integers(1, NONCE_MAX))
def test_any_payload_round_trips(payload: Any, nonce: int) -> None:
    cmd = {"type": "place", "client": "al", "nonce": nonce, "x": payload}
    text = json.dumps(cmd, ensure_ascii=False)
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        assert _reason(text) == INVALID
        return
    e = _env(decode_envelope_json(encode_envelope(text, "s")))
    assert e.commands == [cmd] and e.nonce == nonce and e.text == text.encode()


@given(_json, st.data())
def test_repeated_key_anywhere_is_refused(payload: Any, data: st.DataObject) -> None:
    text = json.dumps({"type": "place", "client": "al", "nonce": 1, "x": payload})
    # every '{' starts an object: give one of them a repeated key
    starts = [i for i, ch in enumerate(text) if ch == "{" and _in_structure(text, i)]
    i = data.draw(st.sampled_from(starts))
    bad = text[: i + 1] + '"dup":1,"dup":2' + ("," if text[i + 1] != "}" else "") + text[i + 1 :]
    assert _reason(bad) == INVALID


@given(_json, st.data(), st.integers(0xD800, 0xDFFF))
def test_lone_surrogate_anywhere_is_refused(payload: Any, data: st.DataObject, cp: int) -> None:
    text = json.dumps({"type": "place", "client": "al", "nonce": 1, "x": payload})
    # every '"' outside a string opens one (a key or a value): put the surrogate right after
    opening = [i for i, ch in enumerate(text) if ch == '"' and _in_structure(text, i)]
    i = data.draw(st.sampled_from(opening))
    bad = text[: i + 1] + f"\\u{cp:04x}" + text[i + 1 :]
    assert _reason(bad) == INVALID


def _in_structure(text: str, pos: int) -> bool:
    """True when text[pos] is JSON syntax, not inside a string."""
    inside = False
    esc = False
    for ch in text[:pos]:
        if esc:
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == '"':
            inside = not inside
    return not inside


@given(st.binary(max_size=200))
def test_garbage_never_raises(data: bytes) -> None:
    r = decode_envelope_json(data)
    assert isinstance(r, (Envelope, Rejection))
