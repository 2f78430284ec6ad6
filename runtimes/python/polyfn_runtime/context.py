"""The ``context`` argument a handler receives."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import Any

from . import logs
from .protos.baetyl.function_pb2 import FunctionMessage
from .response import Response

# gRPC metadata the host sends with each call: a JSON object whose keys are
# merged into the context (trigger, deadline, http, ...).
CONTEXT_METADATA_KEY = "polyfn-context-bin"

_NO_DEADLINE = 1e9  # seconds; anything longer means "none"

_log = logging.getLogger(__name__)


class Context(dict[str, Any]):
    """The invocation context: a ``dict`` with the Baetyl keys, plus accessors.

    Keys: ``messageQOS``, ``messageTopic``, ``messageTimestamp`` (unix seconds),
    ``functionName``, ``functionInvokeID``, ``invokeid`` (same as
    ``functionInvokeID``), ``trigger`` (``http``, ``mqtt``, ``timer`` or
    ``invoke``) and whatever else the host sends, such as ``deadline`` (RFC 3339),
    for timers ``scheduledTime`` (the tick, RFC 3339 to the nanosecond) and, for
    HTTP, ``http: {method, path, query, headers}``.
    """

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        *,
        deadline: float | None = None,
        wall_deadline: str | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__(data or {})
        # deadline: time.monotonic() seconds. wall_deadline: an RFC 3339 time
        # (stream mode), parsed only if remaining() is called.
        self._deadline = deadline
        self._wall_deadline = wall_deadline
        self._base_logger = logger or logging.getLogger("function")

    @property
    def function_name(self) -> str:
        return str(self["functionName"])

    @property
    def invocation_id(self) -> str:
        return str(self["functionInvokeID"])

    @property
    def trigger(self) -> str:
        return str(self.get("trigger", "invoke"))

    @property
    def http(self) -> dict[str, Any] | None:
        return self.get("http")

    @cached_property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry this invocation's function and id."""
        return logging.LoggerAdapter(
            self._base_logger,
            {logs.FUNCTION_ATTR: self.get("functionName"), logs.INVOCATION_ATTR: self.get("functionInvokeID")},
        )

    def response(self, body: Any = None, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        """An HTTP response to return: ``body`` (payload rules), ``status`` (100-599) and ``headers`` (str: str).

        Same as ``polyfn_runtime.Response(body, status, headers)``; it is
        checked when the function returns it.
        """
        return Response(body, status=status, headers=headers)

    def remaining(self) -> float | None:
        """Seconds left before the call's deadline, or ``None`` without one."""
        if self._deadline is None:
            if self._wall_deadline is None:
                return None
            at = parse_rfc3339(self._wall_deadline)
            self._wall_deadline = None
            if at is None:
                return None
            self._deadline = time.monotonic() + (at - time.time())
        return max(0.0, self._deadline - time.monotonic())


def build_context(
    request: FunctionMessage,
    metadata: Iterable[tuple[str, str | bytes]] | None,
    *,
    time_remaining: float | None,
    logger: logging.Logger,
) -> Context:
    """Call mode: the host's keys (``polyfn-context-bin``), then the message's own (which win)."""
    # grpc's threaded server reports "no deadline" as about 9.2e18 seconds.
    deadline = None
    if time_remaining is not None and time_remaining < _NO_DEADLINE:
        deadline = time.monotonic() + time_remaining
    context = Context(deadline=deadline, logger=logger)
    context["trigger"] = "invoke"
    if metadata:
        for key, value in metadata:
            if key == CONTEXT_METADATA_KEY:
                context.update(_decode_extra(value))
                break
    _set_message_keys(
        context,
        qos=request.QOS,
        topic=request.Topic,
        timestamp=request.Timestamp,
        function_name=request.FunctionName,
        invocation_id=request.FunctionInvokeID,
    )
    return context


# Stream mode: the trigger_metadata keys that carry FunctionMessage fields.
# Only messageQOS, messageTopic and messageTimestamp become context keys (as
# in call mode, where messageID is not one; functionName is the loaded
# function's name); every other key is merged like polyfn-context-bin.
_MESSAGE_FIELD_KEYS = frozenset({"messageID", "messageQOS", "messageTopic", "messageTimestamp", "functionName"})


def build_stream_context(
    metadata: Mapping[str, Any],
    *,
    function_name: str,
    invocation_id: str,
    logger: logging.Logger,
) -> Context:
    """Stream mode: the same keys as call mode, from ``InvocationRequest.trigger_metadata``.

    ``metadata`` holds the already decoded values. ``context.remaining()``
    counts down to its ``deadline`` (RFC 3339), there being no gRPC deadline
    per invocation on the stream.
    """
    deadline = metadata.get("deadline")
    context = Context(wall_deadline=deadline if isinstance(deadline, str) else None, logger=logger)
    context["trigger"] = "invoke"
    for key, value in metadata.items():
        if key not in _MESSAGE_FIELD_KEYS:
            context[key] = value
    qos = metadata.get("messageQOS", 0)
    topic = metadata.get("messageTopic", "")
    timestamp = metadata.get("messageTimestamp", 0)
    _set_message_keys(
        context,
        qos=qos if type(qos) is int else 0,
        topic=topic if type(topic) is str else "",
        timestamp=timestamp if type(timestamp) is int else 0,
        function_name=function_name,
        invocation_id=invocation_id,
    )
    return context


def _set_message_keys(
    context: Context, *, qos: int, topic: str, timestamp: int, function_name: str, invocation_id: str
) -> None:
    context["messageQOS"] = qos
    context["messageTopic"] = topic
    context["messageTimestamp"] = timestamp
    context["functionName"] = function_name
    context["functionInvokeID"] = invocation_id
    context["invokeid"] = invocation_id


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def parse_rfc3339(text: str) -> float | None:
    """Unix seconds of an RFC 3339 time (any number of fraction digits); ``None`` if it is not one."""
    match = _RFC3339.fullmatch(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        offset = timedelta(0) if zulu else timedelta(hours=int(off_h), minutes=int(off_m))
        if sign == "-":
            offset = -offset
        at = datetime(
            int(year), int(month), int(day), int(hour), int(minute), min(int(second), 59), tzinfo=timezone(offset)
        )
    except ValueError:
        return None
    return at.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)


def _decode_extra(value: str | bytes) -> dict[str, Any]:
    try:
        extra = json.loads(value)
    except (ValueError, RecursionError) as err:
        _log.warning("ignoring %s metadata: not JSON: %s", CONTEXT_METADATA_KEY, err)
        return {}
    if not isinstance(extra, dict):
        _log.warning("ignoring %s metadata: not a JSON object", CONTEXT_METADATA_KEY)
        return {}
    return extra
