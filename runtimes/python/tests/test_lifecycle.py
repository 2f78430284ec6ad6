"""Starting, failing to start, and stopping the worker process."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from conftest import Worker, call_error, wait_for, write_code

WAITER = """
    import asyncio
    import os
    import time


    def _started(event):
        with open(event["started"], "w"):
            pass


    def wait_for_release(event, context):
        _started(event)
        deadline = time.monotonic() + 20
        while not os.path.exists(event["release"]):
            if time.monotonic() > deadline:
                raise TimeoutError("never released")
            time.sleep(0.005)
        return "released"


    async def async_wait_for_release(event, context):
        _started(event)
        deadline = time.monotonic() + 20
        while not os.path.exists(event["release"]):
            if time.monotonic() > deadline:
                raise TimeoutError("never released")
            await asyncio.sleep(0.005)
        return "released"


    def echo(event, context):
        return event
"""


@pytest.mark.parametrize(
    ("engine", "handler"),
    [
        ("asyncio", "waiter.wait_for_release"),
        ("asyncio", "waiter.async_wait_for_release"),
        ("threads", "waiter.wait_for_release"),
    ],
)
def test_sigterm_lets_the_call_in_flight_finish(
    tmp_path: Path, start_worker: Callable[..., Worker], engine: str, handler: str
) -> None:
    write_code(tmp_path, {"code/waiter.py": WAITER})
    config = {
        "functions": [
            {"name": "wait", "handler": handler, "codedir": "code"},
            {"name": "echo", "handler": "waiter.echo", "codedir": "code"},
        ],
        "server": {"engine": engine, "grace": 20},
    }
    worker = start_worker(tmp_path, config).wait_ready()
    started, release = tmp_path / "started", tmp_path / "release"
    in_flight = worker.call_future("wait", json.dumps({"started": str(started), "release": str(release)}).encode())
    wait_for(started.exists, what="the handler to start")

    worker.signal(signal.SIGTERM)
    worker.wait_for_log(lambda r: r["msg"].startswith("stopping"), what="the stopping message")
    # No new calls once stopping...
    # grpc.aio refuses a call that arrives while the server stops with
    # UNAVAILABLE, or CANCELLED when it races the stop; the host treats both
    # as a call that never ran.
    error = call_error(lambda: worker.call("echo", b"{}", timeout=5))
    assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    assert not in_flight.done()

    # ...but the one in flight completes.
    release.touch()
    assert in_flight.result(timeout=15).Payload == b'"released"'
    assert worker.wait_exit() == 0
    assert any(r["msg"] == "stopped" for r in worker.log_records())


def test_unix_socket_address(tmp_path: Path, start_worker: Callable[..., Worker]) -> None:
    write_code(tmp_path, {"code/waiter.py": WAITER})
    sock = tmp_path / "worker.sock"
    config = {"functions": [{"name": "echo", "handler": "waiter.echo", "codedir": "code"}]}
    worker = start_worker(tmp_path, config, address=f"unix:{sock}").wait_ready()
    assert worker.call("echo", b'{"via": "unix"}').Payload == b'{"via": "unix"}'
    # Only plain functions: the threaded engine is chosen.
    worker.wait_for_log(lambda r: "(engine threads" in r["msg"], what="the engine choice")

    worker.signal(signal.SIGINT)
    assert worker.wait_exit() == 0
    assert not sock.exists()
    assert worker.stdout() == ""


@pytest.mark.parametrize(
    ("files", "handler", "expected"),
    [
        ({"bad.py": "import does_not_exist_polyfn_test\n"}, "bad.handler", "ModuleNotFoundError"),
        ({"bad.py": "raise RuntimeError('config missing')\n"}, "bad.handler", "RuntimeError: config missing"),
        ({"bad.py": "def handler(:\n"}, "bad.handler", "SyntaxError"),
        ({"bad.py": "x = 1\n"}, "bad.handler", "has no attribute 'handler'"),
        ({}, "missing.handler", "module 'missing' not found"),
    ],
    ids=["missing-import", "raises", "syntax-error", "no-attribute", "no-module"],
)
def test_handler_that_fails_to_load_exits_1(
    tmp_path: Path, start_worker: Callable[..., Worker], files: dict[str, str], handler: str, expected: str
) -> None:
    write_code(tmp_path, {"good/ok.py": "def handler(event, context):\n    return None\n"})
    write_code(tmp_path, {f"code/{name}": source for name, source in files.items()})
    (tmp_path / "code").mkdir(exist_ok=True)
    config = {
        "functions": [
            {"name": "fine", "handler": "ok.handler", "codedir": "good"},
            {"name": "broken", "handler": handler, "codedir": "code"},
        ]
    }
    worker = start_worker(tmp_path, config)
    assert worker.wait_exit() == 1
    errors = [r for r in worker.log_records() if r["level"] == "error"]
    assert len(errors) == 1, worker.stderr()
    assert errors[0]["function"] == "broken"
    assert expected in errors[0]["msg"]
    assert not any(r["msg"].startswith("listening") for r in worker.log_records())


def test_import_error_includes_the_traceback(tmp_path: Path, start_worker: Callable[..., Worker]) -> None:
    write_code(tmp_path, {"code/bad.py": "def helper():\n    return 1 / 0\n\nhelper()\n"})
    config = {"functions": [{"name": "broken", "handler": "bad.handler", "codedir": "code"}]}
    worker = start_worker(tmp_path, config)
    assert worker.wait_exit() == 1
    stderr = worker.stderr()
    assert "broken" in stderr
    [error] = [r for r in worker.log_records() if r["level"] == "error"]
    assert "Traceback (most recent call last)" in error["msg"]
    assert 'bad.py", line 2, in helper' in error["msg"]
    assert "ZeroDivisionError" in error["msg"]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"functions": [{"name": "f", "handler": "nodot", "codedir": "."}]}, "functions[0].handler"),
        ({"functions": [{"handler": "a.b"}]}, "functions[0].name"),
        ({"functions": []}, "functions"),
        ({"functions": [{"name": "f", "handler": "a.b"}], "server": {"grace": "soon"}}, "server.grace"),
    ],
)
def test_bad_config_exits_1(
    tmp_path: Path, start_worker: Callable[..., Worker], config: dict[str, object], expected: str
) -> None:
    worker = start_worker(tmp_path, config)
    assert worker.wait_exit() == 1
    [error] = [r for r in worker.log_records() if r["level"] == "error"]
    assert expected in error["msg"]
    assert "service.yml" in error["msg"]


def test_missing_address_exits_2(tmp_path: Path, start_worker: Callable[..., Worker]) -> None:
    write_code(tmp_path, {"code/waiter.py": WAITER})
    config = {"functions": [{"name": "echo", "handler": "waiter.echo", "codedir": "code"}]}
    worker = start_worker(tmp_path, config, address="")
    assert worker.wait_exit() == 2
    assert "BAETYL_SERVICE_INSTANCE_ADDRESS" in worker.stderr()


def test_address_in_use_exits_1(tmp_path: Path, start_worker: Callable[..., Worker]) -> None:
    write_code(tmp_path, {"code/waiter.py": WAITER})
    config = {"functions": [{"name": "echo", "handler": "waiter.echo", "codedir": "code"}]}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = start_worker(tmp_path, config, address=f"127.0.0.1:{port}")
        assert worker.wait_exit() == 1
    assert "cannot listen on" in worker.stderr()


@pytest.mark.parametrize("engine", ["asyncio", "threads"])
def test_grace_period_expires(tmp_path: Path, start_worker: Callable[..., Worker], engine: str) -> None:
    write_code(tmp_path, {"code/waiter.py": WAITER})
    config = {
        "functions": [{"name": "wait", "handler": "waiter.wait_for_release", "codedir": "code"}],
        "server": {"engine": engine, "grace": 0.2},
    }
    worker = start_worker(tmp_path, config).wait_ready()
    started = tmp_path / "started"
    never = tmp_path / "never"
    in_flight = worker.call_future("wait", json.dumps({"started": str(started), "release": str(never)}).encode())
    wait_for(started.exists, what="the handler to start")

    worker.signal(signal.SIGTERM)
    assert worker.wait_exit(timeout=10) == 0
    with pytest.raises(grpc.RpcError):
        in_flight.result(timeout=10)
    assert any("still running after the grace period" in r["msg"] for r in worker.log_records())
