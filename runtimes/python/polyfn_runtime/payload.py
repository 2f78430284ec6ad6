"""Payload conversion, with the Baetyl Python runtime's semantics.

Incoming: the JSON-decoded payload when it parses, else the raw bytes; an empty
payload is ``{}``. Outgoing: ``None`` is an empty payload, bytes go out as they
are, anything else is JSON-encoded (so a ``str`` becomes a JSON string).
"""

from __future__ import annotations

import json
from typing import Any


def decode_event(payload: bytes) -> Any:
    """Turn a request payload into the handler's ``event``."""
    if not payload:
        return {}
    try:
        return json.loads(payload)
    except (ValueError, RecursionError):
        return payload


def encode_result(value: Any) -> bytes:
    """Turn a handler's return value into the reply payload.

    Raises ``TypeError``, ``ValueError`` or ``RecursionError`` when the value
    cannot be JSON-encoded.
    """
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return json.dumps(value).encode("utf-8")
