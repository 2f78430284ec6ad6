"""Stream mode, end to end: an in-test HOST (gRPC server) and the real worker process dialing in.

The same semantic table as call mode (test_call.py), over
``AzureFunctionsRpcMessages.FunctionRpc/EventStream`` as docs/protocols.md
describes it for polyfn functions.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for, write_code
from stream_host import Host, HostStream, StreamWorker, kind, new_id

from polyfn_runtime.protos.azure import FunctionRpc_pb2 as rpc

SUCCESS = rpc.StatusResult.Success
FAILURE = rpc.StatusResult.Failure
CANCELLED = rpc.StatusResult.Cancelled

HANDLERS = """
    import asyncio
    import logging
    import os
    import sys
    import threading
    import time

    import polyfn_runtime
    import sibling  # a module next to this one in the codedir


    def describe(event, context):
        if isinstance(event, bytes):
            return {"type": "bytes", "hex": event.hex()}
        return {"type": type(event).__name__, "value": event}


    def returns(event, context):
        return {
            "none": None,
            "bytes": b"\\x00\\xffraw",
            "bytearray": bytearray(b"array"),
            "str": "hello",
            "dict": {"a": [1, 2.5, None, True], "b": "\\u00e9"},
            "set": {1, 2},
        }[event["kind"]]


    BODIES = {"dict": {"ok": [1, None]}, "bytes": b"\\x00\\xffraw", "str": "hello", "none": None}


    def respond(event, context):
        return context.response(BODIES[event["kind"]], status=201, headers={"x-a": "b", "x-kind": event["kind"]})


    async def async_respond(event, context):
        await asyncio.sleep(0)
        return polyfn_runtime.Response(BODIES[event["kind"]], status=299, headers={"x-async": "\u00e9"})


    def default_response(event, context):
        return polyfn_runtime.Response()


    BAD_RESPONSES = {
        "status-str": {"status": "201"},
        "status-float": {"status": 201.0},
        "status-bool": {"status": True},
        "status-low": {"status": 99},
        "status-high": {"status": 600},
        "headers-list": {"headers": [("x-a", "b")]},
        "header-value": {"headers": {"x-a": 1}},
        "header-name": {"headers": {1: "b"}},
        "body": {"body": {1, 2}},
    }


    def bad_response(event, context):
        return context.response(**{"body": "ok", **BAD_RESPONSES[event["kind"]]})


    async def async_bad_response(event, context):
        return bad_response(event, context)


    def show_context(event, context):
        return {
            "items": dict(context),
            "is_dict": isinstance(context, dict),
            "function_name": context.function_name,
            "invocation_id": context.invocation_id,
            "trigger": context.trigger,
            "http": context.http,
            "remaining": context.remaining(),
            "logger": isinstance(context.logger, logging.LoggerAdapter),
        }


    def fail(event, context):
        raise ValueError(f"bad input: {event['why']}")


    async def async_fail(event, context):
        await asyncio.sleep(0)
        raise KeyError("missing")


    async def async_echo(event, context):
        await asyncio.sleep(0)
        asyncio.get_running_loop()
        return {"async": True, "event": event, "function": context.function_name}


    def from_sibling(event, context):
        return sibling.VALUE


    def chatty(event, context):
        tag = event["tag"]
        print("printed", tag)
        sys.stderr.write(f"to stderr {tag}\\n")
        logging.getLogger("userlib").warning("logged %s", tag)
        context.logger.info("context logger %s", tag)
        print("partial", tag, end="")
        return None


    # Passes only when three invocations are inside rendezvous() at the same time.
    BARRIER = threading.Barrier(3, timeout=10)


    def rendezvous(event, context):
        return BARRIER.wait()


    _arrived = 0
    _everyone = None


    async def async_rendezvous(event, context):
        global _arrived, _everyone
        if _everyone is None:
            _everyone = asyncio.Event()
        _arrived += 1
        if _arrived == 3:
            _everyone.set()
        await asyncio.wait_for(_everyone.wait(), timeout=10)
        return "met"


    async def forever(event, context):
        print("started")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            print("cancelled")
            raise


    def wait_for_release(event, context):
        print("started")
        deadline = time.monotonic() + 20
        while not os.path.exists(event["release"]):
            if time.monotonic() > deadline:
                raise TimeoutError("never released")
            time.sleep(0.005)
        return "released"


    def environment(event, context):
        return {"env": dict(os.environ), "cwd": os.getcwd()}
