"""Signed envelopes (SPEC §8): ``{"cmd": STRING, "sig": SIG}``, decoded and form-checked.

Theory of operation
-------------------
:func:`decode_envelope` runs §8 checks 1 and 2 — everything that needs neither the replicated
state nor the entry's time — and returns either an :class:`Envelope` or a :class:`Rejection`
carrying the reason code (``invalid_command`` or ``invalid_nonce``).  It never raises.

* TEXT, the decoded value of ``cmd``, is at most 65,536 UTF-8 bytes of *strict* JSON (no
  repeated key at any depth, no unpaired surrogate escaped or raw, no NaN; see
  ``_strictjson``), parsed exactly once.  Numbers stay exact (``int`` or
  :class:`~grenex.engine.JsonNumber`, as :func:`grenex.codec.decode_command` gives them).
* TEXT is one command object (a JSON object; its ``client`` and ``nonce`` are the envelope's)
  or a batch ``{"client", "nonce", "batch": [1..256 objects]}`` whose items carry neither
  ``client`` nor ``nonce`` (JSON null counts as absent) and are none of the commands that are
  never batched (:data:`UNBATCHABLE`).  An object is a batch when its ``batch`` field is present
  and not null.  Unknown extra fields are ignored, as everywhere in §2.
* ``client`` must be a name (else ``invalid_command``); ``nonce`` a JSON integer literal in
  ``[1-9][0-9]{0,15}`` of value ≤ 2^53 − 1 (else ``invalid_nonce``).  For a decoded integer this
  is exactly ``1 <= nonce <= 2**53 - 1`` (JSON forbids leading zeros; a fraction or exponent
  decodes to a JsonNumber; ``-0`` decodes to 0).  The rule "not more than one day ahead of the
  entry's time" needs the entry's time: :func:`nonce_in_time`, run by the state machine.

The :class:`Envelope` holds what the later checks need: ``client``, ``nonce``, the TEXT bytes
(what was signed, after the ``grenex/1`` prefix and the cluster id) and their SHA-256 (the
nonce window's identity of the envelope), ``sig`` as received (its spelling is checked with the
signature: a malformed SIG is ``bad_signature``, check 3), and ``commands``: the command dicts
ready for the engine, each with ``client`` set (batch items get the batch's client).

The new §8 commands' events are defined here too (:class:`Registered` and the rest), tagged like
the engine's events so they encode the same way.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import msgspec

from grenex.codec._strictjson import StrictJsonError, loads_strict
from grenex.codec.keys import SecretKey
from grenex.engine import is_name

__all__ = [
    "ACCOUNT_TYPES",
    "BATCH_MAX",
    "NONCE_AHEAD_US",
    "NONCE_MAX",
    "TEXT_BYTES_MAX",
    "UNBATCHABLE",
    "Envelope",
    "KeyRotated",
    "MemberAdded",
    "MemberPromoted",
    "MemberRemoved",
    "Registered",
    "Rejection",
    "decode_envelope",
    "decode_envelope_json",
    "decode_text",
    "encode_envelope",
    "nonce_in_time",
    "sign_envelope",
]

TEXT_BYTES_MAX: Final = 65_536
BATCH_MAX: Final = 256
NONCE_MAX: Final = 2**53 - 1
NONCE_AHEAD_US: Final = 86_400_000_000  # one day, in microseconds
# the commands that are never batched (sorted; a tuple, never a set of strings to iterate)
UNBATCHABLE: Final = ("admit", "join", "promote", "register", "remove", "rotate_key")
# the §8 commands the state machine (replica.auth) executes itself; never sent to the engine
ACCOUNT_TYPES: Final = UNBATCHABLE


class Rejection(msgspec.Struct, frozen=True, gc=False):
    """A failed check: ``reason`` is a SPEC reason code.  ``client`` when TEXT names one (a
    name), ``cmd`` the type of a single command when it is a string (for the rejected event)."""

    reason: str
    client: str | None = None
    cmd: str | None = None


class Envelope(msgspec.Struct, frozen=True):
    """An envelope that passed §8 checks 1–2 (see the module docstring)."""

    client: str
    nonce: int
    text: bytes  # TEXT as UTF-8: what the signature covers after the prefix and cluster id
    digest: bytes  # sha256(text), 32 bytes
    sig: str  # as received; checked at §8 check 3
    commands: list[dict[str, Any]]  # one per command, each with "client" set
    batch: bool

    @property
    def type(self) -> str | None:
        """The single command's ``type`` when it is a string; None for a batch."""
        if self.batch:
            return None
        t = self.commands[0].get("type")
        return t if type(t) is str else None


# -- the §8 commands' events ---------------------------------------------------------------------


class Registered(msgspec.Struct, tag="registered", tag_field="type", gc=False):
    seq: int
    client: str
    key: str


