"""Plain functions at concurrency 1 run on the event loop's thread, without the thread hop.

The host sends ``polyfn.concurrency`` in each FunctionLoadRequest's
properties; at ``"1"`` a plain handler runs inline, at anything else (or
with ``POLYFN_PLAIN_INLINE=0`` in the environment) in the handler thread
pool. Either way the invocation's results, logs, cancel and drain behave
as the host expects (docs/functions.md).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for, write_code
from stream_host import Host, HostStream, StreamWorker, new_id

from polyfn_runtime.protos.azure import FunctionRpc_pb2 as rpc

SUCCESS = rpc.StatusResult.Success
FAILURE = rpc.StatusResult.Failure
CANCELLED = rpc.StatusResult.Cancelled

CODE = {
    "fns/handlers.py": """
        import asyncio
        import contextvars
        import logging
        import os
        import threading
        import time
        from pathlib import Path

        SEEN = contextvars.ContextVar("seen", default=None)


        def where(event, context):
            thread = threading.current_thread()
            return {"main": thread is threading.main_thread(), "thread": thread.name}


        def chatty(event, context):
            print("printed")
            logging.getLogger("userlib").warning("logged")
            context.logger.info("context logger")
            return "ok"


        def leak(event, context):
            before = SEEN.get()
            SEEN.set(context.invocation_id)
            return {"before": before}


        def fail(event, context):
            raise ValueError("bad input")


        def returns_coroutine(event, context):
            async def later():
                await asyncio.sleep(0)
                return "awaited"

            return later()


        def coroutine_sees_its_context(event, context):
            # What the plain part sets, the coroutine it returns reads: they are one invocation.
            SEEN.set(context.invocation_id)

            async def later():
                await asyncio.sleep(0)
                return {"seen": SEEN.get(), "invocation": context.invocation_id}

            print("returning a coroutine")
            return later()


        async def forever(event, context):
            Path(event["started"]).touch()
            await asyncio.sleep(3600)


        def wait_for_release(event, context):
            Path(event["started"]).touch()
            deadline = time.monotonic() + 20
            while not os.path.exists(event["release"]):
                if time.monotonic() > deadline:
                    raise TimeoutError("never released")
                time.sleep(0.005)
            return "released"
    """,
}

FUNCTIONS = {
    "where": "handlers.where",
    "chatty": "handlers.chatty",
    "leak": "handlers.leak",
    "fail": "handlers.fail",
    "returns-coroutine": "handlers.returns_coroutine",
    "coroutine-context": "handlers.coroutine_sees_its_context",
    "forever": "handlers.forever",
    "wait": "handlers.wait_for_release",
}


@pytest.fixture
def start(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., HostStream]:
    """A worker with every function loaded at ``concurrency`` (None: no property), and its stream."""
    write_code(tmp_path, CODE)

    def start(concurrency: str | None, env: dict[str, str] | None = None) -> HostStream:
        host = Host()
        request.addfinalizer(host.stop)
        worker = StreamWorker(tmp_path, host.port, env=env)
        request.addfinalizer(worker.kill)
        stream = host.accept(worker)
        stream.worker = worker  # type: ignore[attr-defined]
        stream.init()
        properties = {} if concurrency is None else {"polyfn.concurrency": concurrency}
        for name, entry_point in FUNCTIONS.items():
            response = stream.load(name, str(tmp_path / "fns"), entry_point, properties=properties)
            assert response.result.status == SUCCESS, (response, worker.stderr())
        return stream

    return start


def value(response: rpc.InvocationResponse) -> Any:
    assert response.result.status == SUCCESS, response
    return json.loads(response.return_value.bytes)


def cancel(stream: HostStream, invocation_id: str) -> None:
    message = rpc.StreamingMessage()
    message.invocation_cancel.invocation_id = invocation_id
    stream.send(message)


@pytest.mark.parametrize(
    ("concurrency", "env", "inline"),
    [
        ("1", None, True),
        ("8", None, False),
        (None, None, False),
        ("1", {"POLYFN_PLAIN_INLINE": "0"}, False),
    ],
)
def test_where_a_plain_function_runs(
    start: Callable[..., HostStream], concurrency: str | None, env: dict[str, str] | None, inline: bool
) -> None:
    stream = start(concurrency, env)
    for _ in range(2):
        where = value(stream.call("where"))
        assert where["main"] is inline, where
        if not inline:
            assert where["thread"].startswith("polyfn-handler"), where


def test_inline_output_is_tagged_and_comes_before_the_response(start: Callable[..., HostStream]) -> None:
    stream = start("1")
    invocation_id = new_id("inv")
    assert value(stream.call("chatty", invocation_id=invocation_id)) == "ok"
    records = stream.logs(lambda r: r.invocation_id == invocation_id)
    assert {r.message for r in records} == {"printed", "logged", "context logger"}
    for record in records:
        assert (record.category, record.log_category) == ("chatty", rpc.RpcLog.User)


def test_inline_context_variables_do_not_leak_between_invocations(start: Callable[..., HostStream]) -> None:
    stream = start("1")
    assert [value(stream.call("leak")) for _ in range(3)] == [{"before": None}] * 3


def test_inline_failure_then_the_next_invocation_works(start: Callable[..., HostStream]) -> None:
    stream = start("1")
    failed = stream.call("fail")
    assert failed.result.status == FAILURE
    assert (failed.result.exception.type, failed.result.exception.message) == ("ValueError", "bad input")
    assert failed.result.exception.is_user_exception
    assert value(stream.call("where"))["main"] is True


def test_inline_plain_function_returning_a_coroutine_is_awaited(start: Callable[..., HostStream]) -> None:
    stream = start("1")
    assert value(stream.call("returns-coroutine")) == "awaited"


@pytest.mark.parametrize("concurrency", ["1", "8"])
def test_coroutine_returned_by_a_plain_function_runs_in_its_invocations_context(
    start: Callable[..., HostStream], concurrency: str
) -> None:
    stream = start(concurrency)
    for _ in range(5):
        got = value(stream.call("coroutine-context"))
        assert got["seen"] == got["invocation"], got


def test_coroutine_handler_at_concurrency_1_can_still_be_cancelled(
    start: Callable[..., HostStream], tmp_path: Path
) -> None:
    stream = start("1")
    started = tmp_path / "started-forever"
    invocation_id, _ = stream.invoke("forever", json.dumps({"started": str(started)}).encode())
    wait_for(started.exists, what="the handler to start")
    cancel(stream, invocation_id)
    assert stream.result(invocation_id).result.status == CANCELLED


def test_cancel_of_an_inline_plain_function_answers_when_it_returns(
    start: Callable[..., HostStream], tmp_path: Path
) -> None:
    # As in a thread: a plain function cannot be interrupted; it is answered when it returns.
    stream = start("1")
    started, release = tmp_path / "started", tmp_path / "release"
    invocation_id, _ = stream.invoke("wait", json.dumps({"started": str(started), "release": str(release)}).encode())
    wait_for(started.exists, what="the handler to start")
    cancel(stream, invocation_id)
    release.touch()
    assert stream.result(invocation_id).return_value.bytes == b'"released"'
    assert value(stream.call("where"))["main"] is True  # and the worker goes on serving


def test_stop_signal_during_an_inline_function_drains_it(start: Callable[..., HostStream], tmp_path: Path) -> None:
    stream = start("1")
    worker: StreamWorker = stream.worker  # type: ignore[attr-defined]
    started, release = tmp_path / "started", tmp_path / "release"
    invocation_id, _ = stream.invoke("wait", json.dumps({"started": str(started), "release": str(release)}).encode())
    wait_for(started.exists, what="the handler to start")
    worker.process.send_signal(signal.SIGTERM)
    release.touch()
    assert stream.result(invocation_id).return_value.bytes == b'"released"'
    stream.wait_for_log(lambda r: r.message.startswith("stopping: no new invocations"), "stopping")
    assert worker.wait_exit() == 0