"""

CODE = {
    "main/handlers.py": HANDLERS,
    "main/sibling.py": "VALUE = 'from sibling'\n",
    "main/pkg/__init__.py": "",
    "main/pkg/util.py": "NAME = 'util'\n",
    "main/pkg/mod.py": """
        from . import util


        def fn(event, context):
            return {"util": util.NAME, "module": __name__.rpartition(".")[2]}
    """,
    "one/index.py": """
        def handler(event, context):
            return "one"
    """,
    "two/index.py": """
        def handler(event, context):
            return "two"
    """,
    "broken/raises.py": "raise RuntimeError('config missing')\n",
    "broken/syntax.py": "def handler(:\n",
    "broken/noattr.py": "x = 1\n",
    "broken/imports.py": "import does_not_exist_polyfn_test\n",
    "late/late.py": "def handler(event, context):\n    return 'late'\n",
}

FUNCTIONS = {
    "describe": "handlers.describe",
    "returns": "handlers.returns",
    "respond": "handlers.respond",
    "async-respond": "handlers.async_respond",
    "default-response": "handlers.default_response",
    "bad-response": "handlers.bad_response",
    "async-bad-response": "handlers.async_bad_response",
    "context": "handlers.show_context",
    "fail": "handlers.fail",
    "async-fail": "handlers.async_fail",
    "async-echo": "handlers.async_echo",
    "sibling": "handlers.from_sibling",
    "chatty": "handlers.chatty",
    "rendezvous": "handlers.rendezvous",
    "async-rendezvous": "handlers.async_rendezvous",
    "forever": "handlers.forever",
    "wait": "handlers.wait_for_release",
    "environment": "handlers.environment",
    "dotted": "pkg.mod.fn",
}


def payload_json(response: rpc.InvocationResponse) -> Any:
    assert response.result.status == SUCCESS, response
    return json.loads(response.return_value.bytes)


def terminate(stream: HostStream, grace: float | None) -> None:
    message = rpc.StreamingMessage()
    if grace is None:
        message.worker_terminate.SetInParent()
    else:
        message.worker_terminate.grace_period.FromTimedelta(timedelta(seconds=grace))
    stream.send(message)


class Served:
    """A worker with every function loaded, and the host's end of its stream."""

    def __init__(self, worker: StreamWorker, stream: HostStream, workdir: Path, init: rpc.WorkerInitResponse) -> None:
        self.worker = worker
        self.stream = stream
        self.workdir = workdir
        self.init = init


def start_served(host: Host, workdir: Path, **kwargs: Any) -> tuple[StreamWorker, HostStream, rpc.WorkerInitResponse]:
    worker = StreamWorker(workdir, host.port, **kwargs)
    try:
        stream = host.accept(worker)
        init = stream.init()
        for name, entry_point in FUNCTIONS.items():
            directory = str(workdir / "main")
            response = stream.load(name, directory, entry_point)
            assert response.result.status == SUCCESS, (response, worker.stderr())
        for name in ("one", "two"):
            assert stream.load(name, str(workdir / name), "index.handler").result.status == SUCCESS
    except BaseException:
        worker.kill()
        raise
    return worker, stream, init


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = write_code(tmp_path_factory.mktemp("stream"), CODE)
    host = Host()
    worker = None
    try:
        worker, stream, init = start_served(host, workdir)
        yield Served(worker, stream, workdir, init)
    finally:
        if worker is not None:
            worker.kill()
        host.stop()


@pytest.fixture
def launch(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., tuple[StreamWorker, HostStream, Host]]:
    """A fresh host and worker for one test (both always torn down; the worker's process group killed)."""
    write_code(tmp_path, CODE)

    def start(**kwargs: Any) -> tuple[StreamWorker, HostStream, Host]:
        host = Host()
        request.addfinalizer(host.stop)
        worker = StreamWorker(tmp_path, host.port, **kwargs)
        request.addfinalizer(worker.kill)
        return worker, host.accept(worker), host

    return start


