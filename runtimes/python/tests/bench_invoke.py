"""CPU of the stream worker's own Python per invocation, without gRPC.

    python tests/bench_invoke.py [-n 20000] [--inflight 8] [--rounds 3] [--profile]

Feeds a StreamWorker InvocationRequests shaped as the host sends them for
an HTTP request (its trigger metadata, an empty ``event``) straight into its
dispatch, ``inflight`` at a time, and takes the responses from its send
function: what remains is the runtime's own work (request to ``event`` and
``context``, the handler's task or thread, the response, the log scope), for
a no-op coroutine and a no-op plain function. ``--profile`` prints the
functions that took the most time (cProfile, one round). Not collected by
pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import pstats
import sys
import time
from typing import Any

from polyfn_runtime import logs
from polyfn_runtime.config import StreamOptions
from polyfn_runtime.loader import LoadedFunction
from polyfn_runtime.protos.azure import FunctionRpc_pb2 as rpc
from polyfn_runtime.stream import StreamWorker
from polyfn_runtime.threads import LoopThreads, Mailbox


async def anoop(event: Any, context: Any) -> None:
    return None


def noop(event: Any, context: Any) -> None:
    return None


def request(i: int) -> rpc.StreamingMessage:
    message = rpc.StreamingMessage(request_id=f"r{i}")
    invocation = message.invocation_request
    invocation.invocation_id = f"{i:032x}"
    invocation.function_id = "f1"
    metadata = invocation.trigger_metadata
    metadata["trigger"].string = "http"
    metadata["functionName"].string = "noop"
    metadata["messageID"].int = 0
    metadata["messageQOS"].int = 0
    metadata["messageTopic"].string = ""
    metadata["messageTimestamp"].int = 1764780000
    metadata["deadline"].string = "2026-12-03T17:50:00.123456789Z"
    http = {
        "method": "POST",
        "path": "/function/noop",
        "query": {},
        "headers": {"Host": "127.0.0.1:8080", "User-Agent": "Go-http-client/1.1", "Content-Length": "0"},
    }
    metadata["http"].json = json.dumps(http)
    event = invocation.input_data.add()
    event.name = "event"
    event.data.bytes = b""
    return rpc.StreamingMessage.FromString(message.SerializeToString())


async def run(handler: Any, calls: int, inflight: int) -> float:
    """CPU seconds per invocation."""
    worker = StreamWorker(StreamOptions(host="127.0.0.1", port=1, worker_id="w", request_id="r"))
    loop = asyncio.get_running_loop()
    worker._loop = loop
    worker._idle = asyncio.Event()
    worker._mailbox = Mailbox(loop)
    worker._handler_threads = LoopThreads(32, "bench-handler", worker._mailbox)
    worker._functions["f1"] = LoadedFunction(
        name="noop", handler=handler, is_async=asyncio.iscoroutinefunction(handler), logger=logging.getLogger("fn")
    )
    requests = iter([request(i) for i in range(calls)])
    done = loop.create_future()
    answered = 0

    def send(message: rpc.StreamingMessage) -> None:
        nonlocal answered
        answered += 1
        if answered == calls:
            done.set_result(None)
            return
        following = next(requests, None)
        if following is not None:
            worker._on_invocation(following)

    worker._send = send
    started = time.process_time()
    for _ in range(inflight):
        worker._on_invocation(next(requests))
    await done
    worker._handler_threads.shutdown()
    return (time.process_time() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--inflight", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    logs.install()
    out = sys.__stdout__
    for round_ in range(1, args.rounds + 1):
        for name, handler in (("async def", anoop), ("plain", noop)):
            profile = cProfile.Profile() if args.profile and round_ == 1 else None
            if profile:
                profile.enable()
            seconds = asyncio.run(run(handler, args.n, args.inflight))
            if profile:
                profile.disable()
                pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(15)
            print(f"round {round_} {name:>9}: {seconds * 1e6:5.1f} µs CPU per invocation", file=out, flush=True)


if __name__ == "__main__":
    main()
