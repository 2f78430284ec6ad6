"""A harness that runs the real runtime as a subprocess and calls it over gRPC."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import yaml

from polyfn_runtime.protos.baetyl.function_pb2 import FunctionMessage

READY_TIMEOUT = 15.0
CALL_TIMEOUT = 15.0
EXIT_TIMEOUT = 15.0

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_code(directory: Path, files: dict[str, str]) -> Path:
    """Write function source files (dedented) under ``directory``."""
    for name, source in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip())
    return directory


class Worker:
    """One runtime process, started in its own session (process group)."""

    def __init__(
        self,
        workdir: Path,
        config: dict[str, Any],
        address: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.config_path = workdir / "service.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.address = address if address is not None else f"127.0.0.1:{free_port()}"
        self.stderr_path = workdir / "stderr.log"
        self.stdout_path = workdir / "stdout.log"
        process_env = {key: value for key, value in os.environ.items() if not key.startswith("BAETYL_")}
        if self.address:
            process_env["BAETYL_SERVICE_INSTANCE_ADDRESS"] = self.address
        process_env.update(env or {})
        with open(self.stderr_path, "wb") as stderr, open(self.stdout_path, "wb") as stdout:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "polyfn_runtime", "-c", str(self.config_path)],
                cwd=workdir,
                env=process_env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        self._channel: grpc.Channel | None = None

    # -- process ---------------------------------------------------------

    def kill(self) -> None:
        """Kill the whole process group; safe to call more than once."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=EXIT_TIMEOUT)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker did not exit within {timeout}s; stderr:\n{self.stderr()}")

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> Worker:
        future = grpc.channel_ready_future(self.channel)
        deadline = time.monotonic() + timeout
        while True:
            try:
                future.result(timeout=0.1)
                return self
            except grpc.FutureTimeoutError:
                pass
            if self.process.poll() is not None:
                pytest.fail(f"worker exited with {self.process.returncode}; stderr:\n{self.stderr()}")
            if time.monotonic() > deadline:
                pytest.fail(f"worker not ready within {timeout}s; stderr:\n{self.stderr()}")

    # -- output ----------------------------------------------------------

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        """Every stderr line, parsed as JSON (a line that is not JSON fails the test)."""
        records = []
        for line in self.stderr().splitlines():
            if line:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    pytest.fail(f"stderr line is not JSON: {line!r}")
        return records

    def wait_for_records(
        self, predicate: Callable[[dict[str, Any]], bool], count: int = 1, what: str = "log records"
    ) -> list[dict[str, Any]]:
        """Wait until at least ``count`` complete stderr lines match ``predicate``."""

        def find() -> list[dict[str, Any]] | None:
            complete = self.stderr().rpartition("\n")[0]  # not a line still being written
            found = [record for line in complete.splitlines() if predicate(record := json.loads(line))]
            return found if len(found) >= count else None

        return wait_for(find, what=f"{count} x {what}")

    def wait_for_log(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        return self.wait_for_records(predicate, what=what)[0]

    # -- calls -----------------------------------------------------------

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.address)
        return self._channel

    @property
    def stub(self) -> grpc.UnaryUnaryMultiCallable:
        return self.channel.unary_unary(
            "/baetyl.Function/Call",
            request_serializer=FunctionMessage.SerializeToString,
            response_deserializer=FunctionMessage.FromString,
        )

    def call(
        self,
        function: str,
        payload: bytes = b"",
        *,
        metadata: Sequence[tuple[str, str | bytes]] | None = None,
        timeout: float = CALL_TIMEOUT,
        **fields: Any,
    ) -> FunctionMessage:
        request = FunctionMessage(FunctionName=function, Payload=payload, **fields)
        return self.stub(request, metadata=metadata, timeout=timeout)

    def call_future(self, function: str, payload: bytes = b"", **fields: Any) -> grpc.Future:
        request = FunctionMessage(FunctionName=function, Payload=payload, **fields)
        return self.stub.future(request, timeout=CALL_TIMEOUT)


@pytest.fixture
def start_worker(request: pytest.FixtureRequest) -> Callable[..., Worker]:
    """Start workers that are always killed (process group) at teardown."""
    return _worker_factory(request)


def _worker_factory(request: pytest.FixtureRequest) -> Callable[..., Worker]:
    def start(workdir: Path, config: dict[str, Any], **kwargs: Any) -> Worker:
        worker = Worker(workdir, config, **kwargs)
        request.addfinalizer(worker.kill)
        return worker

    return start


@pytest.fixture(scope="module")
def start_module_worker(request: pytest.FixtureRequest) -> Callable[..., Worker]:
    return _worker_factory(request)


def call_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value