def load_all(stream: HostStream, workdir: Path) -> None:
    stream.init()
    for name, entry_point in FUNCTIONS.items():
        assert stream.load(name, str(workdir / "main"), entry_point).result.status == SUCCESS


# -- the stream's beginning ----------------------------------------------------


def test_first_message_is_start_stream(served: Served) -> None:
    first = served.stream.received[0]
    assert kind(first) == "start_stream"
    assert first.start_stream.worker_id == served.worker.worker_id
    assert first.request_id == served.worker.request_id


def test_init_response(served: Served) -> None:
    init = served.init
    assert init.result.status == SUCCESS
    assert dict(init.capabilities) == {
        "HandlesInvocationCancelMessage": "true",
        "HandlesWorkerTerminateMessage": "true",
        "polyfn": "1",
    }
    assert init.worker_version
    assert init.worker_metadata.runtime_name == "python"
    assert init.worker_metadata.runtime_version == ".".join(map(str, sys.version_info[:3]))
    assert init.worker_metadata.worker_version == init.worker_version


def test_other_host_requests_are_answered(served: Served) -> None:
    stream = served.stream
    metadata = rpc.StreamingMessage()
    metadata.functions_metadata_request.function_app_directory = str(served.workdir)
    response = stream.response_to(stream.send(metadata), "function_metadata_response")
    assert response.use_default_metadata_indexing
    assert response.result.status == SUCCESS

    warmup = rpc.StreamingMessage()
    warmup.worker_warmup_request.worker_directory = str(served.workdir)
    assert stream.response_to(stream.send(warmup), "worker_warmup_response").result.status == SUCCESS

    # Messages the worker does not handle are ignored...
    ignored = rpc.StreamingMessage()
    ignored.file_change_event_request.full_path = "/nowhere"
    stream.send(ignored)
    heartbeat = rpc.StreamingMessage()
    heartbeat.worker_heartbeat.SetInParent()
    stream.send(heartbeat)
    # ...and it keeps answering (in order: the status comes after them).
    status = rpc.StreamingMessage()
    status.worker_status_request.SetInParent()
    stream.response_to(stream.send(status), "worker_status_response")


# -- payloads ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"x": [1, 2], "y": "z"}', {"type": "dict", "value": {"x": [1, 2], "y": "z"}}),
        (b"42", {"type": "int", "value": 42}),
        (b'"text"', {"type": "str", "value": "text"}),
        (b"", {"type": "dict", "value": {}}),
        (None, {"type": "dict", "value": {}}),
        (b"\xff\x00not json", {"type": "bytes", "hex": b"\xff\x00not json".hex()}),
        (b"plain text", {"type": "bytes", "hex": b"plain text".hex()}),
    ],
    ids=["json-object", "json-number", "json-string", "empty", "no-input", "binary", "text"],
)
def test_event_from_payload(served: Served, payload: bytes | None, expected: object) -> None:
    assert payload_json(served.stream.call("describe", payload)) == expected


@pytest.mark.parametrize(
    ("kind_", "expected"),
    [
        ("none", b""),
        ("bytes", b"\x00\xffraw"),
        ("bytearray", b"array"),
        ("str", b'"hello"'),
        ("dict", json.dumps({"a": [1, 2.5, None, True], "b": "\u00e9"}).encode()),
    ],
)
def test_return_value_to_payload(served: Served, kind_: str, expected: bytes) -> None:
    response = served.stream.call("returns", json.dumps({"kind": kind_}).encode())
    assert response.result.status == SUCCESS
    assert response.HasField("return_value") == bool(expected)  # absent for an empty result
    assert response.return_value.bytes == expected


def test_unencodable_return_value(served: Served) -> None:
    response = served.stream.call("returns", b'{"kind": "set"}')
    assert response.result.status == FAILURE
    exception = response.result.exception
    assert (exception.type, exception.message) == ("TypeError", "Object of type set is not JSON serializable")
    assert exception.source == "UserCodeReturn"
    assert exception.is_user_exception
    assert not response.HasField("return_value")


# -- HTTP response objects -------------------------------------------------------

RESPONSE_BODIES = {
    "dict": json.dumps({"ok": [1, None]}).encode(),
    "bytes": b"\x00\xffraw",
    "str": b'"hello"',
    "none": b"",
}


