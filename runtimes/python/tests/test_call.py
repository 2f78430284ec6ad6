"""The call protocol, end to end: a real worker process and a real gRPC client.

Every test runs against both server engines (``asyncio`` and ``threads``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from conftest import Worker, call_error, write_code

from polyfn_runtime.protos.baetyl.function_pb2 import FunctionMessage

HANDLERS = """
    import asyncio
    import logging
    import sys
    import threading

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


    def show_context(event, context):
        return {
            "items": dict(context),
            "is_dict": isinstance(context, dict),
            "function_name": context.function_name,
            "invocation_id": context.invocation_id,
            "remaining": context.remaining(),
            "logger": isinstance(context.logger, logging.LoggerAdapter),
        }


    def fail(event, context):
        raise ValueError(f"bad input: {event['why']}")


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


    # Passes only when three calls are inside rendezvous() at the same time.
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
}

FUNCTIONS = {
    "describe": "handlers.describe",
    "returns": "handlers.returns",
    "respond": "handlers.respond",
    "async-respond": "handlers.async_respond",
    "default-response": "handlers.default_response",
    "bad-response": "handlers.bad_response",
    "context": "handlers.show_context",
    "fail": "handlers.fail",
    "async-echo": "handlers.async_echo",
    "sibling": "handlers.from_sibling",
    "chatty": "handlers.chatty",
    "rendezvous": "handlers.rendezvous",
    "async-rendezvous": "handlers.async_rendezvous",
    "dotted": "pkg.mod.fn",
}


@pytest.fixture(scope="module", params=["asyncio", "threads"])
def worker(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    start_module_worker: Callable[..., Worker],
) -> Worker:
    engine = request.param
    workdir = write_code(tmp_path_factory.mktemp(f"worker-{engine}"), CODE)
    functions = [{"name": name, "handler": handler, "codedir": "main"} for name, handler in FUNCTIONS.items()]
    functions += [
        {"name": "one", "handler": "index.handler", "codedir": str(workdir / "one")},
        {"name": "two", "handler": "index.handler", "codedir": "two"},
    ]
    config = {"name": "test-runtime", "functions": functions, "server": {"engine": engine, "grace": 5}}
    worker = start_module_worker(workdir, config).wait_ready()
    worker.wait_for_log(lambda r: f"engine {engine}" in r["msg"], what="the engine in the listening message")
    return worker


def new_id() -> str:
    return f"inv-{uuid.uuid4()}"


def payload_json(reply: FunctionMessage) -> object:
    return json.loads(reply.Payload)


# -- payloads ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"x": [1, 2], "y": "z"}', {"type": "dict", "value": {"x": [1, 2], "y": "z"}}),
        (b"42", {"type": "int", "value": 42}),
        (b'"text"', {"type": "str", "value": "text"}),
        (b"", {"type": "dict", "value": {}}),
        (b"\xff\x00not json", {"type": "bytes", "hex": b"\xff\x00not json".hex()}),
        (b"plain text", {"type": "bytes", "hex": b"plain text".hex()}),
    ],
    ids=["json-object", "json-number", "json-string", "empty", "binary", "text"],
)
def test_event_from_payload(worker: Worker, payload: bytes, expected: object) -> None:
    assert payload_json(worker.call("describe", payload)) == expected


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("none", b""),
        ("bytes", b"\x00\xffraw"),
        ("bytearray", b"array"),
        ("str", b'"hello"'),
        ("dict", json.dumps({"a": [1, 2.5, None, True], "b": "\u00e9"}).encode()),
    ],
)
def test_return_value_to_payload(worker: Worker, kind: str, expected: bytes) -> None:
    assert worker.call("returns", json.dumps({"kind": kind}).encode()).Payload == expected


def test_unencodable_return_value(worker: Worker) -> None:
    error = call_error(lambda: worker.call("returns", b'{"kind": "set"}'))
    assert error.code() == grpc.StatusCode.UNKNOWN
    assert error.details() == "[UserCodeReturn] TypeError: Object of type set is not JSON serializable"


# -- HTTP response objects -----------------------------------------------------

RESPONSE_METADATA = "polyfn-response-bin"
RESPONSE_BODIES = {
    "dict": json.dumps({"ok": [1, None]}).encode(),
    "bytes": b"\x00\xffraw",
    "str": b'"hello"',
    "none": b"",
}


def call_with_metadata(worker: Worker, function: str, payload: bytes = b"") -> tuple[FunctionMessage, dict]:
    """The reply and the call's initial (header) metadata."""
    reply, call = worker.stub.with_call(FunctionMessage(FunctionName=function, Payload=payload), timeout=10)
    return reply, dict(call.initial_metadata())


