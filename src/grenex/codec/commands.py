"""JSON in, JSON out, exactly.

Commands are decoded with msgspec into plain Python values, except that a JSON number that is
not a plain integer is kept as its literal text (:class:`~grenex.engine.JsonNumber`), so that a
decimal such as ``100.50`` is never read through a float.  A line that is not strict JSON or not
UTF-8 decodes to :data:`NOT_JSON`, which the engine rejects as ``invalid_command``.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from grenex.engine.decimal import JsonNumber
from grenex.engine.events import Event

__all__ = ["NOT_JSON", "decode_command", "encode_event", "encode_events", "encode_json"]


class _NotJson:
    """The decoded value of a line that is not JSON (or not UTF-8)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_JSON"


NOT_JSON: Final = _NotJson()


def _enc_hook(value: Any) -> Any:
    # A JsonNumber is the literal text of a JSON number we decoded: write it back verbatim,
    # so a re-encoded command keeps its numbers exact and numbers stay numbers.
    if type(value) is JsonNumber:
        return msgspec.Raw(value.encode())
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


_decoder: Final = msgspec.json.Decoder(float_hook=JsonNumber)
_encoder: Final = msgspec.json.Encoder(enc_hook=_enc_hook)


def decode_command(data: bytes | str) -> Any:
    """The JSON value in ``data``, or :data:`NOT_JSON`. Never raises."""
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, ValueError):  # ValueError covers UnicodeDecodeError
        return NOT_JSON


def encode_event(event: Event) -> bytes:
    """One event as compact JSON (``type`` first, SPEC field order)."""
    return _encoder.encode(event)


def encode_events(events: list[Event]) -> bytes:
    """A list of events as one compact JSON array (each as :func:`encode_event` writes it)."""
    return _encoder.encode(events)


def encode_json(value: Any) -> bytes:
    """Any JSON-able value (dicts, lists, events) as compact JSON."""
    return _encoder.encode(value)
