"""The ``context`` argument a handler receives."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import Any

from . import logs
from .protos.baetyl.function_pb2 import FunctionMessage

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
    ``invoke``) and whatever else the host sends, such as ``deadline`` (RFC 3339)
    and, for HTTP, ``http: {method, path, query, headers}``.
    """

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        *,
        deadline: float | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__(data or {})
        self._deadline = deadline
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

    def remaining(self) -> float | None:
        """Seconds left before the call's deadline, or ``None`` without one."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())


def build_context(
    request: FunctionMessage,
    metadata: Iterable[tuple[str, str | bytes]] | None,
    *,
    time_remaining: float | None,
    logger: logging.Logger,
) -> Context:
    """The context for one call: the host's keys, then the message's own (which win)."""
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
    invocation_id = request.FunctionInvokeID
    context["messageQOS"] = request.QOS
    context["messageTopic"] = request.Topic
    context["messageTimestamp"] = request.Timestamp
    context["functionName"] = request.FunctionName
    context["functionInvokeID"] = invocation_id
    context["invokeid"] = invocation_id
    return context


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