def http_result(response: rpc.InvocationResponse) -> rpc.RpcHttp:
    assert response.result.status == SUCCESS, response
    assert response.return_value.WhichOneof("data") == "http"
    http = response.return_value.http
    assert http.body.WhichOneof("data") == "bytes"  # also for an empty body
    return http


@pytest.mark.parametrize(
    ("function", "status", "headers"),
    [("respond", "201", {"x-a": "b"}), ("async-respond", "299", {"x-async": "\u00e9"})],
)
@pytest.mark.parametrize("kind_", list(RESPONSE_BODIES))
def test_response_object(served: Served, function: str, status: str, headers: dict, kind_: str) -> None:
    http = http_result(served.stream.call(function, json.dumps({"kind": kind_}).encode()))
    assert http.status_code == status
    expected = {**headers, "x-kind": kind_} if function == "respond" else headers
    assert dict(http.headers) == expected
    assert http.body.bytes == RESPONSE_BODIES[kind_]


def test_response_object_defaults(served: Served) -> None:
    http = http_result(served.stream.call("default-response"))
    assert (http.status_code, dict(http.headers), http.body.bytes) == ("200", {}, b"")


@pytest.mark.parametrize("function", ["bad-response", "async-bad-response"])
@pytest.mark.parametrize(
    ("kind_", "type_", "message"),
    [
        ("status-str", "TypeError", "Response status must be an int, not str"),
        ("status-float", "TypeError", "Response status must be an int, not float"),
        ("status-bool", "TypeError", "Response status must be an int, not bool"),
        ("status-low", "ValueError", "Response status must be 100-599, got 99"),
        ("status-high", "ValueError", "Response status must be 100-599, got 600"),
        ("headers-list", "TypeError", "Response headers must be a mapping of str to str, not list"),
        ("header-value", "TypeError", "Response header 'x-a': the value must be str, not int"),
        ("header-name", "TypeError", "Response header names must be str, not int (1)"),
        ("body", "TypeError", "Object of type set is not JSON serializable"),
    ],
)
def test_bad_response_object_fails_then_next_invocation_works(
    served: Served, function: str, kind_: str, type_: str, message: str
) -> None:
    stream = served.stream
    invocation_id = new_id("inv")
    response = stream.call(function, json.dumps({"kind": kind_}).encode(), invocation_id=invocation_id)
    assert response.result.status == FAILURE
    exception = response.result.exception
    assert (exception.type, exception.message) == (type_, message)
    assert exception.source == "UserCodeReturn"
    assert exception.is_user_exception
    assert not response.HasField("return_value")
    [record] = stream.logs(lambda r: r.invocation_id == invocation_id)
    assert record.level == rpc.RpcLog.Error
    assert record.message == f"cannot encode the return value: [UserCodeReturn] {type_}: {message}"

    assert http_result(stream.call("respond", b'{"kind": "str"}')).body.bytes == b'"hello"'


def test_plain_return_is_not_an_http_response(served: Served) -> None:
    response = served.stream.call("returns", b'{"kind": "str"}')
    assert response.return_value.WhichOneof("data") == "bytes"


def test_response_echoes_ids(served: Served) -> None:
    invocation_id, request_id = served.stream.invoke("describe", b"{}")
    message = served.stream.wait_for(
        lambda m: kind(m) == "invocation_response" and m.invocation_response.invocation_id == invocation_id
    )
    assert message.request_id == request_id


# -- context -------------------------------------------------------------------


