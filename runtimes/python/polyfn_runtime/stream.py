"""Stream mode: the worker side of the Azure Functions language-worker protocol.

The host is the gRPC server. The worker dials ``--host:--port`` (or
``--functions-uri``) and opens one bidirectional
``AzureFunctionsRpcMessages.FunctionRpc/EventStream``; its first message is
``StartStream{worker_id}``. Everything else travels on that stream:

* ``WorkerInitRequest`` → ``WorkerInitResponse`` (capabilities
  ``HandlesInvocationCancelMessage``, ``HandlesWorkerTerminateMessage``,
  ``polyfn``);
* ``FunctionLoadRequest`` (and ``…Collection``) → the handler named by
  ``metadata.entry_point`` is loaded from ``metadata.directory`` with the same
  loader as call mode and kept under ``function_id``; a failure is reported in
  the response and the worker keeps running;
* ``InvocationRequest`` → the same ``event`` and ``context`` as call mode
  (``input_data`` ``event`` is the payload, ``trigger_metadata`` the context
  keys) → ``InvocationResponse``; a returned
  :class:`~polyfn_runtime.response.Response` is ``return_value.http``
  (``status_code``, ``headers``, ``body.bytes``);
* an invocation the worker cannot run at all — no thread could be started
  for it, at the worker's limit of processes and threads — is answered at
  once with ``result: {status: Failure, exception: {type:
  "WorkerUnavailable", message, is_user_exception: false}}``: the host
  reports it as the worker failing (502) and replaces the instance;
* ``InvocationCancel`` cancels the task of a coroutine handler (reply
  ``Cancelled``); a plain function cannot be interrupted and replies when it
  returns;
* ``WorkerTerminate{grace_period}`` (or SIGTERM/SIGINT, with a 30 s grace):
  no new invocations, those in flight get up to the grace period, then the
  worker closes the stream and exits 0;
* ``FunctionEnvironmentReloadRequest``, ``WorkerStatusRequest``,
  ``FunctionsMetadataRequest``, ``WorkerWarmupRequest`` are answered; other
  messages are ignored.

Every response echoes the ``request_id`` of the message it answers.

Concurrency: the stream is read by one task and written by one task that
drains a queue, so nothing writes concurrently. Coroutine handlers run as
tasks on the event loop; plain functions in a thread pool
(:class:`~polyfn_runtime.threads.LoopThreads`, whose results come back to the
loop in batches), each call in a copy of the reader's context variables so
its output is tagged, and a slow handler never blocks reading. A plain function loaded with the property
``polyfn.concurrency: "1"`` (the host sends at most one invocation at a time
to the instance) runs instead on the event loop's thread, in the reader's
turn, in a copy of its context variables: no thread hop, and nothing else
for the worker to do meanwhile, since the host sends the next invocation
only after the answer. Setting ``POLYFN_PLAIN_INLINE=0`` in the function's
environment keeps it in the thread pool.

Logs: once the host has answered (its first message), every log record goes
to the host as ``RpcLog`` (see :class:`RpcLogSink`); before that and after the
stream closes, they are JSON lines on stderr as in call mode.

If the stream breaks (the host went away), the worker exits with status 1.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import logging
import os
import platform
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import grpc

from . import __version__, logs, loops
from .config import DEFAULT_GRACE, DEFAULT_WORKERS, FunctionConfig, StreamOptions, valid_handler
from .context import Context, build_stream_context
from .loader import HandlerLoader, HandlerLoadError, LoadedFunction
from .payload import decode_event, encode_result
from .protos.azure import FunctionRpc_pb2 as rpc
from .protos.azure.FunctionRpc_pb2 import StreamingMessage
from .response import Response, encode_response
from .server import EXIT_FAILED, EXIT_OK, STOP_SIGNALS, StopSignal
from .threads import HandlerExecutor, LoopThreads, Mailbox, ThreadStartError

METHOD = "/AzureFunctionsRpcMessages.FunctionRpc/EventStream"
CAPABILITIES = {
    "HandlesInvocationCancelMessage": "true",
    "HandlesWorkerTerminateMessage": "true",
    "polyfn": "1",
}
EVENT_BINDING = "event"
# The FunctionLoadRequest metadata property naming the function's built dependencies.
DEPENDENCIES_PROPERTY = "polyfn.dependencies"
# The FunctionLoadRequest metadata property carrying the instance's concurrency: how many
# invocations the host sends to this worker at once, over all its functions.
CONCURRENCY_PROPERTY = "polyfn.concurrency"
# Set to "0" in a function's environment: its plain handler runs in the thread pool even at
# concurrency 1 (for a handler that needs a thread of its own, e.g. one that calls asyncio.run).
INLINE_ENV = "POLYFN_PLAIN_INLINE"
# RpcLog.category of the runtime's own messages that name no function.
RUNTIME_CATEGORY = "polyfn_runtime"
# After closing its side of the stream, how long to wait for the host to close its own.
CLOSE_TIMEOUT = 2.0
# RpcException.type of an invocation the worker could not run at all (no thread for it).
WORKER_UNAVAILABLE = "WorkerUnavailable"

SUCCESS = rpc.StatusResult.Success
FAILURE = rpc.StatusResult.Failure
CANCELLED = rpc.StatusResult.Cancelled

_LEVELS: dict[logs.Level, int] = {
    "debug": rpc.RpcLog.Debug,
    "info": rpc.RpcLog.Information,
    "warning": rpc.RpcLog.Warning,
    "error": rpc.RpcLog.Error,
}
_LEVEL_NAMES: dict[int, logs.Level] = {value: key for key, value in _LEVELS.items()}

log = logging.getLogger(__name__)


def run(options: StreamOptions, *, workers: int = DEFAULT_WORKERS, grace: float = DEFAULT_GRACE) -> int:
    """Run stream mode; return the exit status."""
    logs.install()
    log.info(
        "polyfn python runtime %s starting in stream mode: host %s, worker %s (python %s, %s loop)",
        __version__,
        options.target,
        options.worker_id,
        platform.python_version(),
        loops.name(),
    )
    try:
        return loops.run(StreamWorker(options, workers=workers, grace=grace).run())
    finally:
        logs.flush_all()


class _Invocation:
    """One invocation between its request and its response."""

    __slots__ = ("cancelled", "finished", "function", "id", "request_id", "task")

    def __init__(self, invocation_id: str, function: LoadedFunction, request_id: str) -> None:
        self.id = invocation_id
        self.function = function
        self.request_id = request_id
        # The task awaiting the handler's coroutine; None while a plain function runs in a thread.
        self.task: asyncio.Task[None] | None = None
        self.cancelled = False
        self.finished = False


class StreamWorker:
    """One connection to the host: reads, dispatches and answers its messages."""

    def __init__(self, options: StreamOptions, *, workers: int = DEFAULT_WORKERS, grace: float = DEFAULT_GRACE) -> None:
        self._options = options
        self._grace = grace
        self._workers = workers
        self._functions: dict[str, LoadedFunction] = {}
        # Ids of the plain functions run on the event loop's thread (concurrency 1).
        self._inline: set[str] = set()
        self._loading: dict[str, asyncio.Future[Any]] = {}
        self._loader = HandlerLoader()
        self._inflight: dict[str, _Invocation] = {}
        self._running = 0  # invocations started and not answered yet
        self._stopping = False
        self._closing = False  # our side of the stream is closed or closing
        self._broken_reason: str | None = None
        self._handlers: dict[str, Callable[[StreamingMessage], None]] = {
            "invocation_request": self._on_invocation,
            "invocation_cancel": self._on_cancel,
            "worker_init_request": self._on_init,
            "functions_metadata_request": self._on_functions_metadata,
            "function_load_request": self._on_load,
            "function_load_request_collection": self._on_load_collection,
            "worker_terminate": self._on_terminate,
            "worker_status_request": self._on_status,
            "function_environment_reload_request": self._on_environment_reload,
            "worker_warmup_request": self._on_warmup,
        }

    # -- the connection ----------------------------------------------------

    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[StreamingMessage | None] = asyncio.Queue()
        self._send = self._queue.put_nowait
        self._stop_requested = asyncio.Event()
        self._stop_grace = self._grace
        self._broken = asyncio.Event()
        self._idle = asyncio.Event()
        # Plain functions' results and handler threads' log records come back to the loop through it.
        self._mailbox = Mailbox(self._loop)
        self._handler_threads = LoopThreads(self._workers, "polyfn-handler", self._mailbox)
        # Imports run one at a time, off the event loop: invocations of loaded functions keep flowing.
        self._load_executor = HandlerExecutor(1, "polyfn-loader")
        on_signal = StopSignal(lambda: self._request_stop(self._grace))
        for signum in STOP_SIGNALS:
            self._loop.add_signal_handler(signum, on_signal, signum)

        length = self._options.max_message_length
        channel = grpc.aio.insecure_channel(
            self._options.target,
            options=(
                ("grpc.max_send_message_length", length),
                ("grpc.max_receive_message_length", length),
                # The host is local: never go through an HTTP proxy from the environment.
                ("grpc.enable_http_proxy", 0),
            ),
        )
        try:
            status = await self._serve(channel)
        finally:
            logs.set_sink(None)
            await channel.close()
        if self._running:
            # Plain functions cannot be stopped, and a coroutine handler may ignore
            # cancellation: leave without waiting for them.
            log.warning("%d invocation(s) still running: exiting without waiting for them", self._running)
            logs.flush_all()
            os._exit(status)
        self._handler_threads.shutdown()
        self._load_executor.shutdown(wait=False)
        if status == EXIT_OK:
            log.info("stopped")
        return status

    async def _serve(self, channel: grpc.aio.Channel) -> int:
        call = channel.stream_stream(
            METHOD,
            request_serializer=StreamingMessage.SerializeToString,
            response_deserializer=StreamingMessage.FromString,
        )()
        start = StreamingMessage(request_id=self._options.request_id)
        start.start_stream.worker_id = self._options.worker_id
        self._send(start)
        writer = asyncio.create_task(self._write_loop(call))
        reader = asyncio.create_task(self._read_loop(call))
        try:
            if await _first(self._stop_requested, self._broken) is self._broken:
                return self._broke()
            status = await self._drain()
            if status != EXIT_OK:
                return status
            # Everything queued goes out, then our side of the stream is closed.
            self._closing = True
            self._send(None)
            await asyncio.wait((writer,), timeout=CLOSE_TIMEOUT)
            if self._broken_reason is not None:
                return self._broke()
            logs.set_sink(None)
            # Let the host end the call, so that it sees a clean end rather than a cancel.
            await asyncio.wait((reader,), timeout=CLOSE_TIMEOUT)
            return EXIT_OK
        finally:
            for task in (reader, writer):
                task.cancel()

    async def _drain(self) -> int:
        """Wait for the invocations in flight, up to the grace period."""
        grace = self._stop_grace
        log.info("stopping: no new invocations, up to %gs for %d in flight", grace, self._running)
        if self._running:
            self._idle.clear()
            if await _first(self._idle, self._broken, timeout=grace) is self._broken:
                return self._broke()
            if self._running:
                log.warning("%d invocation(s) still running after the grace period", self._running)
        return EXIT_OK

    def _broke(self) -> int:
        logs.set_sink(None)
        self._spill()
        log.error("lost the stream to the host at %s: %s; exiting", self._options.target, self._broken_reason)
        return EXIT_FAILED

    def _fail(self, reason: str) -> None:
        if self._broken_reason is None:
            self._broken_reason = reason
            self._broken.set()

    def _request_stop(self, grace: float) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._stop_grace = grace
        self._stop_requested.set()

    async def _read_loop(self, call: grpc.aio.StreamStreamCall) -> None:
        handlers = self._handlers
        try:
            message = await call.read()
            if message is not grpc.aio.EOF:
                # The host accepted the stream: logs go to it from now on.
                logs.set_sink(RpcLogSink(self._send, self._mailbox.post))
            while message is not grpc.aio.EOF:
                kind = message.WhichOneof("content")
                handler = handlers.get(kind)
                if handler is None:
                    log.debug("ignoring a %s message", kind)
                else:
                    try:
                        handler(message)
                    except Exception:
                        log.exception("cannot handle a %s message", kind)
                message = await call.read()
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as err:
            if not self._closing:
                self._fail(f"{err.code().name}: {err.details()}")
            return
        except Exception as err:
            if not self._closing:
                self._fail(f"cannot read from the stream: {type(err).__name__}: {err}")
            return
        if not self._stopping:
            self._fail("the host closed the stream")

    async def _write_loop(self, call: grpc.aio.StreamStreamCall) -> None:
        """The only writer of the stream: sends what is queued, in order; ``None`` closes."""
        queue = self._queue
        try:
            while True:
                message = await queue.get()
                if message is None:
                    await call.done_writing()
                    return
                await call.write(message)
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as err:
            self._fail(f"{err.code().name}: {err.details()}")
        except Exception as err:
            self._fail(f"cannot write to the stream: {type(err).__name__}: {err}")

    def _spill(self) -> None:
        """Log records still queued for the host go to stderr instead."""
        while not self._queue.empty():
            message = self._queue.get_nowait()
            if message is not None and message.WhichOneof("content") == "rpc_log":
                record = message.rpc_log
                user = record.log_category == rpc.RpcLog.User
                logs.stderr_sink.emit(
                    _LEVEL_NAMES.get(record.level, "error"),
                    record.message,
                    source="user" if user else "runtime",
                    function=record.category if record.category != RUNTIME_CATEGORY else None,
                    invocation_id=record.invocation_id or None,
                )

    # -- init, metadata, status, environment ---------------------------------

    def _worker_metadata(self) -> rpc.WorkerMetadata:
        return rpc.WorkerMetadata(
            runtime_name="python",
            runtime_version=platform.python_version(),
            worker_version=__version__,
            worker_bitness=platform.architecture()[0].removesuffix("bit"),
        )

    def _on_init(self, message: StreamingMessage) -> None:
        request = message.worker_init_request
        log.info("initialized by host %s", request.host_version or "(no version)")
        self._send(
            StreamingMessage(
                request_id=message.request_id,
                worker_init_response=rpc.WorkerInitResponse(
                    worker_version=__version__,
                    capabilities=CAPABILITIES,
                    result=rpc.StatusResult(status=SUCCESS),
                    worker_metadata=self._worker_metadata(),
                ),
            )
        )

    def _on_functions_metadata(self, message: StreamingMessage) -> None:
        # polyfn's functions are indexed by the host and sent in FunctionLoadRequests.
        self._send(
            StreamingMessage(
                request_id=message.request_id,
                function_metadata_response=rpc.FunctionMetadataResponse(
                    use_default_metadata_indexing=True, result=rpc.StatusResult(status=SUCCESS)
                ),
            )
        )

    def _on_status(self, message: StreamingMessage) -> None:
        self._send(StreamingMessage(request_id=message.request_id, worker_status_response=rpc.WorkerStatusResponse()))

    def _on_warmup(self, message: StreamingMessage) -> None:
        self._send(
            StreamingMessage(
                request_id=message.request_id,
                worker_warmup_response=rpc.WorkerWarmupResponse(result=rpc.StatusResult(status=SUCCESS)),
            )
        )

    def _on_environment_reload(self, message: StreamingMessage) -> None:
        request = message.function_environment_reload_request
        os.environ.clear()
        os.environ.update(request.environment_variables)
        result = rpc.StatusResult(status=SUCCESS)
        directory = request.function_app_directory
        if directory:
            try:
                os.chdir(directory)
            except OSError as err:
                log.error("cannot change to the function app directory %r: %s", directory, err)
                result = _failure(type(err).__name__, str(err))
        log.info("environment reloaded (%d variables)", len(request.environment_variables))
        self._send(
            StreamingMessage(
                request_id=message.request_id,
                function_environment_reload_response=rpc.FunctionEnvironmentReloadResponse(
                    worker_metadata=self._worker_metadata(), capabilities=CAPABILITIES, result=result
                ),
            )
        )

    def _on_terminate(self, message: StreamingMessage) -> None:
        terminate = message.worker_terminate
        grace = self._grace
        if terminate.HasField("grace_period"):
            grace = max(0.0, terminate.grace_period.seconds + terminate.grace_period.nanos / 1e9)
        log.info("received WorkerTerminate (grace period %gs)", grace)
        self._request_stop(grace)

    # -- loading -------------------------------------------------------------

    def _on_load(self, message: StreamingMessage) -> None:
        request_id = message.request_id

        def reply(future: asyncio.Future[rpc.FunctionLoadResponse]) -> None:
            self._send(StreamingMessage(request_id=request_id, function_load_response=future.result()))

        self._start_load(message.function_load_request).add_done_callback(reply)

    def _on_load_collection(self, message: StreamingMessage) -> None:
        request_id = message.request_id
        requests = message.function_load_request_collection.function_load_requests

        def reply(future: asyncio.Future[list[rpc.FunctionLoadResponse]]) -> None:
            collection = rpc.FunctionLoadResponseCollection(function_load_responses=future.result())
            self._send(StreamingMessage(request_id=request_id, function_load_response_collection=collection))

        asyncio.gather(*(self._start_load(request) for request in requests)).add_done_callback(reply)

    def _start_load(self, request: rpc.FunctionLoadRequest) -> asyncio.Future[rpc.FunctionLoadResponse]:
        """Load in the loader thread; the function is registered (on the loop) before the future is done."""
        function_id = request.function_id
        metadata = request.metadata
        config = FunctionConfig(
            name=metadata.name or function_id,
            handler=metadata.entry_point,
            codedir=metadata.directory or ".",
            dependencies=metadata.properties.get(DEPENDENCIES_PROPERTY, ""),
        )
        inline = metadata.properties.get(CONCURRENCY_PROPERTY, "").strip() == "1" and os.environ.get(INLINE_ENV) != "0"
        loaded: asyncio.Future[LoadedFunction | rpc.RpcException]
        try:
            loaded = self._loop.run_in_executor(self._load_executor, self._load, config)
        except ThreadStartError as err:
            log.error("cannot load function %s: %s", config.name, err)
            loaded = self._loop.create_future()
            loaded.set_result(rpc.RpcException(type=WORKER_UNAVAILABLE, message=str(err)))
        done: asyncio.Future[rpc.FunctionLoadResponse] = self._loop.create_future()

        def register(future: asyncio.Future[LoadedFunction | rpc.RpcException]) -> None:
            try:
                outcome = future.result()
            except BaseException as err:  # the loader thread is gone (shutting down)
                outcome = rpc.RpcException(type=type(err).__name__, message=_text(err))
            if self._loading.get(function_id) is done:
                del self._loading[function_id]
            response = rpc.FunctionLoadResponse(function_id=function_id)
            if isinstance(outcome, LoadedFunction):
                self._functions[function_id] = outcome
                if inline and not outcome.is_async:
                    self._inline.add(function_id)
                else:
                    self._inline.discard(function_id)
                response.result.status = SUCCESS
            else:
                response.result.status = FAILURE
                response.result.exception.CopyFrom(outcome)
            done.set_result(response)

        loaded.add_done_callback(register)
        self._loading[function_id] = done
        return done

    def _load(self, function: FunctionConfig) -> LoadedFunction | rpc.RpcException:
        """Import ``function``'s handler (in the loader thread); the exception to report on failure."""
        try:
            if not valid_handler(function.handler):
                raise HandlerLoadError(f"entry_point: expected 'module.function', got {function.handler!r}")
            loaded = self._loader.load(function)
        except Exception as err:
            cause = err.__cause__ if isinstance(err, HandlerLoadError) else err
            message = f"function {function.name}: cannot load handler {function.handler!r}: {err}"
            trace = logs.user_traceback(cause) if cause is not None else ""
            logs.emit(
                "error",
                f"{message}\n{trace}" if trace else message,
                source="runtime",
                scope=logs.Scope(function.name),
            )
            return rpc.RpcException(
                type=type(cause).__name__ if cause is not None else type(err).__name__,
                message=str(err),
                stack_trace=trace,
                is_user_exception=cause is not None,
            )
        log.info(
            "loaded function %s (handler %s)",
            function.name,
            function.handler,
            extra={logs.FUNCTION_ATTR: function.name},
        )
        return loaded

    # -- invocations ---------------------------------------------------------

    def _on_invocation(self, message: StreamingMessage) -> None:
        request = message.invocation_request
        function = self._functions.get(request.function_id)
        if function is None or self._stopping:
            self._refuse(message)
            return
        invocation = _Invocation(request.invocation_id, function, message.request_id)
        self._running += 1
        self._inflight[invocation.id] = invocation
        if function.is_async:
            self._start_task(invocation, self._run_async(invocation, request))
            return
        if request.function_id in self._inline:
            contextvars.copy_context().run(self._run_inline, invocation, request)
            return
        try:
            self._handler_threads.submit(contextvars.copy_context().run, self._run_plain, invocation, request)
        except ThreadStartError as err:
            logs.emit(
                "error",
                f"invocation {invocation.id} of {function.name}: {err}",
                source="runtime",
                scope=logs.Scope(function.name, invocation.id),
            )
            response = StreamingMessage(request_id=message.request_id)
            response.invocation_response.invocation_id = invocation.id
            response.invocation_response.result.CopyFrom(_failure(WORKER_UNAVAILABLE, str(err)))
            self._finish(invocation, response)

    def _refuse(self, message: StreamingMessage) -> None:
        request = message.invocation_request
        if self._stopping:
            result = _failure("WorkerStopping", "the worker is stopping: it takes no new invocations")
        elif request.function_id in self._loading:
            # Sent before the load's response: run it once the function is loaded.
            loading = self._loading[request.function_id]
            loading.add_done_callback(lambda _: self._on_invocation(message))
            return
        else:
            result = _failure("FunctionNotFound", f"function not found: {request.function_id}")
        response = StreamingMessage(request_id=message.request_id)
        response.invocation_response.invocation_id = request.invocation_id
        response.invocation_response.result.CopyFrom(result)
        self._send(response)

    def _run_inline(self, invocation: _Invocation, request: rpc.InvocationRequest) -> None:
        """A plain function, on the loop's thread (inside a copy of the reader's context)."""
        then, *args = self._run_plain(invocation, request)
        then(*args)

    def _run_plain(self, invocation: _Invocation, request: rpc.InvocationRequest) -> tuple[Any, ...]:
        """Run a plain function; return what the loop does next, and its arguments.

        In a handler thread, or inline on the loop's thread (concurrency 1), in
        a copy of the reader's context variables either way.
        """
        scope = logs.Scope(invocation.function.name, invocation.id)
        logs.current_scope.set(scope)
        try:
            event, context = _prepare(invocation.function, request)
            result = invocation.function.handler(event, context)
            if inspect.isawaitable(result):
                # A plain callable that returned a coroutine: await it on the loop, in this
                # invocation's context (results handed back through the mailbox run in another one).
                return self._await_on_loop, invocation, result, scope, contextvars.copy_context()
            response = self._succeeded(invocation, result, scope)
        except BaseException as exc:  # any failure of user code is the invocation's result
            response = self._failed(invocation, exc, scope)
        logs.end_scope(scope)
        return self._finish, invocation, response

    def _await_on_loop(
        self, invocation: _Invocation, awaitable: Awaitable[Any], scope: logs.Scope, context: contextvars.Context
    ) -> None:
        # The task copies the current context: the invocation's, not whichever the loop runs this in.
        context.run(self._start_task, invocation, self._complete(invocation, awaitable, scope))

    def _start_task(self, invocation: _Invocation, coroutine: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = self._loop.create_task(coroutine)
        invocation.task = task

        def ended(task: asyncio.Task[None]) -> None:
            # The coroutine answers, except when it was cancelled before its first step (or on a bug).
            if invocation.finished:
                return
            if task.cancelled():
                self._finish(invocation, self._cancelled(invocation))
                return
            error = task.exception() or RuntimeError("the invocation ended without an answer")
            log.error("invocation %s: internal error", invocation.id, exc_info=error)
            response = self._exception(invocation, error, "")
            response.invocation_response.result.exception.is_user_exception = False
            self._finish(invocation, response)

        task.add_done_callback(ended)

    async def _run_async(self, invocation: _Invocation, request: rpc.InvocationRequest) -> None:
        """A coroutine handler, as its own task (so it can be cancelled)."""
        scope = logs.Scope(invocation.function.name, invocation.id)
        logs.current_scope.set(scope)  # the task runs in its own copy of the context
        try:
            event, context = _prepare(invocation.function, request)
            awaitable = invocation.function.handler(event, context)
        except BaseException as exc:
            response = self._failed(invocation, exc, scope)
            logs.end_scope(scope)
            self._finish(invocation, response)
            return
        await self._complete(invocation, awaitable, scope)

    async def _complete(self, invocation: _Invocation, awaitable: Awaitable[Any], scope: logs.Scope) -> None:
        logs.current_scope.set(scope)
        try:
            result = await awaitable
        except asyncio.CancelledError as exc:
            response = self._cancelled(invocation) if invocation.cancelled else self._failed(invocation, exc, scope)
        except BaseException as exc:
            response = self._failed(invocation, exc, scope)
        else:
            response = self._succeeded(invocation, result, scope)
        logs.end_scope(scope)
        if invocation.cancelled and response.invocation_response.result.status != CANCELLED:
            log.warning(
                "invocation %s of %s was cancelled but ran to its end: reported as cancelled",
                invocation.id,
                invocation.function.name,
                extra={logs.FUNCTION_ATTR: invocation.function.name},
            )
            response = self._cancelled(invocation)
        self._finish(invocation, response)

    def _finish(self, invocation: _Invocation, response: StreamingMessage) -> None:
        """On the loop: send the response, forget the invocation."""
        invocation.finished = True
        if self._inflight.get(invocation.id) is invocation:
            del self._inflight[invocation.id]
        self._running -= 1
        self._send(response)
        if self._running == 0 and self._stopping:
            self._idle.set()

    def _succeeded(self, invocation: _Invocation, result: Any, scope: logs.Scope) -> StreamingMessage:
        try:
            if isinstance(result, Response):
                return self._http_response(invocation, result)
            payload = encode_result(result)
        except Exception as exc:
            error = f"[UserCodeReturn] {type(exc).__name__}: {_text(exc)}"
            logs.emit("error", f"cannot encode the return value: {error}", source="user", scope=scope)
            return self._exception(invocation, exc, logs.user_traceback(exc), source="UserCodeReturn")
        message = StreamingMessage(request_id=invocation.request_id)
        response = message.invocation_response
        response.invocation_id = invocation.id
        response.result.status = SUCCESS
        if payload:
            response.return_value.bytes = payload
        return message

    def _http_response(self, invocation: _Invocation, result: Response) -> StreamingMessage:
        """``return_value: {http: {status_code, headers, body: {bytes}}}``; raises when ``result`` is bad."""
        encoded = encode_response(result)
        message = StreamingMessage(request_id=invocation.request_id)
        response = message.invocation_response
        response.invocation_id = invocation.id
        response.result.status = SUCCESS
        http = response.return_value.http
        http.status_code = str(encoded.status)
        http.headers.update(encoded.headers)
        http.body.bytes = encoded.body  # set even when empty
        return message

    def _failed(self, invocation: _Invocation, exc: BaseException, scope: logs.Scope) -> StreamingMessage:
        logs.end_scope(scope)  # the function's partial lines come before its traceback
        trace = logs.user_traceback(exc)
        logs.emit("error", trace, source="user", scope=scope)
        return self._exception(invocation, exc, trace)

    def _exception(self, invocation: _Invocation, exc: BaseException, trace: str, source: str = "") -> StreamingMessage:
        message = StreamingMessage(request_id=invocation.request_id)
        response = message.invocation_response
        response.invocation_id = invocation.id
        response.result.status = FAILURE
        exception = response.result.exception
        exception.type = type(exc).__name__
        exception.message = _text(exc)
        exception.stack_trace = trace
        exception.is_user_exception = True
        if source:
            exception.source = source
        return message

    def _cancelled(self, invocation: _Invocation) -> StreamingMessage:
        message = StreamingMessage(request_id=invocation.request_id)
        message.invocation_response.invocation_id = invocation.id
        message.invocation_response.result.status = CANCELLED
        return message

    def _on_cancel(self, message: StreamingMessage) -> None:
        invocation_id = message.invocation_cancel.invocation_id
        invocation = self._inflight.get(invocation_id)
        if invocation is None:
            log.debug("InvocationCancel for %s: not in flight", invocation_id)
            return
        name = invocation.function.name
        if invocation.task is None:
            log.warning(
                "cannot cancel invocation %s of %s: a plain function cannot be interrupted;"
                " it is answered when it returns",
                invocation_id,
                name,
                extra={logs.FUNCTION_ATTR: name},
            )
            return
        if not invocation.cancelled:
            invocation.cancelled = True
            invocation.task.cancel()


class RpcLogSink:
    """A :class:`logs.Sink` that sends each record to the host as an ``RpcLog``.

    Function output is ``log_category: User`` with the function as category and
    the invocation id; the runtime's own records are ``System`` without an
    invocation id. Records from other threads are posted to the event loop
    (``post``, the worker's :class:`~polyfn_runtime.threads.Mailbox`), so the
    writer task stays the stream's only writer, and a handler's records reach
    the host before its response, which the handler's thread posts after them.
    """

    def __init__(self, send: Callable[[StreamingMessage], None], post: Callable[..., None]) -> None:
        self._send = send
        self._post = post
        self._loop_thread = threading.get_ident()

    def emit(
        self,
        level: logs.Level,
        msg: str,
        *,
        source: logs.Source,
        function: str | None = None,
        invocation_id: str | None = None,
    ) -> None:
        message = StreamingMessage()
        record = message.rpc_log
        record.level = _LEVELS[level]
        record.message = msg
        if source == "user":
            record.log_category = rpc.RpcLog.User
            record.category = function or ""
            record.invocation_id = invocation_id or ""
        else:
            record.log_category = rpc.RpcLog.System
            record.category = function or RUNTIME_CATEGORY
        if threading.get_ident() == self._loop_thread:
            self._send(message)
            return
        try:
            self._post(self._send, message)
        except RuntimeError:  # the loop is closed
            logs.stderr_sink.emit(level, msg, source=source, function=function, invocation_id=invocation_id)


def _prepare(function: LoadedFunction, request: rpc.InvocationRequest) -> tuple[Any, Context]:
    metadata = {}
    decode = _DECODERS
    trigger_metadata = request.trigger_metadata
    # Keys, then lookups: the map's items() is collections.abc's ItemsView, a Python generator.
    for key in trigger_metadata:
        value = trigger_metadata[key]
        decoder = decode.get(value.WhichOneof("data"))
        if decoder is not None:
            decoded = decoder(value)
            if decoded is not None:
                metadata[key] = decoded
    context = build_stream_context(
        metadata, function_name=function.name, invocation_id=request.invocation_id, logger=function.logger
    )
    return decode_event(_event_payload(request)), context


def _event_payload(request: rpc.InvocationRequest) -> bytes:
    """The ``event`` input's bytes (the first input when none is called ``event``)."""
    chosen = None
    for binding in request.input_data:
        if binding.name == EVENT_BINDING:
            chosen = binding
            break
        if chosen is None:
            chosen = binding
    if chosen is None:
        return b""
    data = chosen.data
    kind = data.WhichOneof("data")
    payload: bytes = b""
    if kind == "bytes":
        payload = data.bytes
    elif kind == "string":
        payload = data.string.encode("utf-8")
    elif kind == "json":
        payload = data.json.encode("utf-8")
    elif kind == "stream":
        payload = data.stream
    return payload


def _json_value(data: rpc.TypedData) -> Any:
    try:
        return json.loads(data.json)
    except (ValueError, RecursionError):
        return data.json


# How each kind of TypedData becomes a Python value, by the name of its set field.
_DECODERS: dict[str | None, Callable[[rpc.TypedData], Any]] = {
    "string": lambda data: data.string,
    "int": lambda data: data.int,
    "double": lambda data: data.double,
    "bytes": lambda data: data.bytes,
    "stream": lambda data: data.stream,
    "json": _json_value,
    "collection_string": lambda data: list(data.collection_string.string),
    "collection_sint64": lambda data: list(data.collection_sint64.sint64),
    "collection_double": lambda data: list(data.collection_double.double),
    "collection_bytes": lambda data: list(data.collection_bytes.bytes),
}


def _typed_value(data: rpc.TypedData) -> Any:
    """A trigger_metadata value as a Python value; ``None`` for unset or unsupported kinds."""
    decoder = _DECODERS.get(data.WhichOneof("data"))
    return None if decoder is None else decoder(data)


def _failure(kind: str, message: str) -> rpc.StatusResult:
    return rpc.StatusResult(status=FAILURE, exception=rpc.RpcException(type=kind, message=message))


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__} with an unprintable message>"


async def _first(*events: asyncio.Event, timeout: float | None = None) -> asyncio.Event | None:
    """Wait until one of ``events`` is set; return it (``None`` on timeout)."""
    for event in events:
        if event.is_set():
            return event
    waiters = {asyncio.ensure_future(event.wait()): event for event in events}
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    for waiter, event in waiters.items():
        if waiter in done:
            return event
    return None
