"""The ``baetyl.Function/Call`` method: find the function, run it, reply.

The reply is the request message with ``Payload`` replaced (see
:mod:`polyfn_runtime.payload`). Failures are gRPC errors with status
``UNKNOWN`` and these details:

* ``[UserCodeInvoke] <ExceptionType>: <message>`` — the handler raised;
* ``[UserCodeReturn] <ExceptionType>: <message>`` — its return value is not
  JSON-encodable, or it is a :class:`~polyfn_runtime.response.Response` with
  a bad status or headers;
* ``function not found: <name>`` — no such function in this worker.

A call the worker cannot run at all — no thread could be started for it, at
the worker's limit of processes and threads — fails with status
``UNAVAILABLE`` and a message saying so: the host reports it as the worker
failing (502) and replaces the instance.

Details longer than 2 KiB (UTF-8) are cut and end with `` [truncated]``; the
full message and the traceback are in the logs.

A function that returns a :class:`~polyfn_runtime.response.Response` gets
its body as the ``Payload`` and its status and headers in the initial
(header) metadata ``polyfn-response-bin`` (a JSON object); plain return
values send no such metadata.

There are two implementations of the method, one per server engine (see
:mod:`polyfn_runtime.server`): :class:`AsyncioCalls` for grpc.aio and
:class:`ThreadedCalls` for grpc's threaded server.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import grpc

from . import logs
from .context import Context, build_context
from .loader import LoadedFunction
from .payload import decode_event, encode_result
from .protos.baetyl.function_pb2 import FunctionMessage
from .response import RESPONSE_METADATA_KEY, Response, encode_response
from .threads import ThreadStartError, rejected, start_thread

SERVICE = "baetyl.Function"
METHOD = "Call"
MAX_DETAILS_BYTES = 2048

# What running a function gives: the error details (the call fails), else the
# polyfn-response-bin metadata to send (None for a plain return value).
_Outcome = tuple[str | None, bytes | None]


def rpc_handler(behavior: Callable[..., Any]) -> grpc.GenericRpcHandler:
    """The ``baetyl.Function`` service with ``behavior`` as its ``Call`` method."""
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            METHOD: grpc.unary_unary_rpc_method_handler(
                behavior,
                request_deserializer=FunctionMessage.FromString,
                response_serializer=FunctionMessage.SerializeToString,
            )
        },
    )


class AsyncioCalls:
    """``Call`` on a grpc.aio server.

    Coroutine handlers are awaited on the event loop; plain functions run in
    ``executor`` with a copy of the caller's context variables (so their
    output is tagged with the invocation).
    """

    def __init__(self, functions: Mapping[str, LoadedFunction], executor: ThreadPoolExecutor) -> None:
        self._functions = dict(functions)
        self._executor = executor
        self._threads: set[Future[Any]] = set()

    @property
    def running(self) -> int:
        """Plain-function handlers still running in the thread pool."""
        return sum(1 for future in list(self._threads) if not future.done())

    async def call(self, request: FunctionMessage, context: grpc.aio.ServicerContext) -> FunctionMessage:
        try:
            error, response_metadata = await self._run(request, context)
        except ThreadStartError as err:
            _no_thread(request, err)
            await context.abort(grpc.StatusCode.UNAVAILABLE, _details(str(err)))  # raises
        if error is not None:
            await context.abort(grpc.StatusCode.UNKNOWN, error)  # raises
        if response_metadata is not None:
            await context.send_initial_metadata(((RESPONSE_METADATA_KEY, response_metadata),))
        return request

    async def _run(self, request: FunctionMessage, context: grpc.aio.ServicerContext) -> _Outcome:
        """Run the function: the result goes into ``request.Payload``; see :data:`_Outcome`."""
        function = self._functions.get(request.FunctionName)
        if function is None:
            return not_found(request.FunctionName), None
        event, ctx = _prepare(function, request, context.invocation_metadata(), context.time_remaining())
        scope = logs.Scope(function.name, request.FunctionInvokeID)
        token = logs.current_scope.set(scope)
        try:
            try:
                result = await self._invoke(function, event, ctx)
            except (asyncio.CancelledError, ThreadStartError):
                raise
            except BaseException as exc:  # any failure of user code is the caller's result
                return _invoke_failed(exc, scope), None
            return _set_payload(request, result, scope)
        finally:
            logs.current_scope.reset(token)
            logs.end_scope(scope)

    async def _invoke(self, function: LoadedFunction, event: Any, ctx: Context) -> Any:
        if function.is_async:
            return await function.handler(event, ctx)
        future = self._executor.submit(contextvars.copy_context().run, function.handler, event, ctx)
        self._threads.add(future)
        future.add_done_callback(self._threads.discard)
        result = await asyncio.wrap_future(future)
        if inspect.isawaitable(result):
            # A plain callable that returned a coroutine (a partial of an async def, say).
            result = await result
        return result


class ThreadedCalls:
    """``Call`` on grpc's threaded server.

    Plain functions run in the server thread that handles the call; coroutine
    handlers run on one background event loop while that thread waits.
    """

    def __init__(self, functions: Mapping[str, LoadedFunction]) -> None:
        self._functions = dict(functions)
        self._loop = BackgroundLoop()
        self._lock = threading.Lock()
        self._running = 0

    @property
    def running(self) -> int:
        """Handlers still running."""
        return self._running

    def call(self, request: FunctionMessage, context: grpc.ServicerContext) -> FunctionMessage:
        try:
            no_thread = rejected()
            if no_thread is not None:
                raise no_thread
            error, response_metadata = self._run(request, context)
        except ThreadStartError as err:
            _no_thread(request, err)
            context.abort(grpc.StatusCode.UNAVAILABLE, _details(str(err)))  # raises
        if error is not None:
            context.abort(grpc.StatusCode.UNKNOWN, error)  # raises
        if response_metadata is not None:
            context.send_initial_metadata(((RESPONSE_METADATA_KEY, response_metadata),))
        return request

    def _run(self, request: FunctionMessage, context: grpc.ServicerContext) -> _Outcome:
        """Run the function: the result goes into ``request.Payload``; see :data:`_Outcome`."""
        function = self._functions.get(request.FunctionName)
        if function is None:
            return not_found(request.FunctionName), None
        event, ctx = _prepare(function, request, context.invocation_metadata(), context.time_remaining())
        scope = logs.Scope(function.name, request.FunctionInvokeID)
        token = logs.current_scope.set(scope)
        with self._lock:
            self._running += 1
        try:
            try:
                if function.is_async:
                    result = self._loop.run(function.handler(event, ctx), scope)
                else:
                    result = function.handler(event, ctx)
                    if inspect.isawaitable(result):
                        result = self._loop.run(result, scope)
            except ThreadStartError:
                raise
            except BaseException as exc:  # any failure of user code is the caller's result
                return _invoke_failed(exc, scope), None
            return _set_payload(request, result, scope)
        finally:
            with self._lock:
                self._running -= 1
            logs.current_scope.reset(token)
            logs.end_scope(scope)


class BackgroundLoop:
    """An event loop in a daemon thread, started on first use."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def run(self, awaitable: Awaitable[Any], scope: logs.Scope) -> Any:
        """Run ``awaitable`` on the loop, tagged with ``scope``; wait for its result."""
        loop = self._loop or self._start()
        return asyncio.run_coroutine_threadsafe(_in_scope(awaitable, scope), loop).result()

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                start_thread(loop.run_forever, "polyfn-asyncio")
                self._loop = loop
            return self._loop


