"""CPU of a thread hop: a plain call run on a handler thread, its result back on the event loop.

    python tests/bench_threads.py [-n 40000] [--inflight 1,8] [--rounds 3]

Compares the stream worker's LoopThreads (results back through a Mailbox)
with a ThreadPoolExecutor as the worker used it before (HandlerExecutor,
a future per call, ``call_soon_threadsafe`` per result), for a no-op call,
``inflight`` calls at a time; no gRPC. Prints the process's CPU time and
the wall time per call, the two kinds taking turns. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import time
from collections.abc import Callable
from typing import Any

from polyfn_runtime.threads import HandlerExecutor, LoopThreads, Mailbox


async def _drive(submit: Callable[[Callable[[], None]], None], calls: int, inflight: int) -> None:
    """``calls`` no-op calls, ``inflight`` at a time; ``submit(back)`` runs one and has ``back`` called on the loop."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    sent = finished = 0

    def back() -> None:
        nonlocal finished
        finished += 1
        if finished == calls:
            done.set_result(None)
        else:
            following()

    def following() -> None:
        nonlocal sent
        if sent < calls:
            sent += 1
            submit(back)

    for _ in range(inflight):
        following()
    await done


async def _executor(calls: int, inflight: int) -> None:
    loop = asyncio.get_running_loop()
    executor = HandlerExecutor(8, "bench-executor")
    await _drive(
        lambda back: executor.submit(contextvars.copy_context().run, loop.call_soon_threadsafe, back), calls, inflight
    )
    executor.shutdown()


async def _loop_threads(calls: int, inflight: int) -> None:
    pool = LoopThreads(8, "bench-pool", Mailbox(asyncio.get_running_loop()))
    await _drive(lambda back: pool.submit(contextvars.copy_context().run, lambda: (back,)), calls, inflight)
    pool.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=40000, help="calls per case and round")
    parser.add_argument("--inflight", default="1,8", help="calls at a time, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cases: list[tuple[str, Callable[[int, int], Any]]] = [
        ("ThreadPoolExecutor", _executor),
        ("LoopThreads", _loop_threads),
    ]
    for inflight in (int(x) for x in args.inflight.split(",")):
        for round_ in range(1, args.rounds + 1):
            for name, case in cases:
                cpu, wall = time.process_time(), time.perf_counter()
                asyncio.run(case(args.n, inflight))
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                print(
                    f"inflight {inflight} round {round_} {name:>18}: "
                    f"CPU {cpu / args.n * 1e6:6.1f} µs/call, wall {wall / args.n * 1e6:6.1f} µs/call",
                    flush=True,
                )


if __name__ == "__main__":
    main()
