"""Call mode: load the config and the functions, listen, stop on a signal.

Two engines serve the same ``Call`` method (see :mod:`polyfn_runtime.call`):

``asyncio``
    a grpc.aio server: coroutine handlers run on its event loop, plain
    functions in a pool of ``server.workers`` threads.
``threads``
    grpc's threaded server (``server.workers`` threads): plain functions run
    in the thread that handles the call, coroutine handlers on one background
    event loop.

Either way invocations run concurrently. Each engine pays a handoff between
threads (about 200 µs a call on a small VM) for the handler style it does not
run natively, so ``server.engine: auto`` (the default) picks ``asyncio`` when
any function is a coroutine function and ``threads`` when all are plain
functions.

On SIGTERM or SIGINT the server stops accepting calls, gives calls in flight
up to ``server.grace`` seconds, and the process exits 0. A second signal exits
at once with status 1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import stat
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import FrameType

import grpc

from . import __version__, logs, loops
from .call import AsyncioCalls, ThreadedCalls, rpc_handler
from .config import ADDRESS_ENV, ConfigError, ServiceConfig, load_config
from .loader import HandlerLoader, HandlerLoadError, LoadedFunction
from .threads import HandlerExecutor

MAX_MESSAGE_LENGTH = 2**31 - 1
SERVER_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_LENGTH),
    ("grpc.max_receive_message_length", MAX_MESSAGE_LENGTH),
    # Fail to start, rather than share the port, when another process holds it.
    ("grpc.so_reuseport", 0),
)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NO_ADDRESS = 2

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The server cannot start (for example, the address is taken)."""


def run(config_path: str, on_listening: Callable[[], object] | None = None) -> int:
    """Run call mode with the config file at ``config_path``; return the exit status.

    ``on_listening`` is called once the server listens (a standby worker tells the host).
    """
    logs.install()
    try:
        config = load_config(config_path)
    except ConfigError as err:
        log.error("%s", err)
        return EXIT_FAILED
    if not config.server.address:
        log.error(
            "no address to listen on: set %s (127.0.0.1:PORT or unix:/path) or server.address in %s",
            ADDRESS_ENV,
            config_path,
        )
        return EXIT_NO_ADDRESS

    log.info(
        "polyfn python runtime %s starting in call mode%s (python %s)",
        __version__,
        f" as {config.name}" if config.name else "",
        sys.version.split()[0],
    )
    functions = _load_functions(config)
    if functions is None:
        return EXIT_FAILED
    engine = choose_engine(config.server.engine, functions)
    try:
        if engine == "asyncio":
            return loops.run(_serve_asyncio(config, functions, on_listening))
        return _serve_threads(config, functions, on_listening)
    except StartupError as err:
        log.error("%s", err)
        return EXIT_FAILED
    finally:
        logs.flush_all()


def choose_engine(setting: str, functions: Mapping[str, LoadedFunction]) -> str:
    if setting != "auto":
        return setting
    return "asyncio" if any(function.is_async for function in functions.values()) else "threads"


def _load_functions(config: ServiceConfig) -> dict[str, LoadedFunction] | None:
    loader = HandlerLoader()
    functions: dict[str, LoadedFunction] = {}
    for function in config.functions:
        try:
            functions[function.name] = loader.load(function)
        except HandlerLoadError as err:
            message = f"function {function.name}: cannot load handler {function.handler!r}: {err}"
            if err.__cause__ is not None:
                message = f"{message}\n{logs.user_traceback(err.__cause__)}"
            logs.emit("error", message, source="runtime", scope=logs.Scope(function.name))
            return None
        log.info(
            "loaded function %s (handler %s)",
            function.name,
            function.handler,
            extra={logs.FUNCTION_ATTR: function.name},
        )
    return functions


async def _serve_asyncio(
    config: ServiceConfig, functions: Mapping[str, LoadedFunction], on_listening: Callable[[], object] | None = None
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    on_signal = StopSignal(stop.set)
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)

    executor = HandlerExecutor(config.server.workers, "polyfn-handler")
    calls = AsyncioCalls(functions, executor)
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((rpc_handler(calls.call),))
    port = _bind(server, config)
    await server.start()
    _log_listening(config, port, "asyncio")
    if on_listening is not None:
        on_listening()

    await stop.wait()
    _log_stopping(config)
    await server.stop(config.server.grace)
    return _finish(config, calls.running, executor)


def _serve_threads(
    config: ServiceConfig, functions: Mapping[str, LoadedFunction], on_listening: Callable[[], object] | None = None
) -> int:
    stop = threading.Event()
    on_signal = StopSignal(stop.set)
    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)

    # grpc's serving thread submits each call: one it cannot give a thread
    # is failed by the reserve thread rather than raise in the serving thread.
    executor = HandlerExecutor(config.server.workers, "polyfn-handler", reserve=True)
    calls = ThreadedCalls(functions)
    server = grpc.server(executor, handlers=(rpc_handler(calls.call),), options=SERVER_OPTIONS)
    port = _bind(server, config)
    server.start()
    _log_listening(config, port, "threads")
    if on_listening is not None:
        on_listening()

    _wait(stop)
    _log_stopping(config)
    _wait(server.stop(config.server.grace))
    return _finish(config, calls.running, executor)


# SIGNAL_POLL bounds how long the main thread waits at a time: the kernel
# may deliver a signal to one of grpc's threads, which does not interrupt
# the main thread's wait, and Python runs the handler only once the main
# thread is back in the interpreter.
SIGNAL_POLL = 0.5


def _wait(event: threading.Event) -> None:
    """Wait for ``event`` on the main thread, running signal handlers as signals come."""
    while not event.wait(SIGNAL_POLL):
        pass


class StopSignal:
    """First signal: stop gracefully. Second: exit now."""

    def __init__(self, stop: Callable[[], object]) -> None:
        self._stop = stop
        self._received = False

    def __call__(self, signum: int, frame: FrameType | None = None) -> None:
        name = signal.Signals(signum).name
        if self._received:
            log.warning("received %s again: exiting without waiting for calls in flight", name)
            logs.flush_all()
            os._exit(EXIT_FAILED)
        self._received = True
        log.info("received %s: stopping", name)
        self._stop()


def _bind(server: grpc.Server | grpc.aio.Server, config: ServiceConfig) -> int:
    address = config.server.address
    assert address
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as err:
        raise StartupError(f"cannot listen on {address}: {err}") from None
    if not port:
        raise StartupError(f"cannot listen on {address}")
    return int(port)


def _log_listening(config: ServiceConfig, port: int, engine: str) -> None:
    address = config.server.address or ""
    if not address.startswith("unix"):
        address = f"{address.rpartition(':')[0]}:{port}"
    log.info("listening on %s (engine %s, %d workers)", address, engine, config.server.workers)


def _log_stopping(config: ServiceConfig) -> None:
    log.info("stopping: no new calls, up to %gs for calls in flight", config.server.grace)


def _finish(config: ServiceConfig, running: int, executor: ThreadPoolExecutor) -> int:
    _remove_unix_socket(config.server.address or "")
    if running:
        # Threads cannot be stopped: leave without joining them.
        log.warning("%d invocation(s) still running after the grace period: exiting anyway", running)
        logs.flush_all()
        os._exit(EXIT_OK)
    executor.shutdown(wait=True)
    log.info("stopped")
    return EXIT_OK


def _remove_unix_socket(address: str) -> None:
    if not address.startswith("unix:"):
        return
    path = address.removeprefix("unix:")
    if path.startswith("//"):
        path = path[2:]
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass
