"""Pure wire formats: JSON commands and events (and, beside them, consensus messages)."""

from grenex.codec.commands import (
    NOT_JSON,
    decode_command,
    encode_event,
    encode_events,
    encode_json,
)

__all__ = ["NOT_JSON", "decode_command", "encode_event", "encode_events", "encode_json"]
