"""Explicit HTTP response objects: status code, headers and body.

A function returns one with ``context.response(body, status=201,
headers={"x-a": "b"})`` or ``polyfn_runtime.Response(...)`` (the same class).
The body follows the payload rules (:mod:`polyfn_runtime.payload`). The
object is checked when the function returns it: a status that is not an
``int`` in 100-599, or headers that are not a mapping of ``str`` to ``str``,
fail the invocation like a return value that cannot be JSON-encoded.

How it travels (docs/protocols.md, "HTTP response objects"):

* call mode: the reply's ``Payload`` is the body; the gRPC initial (header)
  metadata ``polyfn-response-bin`` carries ``{"status": 201, "headers":
  {...}}`` (UTF-8 JSON);
* stream mode: ``InvocationResponse.return_value`` is ``TypedData{http:
  RpcHttp{status_code: "201", headers, body: TypedData{bytes}}}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .payload import encode_result

# Call mode: the gRPC response header metadata that carries status and headers.
RESPONSE_METADATA_KEY = "polyfn-response-bin"

MIN_STATUS = 100
MAX_STATUS = 599


class Response:
    """An HTTP response a function returns: ``body``, ``status`` (default 200) and ``headers``.

    ``body`` follows the payload rules: ``None`` is empty, ``bytes`` go out as
    they are, anything else is JSON-encoded (a ``str`` becomes a JSON string).
    Nothing is checked until the function returns the object.
    """

    __slots__ = ("body", "headers", "status")

    def __init__(self, body: Any = None, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self.body = body
        self.status = status
        self.headers = headers

    def __repr__(self) -> str:
        return f"Response(body={self.body!r}, status={self.status!r}, headers={self.headers!r})"


@dataclass(frozen=True)
class EncodedResponse:
    """A checked :class:`Response` with its body encoded."""

    status: int
    headers: dict[str, str]
    body: bytes

    def metadata(self) -> bytes:
        """The value of ``polyfn-response-bin``: ``{"status": ..., "headers": {...}}`` as UTF-8 JSON."""
        return json.dumps({"status": self.status, "headers": self.headers}, ensure_ascii=False).encode("utf-8")


def encode_response(response: Response) -> EncodedResponse:
    """Check ``response`` and encode its body.

    Raises ``TypeError`` or ``ValueError`` for a bad status or headers, and
    what :func:`~polyfn_runtime.payload.encode_result` raises for a body that
    cannot be JSON-encoded.
    """
    status = response.status
    if type(status) is not int:  # bool is an int too, and not a status
        raise TypeError(f"Response status must be an int, not {type(status).__name__}")
    if not MIN_STATUS <= status <= MAX_STATUS:
        raise ValueError(f"Response status must be {MIN_STATUS}-{MAX_STATUS}, got {status}")
    raw_headers = response.headers
    headers: dict[str, str] = {}
    if raw_headers is not None:
        if not isinstance(raw_headers, Mapping):
            raise TypeError(f"Response headers must be a mapping of str to str, not {type(raw_headers).__name__}")
        for name, value in raw_headers.items():
            if not isinstance(name, str):
                raise TypeError(f"Response header names must be str, not {type(name).__name__} ({name!r})")
            if not isinstance(value, str):
                raise TypeError(f"Response header {name!r}: the value must be str, not {type(value).__name__}")
            headers[name] = value
    return EncodedResponse(status, headers, encode_result(response.body))