def test_context_from_trigger_metadata(served: Served) -> None:
    deadline = (datetime.now(timezone.utc) + timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    http = {
        "method": "POST",
        "path": "/function/context",
        "query": {"a": ["1", "2"]},
        "headers": {"content-type": ["application/json"]},
    }
    metadata = {
        "trigger": "http",
        "functionName": "context",
        "messageID": 7,
        "messageQOS": 1,
        "messageTopic": "t/1",
        "messageTimestamp": 1_700_000_000,
        "deadline": deadline,
        "http": http,
    }
    invocation_id = new_id("inv")
    result = payload_json(served.stream.call("context", metadata=metadata, invocation_id=invocation_id))
    assert result.pop("remaining") == pytest.approx(10, abs=2)
    assert result == {
        "items": {
            "trigger": "http",
            "deadline": deadline,
            "http": http,
            "messageQOS": 1,
            "messageTopic": "t/1",
            "messageTimestamp": 1_700_000_000,
            "functionName": "context",
            "functionInvokeID": invocation_id,
            "invokeid": invocation_id,
        },
        "is_dict": True,
        "function_name": "context",
        "invocation_id": invocation_id,
        "trigger": "http",
        "http": http,
        "logger": True,
    }


@pytest.mark.parametrize("trigger", ["mqtt", "timer", "invoke"])
def test_context_per_trigger(served: Served, trigger: str) -> None:
    deadline = "2000-01-01T00:00:00Z"  # past: no time left
    result = payload_json(served.stream.call("context", metadata={"trigger": trigger, "deadline": deadline}))
    assert result["items"]["trigger"] == result["trigger"] == trigger
    assert result["http"] is None
    assert result["remaining"] == 0


def test_context_without_trigger_metadata(served: Served) -> None:
    invocation_id = new_id("inv")
    result = payload_json(served.stream.call("context", invocation_id=invocation_id))
    assert result == {
        "items": {
            "trigger": "invoke",
            "messageQOS": 0,
            "messageTopic": "",
            "messageTimestamp": 0,
            "functionName": "context",
            "functionInvokeID": invocation_id,
            "invokeid": invocation_id,
        },
        "is_dict": True,
        "function_name": "context",
        "invocation_id": invocation_id,
        "trigger": "invoke",
        "http": None,
        "remaining": None,
        "logger": True,
    }


# -- handlers --------------------------------------------------------------------


def test_async_handler(served: Served) -> None:
    response = served.stream.call("async-echo", b'{"n": 1}')
    assert payload_json(response) == {"async": True, "event": {"n": 1}, "function": "async-echo"}


@pytest.mark.parametrize(
    ("function", "payload", "type_", "message", "line"),
    [
        ("fail", b'{"why": "no name"}', "ValueError", "bad input: no name", "in fail"),
        ("async-fail", b"", "KeyError", "'missing'", "in async_fail"),
    ],
)
def test_exception_then_next_invocation_works(
    served: Served, function: str, payload: bytes, type_: str, message: str, line: str
) -> None:
    stream = served.stream
    invocation_id = new_id("inv")
    response = stream.call(function, payload, invocation_id=invocation_id)
    assert response.result.status == FAILURE
    exception = response.result.exception
    assert (exception.type, exception.message) == (type_, message)
    assert exception.is_user_exception
    assert exception.source == ""
    assert exception.stack_trace.startswith("Traceback (most recent call last):")
    assert 'handlers.py", line' in exception.stack_trace and line in exception.stack_trace
    assert "polyfn_runtime" not in exception.stack_trace  # the runtime's frames are left out
    assert not response.HasField("return_value")

    # The traceback is logged too, as the function's, and before the response.
    [record] = stream.logs(lambda r: r.invocation_id == invocation_id)
    assert record.level == rpc.RpcLog.Error
    assert record.message == exception.stack_trace
    assert (record.category, record.log_category) == (function, rpc.RpcLog.User)

    assert payload_json(stream.call("describe", b"{}")) == {"type": "dict", "value": {}}


def test_unknown_function_id(served: Served) -> None:
    response = served.stream.call("nope")
    assert response.result.status == FAILURE
    assert response.result.exception.type == "FunctionNotFound"
    assert response.result.exception.message == "function not found: nope"


def test_same_module_name_in_two_codedirs(served: Served) -> None:
    assert served.stream.call("one").return_value.bytes == b'"one"'
    assert served.stream.call("two").return_value.bytes == b'"two"'


def test_sibling_and_package_imports(served: Served) -> None:
    assert served.stream.call("sibling").return_value.bytes == b'"from sibling"'
    assert payload_json(served.stream.call("dotted")) == {"util": "util", "module": "mod"}


@pytest.mark.parametrize("function", ["rendezvous", "async-rendezvous"])
def test_invocations_run_concurrently(served: Served, function: str) -> None:
    # The handler only returns once three invocations are inside it at the same time.
    stream = served.stream
    ids = [stream.invoke(function)[0] for _ in range(3)]
    for invocation_id in ids:
        assert stream.result(invocation_id, timeout=15).result.status == SUCCESS


# -- loading -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry_point", "type_", "message"),
    [
        ("raises.handler", "RuntimeError", "RuntimeError: config missing"),
        ("syntax.handler", "SyntaxError", "SyntaxError"),
        ("imports.handler", "ModuleNotFoundError", "No module named 'does_not_exist_polyfn_test'"),
        ("noattr.handler", "HandlerLoadError", "has no attribute 'handler'"),
        ("missing.handler", "HandlerLoadError", "module 'missing' not found"),
        ("nodot", "HandlerLoadError", "expected 'module.function'"),
    ],
)
def test_load_failure_is_reported_and_the_worker_keeps_serving(
    served: Served, entry_point: str, type_: str, message: str
) -> None:
    stream = served.stream
    function_id = new_id("broken")
    response = stream.load(function_id, str(served.workdir / "broken"), entry_point, name="broken")
    assert response.function_id == function_id
    assert response.result.status == FAILURE
    exception = response.result.exception
    assert exception.type == type_
    assert message in exception.message
    if type_ != "HandlerLoadError":
        assert exception.stack_trace.startswith("Traceback (most recent call last):")
        assert exception.is_user_exception
    record = stream.wait_for_log(
        lambda r: r.level == rpc.RpcLog.Error and r.category == "broken" and entry_point in r.message,
        what="the load failure, logged",
    )
    assert record.log_category == rpc.RpcLog.System
    assert stream.call(function_id).result.exception.type == "FunctionNotFound"
    assert payload_json(stream.call("describe", b"[1]")) == {"type": "list", "value": [1]}


