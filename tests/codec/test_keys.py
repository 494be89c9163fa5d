"""Keys, signatures and key files (SPEC §8): the SPEC's test vector and its must-reject vectors,
canonical base64url spellings (one spelling per value), and key files (0600, never overwritten).

Every rejection is checked through the public functions the replica uses (``parse_key``,
``verify_raw``, ``verify_text``), so a change to libsodium's rules or to our wrappers shows here.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grenex.codec.keys import (
    KEY_CHARS,
    SIGNATURE_CHARS,
    KeyFileError,
    SecretKey,
    b64url_decode,
    b64url_encode,
    is_valid_key,
    parse_key,
    parse_key_file,
    parse_seed,
    parse_signature,
    read_key_file,
    sign_text,
    signing_message,
    verify_raw,
    verify_text,
    write_key_file,
)

SEED = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
KEY = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
CLUSTER_ID = "c481c2836cf43517b42d2e86ef27ce385bb49798ffa3b9940189f5b3edc2baa7"
TEXT = b'{"type":"cancel","client":"op","id":"o1","nonce":1}'
SIG = "cVVf34L4Um7rhob_nBV9_RGB0spyJ4KQ9ZwslWhjBkaI2G3u0bC2rjWUhNGHcNsQWglJ8yN9AoLDPL9CS-63Bg"
IDENTITY = "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
IDENTITY_NONCANONICAL = "7v_______________________________________38"
BASE_POINT = bytes.fromhex("58" + "66" * 31)
L = 2**252 + 27742317777372353535851937790883648493


def test_vector_key_and_signature() -> None:
    k = SecretKey.from_text(SEED)
    assert k.public_key == KEY
    assert k.sign(CLUSTER_ID, TEXT) == SIG  # Ed25519 is deterministic
    assert sign_text(k, CLUSTER_ID, TEXT) == SIG
    assert verify_text(KEY, CLUSTER_ID, TEXT, SIG)
    assert len(KEY) == KEY_CHARS and len(SIG) == SIGNATURE_CHARS


def test_vector_signature_binds_cluster_and_text() -> None:
    assert not verify_text(KEY, "0" * 64, TEXT, SIG)
    assert not verify_text(KEY, CLUSTER_ID, TEXT + b" ", SIG)
    assert not verify_text(KEY, CLUSTER_ID, TEXT.replace(b"o1", b"o2"), SIG)
    other = SecretKey(bytes(32)).public_key
    assert not verify_text(other, CLUSTER_ID, TEXT, SIG)


def test_signing_message_layout() -> None:
    assert signing_message(CLUSTER_ID, TEXT) == (b"grenex/1\n" + CLUSTER_ID.encode() + b"\n" + TEXT)


@pytest.mark.parametrize("key", [IDENTITY, IDENTITY_NONCANONICAL])
def test_must_reject_identity_keys(key: str) -> None:
    raw = b64url_decode(key, 32)
    assert raw is not None  # both are well-formed base64url spellings
    sig = BASE_POINT + (1).to_bytes(32, "little")  # R = base point, S = 1
    for message in (b"", b"any message", signing_message(CLUSTER_ID, TEXT)):
        assert not verify_raw(raw, message, sig)
    assert not is_valid_key(key)
    assert parse_key(key) is None
    assert not verify_text(key, CLUSTER_ID, TEXT, b64url_encode(sig))


def test_must_reject_s_plus_l() -> None:
    raw = parse_signature(SIG)
    assert raw is not None
    s = int.from_bytes(raw[32:], "little")
    assert s < L
    bad = raw[:32] + (s + L).to_bytes(32, "little")
    key = parse_key(KEY)
    assert key is not None
    msg = signing_message(CLUSTER_ID, TEXT)
    assert verify_raw(key, msg, raw)
    assert not verify_raw(key, msg, bad)
    assert not verify_text(KEY, CLUSTER_ID, TEXT, b64url_encode(bad))


@pytest.mark.parametrize(
    "text",
    [
        KEY + "=",  # padding
        KEY[:-1],  # short
        KEY + "A",  # long
        KEY.replace("_", "/"),  # standard alphabet
        KEY.replace("-", "+") if "-" in KEY else KEY[:-1] + "+",
        " " + KEY[1:],
        KEY[:-1] + "\n",
        KEY + "\n",
        KEY[:-1] + "p",  # 'o' -> 'p' sets a low bit of the last character: non-canonical
        "",
        KEY.encode(),
        None,
        42,
    ],
)
def test_malformed_key_spellings(text: object) -> None:
    assert parse_key(text) is None
    assert not is_valid_key(text)


def test_noncanonical_trailing_bits() -> None:
    # 43 characters carry 258 bits: the last character's two low bits must be zero
    assert parse_key(KEY) is not None
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    i = last.index(KEY[-1])
    for j in range(1, 4):
        assert parse_key(KEY[:-1] + last[i | j]) is None


def test_non_point_and_small_order_keys() -> None:
    assert parse_key(b64url_encode(bytes(32))) is None  # y = 0: a point of small order
    assert parse_key(b64url_encode(b"\xff" * 32)) is None  # not canonical


@given(st.binary(min_size=0, max_size=80))
def test_b64url_round_trip(data: bytes) -> None:
    text = b64url_encode(data)
    assert "=" not in text
    assert b64url_decode(text) == data
    assert b64url_decode(text, len(data)) == data
    assert b64url_decode(text, len(data) + 1) is None


@given(st.text(alphabet="ABCxyz019-_=+/ \n", max_size=90))
def test_b64url_decode_is_canonical(text: str) -> None:
    raw = b64url_decode(text)
    if raw is not None:
        assert b64url_encode(raw) == text


@given(st.binary(min_size=32, max_size=32), st.binary(max_size=200))
def test_sign_verify_round_trip(seed: bytes, text: bytes) -> None:
    k = SecretKey(seed)
    assert parse_key(k.public_key) == k.public_bytes
    sig = k.sign(CLUSTER_ID, text)
    assert verify_text(k.public_key, CLUSTER_ID, text, sig)
    raw = parse_signature(sig)
    assert raw is not None
    flipped = raw[:10] + bytes([raw[10] ^ 1]) + raw[11:]
    assert not verify_raw(k.public_bytes, signing_message(CLUSTER_ID, text), flipped)


def test_verify_raw_wrong_lengths() -> None:
    key = parse_key(KEY)
    raw = parse_signature(SIG)
    assert key is not None and raw is not None
    msg = signing_message(CLUSTER_ID, TEXT)
    assert not verify_raw(key[:31], msg, raw)
    assert not verify_raw(key, msg, raw[:63])
    assert not verify_raw(key, msg, raw + b"\0")


def test_secret_key_repr_hides_seed() -> None:
    k = SecretKey.from_text(SEED)
    assert SEED not in repr(k) and KEY in repr(k)
    with pytest.raises(ValueError):
        SecretKey(b"short")
    with pytest.raises(ValueError):
        SecretKey.from_text(SEED + "=")
    assert len(SecretKey.generate().public_key) == KEY_CHARS


# -- key files ----------------------------------------------------------------------------------


def test_key_file_formats() -> None:
    assert parse_key_file(SEED.encode()).public_key == KEY
    assert parse_key_file(SEED.encode() + b"\n").public_key == KEY
    for bad in (
        SEED.encode() + b"\n\n",
        SEED.encode() + b"\r\n",
        b" " + SEED.encode(),
        SEED.encode() + b" ",
        SEED.encode() + b"=",
        SEED.encode()[:-1],
        b"",
        b"\n",
        "é".encode() * 20,
        SEED.encode()[:-1] + b"B",  # non-canonical last character
    ):
        with pytest.raises(KeyFileError):
            parse_key_file(bad)
    assert parse_seed(SEED) is not None


def test_write_and_read_key_file(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    k = SecretKey.from_text(SEED)
    old = os.umask(0)
    try:
        write_key_file(path, k)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == SEED.encode() + b"\n"
    assert read_key_file(path).public_key == KEY
    with pytest.raises(KeyFileError, match="exists"):
        write_key_file(path, SecretKey.generate())
    assert read_key_file(path).public_key == KEY  # untouched


def test_write_refuses_symlink_and_missing_dir(tmp_path: Path) -> None:
    target = tmp_path / "target"
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(KeyFileError):
        write_key_file(link, SecretKey.generate())
    assert not target.exists()
    with pytest.raises(KeyFileError):
        write_key_file(tmp_path / "nope" / "k.key", SecretKey.generate())


def test_read_key_file_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        read_key_file(tmp_path / "missing")
    p = tmp_path / "long"
    p.write_bytes(SEED.encode() + b"\n" + b"A" * 100)
    with pytest.raises(KeyFileError):
        read_key_file(p)
