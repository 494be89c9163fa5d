"""The leader's time stamp on a log entry (SPEC §6).

The leader stamps each command entry it appends with ``max(its clock, the previous entry's
time)``, in milliseconds since the epoch; every replica applies, reports and exports that time
and never uses its own clock.  The stamp travels inside the entry's data::

    0x01 | u64 time_ms (big endian) | the command's bytes

A JSON command never starts with byte 0x01, so an entry without a stamp (written before stamps
existed, or by a test proposing raw bytes) reads as ``(None, data)``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["STAMP_TAG", "TIME_MS_MAX", "stamp", "unstamp"]

STAMP_TAG: Final = b"\x01"
TIME_MS_MAX: Final = (1 << 63) - 1
_HEAD: Final = 9


def stamp(time_ms: int, data: bytes) -> bytes:
    if not 0 <= time_ms <= TIME_MS_MAX:
        raise ValueError(f"time {time_ms} out of range")
    return STAMP_TAG + time_ms.to_bytes(8, "big") + data


def unstamp(data: bytes) -> tuple[int | None, bytes]:
    """(time_ms, command bytes); (None, data) for an entry without a stamp."""
    if len(data) >= _HEAD and data[:1] == STAMP_TAG:
        return int.from_bytes(data[1:_HEAD], "big"), data[_HEAD:]
    return None, data