def test_load_collection(served: Served) -> None:
    stream = served.stream
    message = rpc.StreamingMessage()
    requests = message.function_load_request_collection.function_load_requests
    from stream_host import fill_metadata

    good, bad = requests.add(function_id=new_id("good")), requests.add(function_id=new_id("bad"))
    fill_metadata(good.metadata, "good", str(served.workdir / "late"), "late.handler")
    fill_metadata(bad.metadata, "bad", str(served.workdir / "broken"), "raises.handler")
    collection = stream.response_to(stream.send(message), "function_load_response_collection")
    results = {r.function_id: r.result.status for r in collection.function_load_responses}
    assert results == {good.function_id: SUCCESS, bad.function_id: FAILURE}
    assert stream.call(good.function_id).return_value.bytes == b'"late"'


def test_invocation_sent_before_the_load_response(served: Served) -> None:
    stream = served.stream
    function_id = new_id("eager")
    load = rpc.StreamingMessage()
    load.function_load_request.function_id = function_id
    from stream_host import fill_metadata

    fill_metadata(load.function_load_request.metadata, "eager", str(served.workdir / "late"), "late.handler")
    stream.send(load)
    invocation_id, _ = stream.invoke(function_id)  # without waiting for FunctionLoadResponse
    assert stream.result(invocation_id).return_value.bytes == b'"late"'


# -- logs ----------------------------------------------------------------------------


def test_function_output_arrives_as_rpc_logs(served: Served) -> None:
    stream = served.stream
    invocation_id = new_id("inv")
    tag = invocation_id[-8:]
    stream.call("chatty", json.dumps({"tag": tag}).encode(), invocation_id=invocation_id)

    # All of them before the response.
    records = stream.logs(lambda r: r.invocation_id == invocation_id)
    levels = {r.message: r.level for r in records}
    assert levels == {
        f"printed {tag}": rpc.RpcLog.Information,
        f"to stderr {tag}": rpc.RpcLog.Error,
        f"logged {tag}": rpc.RpcLog.Warning,
        f"context logger {tag}": rpc.RpcLog.Information,
        f"partial {tag}": rpc.RpcLog.Information,  # flushed when the invocation ended
    }
    for record in records:
        assert (record.category, record.log_category) == ("chatty", rpc.RpcLog.User)


def test_runtime_messages_are_system_logs_and_stderr_is_for_before_the_stream(served: Served) -> None:
    loaded = served.stream.logs(lambda r: r.message == "loaded function describe (handler handlers.describe)")
    assert len(loaded) == 1
    record = loaded[0]
    assert (record.log_category, record.level, record.invocation_id) == (rpc.RpcLog.System, rpc.RpcLog.Information, "")
    assert record.category == "describe"

    records = served.worker.log_records()
    assert any(r["msg"].startswith("polyfn python runtime") and "stream mode" in r["msg"] for r in records)
    assert not any("loaded function" in r["msg"] for r in records)  # that went to the host
    assert served.worker.stdout() == ""