@pytest.mark.parametrize("kind", list(RESPONSE_BODIES))
def test_response_object(worker: Worker, kind: str) -> None:
    reply, metadata = call_with_metadata(worker, "respond", json.dumps({"kind": kind}).encode())
    assert reply.Payload == RESPONSE_BODIES[kind]
    assert reply.FunctionName == "respond"
    assert isinstance(metadata[RESPONSE_METADATA], bytes)
    assert json.loads(metadata[RESPONSE_METADATA]) == {"status": 201, "headers": {"x-a": "b", "x-kind": kind}}


@pytest.mark.parametrize("kind", list(RESPONSE_BODIES))
def test_async_response_object(worker: Worker, kind: str) -> None:
    reply, metadata = call_with_metadata(worker, "async-respond", json.dumps({"kind": kind}).encode())
    assert reply.Payload == RESPONSE_BODIES[kind]
    assert json.loads(metadata[RESPONSE_METADATA].decode("utf-8")) == {"status": 299, "headers": {"x-async": "\u00e9"}}


def test_response_object_defaults(worker: Worker) -> None:
    reply, metadata = call_with_metadata(worker, "default-response")
    assert reply.Payload == b""
    assert json.loads(metadata[RESPONSE_METADATA]) == {"status": 200, "headers": {}}


def test_plain_return_sends_no_response_metadata(worker: Worker) -> None:
    reply, metadata = call_with_metadata(worker, "returns", b'{"kind": "dict"}')
    assert reply.Payload == json.dumps({"a": [1, 2.5, None, True], "b": "\u00e9"}).encode()
    assert RESPONSE_METADATA not in metadata


@pytest.mark.parametrize(
    ("kind", "details"),
    [
        ("status-str", "TypeError: Response status must be an int, not str"),
        ("status-float", "TypeError: Response status must be an int, not float"),
        ("status-bool", "TypeError: Response status must be an int, not bool"),
        ("status-low", "ValueError: Response status must be 100-599, got 99"),
        ("status-high", "ValueError: Response status must be 100-599, got 600"),
        ("headers-list", "TypeError: Response headers must be a mapping of str to str, not list"),
        ("header-value", "TypeError: Response header 'x-a': the value must be str, not int"),
        ("header-name", "TypeError: Response header names must be str, not int (1)"),
        ("body", "TypeError: Object of type set is not JSON serializable"),
    ],
)
def test_bad_response_object_fails_then_next_call_works(worker: Worker, kind: str, details: str) -> None:
    invocation_id = new_id()
    request = FunctionMessage(
        FunctionName="bad-response", Payload=json.dumps({"kind": kind}).encode(), FunctionInvokeID=invocation_id
    )
    with pytest.raises(grpc.RpcError) as info:
        worker.stub.with_call(request, timeout=10)
    error = info.value
    assert error.code() == grpc.StatusCode.UNKNOWN
    assert error.details() == f"[UserCodeReturn] {details}"
    assert RESPONSE_METADATA not in dict(error.initial_metadata() or ())
    record = worker.wait_for_log(lambda r: r.get("invocation_id") == invocation_id, what="the encoding error")
    assert record["level"] == "error"
    assert record["msg"] == f"cannot encode the return value: [UserCodeReturn] {details}"

    reply, metadata = call_with_metadata(worker, "respond", b'{"kind": "str"}')
    assert reply.Payload == b'"hello"'
    assert json.loads(metadata[RESPONSE_METADATA])["status"] == 201


# -- message fields and context ----------------------------------------------


def test_reply_echoes_request_fields(worker: Worker) -> None:
    invocation_id = new_id()
    reply = worker.call(
        "returns",
        b'{"kind": "str"}',
        ID=2**63 + 5,
        QOS=1,
        Topic="sensors/1/temp",
        Timestamp=-1_700_000_000,
        FunctionInvokeID=invocation_id,
    )
    assert reply == FunctionMessage(
        ID=2**63 + 5,
        QOS=1,
        Topic="sensors/1/temp",
        Payload=b'"hello"',
        Timestamp=-1_700_000_000,
        FunctionName="returns",
        FunctionInvokeID=invocation_id,
    )


def test_unknown_fields_are_echoed(worker: Worker) -> None:
    raw = worker.channel.unary_unary(
        "/baetyl.Function/Call",
        request_serializer=lambda data: data,
        response_deserializer=lambda data: data,
    )
    unknown = b"\xa0\x01\x07"  # field 20, varint 7
    request = FunctionMessage(FunctionName="returns", Payload=b'{"kind": "none"}', ID=9).SerializeToString()
    reply = raw(request + unknown, timeout=10)
    assert unknown in reply
    assert FunctionMessage.FromString(reply).ID == 9


