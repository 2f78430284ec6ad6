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

import asyncio
import collections
import logging
import queue
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


class Mailbox:
    """Callbacks from other threads to an event loop, run in the order they were posted.

    The cheap way back to the loop for many small results: a thread appends to
    a deque and wakes the loop (``call_soon_threadsafe``, a write to its
    self-pipe) only when no wake-up is pending already, so results that come
    in while the loop is busy share one. Everything a thread posts, log
    records and results alike, runs in the order it was posted, and before
    whatever that thread schedules on the loop afterwards by other means.

    Threads that post faster than the loop runs the callbacks would take the
    GIL from it and grow the deque without end: past ``BACKLOG`` callbacks
    waiting, every post wakes the loop, a system call that lets it run, as
    ``call_soon_threadsafe`` alone would. A drain runs what was posted before
    it started, then gives the loop back.
    """

    BACKLOG = 64

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._posted: collections.deque[tuple[Callable[..., object], tuple[Any, ...]]] = collections.deque()
        # True only while a drain is scheduled that has not started: set after the wake-up is
        # scheduled, both under the lock, so a thread that sees it set knows its callback runs
        # before anything it schedules next.
        self._pending = False
        self._lock = threading.Lock()

    def post(self, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback(*args)`` on the loop; ``RuntimeError`` once the loop is closed."""
        if self._loop.is_closed():
            raise RuntimeError("the event loop is closed")
        posted = self._posted
        posted.append((callback, args))
        if len(posted) > self.BACKLOG:
            # Behind: wake it for this one, without the lock the loop needs to start a drain.
            self._loop.call_soon_threadsafe(self._drain)
            return
        if self._pending:
            return
        with self._lock:
            if not self._pending:
                self._loop.call_soon_threadsafe(self._drain)
                self._pending = True

    def _drain(self) -> None:
        with self._lock:
            self._pending = False
        # Whatever is posted from now on schedules a drain of its own.
        posted = self._posted
        for _ in range(len(posted)):
            callback, args = posted.popleft()
            try:
                callback(*args)
            except Exception:
                _log.exception("a callback from a handler thread failed")


class LoopThreads:
    """Threads that run calls for an event loop and hand each result back to it.

    ``submit`` (on the loop's thread) queues ``fn(*args)`` for a thread of the
    pool; what it returns, ``None`` or a tuple ``(callback, *args)``, is posted
    to the loop through a :class:`Mailbox` and the callback runs there. A
    call costs a queue put and get and, when results come one at a time, one
    wake-up of the loop: no futures or conditions per call.

    A thread is started, up to ``max_workers``, when every thread is busy with
    a call; when one cannot be started (the worker at its limit of processes
    and threads), ``submit`` raises :class:`ThreadStartError` and queues
    nothing, so the call does not run later on a thread that frees up.
    """

    def __init__(self, max_workers: int, thread_name_prefix: str, mailbox: Mailbox) -> None:
        self._max = max(1, max_workers)
        self._prefix = thread_name_prefix
        self._mailbox = mailbox
        self._calls: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._threads = 0  # read and written on the loop's thread only
        self._busy = 0  # calls queued or running, under the lock
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(self, fn: Callable[..., tuple[Any, ...] | None], /, *args: Any) -> None:
        if self._shutdown:
            raise RuntimeError("cannot submit after shutdown")
        with self._lock:
            all_busy = self._busy >= self._threads
        if all_busy and self._threads < self._max:
            start_thread(self._work, f"{self._prefix}_{self._threads}")
            self._threads += 1
        with self._lock:
            self._busy += 1
        self._calls.put((fn, args))

    def shutdown(self) -> None:
        """Each thread ends once it has run the calls queued before this."""
        self._shutdown = True
        for _ in range(self._threads):
            self._calls.put(None)

    def _work(self) -> None:
        calls = self._calls
        post = self._mailbox.post
        while True:
            call = calls.get()
            if call is None:
                return
            fn, args = call
            then: tuple[Any, ...] | None = None
            try:
                then = fn(*args)
            except BaseException:
                _log.exception("a handler thread's call failed")
            with self._lock:
                self._busy -= 1
            if then is None:
                continue
            try:
                post(*then)
            except RuntimeError:  # the loop is closed: the process is exiting
                return


_log = logging.getLogger(__name__)
