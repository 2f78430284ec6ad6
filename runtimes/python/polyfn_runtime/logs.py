"""Structured logs: one JSON object per line on the process's stderr, or another sink.

Every line has this shape (``function`` and ``invocation_id`` are left out
when unknown)::

    {"level": "info", "msg": "...", "function": "sayhi", "invocation_id": "...", "source": "user"}

``level`` is one of ``debug``, ``info``, ``warning``, ``error``; ``source`` is
``user`` for what function code writes and ``runtime`` for the runtime's own
messages.

After :func:`install`:

* ``sys.stdout`` and ``sys.stderr`` are replaced by writers that turn each
  complete line into a record (stdout → ``info``, stderr → ``error``). A partial
  line waits for its newline, or for the end of the invocation that wrote it.
* the root logger has one handler that writes records in the same format; its
  level is ``INFO`` (a function may change it).
* warnings become ``warning`` records: ``runtime`` when the code they point at
  is the runtime's (polyfn_runtime, grpc, protobuf, asyncio), ``user``
  otherwise; uncaught exceptions in threads become one ``error`` record each.

Records go to a :class:`Sink`. By default that is :class:`LogSink`, JSON lines
on the process's stderr; :func:`set_sink` routes every record elsewhere (stream
mode sends them to the host as ``RpcLog`` messages while its stream is up) and
``set_sink(None)`` goes back to stderr.

Which function and invocation a line belongs to comes from a
:class:`contextvars.ContextVar` holding the current :class:`Scope`; asyncio
tasks inherit it and the runtime copies it into the threads that run
synchronous handlers. Threads a function starts itself do not inherit it, so
their output is not tagged (``context.logger`` still tags its records).
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import threading
import traceback
import warnings
from contextvars import ContextVar
from typing import BinaryIO, Literal, Protocol, TextIO

Level = Literal["debug", "info", "warning", "error"]
Source = Literal["user", "runtime"]

# Loggers whose records are the runtime's own, not the function's.
_RUNTIME_LOGGERS = ("polyfn_runtime", "grpc", "asyncio")

# Record attributes set by ``context.logger`` (see polyfn_runtime.context).
FUNCTION_ATTR = "polyfn_function"
INVOCATION_ATTR = "polyfn_invocation_id"


class Scope:
    """The function (and invocation) that output currently belongs to."""

    __slots__ = ("closed", "function", "invocation_id", "pending")

    def __init__(self, function: str | None = None, invocation_id: str | None = None) -> None:
        self.function = function
        self.invocation_id = invocation_id or None
        # Partial lines written so far, per writer; created on first use.
        self.pending: dict[TaggedWriter, str] | None = None
        self.closed = False


current_scope: ContextVar[Scope | None] = ContextVar("polyfn_scope", default=None)


class Sink(Protocol):
    """Where log records go. ``emit`` may be called from any thread."""

    def emit(
        self,
        level: Level,
        msg: str,
        *,
        source: Source,
        function: str | None = None,
        invocation_id: str | None = None,
    ) -> None: ...


class LogSink:
    """Writes JSON log lines to a binary stream, one ``write`` per line."""

    def __init__(self, stream: BinaryIO | None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def emit(
        self,
        level: Level,
        msg: str,
        *,
        source: Source,
        function: str | None = None,
        invocation_id: str | None = None,
    ) -> None:
        record: dict[str, str] = {"level": level, "msg": msg}
        if function:
            record["function"] = function
        if invocation_id:
            record["invocation_id"] = invocation_id
        record["source"] = source
        line = json.dumps(record).encode("ascii") + b"\n"
        stream = self._stream
        if stream is None:
            return
        with self._lock:
            try:
                stream.write(line)
                stream.flush()
            except (OSError, ValueError):
                # stderr is gone (the host closed the pipe): nowhere to log to.
                pass


def _original_stderr() -> BinaryIO | None:
    stream = sys.__stderr__
    return getattr(stream, "buffer", None) if stream is not None else None


class _SwitchableSink:
    """The sink installed writers and handlers write to; forwards to the current target."""

    __slots__ = ("target",)

    def __init__(self, target: Sink) -> None:
        self.target = target

    def emit(
        self,
        level: Level,
        msg: str,
        *,
        source: Source,
        function: str | None = None,
        invocation_id: str | None = None,
    ) -> None:
        self.target.emit(level, msg, source=source, function=function, invocation_id=invocation_id)


stderr_sink = LogSink(_original_stderr())
_sink = _SwitchableSink(stderr_sink)
_installed = False


def set_sink(sink: Sink | None) -> None:
    """Send every record (output, ``logging``, :func:`emit`) to ``sink``; ``None``: back to stderr."""
    _sink.target = sink if sink is not None else stderr_sink


_orphans = Scope()  # output written outside any function or invocation
_pending_lock = threading.Lock()


def emit(level: Level, msg: str, *, source: Source = "runtime", scope: Scope | None = None) -> None:
    """Write one record, tagged with ``scope`` or else the current scope."""
    if scope is None:
        scope = current_scope.get()
    if scope is None:
        _sink.emit(level, msg, source=source)
    else:
        _sink.emit(level, msg, source=source, function=scope.function, invocation_id=scope.invocation_id)


class TaggedWriter(io.TextIOBase):
    """A text stream that turns each line written to it into a log record."""

    def __init__(self, name: str, level: Level, sink: Sink) -> None:
        super().__init__()
        self.name = name
        self.level: Level = level
        self._sink = sink
        self.buffer = _BinaryAdapter(self)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "strict"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def flush(self) -> None:
        # Records are written as soon as a line is complete; a partial line is
        # kept until its newline or the end of the invocation.
        pass

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if not text:
            return 0
        scope = current_scope.get() or _orphans
        with _pending_lock:
            pending = scope.pending
            before = pending.get(self, "") if pending else ""
            if "\n" not in text and not scope.closed:
                if pending is None:
                    pending = scope.pending = {}
                pending[self] = before + text
                return len(text)
            *lines, rest = (before + text).split("\n")
            if pending:
                pending.pop(self, None)
            if rest:
                if scope.closed:
                    lines.append(rest)
                else:
                    if pending is None:
                        pending = scope.pending = {}
                    pending[self] = rest
        for line in lines:
            self._emit(line, scope)
        return len(text)

    def _emit(self, line: str, scope: Scope) -> None:
        self._sink.emit(
            self.level,
            line.removesuffix("\r"),
            source="user",
            function=scope.function,
            invocation_id=scope.invocation_id,
        )


class _BinaryAdapter(io.RawIOBase):
    """``sys.stdout.buffer`` for code that writes bytes: decoded as UTF-8."""

    def __init__(self, writer: TaggedWriter) -> None:
        super().__init__()
        self._writer = writer

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._writer.write(bytes(data).decode("utf-8", "replace"))
        return len(data)


def end_scope(scope: Scope) -> None:
    """Close ``scope``: write its partial lines; later output is not buffered."""
    with _pending_lock:
        scope.closed = True
        pending, scope.pending = scope.pending, None
    if pending:
        for writer, rest in pending.items():
            writer._emit(rest, scope)


def flush_all() -> None:
    """Write partial lines written outside any invocation (at shutdown)."""
    with _pending_lock:
        pending, _orphans.pending = _orphans.pending, None
    if pending:
        for writer, rest in pending.items():
            writer._emit(rest, _orphans)


class JsonLogHandler(logging.Handler):
    """A ``logging`` handler that writes records as JSON log lines."""

    def __init__(self, sink: Sink) -> None:
        super().__init__()
        self._sink = sink
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if record.exc_info:
                msg = f"{msg}\n{self._formatter.formatException(record.exc_info)}"
            elif record.exc_text:
                msg = f"{msg}\n{record.exc_text}"
            if record.stack_info:
                msg = f"{msg}\n{record.stack_info}"
            function = getattr(record, FUNCTION_ATTR, None)
            invocation_id = getattr(record, INVOCATION_ATTR, None)
            if function is None and invocation_id is None:
                scope = current_scope.get()
                if scope is not None:
                    function, invocation_id = scope.function, scope.invocation_id
            self._sink.emit(
                level_name(record.levelno),
                msg,
                source="runtime" if is_runtime_logger(record.name) else "user",
                function=function,
                invocation_id=invocation_id,
            )
        except Exception:
            self.handleError(record)


def level_name(levelno: int) -> Level:
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


def is_runtime_logger(name: str) -> bool:
    return name.partition(".")[0] in _RUNTIME_LOGGERS


# Modules whose frames lead up to user code: left out of user tracebacks.
_PLUMBING = frozenset(
    {"polyfn_runtime", "asyncio", "concurrent", "importlib", "_frozen_importlib", "_frozen_importlib_external"}
)


def user_traceback(exc: BaseException) -> str:
    """``exc``'s traceback without the leading runtime and import machinery frames."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module.partition(".")[0] not in _PLUMBING:
            break
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
    thread = args.thread.name if args.thread is not None else "?"
    emit("error", f"exception in thread {thread}:\n{text.rstrip()}", source="user")


