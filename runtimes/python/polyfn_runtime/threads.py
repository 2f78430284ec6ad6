"""Handler threads that fail fast when the worker cannot start one.

A worker at its limit of processes and threads (``limits.pids``: the
kernel counts threads too) cannot start a thread. A plain
:class:`~concurrent.futures.ThreadPoolExecutor` then raises from ``submit``
*after* queueing the work, which runs later, whenever a busy thread frees
up — minutes later, or never, while the caller waits for its timeout; and
grpc's threaded server, which submits each call, loses its serving thread
to the exception. :class:`HandlerExecutor` instead either raises
:class:`ThreadStartError` and leaves nothing behind to run later, or — for
grpc's threaded server — hands the call to a reserve thread started up
front that only rejects it (see :func:`rejected`). Either way the
invocation fails at once with a clear error, reported to the host as the
worker being unable to run it, and the host replaces the instance.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

_rejecting = threading.local()


class ThreadStartError(RuntimeError):
    """No thread could be started to run an invocation."""


def rejected() -> ThreadStartError | None:
    """Inside a call the reserve thread runs: why it has no thread of its own."""
    error: ThreadStartError | None = getattr(_rejecting, "error", None)
    return error


class _Job:
    """One submitted call, cancellable until a thread starts running it."""

    __slots__ = ("args", "fn", "future", "kwargs")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.future: Future[Any] = Future()

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return  # given up on: it could not get a thread of its own in time
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)


class HandlerExecutor(ThreadPoolExecutor):
    """A thread pool whose ``submit`` fails fast when it needs a thread it cannot start.

    Without ``reserve``, ``submit`` raises :class:`ThreadStartError`. With it,
    the call runs on a reserve thread, started with the pool, where
    :func:`rejected` tells it to fail at once instead of doing its work.
    """

    def __init__(self, max_workers: int, thread_name_prefix: str = "", *, reserve: bool = False) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self._reserve: ThreadPoolExecutor | None = None
        if reserve:
            self._reserve = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{thread_name_prefix}-reserve")
            self._reserve.submit(lambda: None).result()  # its thread starts now, while threads can start

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        job = _Job(fn, args, kwargs)
        try:
            super().submit(job.run)
        except RuntimeError as err:
            if getattr(self, "_shutdown", False) or "shutdown" in str(err):
                raise
            # The job is queued, to run whenever a busy thread frees up: cancel it.
            if not job.future.cancel():
                return job.future  # a thread took it meanwhile
            error = ThreadStartError(
                f"the worker cannot start a thread to run the invocation ({err}):"
                " it is probably at its limit of processes and threads"
            )
            if self._reserve is None:
                raise error from err
            return self._reserve.submit(_reject, error, fn, args, kwargs)
        return job.future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        if self._reserve is not None:
            self._reserve.shutdown(wait=wait, cancel_futures=cancel_futures)


def _reject(error: ThreadStartError, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    _rejecting.error = error
    try:
        return fn(*args, **kwargs)
    finally:
        _rejecting.error = None


def start_thread(target: Callable[[], object], name: str) -> None:
    """Start a daemon thread; :class:`ThreadStartError` when none can be started."""
    try:
        threading.Thread(target=target, name=name, daemon=True).start()
    except RuntimeError as err:
        raise ThreadStartError(
            f"the worker cannot start a thread to run the invocation ({err}):"
            " it is probably at its limit of processes and threads"
        ) from err
