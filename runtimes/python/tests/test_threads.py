"""HandlerExecutor when no thread can be started (a worker at its pids limit)."""

from __future__ import annotations

import os
import threading

import pytest

import polyfn_runtime  # noqa: F401  (sets GRPC_ENABLE_FORK_SUPPORT)
from polyfn_runtime.threads import HandlerExecutor, ThreadStartError, rejected


def _refuse(self: threading.Thread) -> None:
    """Thread.start at the pids limit."""
    raise RuntimeError("can't start new thread")


def test_submit_fails_fast_and_leaves_nothing_to_run_later(monkeypatch: pytest.MonkeyPatch) -> None:
    executor = HandlerExecutor(4, "test")
    release = threading.Event()
    busy = executor.submit(release.wait)  # the pool's only thread, busy
    ran = []
    with monkeypatch.context() as m:
        m.setattr(threading.Thread, "start", _refuse)
        with pytest.raises(ThreadStartError, match="cannot start a thread"):
            executor.submit(ran.append, "late")
    release.set()
    busy.result(timeout=5)
    # The busy thread is free again: the refused call must not run on it now.
    executor.submit(ran.append, "next").result(timeout=5)
    executor.shutdown(wait=True)
    assert ran == ["next"]


def test_reserve_thread_rejects_what_gets_no_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    executor = HandlerExecutor(4, "test", reserve=True)
    release = threading.Event()
    busy = executor.submit(release.wait)
    seen: list[object] = []
    with monkeypatch.context() as m:
        m.setattr(threading.Thread, "start", _refuse)
        future = executor.submit(lambda: seen.append(rejected()) or "handled")
        assert future.result(timeout=5) == "handled"
    assert isinstance(seen[0], ThreadStartError)
    assert rejected() is None  # only inside the reserve thread's call
    release.set()
    busy.result(timeout=5)
    executor.shutdown(wait=True)


def test_shutdown_is_not_a_thread_start_error() -> None:
    executor = HandlerExecutor(1, "test")
    executor.shutdown(wait=True)
    with pytest.raises(RuntimeError) as info:
        executor.submit(print)
    assert not isinstance(info.value, ThreadStartError)


def test_grpc_fork_support_is_off() -> None:
    # A fork in a function must not make grpc stop and restart its threads.
    assert os.environ.get("GRPC_ENABLE_FORK_SUPPORT") in ("false", "0")