def test_context_without_metadata(worker: Worker) -> None:
    invocation_id = new_id()
    reply = worker.call(
        "context",
        QOS=1,
        Topic="t/1",
        Timestamp=1_700_000_000,
        FunctionInvokeID=invocation_id,
        timeout=None,
    )
    assert payload_json(reply) == {
        "items": {
            "messageQOS": 1,
            "messageTopic": "t/1",
            "messageTimestamp": 1_700_000_000,
            "functionName": "context",
            "functionInvokeID": invocation_id,
            "invokeid": invocation_id,
            "trigger": "invoke",
        },
        "is_dict": True,
        "function_name": "context",
        "invocation_id": invocation_id,
        "remaining": None,
        "logger": True,
    }


def test_context_from_host_metadata(worker: Worker) -> None:
    invocation_id = new_id()
    extra = {
        "trigger": "http",
        "deadline": "2030-01-02T03:04:05.5Z",
        "http": {
            "method": "POST",
            "path": "/sayhi",
            "query": {"a": ["1", "2"]},
            "headers": {"content-type": ["application/json"]},
        },
        # The message's own fields win over the host's keys.
        "functionName": "spoofed",
    }
    reply = worker.call(
        "context",
        FunctionInvokeID=invocation_id,
        metadata=[("polyfn-context-bin", json.dumps(extra).encode())],
        timeout=10,
    )
    result = payload_json(reply)
    items = result["items"]
    assert items["trigger"] == "http"
    assert items["deadline"] == extra["deadline"]
    assert items["http"] == extra["http"]
    assert items["functionName"] == "context"
    assert items["functionInvokeID"] == items["invokeid"] == invocation_id
    assert 0 < result["remaining"] <= 11  # grpc rounds the timeout it sends up


# -- handlers ----------------------------------------------------------------


def test_async_handler(worker: Worker) -> None:
    reply = worker.call("async-echo", b'{"n": 1}')
    assert payload_json(reply) == {"async": True, "event": {"n": 1}, "function": "async-echo"}


def test_handler_exception_then_next_call_works(worker: Worker) -> None:
    invocation_id = new_id()
    error = call_error(lambda: worker.call("fail", b'{"why": "no name"}', FunctionInvokeID=invocation_id))
    assert error.code() == grpc.StatusCode.UNKNOWN
    assert error.details() == "[UserCodeInvoke] ValueError: bad input: no name"

    record = worker.wait_for_log(lambda r: r.get("invocation_id") == invocation_id, what="the traceback")
    assert record["level"] == "error"
    assert record["function"] == "fail"
    assert record["msg"].startswith("Traceback (most recent call last):")
    assert "ValueError: bad input: no name" in record["msg"]

    assert payload_json(worker.call("describe", b"{}")) == {"type": "dict", "value": {}}


def test_unknown_function(worker: Worker) -> None:
    error = call_error(lambda: worker.call("nope"))
    assert error.code() == grpc.StatusCode.UNKNOWN
    assert error.details() == "function not found: nope"


def test_same_module_name_in_two_codedirs(worker: Worker) -> None:
    assert worker.call("one").Payload == b'"one"'
    assert worker.call("two").Payload == b'"two"'


def test_sibling_and_package_imports(worker: Worker) -> None:
    assert worker.call("sibling").Payload == b'"from sibling"'
    assert payload_json(worker.call("dotted")) == {"util": "util", "module": "mod"}


@pytest.mark.parametrize("function", ["rendezvous", "async-rendezvous"])
def test_invocations_run_concurrently(worker: Worker, function: str) -> None:
    # The handler only returns once three calls are inside it at the same time.
    with ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(lambda _: worker.call(function), range(3)))
    assert len(replies) == 3


# -- logs --------------------------------------------------------------------


def test_output_and_logging_become_tagged_json_lines(worker: Worker) -> None:
    invocation_id = new_id()
    tag = invocation_id[-8:]
    worker.call("chatty", json.dumps({"tag": tag}).encode(), FunctionInvokeID=invocation_id)

    found = worker.wait_for_records(lambda r: r.get("invocation_id") == invocation_id, count=5)
    records = {r["msg"]: r for r in found}
    expected_levels = {
        f"printed {tag}": "info",
        f"to stderr {tag}": "error",
        f"logged {tag}": "warning",
        f"context logger {tag}": "info",
        f"partial {tag}": "info",  # flushed when the invocation ended
    }
    assert {msg: r["level"] for msg, r in records.items()} == expected_levels
    for record in records.values():
        assert record["function"] == "chatty"
        assert record["source"] == "user"
        assert set(record) == {"level", "msg", "function", "invocation_id", "source"}


def test_runtime_messages_and_clean_stdout(worker: Worker) -> None:
    records = worker.log_records()
    runtime = [r for r in records if r["source"] == "runtime"]
    assert any(r["msg"].startswith("listening on ") for r in runtime)
    assert all(r["level"] in {"debug", "info", "warning", "error"} for r in records)
    assert worker.stdout() == ""