# -- cancel ----------------------------------------------------------------------------


def cancel(stream: HostStream, invocation_id: str) -> None:
    message = rpc.StreamingMessage()
    message.invocation_cancel.invocation_id = invocation_id
    stream.send(message)


def test_cancel_an_async_handler(served: Served) -> None:
    stream = served.stream
    invocation_id, _ = stream.invoke("forever")
    stream.wait_for_log(lambda r: r.invocation_id == invocation_id and r.message == "started", "the handler to start")
    cancel(stream, invocation_id)
    response = stream.result(invocation_id)
    assert response.result.status == CANCELLED
    assert stream.logs(lambda r: r.invocation_id == invocation_id and r.message == "cancelled")

    cancel(stream, invocation_id)  # no longer in flight: ignored
    cancel(stream, "never-heard-of")
    assert payload_json(stream.call("describe", b"1")) == {"type": "int", "value": 1}
    assert len(stream.wait_for_all(lambda m: m.invocation_response.invocation_id == invocation_id, 1)) == 1


def test_cancel_a_plain_function_answers_when_it_returns(served: Served, tmp_path: Path) -> None:
    stream = served.stream
    release = tmp_path / "release"
    invocation_id, _ = stream.invoke("wait", json.dumps({"release": str(release)}).encode())
    stream.wait_for_log(lambda r: r.invocation_id == invocation_id and r.message == "started", "the handler to start")
    cancel(stream, invocation_id)
    stream.wait_for_log(
        lambda r: r.log_category == rpc.RpcLog.System and f"cannot cancel invocation {invocation_id}" in r.message,
        "the warning that it cannot be cancelled",
    )
    release.touch()
    assert stream.result(invocation_id).return_value.bytes == b'"released"'


# -- lifecycle (a worker per test) ---------------------------------------------------------


@pytest.mark.parametrize("spelling", ["classic", "functions", "polyfn"])
def test_either_argument_spelling_is_enough(launch: Callable[..., Any], tmp_path: Path, spelling: str) -> None:
    worker, stream, _ = launch(spelling=spelling)
    first = stream.wait_for(lambda m: True)
    assert kind(first) == "start_stream"
    assert (first.start_stream.worker_id, first.request_id) == (worker.worker_id, worker.request_id)
    assert stream.init().result.status == SUCCESS
    assert stream.load("one", str(tmp_path / "one"), "index.handler").result.status == SUCCESS
    assert stream.call("one").return_value.bytes == b'"one"'


def test_worker_id_from_the_environment_stays_off_the_command_line(launch: Callable[..., Any], tmp_path: Path) -> None:
    worker, stream, _ = launch(spelling="polyfn")
    first = stream.wait_for(lambda m: True)
    assert first.start_stream.worker_id == worker.worker_id
    cmdline = Path(f"/proc/{worker.process.pid}/cmdline").read_bytes().decode()
    assert worker.worker_id not in cmdline
    # Functions (and what they start) do not see it either.
    load_all(stream, tmp_path)
    assert "POLYFN_WORKER_ID" not in payload_json(stream.call("environment"))["env"]


def test_unknown_arguments_are_ignored_with_a_warning(launch: Callable[..., Any], tmp_path: Path) -> None:
    worker, stream, _ = launch(extra_args=["--unknown-flag", "value", "--stdio"])
    assert stream.init().result.status == SUCCESS
    assert stream.load("one", str(tmp_path / "one"), "index.handler").result.status == SUCCESS
    assert stream.call("one").return_value.bytes == b'"one"'
    [warning] = [r for r in worker.log_records() if r["level"] == "warning"]
    assert warning["msg"] == "ignoring unknown arguments: --unknown-flag value --stdio"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--host", "127.0.0.1", "--workerId", "w"], "--host and --port go together"),
        (["--functions-uri", "http://127.0.0.1:9/"], "needs a worker id"),
        (["--functions-uri", "not a uri", "--functions-worker-id", "w"], "--functions-uri"),
    ],
)
def test_bad_launch_arguments_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "polyfn_runtime", *args],
        cwd=tmp_path,
        capture_output=True,
        timeout=30,
        start_new_session=True,
    )
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr.decode()


