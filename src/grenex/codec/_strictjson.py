"""Strict JSON for signed text: one parse that refuses what SPEC §8 calls "not valid".

Beyond RFC 8259 (which the stdlib decoder already enforces, minus the constants we refuse):

* no object repeats a key, at any depth (two readers could otherwise see different commands in
  the same signed bytes);
* no unpaired surrogate, escaped (``"\\ud800"``) or raw (a raw one cannot even be UTF-8 encoded,
  which the caller does first: so any surrogate left in a decoded string came from an escape);
* no ``NaN``/``Infinity``; numbers stay exact: integers are ``int`` and every other number is
  its literal text as a :class:`~grenex.engine.JsonNumber`, exactly as
  :func:`grenex.codec.decode_command` (msgspec) gives them, so the engine sees the same values.

The stdlib's C scanner does the parsing; our Python runs once per object (the pairs hook) and,
only when the text holds a ``\\u`` escape at all, once per string to look for surrogates.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, NoReturn

from grenex.engine.decimal import JsonNumber

__all__ = ["StrictJsonError", "loads_strict"]


class StrictJsonError(ValueError):
    """Text that is not strict JSON in the sense of this module."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise StrictJsonError("an object repeats a key")
    return d


def _constant(name: str) -> NoReturn:
    raise StrictJsonError(f"{name} is not JSON")


_decoder: Final = json.JSONDecoder(
    object_pairs_hook=_pairs, parse_float=JsonNumber, parse_constant=_constant, strict=True
)
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _has_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is str:
            if _SURROGATE.search(v) is not None:
                return True
        elif t is dict:
            for k, x in v.items():
                if _SURROGATE.search(k) is not None:
                    return True
                stack.append(x)
        elif t is list:
            stack.extend(v)
    return False


def loads_strict(text: str) -> Any:
    """The JSON value of ``text`` (already known to be valid UTF-8 when it came from bytes);
    StrictJsonError when it is not strict JSON.  Never raises anything else."""
    try:
        value = _decoder.decode(text)
    except StrictJsonError:
        raise
    except (ValueError, RecursionError) as e:  # JSONDecodeError, int digits limit, nesting
        raise StrictJsonError(str(e)) from None
    if "\\u" in text and _has_surrogate(value):
        raise StrictJsonError("an unpaired surrogate")
    return value
