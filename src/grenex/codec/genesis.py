"""The genesis file (SPEC §8): what a cluster is founded from, and its cluster id.

Theory of operation
-------------------
The **cluster id** is the lowercase hex SHA-256 of the file's *exact bytes*
(:func:`cluster_id`); every signature covers it, so a client that compares it with a node's
``status`` knows it signs for that cluster and no other.  :func:`parse_genesis` reads the bytes
as strict JSON (no repeated key at any depth, no unpaired surrogate) and validates every field;
anything else — an unknown field, an unknown value, a repeated voter id or voter key, a name or
key that is not one — raises :class:`GenesisError`, and a node refuses to start from it.

Fields: ``cluster`` (a name), ``operator`` ``{client: NAME, key: KEY}``, ``voters`` (at least
one ``{id: NAME, key: KEY, cert?: CERT}``), ``join`` (``"operator"`` default, or ``"open"``),
``register`` (``"open"`` default, or ``"operator"``), ``limits`` (each optional, see
:class:`Limits`).  Unknown fields are refused, not ignored: this file is the root of trust, and
a misspelt ``"limts"`` must not silently mean the defaults.  The operator's key may also be a
voter's key (the SPEC vector does that); two voters may not share a key or an id.

``cert`` (the node's self-signed X.509 certificate on its Ed25519 key, DER) is accepted here as
a canonical base64url string; the X.509 checks belong to ``grenex.grenache.tls`` and run through
the ``cert_check`` hook, ``(der_bytes, key) -> bool``, when the caller gives one.

:func:`make_genesis` writes the canonical form: one line of compact JSON then ``"\\n"``, fields
in the order above, ``join`` always spelled out (who may add nodes matters), ``cert`` only when
given, and ``register`` and ``limits`` (each limit) only where they differ from the defaults.
So the SPEC's test vector is exactly ``make_genesis("main", ("op", KEY), [("n1", KEY)])``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec

from grenex.codec._strictjson import StrictJsonError, loads_strict
from grenex.codec.keys import b64url_decode, parse_key
from grenex.engine import is_name

__all__ = [
    "GENESIS_BYTES_MAX",
    "JOIN_VALUES",
    "LIMIT_MAX",
    "REGISTER_VALUES",
    "CertCheck",
    "Genesis",
    "GenesisError",
    "GenesisOperator",
    "GenesisVoter",
    "Limits",
    "cluster_id",
    "make_genesis",
    "parse_genesis",
    "read_genesis",
]

GENESIS_BYTES_MAX: Final = 16 * 1024 * 1024
JOIN_VALUES: Final = ("open", "operator")
REGISTER_VALUES: Final = ("open", "operator")
LIMIT_MAX: Final = 2**53 - 1

CertCheck = Callable[[bytes, str], bool]
"""``(certificate DER, the voter's key) -> acceptable``: the X.509 checks, supplied by the
caller (``grenex.grenache.tls``)."""


class GenesisError(ValueError):
    """A genesis file that is not valid (the message says what is wrong)."""


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Bounds on replicated state (SPEC §8 "Limits"), the same on every replica."""

    nonces: int = 64  # nonces (and outcomes) kept per account
    accounts: int = 100_000
    markets: int = 1_000
    orders: int = 1_000  # resting orders per account
    ids: int = 1_000_000  # used order ids per account
    learners: int = 64


_LIMIT_FIELDS: Final = Limits.__struct_fields__
_DEFAULT_LIMITS: Final = Limits()


class GenesisOperator(msgspec.Struct, frozen=True):
    client: str
    key: str


class GenesisVoter(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    key: str
    cert: str | None = None


class Genesis(msgspec.Struct, frozen=True):
    """A valid genesis, with the cluster id of the bytes it was read from."""

    cluster: str
    operator: GenesisOperator
    voters: tuple[GenesisVoter, ...]
    join: str
    register: str
    limits: Limits
    cluster_id: str


def cluster_id(data: bytes) -> str:
    """The cluster id of genesis bytes: lowercase hex SHA-256 of exactly these bytes."""
    return hashlib.sha256(data).hexdigest()


def _fields(obj: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if type(obj) is not dict:
        raise GenesisError(f"{where} is not a JSON object")
    for k in sorted(obj):
        if k not in allowed:
            raise GenesisError(f"{where} has an unknown field {k!r}")
    return obj


def _name(obj: dict[str, Any], field: str, where: str) -> str:
    v = obj.get(field)
    if not is_name(v):
        raise GenesisError(f"{where}.{field} is not a name (1-64 of A-Z a-z 0-9 . _ : -)")
    return v


def _key(obj: dict[str, Any], field: str, where: str) -> str:
    v = obj.get(field)
    if parse_key(v) is None:
        raise GenesisError(f"{where}.{field} is not a valid Ed25519 key (canonical base64url)")
    assert type(v) is str
    return v


def _choice(obj: dict[str, Any], field: str, values: tuple[str, ...], default: str) -> str:
    v = obj.get(field)
    if v is None:
        return default
    if type(v) is not str or v not in values:
        raise GenesisError(f"{field} must be one of {', '.join(values)}")
    return v


def _limits(obj: Any) -> Limits:
    if obj is None:
        return _DEFAULT_LIMITS
    d = _fields(obj, "limits", _LIMIT_FIELDS)
    values: dict[str, int] = {}
    for f in _LIMIT_FIELDS:
        v = d.get(f)
        if v is None:
            continue
        if type(v) is not int or not 1 <= v <= LIMIT_MAX:
            raise GenesisError(f"limits.{f} must be an integer from 1 to 2^53-1")
        values[f] = v
    return Limits(**values)


def parse_genesis(data: bytes, cert_check: CertCheck | None = None) -> Genesis:
    """The :class:`Genesis` in ``data`` (a genesis file's exact bytes); GenesisError when it
    is not valid.  ``cert_check`` runs the X.509 checks on each voter's ``cert``."""
    if type(data) is not bytes:
        raise GenesisError("a genesis is bytes")
    if len(data) > GENESIS_BYTES_MAX:
        raise GenesisError("a genesis is at most 16 MiB")
    try:
        text = data.decode("utf-8")
        obj = loads_strict(text)
    except (UnicodeDecodeError, StrictJsonError) as e:
        raise GenesisError(f"not strict JSON: {e}") from None
    top = _fields(obj, "genesis", ("cluster", "join", "limits", "operator", "register", "voters"))
    cluster = _name(top, "cluster", "genesis")
    op = _fields(top.get("operator"), "operator", ("client", "key"))
    operator = GenesisOperator(_name(op, "client", "operator"), _key(op, "key", "operator"))
    raw_voters = top.get("voters")
    if type(raw_voters) is not list or not raw_voters:
        raise GenesisError("voters is not a non-empty list")
    voters: list[GenesisVoter] = []
    ids: dict[str, int] = {}
    keys: dict[str, int] = {}
    for i, rv in enumerate(raw_voters):
        where = f"voters[{i}]"
        v = _fields(rv, where, ("cert", "id", "key"))
        vid = _name(v, "id", where)
        vkey = _key(v, "key", where)
        if vid in ids:
            raise GenesisError(f"{where}.id repeats voters[{ids[vid]}].id")
        if vkey in keys:
            raise GenesisError(f"{where}.key repeats voters[{keys[vkey]}].key")
        ids[vid] = keys[vkey] = i
        cert = v.get("cert")
        if cert is not None:
            der = b64url_decode(cert)
            if not der:
                raise GenesisError(f"{where}.cert is not canonical base64url")
            if cert_check is not None and not cert_check(der, vkey):
                raise GenesisError(f"{where}.cert is not a valid certificate on {where}.key")
            assert type(cert) is str
        voters.append(GenesisVoter(vid, vkey, cert))
    return Genesis(
        cluster=cluster,
        operator=operator,
        voters=tuple(voters),
        join=_choice(top, "join", JOIN_VALUES, "operator"),
        register=_choice(top, "register", REGISTER_VALUES, "open"),
        limits=_limits(top.get("limits")),
        cluster_id=cluster_id(data),
    )


def read_genesis(path: str | os.PathLike[str], cert_check: CertCheck | None = None) -> Genesis:
    """:func:`parse_genesis` of the file at ``path``; GenesisError when unreadable too."""
    try:
        with open(path, "rb") as f:
            data = f.read(GENESIS_BYTES_MAX + 1)
    except OSError as e:
        raise GenesisError(f"cannot read genesis {os.fspath(path)!r}: {e.strerror}") from None
    return parse_genesis(data, cert_check)


_enc: Final = msgspec.json.Encoder()


def make_genesis(
    cluster: str,
    operator: tuple[str, str] | GenesisOperator,
    voters: Sequence[tuple[str, str] | tuple[str, str, str | None] | GenesisVoter],
    join: str = "operator",
    register: str = "open",
    limits: Limits | None = None,
    cert_check: CertCheck | None = None,
) -> bytes:
    """Canonical genesis bytes (see the module docstring); GenesisError when not valid.
    ``operator`` is ``(client, key)``; each voter ``(id, key)`` or ``(id, key, cert)``."""
    op = operator if isinstance(operator, GenesisOperator) else GenesisOperator(*operator)
    out: dict[str, Any] = {"cluster": cluster, "operator": {"client": op.client, "key": op.key}}
    vs: list[dict[str, Any]] = []
    for v in voters:
        gv = v if isinstance(v, GenesisVoter) else GenesisVoter(*v)
        d: dict[str, Any] = {"id": gv.id, "key": gv.key}
        if gv.cert is not None:
            d["cert"] = gv.cert
        vs.append(d)
    out["voters"] = vs
    out["join"] = join
    if register != "open":
        out["register"] = register
    if limits is not None:
        lim = {f: getattr(limits, f) for f in _LIMIT_FIELDS}
        diff = {f: n for f, n in lim.items() if n != getattr(_DEFAULT_LIMITS, f)}
        if diff:
            out["limits"] = diff
    data = _enc.encode(out) + b"\n"
    parse_genesis(data, cert_check)  # the same rules as reading it
    return data