# Modules whose files are the runtime's own, for warnings that point into them.
_RUNTIME_MODULES = ("polyfn_runtime", "grpc", "google.protobuf", "asyncio")


def _runtime_dirs() -> tuple[str, ...]:
    dirs = []
    for name in _RUNTIME_MODULES:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if path:
            dirs.append(os.path.dirname(os.path.abspath(path)) + os.sep)
    return tuple(dirs)


def is_runtime_file(filename: str) -> bool:
    """Whether ``filename`` is part of the runtime or the libraries it runs on."""
    return os.path.abspath(filename).startswith(_runtime_dirs())


def show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` after :func:`install`: one ``warning`` record, its source by where it points."""
    text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
    if file is not None:
        file.write(text + "\n")
        return
    emit("warning", text, source="runtime" if is_runtime_file(filename) else "user")


def install() -> None:
    """Route stdout, stderr, ``logging``, warnings and thread errors to the sink (once per process)."""
    global _installed
    if _installed:
        return
    _installed = True
    sys.stdout = TaggedWriter("<stdout>", "info", _sink)
    sys.stderr = TaggedWriter("<stderr>", "error", _sink)

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(JsonLogHandler(_sink))
    root.setLevel(logging.INFO)
    # The runtime's own messages do not depend on the level a function sets.
    logging.getLogger("polyfn_runtime").setLevel(logging.INFO)
    warnings.showwarning = show_warning
    threading.excepthook = _thread_excepthook