class KeyRotated(msgspec.Struct, tag="key_rotated", tag_field="type", gc=False):
    seq: int
    client: str
    key: str


class MemberAdded(msgspec.Struct, tag="member_added", tag_field="type", gc=False):
    seq: int
    node: str
    key: str
    role: str


class MemberPromoted(msgspec.Struct, tag="member_promoted", tag_field="type", gc=False):
    seq: int
    node: str


class MemberRemoved(msgspec.Struct, tag="member_removed", tag_field="type", gc=False):
    seq: int
    node: str


# -- decoding ------------------------------------------------------------------------------------

_INVALID: Final = Rejection("invalid_command")
_TOO_LONG_CHARS: Final = TEXT_BYTES_MAX  # a str longer than this has more bytes than allowed


def _absent(d: dict[str, Any], field: str) -> bool:
    return d.get(field) is None


def decode_text(text: str, sig: str) -> Envelope | Rejection:
    """§8 checks 1–2 on TEXT (the decoded ``cmd`` string) with its SIG string."""
    if type(text) is not str or type(sig) is not str or len(text) > _TOO_LONG_CHARS:
        return _INVALID
    try:
        raw = text.encode("utf-8")  # fails on a raw unpaired surrogate
    except UnicodeEncodeError:
        return _INVALID
    if len(raw) > TEXT_BYTES_MAX:
        return _INVALID
    try:
        obj = loads_strict(text)
    except StrictJsonError:
        return _INVALID
    if type(obj) is not dict:
        return _INVALID
    client = obj.get("client")
    name = client if is_name(client) else None
    items = obj.get("batch")
    if items is None:
        t = obj.get("type")
        fail = Rejection("invalid_command", name, t if type(t) is str else None)
        if name is None:
            return fail
        commands = [obj]
        batch = False
    else:
        fail = Rejection("invalid_command", name)
        if type(items) is not list or not 1 <= len(items) <= BATCH_MAX:
            return fail
        for item in items:
            if (
                type(item) is not dict
                or not _absent(item, "client")
                or not _absent(item, "nonce")
                or item.get("type") in UNBATCHABLE
            ):
                return fail
        if name is None:
            return fail
        for item in items:
            item["client"] = name
        commands = items
        batch = True
    nonce = obj.get("nonce")
    if type(nonce) is not int or not 1 <= nonce <= NONCE_MAX:
        return Rejection("invalid_nonce", name, None if batch else fail.cmd)
    return Envelope(name, nonce, raw, hashlib.sha256(raw).digest(), sig, commands, batch)


def decode_envelope(value: object) -> Envelope | Rejection:
    """§8 checks 1–2 on an envelope already decoded from JSON (e.g. a request's ``args[0]``):
    a dict with the strings ``cmd`` and ``sig`` (other fields are ignored)."""
    if type(value) is not dict:
        return _INVALID
    text = value.get("cmd")
    sig = value.get("sig")
    if type(text) is not str or type(sig) is not str:
        return _INVALID
    return decode_text(text, sig)


class _Wire(msgspec.Struct, gc=False):
    cmd: str
    sig: str


_wire_dec: Final = msgspec.json.Decoder(_Wire)


def decode_envelope_json(data: bytes | str) -> Envelope | Rejection:
    """§8 checks 1–2 on an envelope's JSON (e.g. a log entry's bytes, as
    :func:`encode_envelope` writes them).  The outer object is read by msgspec (fast; it
    refuses invalid UTF-8 and unpaired surrogates; other fields are ignored, and a repeated
    ``cmd`` or ``sig`` takes its last value — harmless, since the signature covers TEXT);
    TEXT itself is held to the strict rules."""
    if type(data) is not bytes and type(data) is not str:
        return _INVALID
    try:
        w = _wire_dec.decode(data)
    except (msgspec.DecodeError, ValueError):
        return _INVALID
    return decode_text(w.cmd, w.sig)


def nonce_in_time(nonce: int, time_ms: int) -> bool:
    """SPEC §8: a nonce is not more than one day ahead of the entry's time (× 1,000, in µs)."""
    return nonce <= time_ms * 1000 + NONCE_AHEAD_US


_enc: Final = msgspec.json.Encoder()


def encode_envelope(text: str | bytes, sig: str) -> bytes:
    """The canonical envelope JSON ``{"cmd":TEXT,"sig":SIG}`` (TEXT as bytes must be UTF-8)."""
    t = text.decode("utf-8") if type(text) is bytes else text
    return _enc.encode({"cmd": t, "sig": sig})


def sign_envelope(key: SecretKey, cluster_id: str, text: str | bytes) -> bytes:
    """TEXT signed by ``key`` for ``cluster_id``, as envelope JSON."""
    raw = text.encode("utf-8") if type(text) is str else text
    assert type(raw) is bytes
    return encode_envelope(raw, key.sign(cluster_id, raw))
