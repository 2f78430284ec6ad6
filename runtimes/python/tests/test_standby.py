"""Call mode's standby: a worker started before its configuration (polyfn_runtime.standby)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from conftest import EXIT_TIMEOUT, write_code

from polyfn_runtime.protos.baetyl.function_pb2 import FunctionMessage

CODE = """
    import os


    def env(event, context):
        return {"greeting": os.environ.get("GREETING"), "name": os.environ.get("BAETYL_SERVICE_INSTANCE_NAME")}
"""


class Standby:
    """A worker started with ``--standby``, its standard input a socket to the test."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.config_path = workdir / "service.yml"  # written when the worker is claimed
        self.host, worker_end = socket.socketpair()
        self.stderr_path = workdir / "stderr.log"
        env = {"PATH": os.environ.get("PATH", ""), "NOT_KEPT": "1"}
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "polyfn_runtime", "-c", str(self.config_path), "--standby"],
                cwd=workdir,
                env=env,
                stdin=worker_end.fileno(),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        worker_end.close()
        self.host.settimeout(30)

    def read_line(self) -> bytes:
        data = b""
        while not data.endswith(b"\n"):
            chunk = self.host.recv(64)
            if not chunk:
                break
            data += chunk
        return data

    def kill(self) -> None:
        self.host.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=EXIT_TIMEOUT)


@pytest.fixture
def standby(tmp_path: Path) -> Iterator[Standby]:
    worker = Standby(tmp_path)
    yield worker
    worker.kill()


def test_claimed_standby_serves_with_the_hosts_environment(tmp_path: Path, standby: Standby) -> None:
    assert standby.read_line() == b"ready\n"
    write_code(tmp_path, {"code/fn.py": CODE})
    standby.config_path.write_text(
        yaml.safe_dump({"functions": [{"name": "env", "handler": "fn.env", "codedir": "code"}]})
    )
    sock = tmp_path / "worker.sock"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "GREETING": "hello",
        "BAETYL_SERVICE_INSTANCE_ADDRESS": f"unix:{sock}",
        "BAETYL_SERVICE_INSTANCE_NAME": "env-1",
    }
    standby.host.sendall(json.dumps({"env": env}).encode() + b"\n")
    assert standby.read_line() == b"serving\n"
    # Its standard input no longer reaches the host.
    assert os.readlink(f"/proc/{standby.process.pid}/fd/0") == os.devnull
    with grpc.insecure_channel(f"unix:{sock}") as channel:
        call = channel.unary_unary(
            "/baetyl.Function/Call",
            request_serializer=FunctionMessage.SerializeToString,
            response_deserializer=FunctionMessage.FromString,
        )
        reply = call(FunctionMessage(FunctionName="env"), timeout=30)
    assert json.loads(reply.Payload) == {"greeting": "hello", "name": "env-1"}
    standby.process.send_signal(signal.SIGTERM)
    assert standby.process.wait(timeout=EXIT_TIMEOUT) == 0


def test_end_of_input_exits_0(standby: Standby) -> None:
    assert standby.read_line() == b"ready\n"
    standby.host.shutdown(socket.SHUT_WR)
    assert standby.process.wait(timeout=EXIT_TIMEOUT) == 0


def test_sigterm_while_waiting_exits_0(standby: Standby) -> None:
    assert standby.read_line() == b"ready\n"
    standby.process.send_signal(signal.SIGTERM)
    assert standby.process.wait(timeout=EXIT_TIMEOUT) == 0


@pytest.mark.parametrize(
    "line", [b"not json\n", b'{"env": {"A": 1}}\n', b"[]\n"], ids=["not-json", "not-strings", "not-object"]
)
def test_a_bad_claim_exits_2(standby: Standby, line: bytes) -> None:
    assert standby.read_line() == b"ready\n"
    standby.host.sendall(line)
    assert standby.process.wait(timeout=EXIT_TIMEOUT) == 2
    assert "standby:" in standby.stderr_path.read_text()
