"""Handler threads: HandlerExecutor when no thread can be started (a worker at its pids limit), LoopThreads."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable

import pytest

import polyfn_runtime  # noqa: F401  (sets GRPC_ENABLE_FORK_SUPPORT)
from polyfn_runtime.threads import HandlerExecutor, LoopThreads, Mailbox, ThreadStartError, rejected


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


# LoopThreads and Mailbox: the stream worker's handler threads and their way back to the loop.


async def _run_calls(pool: LoopThreads, calls: int, inflight: int) -> list[int]:
    """Submit ``calls`` calls, ``inflight`` at a time; the values handed back, in the order they came."""
    loop = asyncio.get_running_loop()
    got: list[int] = []
    done = loop.create_future()
    sent = 0

    def back(value: int) -> None:
        got.append(value)
        if len(got) == calls:
            done.set_result(None)
        else:
            submit()

    def submit() -> None:
        nonlocal sent
        if sent < calls:
            sent += 1
            pool.submit(lambda n: (back, n * 2), sent)

    for _ in range(inflight):
        submit()
    await asyncio.wait_for(done, 10)
    return got


def test_loop_threads_hand_every_result_back_once() -> None:
    async def main() -> tuple[list[int], list[str]]:
        pool = LoopThreads(8, "test-pool", Mailbox(asyncio.get_running_loop()))
        got = await _run_calls(pool, 5000, 8)
        names = sorted(t.name for t in threading.enumerate() if t.name.startswith("test-pool"))
        pool.shutdown()
        return got, names

    got, names = asyncio.run(main())
    assert sorted(got) == [2 * n for n in range(1, 5001)]
    assert 1 <= len(names) <= 8


def test_loop_threads_start_a_thread_only_when_every_thread_has_a_call() -> None:
    async def main() -> list[str]:
        pool = LoopThreads(8, "test-seq", Mailbox(asyncio.get_running_loop()))
        await _run_calls(pool, 200, 1)  # one call at a time: one thread is enough
        names = [t.name for t in threading.enumerate() if t.name.startswith("test-seq")]
        pool.shutdown()
        return names

    assert asyncio.run(main()) == ["test-seq_0"]


def test_loop_threads_fail_fast_and_leave_nothing_to_run_later(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        pool = LoopThreads(4, "test-limit", Mailbox(loop))
        release = threading.Event()
        freed = loop.create_future()
        next_done = loop.create_future()

        def busy() -> tuple[object, ...]:
            release.wait()
            return (freed.set_result, None)

        def late() -> None:
            ran.append("late")

        def following() -> tuple[object, ...]:
            ran.append("next")
            return (next_done.set_result, None)

        pool.submit(busy)  # the pool's only thread, busy
        with monkeypatch.context() as m:
            m.setattr(threading.Thread, "start", _refuse)
            with pytest.raises(ThreadStartError, match="cannot start a thread"):
                pool.submit(late)
        release.set()
        await asyncio.wait_for(freed, 5)
        # The busy thread is free again: the refused call must not run on it now.
        pool.submit(following)
        await asyncio.wait_for(next_done, 5)
        pool.shutdown()

    asyncio.run(main())
    assert ran == ["next"]


async def _from_threads(post_all: Callable[[int], None], count: int = 4) -> None:
    """Run ``post_all(t)`` on ``count`` threads; return once everything each one posted or scheduled has run."""
    loop = asyncio.get_running_loop()
    finished = asyncio.Event()
    remaining = [count]

    def end() -> None:
        remaining[0] -= 1
        if remaining[0] == 0:
            finished.set()

    def run(t: int) -> None:
        post_all(t)
        loop.call_soon_threadsafe(end)  # after the thread's posts, which run before what it schedules next

    threads = [threading.Thread(target=run, args=(t,)) for t in range(count)]
    for thread in threads:
        thread.start()
    await asyncio.wait_for(finished.wait(), 20)
    for thread in threads:
        thread.join()


def test_mailbox_keeps_a_threads_order_and_refuses_a_closed_loop() -> None:
    # What one thread posts runs in the order it was posted, whatever other threads post meanwhile.
    async def main() -> tuple[dict[int, list[int]], Mailbox]:
        mailbox = Mailbox(asyncio.get_running_loop())
        seen: dict[int, list[int]] = {t: [] for t in range(4)}

        def post_all(t: int) -> None:
            for i in range(3000):
                mailbox.post(seen[t].append, i)

        await _from_threads(post_all)
        return seen, mailbox

    seen, mailbox = asyncio.run(main())
    assert all(values == list(range(3000)) for values in seen.values())
    with pytest.raises(RuntimeError):
        mailbox.post(print, "after the loop closed")


def test_loop_threads_shut_down() -> None:
    async def main() -> LoopThreads:
        pool = LoopThreads(4, "test-stop", Mailbox(asyncio.get_running_loop()))
        await _run_calls(pool, 50, 4)
        pool.shutdown()
        return pool

    pool = asyncio.run(main())
    for thread in threading.enumerate():
        if thread.name.startswith("test-stop"):
            thread.join(timeout=5)
            assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(print)


def test_a_drain_runs_only_what_was_posted_before_it() -> None:
    # A callback posted while a drain runs waits for the next one: the loop gets its turn between.
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        mailbox = Mailbox(loop)
        order: list[str] = []
        done = loop.create_future()

        def first() -> None:
            order.append("first")
            loop.call_soon(order.append, "loop's turn")
            mailbox.post(second)

        def second() -> None:
            order.append("second")
            done.set_result(None)

        threading.Thread(target=mailbox.post, args=(first,)).start()
        await asyncio.wait_for(done, 5)
        return order

    assert asyncio.run(main()) == ["first", "loop's turn", "second"]


def test_what_a_thread_posts_runs_before_what_it_schedules_next() -> None:
    # A handler's log records (posted) must reach the host before a result it hands over another
    # way (call_soon_threadsafe), whatever other threads post at the same time.
    async def main() -> list[tuple[int, int, str]]:
        loop = asyncio.get_running_loop()
        mailbox = Mailbox(loop)
        seen: list[tuple[int, int, str]] = []

        def post_all(t: int) -> None:
            for i in range(2000):
                mailbox.post(seen.append, (t, i, "posted"))
                loop.call_soon_threadsafe(seen.append, (t, i, "direct"))

        await _from_threads(post_all)
        return seen

    seen = asyncio.run(main())
    position = {item: n for n, item in enumerate(seen)}
    assert len(position) == 4 * 2000 * 2
    late = [(t, i) for t in range(4) for i in range(2000) if position[(t, i, "posted")] > position[(t, i, "direct")]]
    assert late == []


def test_threads_that_post_without_pause_do_not_starve_the_loop() -> None:
    # Past the backlog every post wakes the loop, a system call that lets it run: the deque stays short.
    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        mailbox = Mailbox(loop)
        stop = threading.Event()
        longest = 0

        def poster() -> None:
            while not stop.is_set():
                mailbox.post(len, "x")

        threads = [threading.Thread(target=poster) for _ in range(4)]
        for thread in threads:
            thread.start()
        turns = 0
        try:
            for _ in range(200):  # the loop's own work: 200 turns while the posters run
                await asyncio.sleep(0)
                turns += 1
                longest = max(longest, len(mailbox._posted))
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        return turns, longest

    turns, longest = asyncio.run(asyncio.wait_for(main(), 30))
    assert turns == 200
    # Without the wake-ups the deque grew by some 100,000 a second, and the loop got a turn a second.
    assert longest < 50_000


def test_a_thread_that_finished_its_call_takes_the_next_without_a_new_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # At the limit of threads, a thread that has finished counts as free before its result is handed back.
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        pool = LoopThreads(4, "test-free", Mailbox(loop))
        ran: list[str] = []
        first_done = threading.Event()
        second_done = loop.create_future()

        def first() -> tuple[object, ...]:
            ran.append("first")
            first_done.set()
            return (ran.append, "first handed back")

        def second() -> tuple[object, ...]:
            ran.append("second")
            return (second_done.set_result, None)

        pool.submit(first)
        assert first_done.wait(5)
        for _ in range(500):  # until the thread has counted itself free (without yielding to the loop)
            if pool._busy == 0:
                break
            threading.Event().wait(0.01)
        with monkeypatch.context() as m:
            m.setattr(threading.Thread, "start", _refuse)
            pool.submit(second)  # must not need a thread of its own
        await asyncio.wait_for(second_done, 5)
        pool.shutdown()
        return ran

    ran = asyncio.run(main())
    # "second" ran, on the first call's thread, possibly before the loop ran the first's hand-back.
    assert ran[0] == "first" and sorted(ran[1:]) == ["first handed back", "second"]
