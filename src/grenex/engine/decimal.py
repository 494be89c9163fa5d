"""Exact decimals at the engine's edge (SPEC §1).

A decimal arrives as a JSON string or as a JSON number.  JSON numbers reach us as their literal
text: :class:`JsonNumber` (a ``str`` subclass made by :mod:`grenex.codec`) for anything that
is not a plain integer, and ``int`` for plain integers.  A ``JsonNumber`` is never a *name*:
only an exact ``str`` is.  ``bool`` is never a number.

Inside the engine a decimal is an integer count of ``10**-scale`` units, where ``scale`` is
the number of significant fractional digits of the market's tick (for prices) or lot (for
quantities): a number with more significant fractional digits than its step cannot be a whole
multiple of that step, so nothing is lost.
"""

from __future__ import annotations

__all__ = ["DIGITS_MAX", "JsonNumber", "format_units", "parse_decimal"]


class JsonNumber(str):
    """The literal text of a non-integer JSON number, e.g. ``100.50`` or ``1e3``."""

    __slots__ = ()


# CPython refuses int <-> str conversions beyond 4,300 digits (ValueError).  A decimal with
# more *significant* digits than this (leading zeros of the whole part and trailing zeros of
# the fraction do not count) is refused as not a usable decimal instead of raising; any valid
# price or quantity (below 2**63 steps) has far fewer.
DIGITS_MAX = 4_000
_BITS_MAX = 13_000  # a JSON integer of about DIGITS_MAX digits


def _split(value: object) -> tuple[str, str] | None:
    """(whole digits, fractional digits without trailing zeros) of a decimal, else None."""
    t = type(value)
    if t is int:
        assert isinstance(value, int)
        if value < 0 or value.bit_length() > _BITS_MAX:
            return None
        return str(value), ""
    if t is not str and t is not JsonNumber:
        return None
    assert isinstance(value, str)
    if not value.isascii():
        return None
    whole, dot, frac = value.partition(".")
    if not whole.isdigit():  # also rejects "", "+1", " 1", "-5", "1e3"
        return None
    if dot:
        if not frac.isdigit():  # "1." and "1.e3" are not decimals
            return None
        frac = frac.rstrip("0")
    if len(whole) + len(frac) > DIGITS_MAX:
        whole = whole.lstrip("0") or "0"
        if len(whole) + len(frac) > DIGITS_MAX:
            return None
    return whole, frac


def parse_decimal(value: object) -> tuple[int, int] | None:
    """``(units, scale)`` with ``value == units * 10**-scale`` and the smallest such scale."""
    parts = _split(value)
    if parts is None:
        return None
    whole, frac = parts
    return int(whole + frac), len(frac)


def format_units(units: int, scale: int) -> str:
    """Canonical decimal text of ``units * 10**-scale`` (SPEC §1: no trailing zeros)."""
    if scale == 0:
        return str(units)
    whole, frac = divmod(units, 10**scale)
    if frac == 0:
        return str(whole)
    return f"{whole}.{str(frac).rjust(scale, '0').rstrip('0')}"
