"""Time stamps as people read them: the leader's milliseconds since the epoch (SPEC §6) in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["iso_ms", "time_of_day_ms"]


def iso_ms(ms: int | None) -> str:
    """ISO-8601 UTC with milliseconds (``2026-12-05T05:12:43.123Z``); ``-`` when unknown."""
    if ms is None:
        return "-"
    whole = datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{whole}.{ms % 1000:03d}Z"


def time_of_day_ms(ms: int | None) -> str:
    """``05:12:43.123`` (UTC), for narrow columns; ``-`` when unknown."""
    return "-" if ms is None else iso_ms(ms)[11:23]