async def _in_scope(awaitable: Awaitable[Any], scope: logs.Scope) -> Any:
    # The task running this has its own copy of the context: no reset needed.
    logs.current_scope.set(scope)
    return await awaitable


def _prepare(
    function: LoadedFunction,
    request: FunctionMessage,
    metadata: Iterable[tuple[str, str | bytes]] | None,
    time_remaining: float | None,
) -> tuple[Any, Context]:
    ctx = build_context(request, metadata, time_remaining=time_remaining, logger=function.logger)
    return decode_event(request.Payload), ctx


def _set_payload(request: FunctionMessage, result: Any, scope: logs.Scope) -> _Outcome:
    """Put ``result`` in the reply; the error details when it cannot be encoded.

    A :class:`Response` puts its body in the reply, and its status and headers
    in the returned metadata value.
    """
    try:
        if isinstance(result, Response):
            response = encode_response(result)
            request.Payload = response.body
            return None, response.metadata()
        request.Payload = encode_result(result)
    except Exception as exc:
        error = _error("[UserCodeReturn]", exc)
        logs.emit("error", f"cannot encode the return value: {error}", source="user", scope=scope)
        return _details(error), None
    return None, None


def _invoke_failed(exc: BaseException, scope: logs.Scope) -> str:
    logs.end_scope(scope)  # the function's partial lines come before its traceback
    logs.emit("error", logs.user_traceback(exc), source="user", scope=scope)
    return _details(_error("[UserCodeInvoke]", exc))


def _no_thread(request: FunctionMessage, error: ThreadStartError) -> None:
    logs.emit(
        "error",
        f"invocation {request.FunctionInvokeID} of {request.FunctionName}: {error}",
        source="runtime",
        scope=logs.Scope(request.FunctionName, request.FunctionInvokeID),
    )


def not_found(name: str) -> str:
    return _details(f"function not found: {name}")


def _error(kind: str, exc: BaseException) -> str:
    return f"{kind} {type(exc).__name__}: {exc}"


def _details(text: str) -> str:
    """gRPC status details, cut to a size every client accepts in a trailer."""
    data = text.encode("utf-8", "replace")
    if len(data) <= MAX_DETAILS_BYTES:
        return text
    return data[:MAX_DETAILS_BYTES].decode("utf-8", "ignore") + " [truncated]"