def test_worker_terminate_lets_the_invocation_in_flight_finish(launch: Callable[..., Any], tmp_path: Path) -> None:
    worker, stream, _ = launch()
    load_all(stream, tmp_path)
    release = tmp_path / "release"
    invocation_id, _ = stream.invoke("wait", json.dumps({"release": str(release)}).encode())
    stream.wait_for_log(lambda r: r.invocation_id == invocation_id and r.message == "started", "the handler to start")

    terminate(stream, grace=20)
    stream.wait_for_log(lambda r: r.message.startswith("stopping"), "the stopping message")
    # No new invocations once stopping...
    refused = stream.call("describe")
    assert refused.result.status == FAILURE
    assert refused.result.exception.type == "WorkerStopping"
    assert worker.process.poll() is None

    # ...but the one in flight completes, then the worker closes the stream and exits 0.
    release.touch()
    assert stream.result(invocation_id).return_value.bytes == b'"released"'
    stream.wait_ended()
    assert worker.wait_exit() == 0
    assert any(r["msg"] == "stopped" for r in worker.log_records())  # stderr, once the stream is closed


def test_worker_terminate_grace_period_expires(launch: Callable[..., Any], tmp_path: Path) -> None:
    worker, stream, _ = launch()
    load_all(stream, tmp_path)
    invocation_id, _ = stream.invoke("wait", json.dumps({"release": str(tmp_path / "never")}).encode())
    stream.wait_for_log(lambda r: r.invocation_id == invocation_id and r.message == "started", "the handler to start")
    terminate(stream, grace=0.1)
    assert worker.wait_exit() == 0
    assert not [m for m in stream.received if m.invocation_response.invocation_id == invocation_id]
    stream.wait_for_log(lambda r: "still running after the grace period" in r.message, "the grace warning")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_drains_like_worker_terminate(
    launch: Callable[..., Any], tmp_path: Path, signum: signal.Signals
) -> None:
    worker, stream, _ = launch()
    load_all(stream, tmp_path)
    release = tmp_path / "release"
    invocation_id, _ = stream.invoke("wait", json.dumps({"release": str(release)}).encode())
    stream.wait_for_log(lambda r: r.invocation_id == invocation_id and r.message == "started", "the handler to start")
    worker.process.send_signal(signum)
    stream.wait_for_log(lambda r: r.message.startswith("stopping: no new invocations, up to 30s"), "stopping")
    release.touch()
    assert stream.result(invocation_id).return_value.bytes == b'"released"'
    assert worker.wait_exit() == 0


def test_environment_reload(launch: Callable[..., Any], tmp_path: Path) -> None:
    _, stream, _ = launch(env={"POLYFN_STREAM_OLD": "gone after the reload"})
    load_all(stream, tmp_path)
    app = tmp_path / "app"
    app.mkdir()
    environment = {"POLYFN_STREAM_TEST": "yes", "PATH": os.environ.get("PATH", "/usr/bin")}
    message = rpc.StreamingMessage()
    reload = message.function_environment_reload_request
    reload.environment_variables.update(environment)
    reload.function_app_directory = str(app)
    response = stream.response_to(stream.send(message), "function_environment_reload_response")
    assert response.result.status == SUCCESS
    assert response.capabilities["HandlesInvocationCancelMessage"] == "true"
    assert response.worker_metadata.runtime_name == "python"

    seen = payload_json(stream.call("environment"))
    assert seen == {"env": environment, "cwd": str(app)}


def test_host_gone_exits_1(launch: Callable[..., Any]) -> None:
    worker, stream, host = launch()
    assert stream.init().result.status == SUCCESS
    host.stop()
    assert worker.wait_exit() == 1
    wait_for(lambda: "lost the stream to the host" in worker.stderr(), what="the reason on stderr")


def test_no_host_exits_1(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nobody listens there
    worker = StreamWorker(tmp_path, port)
    try:
        assert worker.wait_exit() == 1
        assert "lost the stream to the host" in worker.stderr()
    finally:
        worker.kill()
