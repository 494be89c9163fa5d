"""The genesis file (SPEC §8): the SPEC vector's cluster id, canonical bytes from make_genesis,
defaults, and every way a genesis is invalid (each must raise GenesisError, never pass)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grenex.codec.genesis import (
    Genesis,
    GenesisError,
    GenesisVoter,
    Limits,
    cluster_id,
    make_genesis,
    parse_genesis,
    read_genesis,
)
from grenex.codec.keys import SecretKey, b64url_encode

KEY = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
K2 = SecretKey(bytes([2]) * 32).public_key
K3 = SecretKey(bytes([3]) * 32).public_key
VECTOR = (
    b'{"cluster":"main","operator":{"client":"op","key":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},'
    b'"voters":[{"id":"n1","key":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}],"join":"operator"}\n'
)
VECTOR_ID = "c481c2836cf43517b42d2e86ef27ce385bb49798ffa3b9940189f5b3edc2baa7"
IDENTITY = "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


def test_vector_cluster_id() -> None:
    assert cluster_id(VECTOR) == VECTOR_ID
    g = parse_genesis(VECTOR)
    assert g.cluster_id == VECTOR_ID
    assert g.cluster == "main"
    assert (g.operator.client, g.operator.key) == ("op", KEY)
    assert g.voters == (GenesisVoter("n1", KEY, None),)
    assert g.join == "operator" and g.register == "open"
    assert g.limits == Limits(64, 100_000, 1_000, 1_000, 1_000_000, 64)


def test_make_genesis_reproduces_vector() -> None:
    assert make_genesis("main", ("op", KEY), [("n1", KEY)]) == VECTOR


def test_cluster_id_is_of_exact_bytes() -> None:
    spaced = VECTOR.replace(b",", b", ")
    g = parse_genesis(spaced)  # still valid, but another cluster
    assert g.cluster_id != VECTOR_ID
    assert parse_genesis(VECTOR.rstrip(b"\n")).cluster_id != VECTOR_ID


def test_make_genesis_options_round_trip() -> None:
    data = make_genesis(
        "c-1",
        ("op", KEY),
        [("n1", KEY, b64url_encode(b"der")), GenesisVoter("n2", K2)],
        join="open",
        register="operator",
        limits=Limits(nonces=8, learners=3),
    )
    assert data.endswith(b"}\n") and data.count(b"\n") == 1
    obj = json.loads(data)
    assert list(obj) == ["cluster", "operator", "voters", "join", "register", "limits"]
    assert obj["limits"] == {"nonces": 8, "learners": 3}
    assert obj["voters"][0]["cert"] == b64url_encode(b"der")
    assert "cert" not in obj["voters"][1]
    g = parse_genesis(data)
    assert g.join == "open" and g.register == "operator"
    assert g.limits == Limits(nonces=8, learners=3)
    assert g.voters[0].cert == b64url_encode(b"der")
    # defaults are not written
    plain = json.loads(make_genesis("c", ("op", KEY), [("n1", KEY)], limits=Limits()))
    assert "limits" not in plain and "register" not in plain


def test_cert_check_hook() -> None:
    cert = b64url_encode(b"\x30\x01\x00")
    seen: list[tuple[bytes, str]] = []

    def ok(der: bytes, key: str) -> bool:
        seen.append((der, key))
        return True

    data = make_genesis("c", ("op", KEY), [("n1", K2, cert)])
    parse_genesis(data, ok)
    assert seen == [(b"\x30\x01\x00", K2)]
    with pytest.raises(GenesisError, match="certificate"):
        parse_genesis(data, lambda der, key: False)


def _g(**over: Any) -> bytes:
    obj: dict[str, Any] = {
        "cluster": "main",
        "operator": {"client": "op", "key": KEY},
        "voters": [{"id": "n1", "key": KEY}, {"id": "n2", "key": K2}],
    }
    for k, v in over.items():
        if v is _DROP:
            obj.pop(k, None)
        else:
            obj[k] = v
    return json.dumps(obj).encode()


_DROP = object()


def test_defaults_when_absent_or_null() -> None:
    g = parse_genesis(_g(join=None, register=None, limits=None))
    assert g.join == "operator" and g.register == "open" and g.limits == Limits()
    g = parse_genesis(_g(limits={"orders": None, "ids": 5}))
    assert g.limits.orders == 1_000 and g.limits.ids == 5


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b"null",
        b"\xff",
        b"\xef\xbb\xbf" + VECTOR,  # a BOM
        VECTOR.replace(b'"join":"operator"', b'"join":"operator","join":"open"'),
        VECTOR.replace(b'"id":"n1"', b'"id":"n1","id":"n1"'),
        VECTOR.replace(b'"main"', b'"m\\ud800"'),
        VECTOR.replace(b'"main"', b'"main\\n"'),
        _g(cluster=_DROP),
        _g(cluster=""),
        _g(cluster="a b"),
        _g(cluster="x" * 65),
        _g(cluster=7),
        _g(operator=_DROP),
        _g(operator={"client": "op"}),
        _g(operator={"client": "op", "key": IDENTITY}),
        _g(operator={"client": "op", "key": KEY + "="}),
        _g(operator={"client": "o p", "key": KEY}),
        _g(operator={"client": "op", "key": KEY, "extra": 1}),
        _g(operator=[]),
        _g(voters=[]),
        _g(voters=_DROP),
        _g(voters={"id": "n1", "key": KEY}),
        _g(voters=[{"id": "n1", "key": KEY}, {"id": "n1", "key": K2}]),  # repeated id
        _g(voters=[{"id": "n1", "key": KEY}, {"id": "n2", "key": KEY}]),  # repeated key
        _g(voters=[{"id": "n1", "key": IDENTITY}]),
        _g(voters=[{"id": "n1", "key": "7v_______________________________________38"}]),
        _g(voters=[{"id": "n 1", "key": KEY}]),
        _g(voters=[{"id": "n1", "key": KEY, "cert": ""}]),
        _g(voters=[{"id": "n1", "key": KEY, "cert": "ab="}]),
        _g(voters=[{"id": "n1", "key": KEY, "cert": 5}]),
        _g(voters=[{"id": "n1", "key": KEY, "role": "voter"}]),
        _g(voters=["n1"]),
        _g(join="maybe"),
        _g(join="Open"),
        _g(join=True),
        _g(register="closed"),
        _g(register=1),
        _g(limits={"nonce": 5}),  # unknown limit
        _g(limits={"nonces": 0}),
        _g(limits={"nonces": -1}),
        _g(limits={"nonces": 1.0}),
        _g(limits={"nonces": True}),
        _g(limits={"nonces": "64"}),
        _g(limits={"nonces": 2**53}),
        _g(limits=[]),
        _g(limts={"nonces": 5}),  # unknown top-level field
    ],
)
def test_invalid_genesis(data: bytes) -> None:
    with pytest.raises(GenesisError):
        parse_genesis(data)


def test_operator_key_may_be_a_voter_key_and_a_client_a_voter_id() -> None:
    g = parse_genesis(_g(operator={"client": "n1", "key": K2}))
    assert g.operator.client == "n1"


def test_make_genesis_refuses_invalid() -> None:
    with pytest.raises(GenesisError):
        make_genesis("main", ("op", KEY), [])
    with pytest.raises(GenesisError):
        make_genesis("main", ("op", KEY), [("n1", KEY), ("n1", K2)])
    with pytest.raises(GenesisError):
        make_genesis("main", ("op", KEY), [("n1", KEY)], join="anyone")
    with pytest.raises(GenesisError):
        make_genesis("main", ("op", IDENTITY), [("n1", KEY)])


def test_read_genesis(tmp_path: Path) -> None:
    p = tmp_path / "genesis.json"
    p.write_bytes(VECTOR)
    assert read_genesis(p).cluster_id == VECTOR_ID
    with pytest.raises(GenesisError, match="cannot read"):
        read_genesis(tmp_path / "missing.json")


_names = st.text(alphabet="abcXYZ019._:-", min_size=1, max_size=64)
_keys = st.sampled_from([KEY, K2, K3])


@given(
    st.lists(
        st.tuples(_names, _keys), min_size=1, max_size=3, unique_by=(lambda t: t[0], lambda t: t[1])
    ),
    _names,
    st.sampled_from(["open", "operator"]),
    st.sampled_from(["open", "operator"]),
    st.integers(1, 2**53 - 1),
)
def test_make_parse_round_trip(
    voters: list[tuple[str, str]], cluster: str, join: str, register: str, nonces: int
) -> None:
    data = make_genesis(cluster, ("op", KEY), voters, join, register, Limits(nonces=nonces))
    g = parse_genesis(data)
    assert isinstance(g, Genesis)
    assert [(v.id, v.key) for v in g.voters] == voters
    assert (g.cluster, g.join, g.register, g.limits.nonces) == (cluster, join, register, nonces)
    assert g.cluster_id == cluster_id(data)
    assert make_genesis(cluster, g.operator, g.voters, g.join, g.register, g.limits) == data
