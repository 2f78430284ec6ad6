"""In-process tests of the pieces that need no server."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

import polyfn_runtime
from polyfn_runtime import logs
from polyfn_runtime.config import ConfigError, load_config, parse_config
from polyfn_runtime.context import Context, build_context
from polyfn_runtime.payload import decode_event, encode_result
from polyfn_runtime.protos.baetyl.function_pb2 import FunctionMessage
from polyfn_runtime.response import Response, encode_response


def test_decode_event() -> None:
    assert decode_event(b"") == {}
    assert decode_event(b'{"a": 1}') == {"a": 1}
    assert decode_event(b"[1, 2]") == [1, 2]
    assert decode_event(b"null") is None
    assert decode_event(b"\xff") == b"\xff"
    assert decode_event(b"[" * 100_000) == b"[" * 100_000


def test_encode_result() -> None:
    assert encode_result(None) == b""
    assert encode_result(b"\x00") == b"\x00"
    assert encode_result(bytearray(b"ab")) == b"ab"
    assert encode_result("hi") == b'"hi"'
    assert encode_result({"k": [1, None]}) == b'{"k": [1, null]}'
    with pytest.raises(TypeError):
        encode_result(object())


def test_response_objects() -> None:
    assert polyfn_runtime.Response is Response
    context = Context({"functionName": "f"})
    made = context.response({"a": 1}, status=201, headers={"x-a": "b"})
    assert isinstance(made, Response)
    encoded = encode_response(made)
    assert (encoded.status, encoded.headers, encoded.body) == (201, {"x-a": "b"}, b'{"a": 1}')
    assert json.loads(encoded.metadata()) == {"status": 201, "headers": {"x-a": "b"}}
    assert encode_response(Response()).metadata() == b'{"status": 200, "headers": {}}'
    assert encode_response(Response(b"\x00", 599)).body == b"\x00"
    assert encode_response(Response("hi", 100)).body == b'"hi"'


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (Response(status="200"), TypeError),
        (Response(status=True), TypeError),
        (Response(status=None), TypeError),
        (Response(status=99), ValueError),
        (Response(status=600), ValueError),
        (Response(headers=[("a", "b")]), TypeError),
        (Response(headers={"a": b"b"}), TypeError),
        (Response(headers={b"a": "b"}), TypeError),
        (Response(body=object()), TypeError),
    ],
)
def test_bad_response_objects(response: Response, error: type[Exception]) -> None:
    with pytest.raises(error):
        encode_response(response)


BASE = {"functions": [{"name": "f", "handler": "index.handler", "codedir": "code"}]}


def test_config_defaults_and_env_overrides() -> None:
    config = parse_config(BASE, environ={})
    assert config.name is None
    assert config.server.address is None
    assert (config.server.grace, config.server.workers, config.server.engine) == (30.0, 32, "auto")
    [function] = config.functions
    assert (function.module, function.attribute, function.codedir) == ("index", "handler", "code")

    data = {**BASE, "name": "from-file", "server": {"address": "127.0.0.1:1", "grace": 2, "workers": 4}}
    env = {"BAETYL_SERVICE_INSTANCE_ADDRESS": "unix:/tmp/x.sock", "BAETYL_SERVICE_INSTANCE_NAME": "from-env"}
    config = parse_config(data, environ=env)
    assert (config.name, config.server.address, config.server.grace, config.server.workers) == (
        "from-env",
        "unix:/tmp/x.sock",
        2.0,
        4,
    )


def test_config_ignores_unknown_keys() -> None:
    data = {"functions": [{"name": "f", "handler": "a.b", "codedir": ".", "extra": 1}], "logger": {"level": "debug"}}
    assert parse_config(data, environ={}).functions[0].name == "f"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "mapping"),
        ({}, "functions: required"),
        ({"functions": [{"name": "f", "handler": "a.b"}, {"name": "f", "handler": "c.d"}]}, "duplicate"),
        ({"functions": [{"name": "f", "handler": "a.b-c"}]}, "functions[0].handler"),
        ({"functions": [{"name": "f", "handler": "a.b", "codedir": 3}]}, "functions[0].codedir"),
        ({**BASE, "server": {"workers": 0}}, "server.workers"),
        ({**BASE, "server": {"workers": True}}, "server.workers"),
        ({**BASE, "server": {"grace": -1}}, "server.grace"),
        ({**BASE, "server": {"engine": "fast"}}, "server.engine"),
    ],
)
def test_config_errors(data: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_config(data, environ={})


def test_config_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "service.yml"
    path.write_text("functions: [\n")
    with pytest.raises(ConfigError, match=r"service\.yml: invalid YAML"):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yml", environ={})


def test_context_keys_and_accessors() -> None:
    request = FunctionMessage(QOS=1, Topic="t", Timestamp=5, FunctionName="f", FunctionInvokeID="i")
    extra = json.dumps({"trigger": "timer", "invokeid": "spoofed"}).encode()
    metadata = [("polyfn-context-bin", extra)]
    context = build_context(request, metadata, time_remaining=30.0, logger=logging.getLogger("t"))
    assert isinstance(context, Context) and isinstance(context, dict)
    assert context == {
        "trigger": "timer",
        "messageQOS": 1,
        "messageTopic": "t",
        "messageTimestamp": 5,
        "functionName": "f",
        "functionInvokeID": "i",
        "invokeid": "i",
    }
    assert (context.function_name, context.invocation_id, context.trigger) == ("f", "i", "timer")
    assert 29 < context.remaining() <= 30
    assert json.loads(json.dumps(context)) == dict(context)


def test_context_ignores_bad_metadata() -> None:
    request = FunctionMessage(FunctionName="f")
    for value in (b"not json", b"[1]"):
        metadata = [("polyfn-context-bin", value)]
        context = build_context(request, metadata, time_remaining=None, logger=logging.getLogger())
        assert context["trigger"] == "invoke"
        assert context.remaining() is None


def test_tagged_writer_buffers_lines_per_invocation() -> None:
    out = io.BytesIO()
    sink = logs.LogSink(out)
    writer = logs.TaggedWriter("<stdout>", "info", sink)
    first, second = logs.Scope("f", "1"), logs.Scope("f", "2")

    token = logs.current_scope.set(first)
    writer.write("a")  # a partial line, kept until "e\n" below
    logs.current_scope.reset(token)
    token = logs.current_scope.set(second)
    writer.write("b\nc\r\n")
    writer.write("tail")
    logs.current_scope.reset(token)
    logs.end_scope(second)
    token = logs.current_scope.set(first)
    writer.write("e\n")
    logs.current_scope.reset(token)
    logs.end_scope(first)

    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["invocation_id"], r["msg"]) for r in records if "invocation_id" in r] == [
        ("2", "b"),
        ("2", "c"),
        ("2", "tail"),
        ("1", "ae"),
    ]
    assert records[0] == {"level": "info", "msg": "b", "function": "f", "invocation_id": "2", "source": "user"}


def test_dependencies_are_imported_after_the_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A function's built dependencies come after the runtime's own packages on sys.path."""
    import sys

    from polyfn_runtime.config import FunctionConfig
    from polyfn_runtime.loader import HandlerLoader

    monkeypatch.setattr(sys, "path", list(sys.path))
    deps = tmp_path / "site"
    (deps / "grpc").mkdir(parents=True)
    (deps / "grpc" / "__init__.py").write_text("raise ImportError('the function shadowed grpc')\n")
    (deps / "polyfn_test_dep.py").write_text("VALUE = 42\n")
    code = tmp_path / "code"
    code.mkdir()
    (code / "main.py").write_text(
        "import grpc\nimport polyfn_test_dep\n\ndef handler(event, context):\n    return polyfn_test_dep.VALUE\n"
    )
    loaded = HandlerLoader().load(
        FunctionConfig(name="deps", handler="main.handler", codedir=str(code), dependencies=str(deps))
    )
    assert loaded.handler(None, None) == 42
    assert sys.path.index(str(deps)) > sys.path.index(str(Path(sys.modules["grpc"].__file__).parent.parent))
    sys.modules.pop("polyfn_test_dep", None)


def test_config_dependencies_key() -> None:
    config = parse_config({"functions": [{"name": "f", "handler": "m.h", "codedir": "/c", "dependencies": "/d"}]})
    assert config.functions[0].dependencies == "/d"


def test_warnings_are_tagged_by_where_they_point(tmp_path: Path) -> None:
    # install() changes the whole process: run it in a child of its own.
    user = tmp_path / "userfn.py"
    user.write_text("import warnings\n\ndef f():\n    warnings.warn('user warns', UserWarning)\n")
    script = (
        "import sys, warnings\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from polyfn_runtime import logs\n"
        "logs.install()\n"
        "warnings.simplefilter('always')\n"
        "import userfn; userfn.f()\n"
        "warnings.warn_explicit('runtime warns', DeprecationWarning, logs.__file__, 1)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True, timeout=60)
    records = [json.loads(line) for line in done.stderr.decode().splitlines()]
    by_msg = {r["msg"].splitlines()[0].rsplit(": ", 1)[-1]: r for r in records}
    assert by_msg["user warns"]["source"] == "user"
    assert by_msg["user warns"]["level"] == "warning"
    assert by_msg["runtime warns"]["source"] == "runtime"
    assert done.stdout == b""
